"""Train the candidate pair models on one training set and score every evaluation set with
each, so they are compared on the same pairs (run on the GPU machine, in two stages that
each fit in one call; `semcache model train-verifier` rebuilds the shipped student alone).

Stage `teachers`: all-MiniLM-L6-v2 fine-tuned in full, all-mpnet-base-v2 with LoRA (the
teacher), and the teacher's scores of the training examples for distillation. Stage
`students`: SmolLM2-135M with LoRA as a pair classifier, and the MiniLM student distilled
from the teacher. Each writes `scores_<stage>.json` (per model, per set: the probability
of every pair, read raw at MAX_LEN tokens) and the weights worth bringing back: the
teacher's LoRA state, the student's weights in parts of at most 15 MB.

    python -m semcache.proxy.judge.training.candidates teachers --out DIR --minilm M --mpnet P
    python -m semcache.proxy.judge.training.candidates students --out DIR --minilm M --smollm2 S
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import pickle
import random
import sys
import time
from pathlib import Path
from typing import Any

from ..pairs import read_pairs
from . import train as t

REPO = Path(__file__).resolve().parents[3]
EVAL_SETS = ["near_miss", "near_miss_2", "near_miss_3", "long_prompts", "long_prompts_2",
             "short_prompts", "instructions", "statements"]
PART_BYTES = 15 * 1024 * 1024
SMOLLM2_EXAMPLES = 30_000
"""SmolLM2 (30 layers) trains on the first 30,000 examples only: a full epoch did not fit
in the device time of the session that compared the candidates."""
log = logging.getLogger(__name__)


def eval_pairs(quora: Path) -> dict[str, list[dict[str, Any]]]:
    """Every labelled set the candidates are compared on: the project's evaluation sets
    (loadtest/data/), the hand-written dev split and the Quora calibration and test splits."""
    sets = {name: read_pairs(REPO / "loadtest" / "data" / f"{name}.jsonl") for name in EVAL_SETS
            if (REPO / "loadtest" / "data" / f"{name}.jsonl").exists()}
    sets["handwritten_dev"] = t.read_handwritten("dev")
    sets["qqp_calibration"] = read_pairs(quora, "calibration")
    sets["qqp_test"] = read_pairs(quora, "test")
    return sets


def examples(quora: Path, seed: int) -> list[tuple[str, str, int]]:
    from ..pairs import in_calibration

    rows = [r for r in read_pairs(quora, "dev") if not in_calibration(r["a"], r["b"])]
    out = t.build_examples(rows, seed)
    out += t.prompt_examples(t.read_handwritten("train"), sorted({r[k] for r in rows for k in "ab"}),
                             seed)
    random.Random(seed + 2).shuffle(out)
    return out


def score_all(model: Any, tok: Any, base: str, sets: dict[str, list[dict[str, Any]]],
              max_len: int) -> dict[str, list[float]]:
    return {name: [round(p, 5) for p in t.score_pairs(model, tok, base, [(r["a"], r["b"]) for r in rows],
                                                      max_len=max_len)]
            for name, rows in sets.items()}


def fit_one(name: str, base: str, source: Path, data: list[tuple[str, str, int]], **kw: Any
            ) -> tuple[Any, Any, dict[str, Any]]:
    started = time.monotonic()
    model, tok = t.fit(source, data, base=base, **kw)
    info = {"base": base, "source": t.BASES[base], "examples": len(data),
            "train_s": round(time.monotonic() - started, 1),
            **{k: v for k, v in kw.items() if k != "soft"}, "distilled": kw.get("soft") is not None}
    log.info("%s trained in %.0f s", name, info["train_s"])
    return model, tok, info


def save_parts(path: Path, out: Path, stem: str) -> list[str]:
    """A file too large to come back whole, in parts of PART_BYTES (joined with cat)."""
    data = path.read_bytes()
    names = []
    for i in range(0, len(data), PART_BYTES):
        name = f"{stem}.part{i // PART_BYTES:02d}"
        (out / name).write_bytes(data[i:i + PART_BYTES])
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="candidates", description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=["teachers", "students", "all"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/candidates"),
                   help="kept between the stages: the teacher's scores of the training set")
    p.add_argument("--quora", type=Path, default=REPO.parent / "shared" / "data" / "qqp_dev_pairs.jsonl.gz")
    p.add_argument("--minilm", type=Path)
    p.add_argument("--mpnet", type=Path)
    p.add_argument("--smollm2", type=Path)
    p.add_argument("--examples", type=Path, help="the training examples, pickled (gzip) by "
                   "`--save-examples` on another machine: the same set, built once")
    p.add_argument("--save-examples", type=Path, help="build the examples, write them here, stop")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--fast", action="store_true", help="a tiny run to try the code (CPU)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.examples is not None:
        data = pickle.loads(gzip.decompress(args.examples.read_bytes()))
    else:
        data = examples(args.quora, args.seed)
    if args.save_examples is not None:
        args.save_examples.write_bytes(gzip.compress(pickle.dumps(data)))
        return 0
    if args.minilm is None:
        raise SystemExit("--minilm is needed to train")
    import torch

    sets = eval_pairs(args.quora)
    if args.fast:
        data, sets = data[:64], {k: v[:8] for k, v in sets.items()}
    epochs = 1 if args.fast else 3
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    result: dict[str, Any] = {"stage": args.stage, "device": device, "torch": torch.__version__,
                              "max_len": t.MAX_LEN, "sets": {k: len(v) for k, v in sets.items()},
                              "models": {}}
    def save() -> None:  # after every model: a run cut short still brings back what it made
        (args.out / f"scores_{args.stage}.json").write_text(json.dumps(result))

    if args.stage in ("teachers", "all"):
        model, tok, info = fit_one("minilm", "minilm", args.minilm, data, epochs=min(epochs, 2),
                                   lr=8e-5, batch=128, max_len=t.MAX_LEN)
        result["models"]["minilm"] = {"training": info,
                                      "scores": score_all(model, tok, "minilm", sets, t.MAX_LEN)}
        save()
        del model
        model, tok, info = fit_one("mpnet-lora", "mpnet", args.mpnet, data, epochs=1,
                                   lr=4e-4, batch=128, max_len=t.MAX_LEN, lora_rank=32)
        result["models"]["mpnet-lora"] = {"training": info,
                                          "scores": score_all(model, tok, "mpnet", sets, t.MAX_LEN)}
        from safetensors.torch import save_file

        from . import lora

        save_file(lora.state(model), str(args.out / "teacher_lora.safetensors"))
        started = time.monotonic()
        soft = t.score_pairs(model, tok, "mpnet", [(a, b) for a, b, _ in data], max_len=t.MAX_LEN)
        result["teacher_scoring_s"] = round(time.monotonic() - started, 1)
        (args.work / "teacher_soft.pkl").write_bytes(pickle.dumps(soft))
        save()
    if args.stage in ("students", "all"):
        soft = pickle.loads((args.work / "teacher_soft.pkl").read_bytes())
        if len(soft) != len(data):
            raise SystemExit("the teacher's scores are for another training set")
        model, tok, info = fit_one("minilm-student", "minilm", args.minilm, data, epochs=min(epochs, 2),
                                   lr=8e-5, batch=128, max_len=t.MAX_LEN, soft=soft)
        result["models"]["minilm-student"] = {"training": info,
                                              "scores": score_all(model, tok, "minilm", sets, t.MAX_LEN)}
        student = args.work / "student"
        model.float().cpu().half().save_pretrained(str(student), safe_serialization=True)
        tok.save_pretrained(str(student))
        result["student_parts"] = save_parts(student / "model.safetensors", args.out, "student.safetensors")
        save()
        del model
    if args.stage == "students" and args.smollm2 is not None:
        subset = data[:SMOLLM2_EXAMPLES]  # the device time for one candidate: see the note
        model, tok, info = fit_one("smollm2-lora", "smollm2", args.smollm2, subset, epochs=1,
                                   lr=2e-4, batch=64, max_len=t.MAX_LEN + 32, lora_rank=32)
        result["models"]["smollm2-lora"] = {
            "training": info, "scores": score_all(model, tok, "smollm2", sets, t.MAX_LEN + 32)}
    save()
    print(json.dumps({k: v for k, v in result.items() if k != "models"}
                     | {"models": {m: r["training"] for m, r in result["models"].items()}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
