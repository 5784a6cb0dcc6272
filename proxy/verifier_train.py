"""`semcache model train-verifier`: fine-tune the cross-encoder verifier (seeded, reproducible).

A cross-encoder reads both prompts together and outputs the probability that one answer
serves both. It starts from the packaged all-MiniLM-L6-v2 weights with a fresh one-logit
head and trains on the dev split of the Quora pairs plus augmentations that teach what a
prompt cache needs and Quora lacks: near misses made from Quora questions by changing a
number, swapping "from X to Y", inserting a negation, flipping a comparative, or swapping a
capitalised name / language for one from another question (label 0), and paraphrases made
by typos, filler words, lower-casing and moving a trailing phrase to the front (label 1).
The near-miss evaluation set (loadtest/data/near_miss.jsonl) is never used here.

Output: DIR/verifier.pt (state dict, fp16) and DIR/tokenizer.json; `export` turns them into
DIR/model_int8.onnx (and fp32 for a GPU), which proxy/verifier.py loads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from .checks import _ANTONYMS, _NATURAL, _PROG
from .pairs import read_pairs

log = logging.getLogger(__name__)

FILLERS = ["Hey, ", "Quick question: ", "Hi! ", "Can you tell me ", "I wonder, ", "Please, ",
           "So ", "Hello, I want to know: ", "Honestly, "]
TAILS = [" Thanks!", " Thank you.", " Any ideas?", " Please help.", " :)", " thx"]
_NUM = re.compile(r"\b\d+(?:\.\d+)?\b")
_FROM_TO = re.compile(r"\bfrom (\w+(?: \w+)?) to (\w+(?: \w+)?)", re.I)
_NEGATABLE = re.compile(r"\b(is|are|do|does|can|should|will|was|were|did)\b (?!not)", re.I)
_CAP = re.compile(r"(?<=\w )([A-Z][a-z]+)")
_OPP = {a: b for a, b in _ANTONYMS} | {b: a for a, b in _ANTONYMS}
_LANGS = sorted(_PROG | _NATURAL)


def typo(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.choice((1, 1, 2, 3))):
        spots = [i for i in range(1, len(chars) - 2) if chars[i].isalpha() and chars[i + 1].isalpha()]
        if not spots:
            break
        i = rng.choice(spots)
        op = rng.randrange(4)
        if op == 0:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif op == 1:
            del chars[i]
        elif op == 2:
            chars.insert(i, chars[i])
        else:
            chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz")
    return "".join(chars)


def paraphrase(q: str, rng: random.Random) -> str:
    """A rewrite one answer still serves: typos, filler, case and punctuation, a moved phrase."""
    op = rng.randrange(5)
    if op == 0:
        return typo(q, rng)
    if op == 1:
        return rng.choice(FILLERS) + q[:1].lower() + q[1:] + (rng.choice(TAILS) if rng.random() < 0.5 else "")
    if op == 2:
        return q.lower().rstrip("?.!")
    if op == 3:
        m = re.match(r"^(.*\w) ((?:in|on|for|with|without|during|at) [\w ]+)\?$", q)
        if m:
            return f"{m.group(2)[0].upper()}{m.group(2)[1:]}, {m.group(1)[0].lower()}{m.group(1)[1:]}?"
        return typo(q, rng)
    return typo(q.lower(), rng)


def near_miss(q: str, rng: random.Random, names: list[str]) -> str | None:
    """A minimal edit that changes what is asked, or None when q offers none."""
    ops = []
    if _NUM.search(q):
        ops.append(lambda: _NUM.sub(lambda m: _other_number(m.group(0), rng), q, count=1))
    if _FROM_TO.search(q):
        ops.append(lambda: _FROM_TO.sub(lambda m: f"from {m.group(2)} to {m.group(1)}", q, count=1))
    if _NEGATABLE.search(q):
        ops.append(lambda: _NEGATABLE.sub(lambda m: f"{m.group(1)} not ", q, count=1))
    words = re.findall(r"\b\w+\b", q)
    flips = [w for w in words if w.lower() in _OPP]
    if flips:
        flip = rng.choice(flips)
        ops.append(lambda: re.sub(rf"\b{flip}\b", _OPP[flip.lower()], q, count=1))
    langs = [w for w in words if w.lower() in _LANGS]
    if langs:
        lang = rng.choice(langs)
        ops.append(lambda: re.sub(rf"\b{re.escape(lang)}\b", rng.choice(_LANGS).title(), q, count=1))
    caps = _CAP.findall(q)
    if caps and names:
        name = rng.choice(caps)
        ops.append(lambda: re.sub(rf"\b{name}\b", rng.choice(names), q, count=1))
    if not ops:
        return None
    out = rng.choice(ops)()
    return out if out != q else None


def _other_number(n: str, rng: random.Random) -> str:
    if "." in n:
        return f"{float(n) + rng.choice((0.1, 1, -0.1, 2)):.{len(n.split('.')[1])}f}"
    value = int(n)
    return str(value + rng.choice((1, 2, 5, 10, -1)) if value > 1 else value + 3)


def build_examples(rows: list[dict[str, Any]], seed: int,
                   aug_share: float = 0.6) -> list[tuple[str, str, int]]:
    """Quora pairs (both orders) plus about aug_share * len(rows) of each augmentation kind."""
    rng = random.Random(seed)
    examples = [(r["a"], r["b"], int(r["label"])) for r in rows]
    questions = sorted({q for r in rows for q in (r["a"], r["b"])})
    names = sorted({w for q in questions for w in _CAP.findall(q)})
    rng.shuffle(questions)
    target = int(aug_share * len(rows))
    made_neg = made_pos = 0
    for q in questions:
        if made_neg < target:
            other = near_miss(q, rng, names)
            if other is not None:
                examples.append((q, other, 0))
                made_neg += 1
        if made_pos < target:
            examples.append((q, paraphrase(q, rng), 1))
            made_pos += 1
        if made_neg >= target and made_pos >= target:
            break
    # Duplicates of Quora positives with noise on one side: typos must not flip a "same".
    for a, b, label in list(examples[:len(rows)]):
        if label == 1 and rng.random() < 0.3:
            examples.append((a, paraphrase(b, rng), 1))
    rng.shuffle(examples)
    return [(a, b, y) if rng.random() < 0.5 else (b, a, y) for a, b, y in examples]


def train(source: Path, pairs: Path, out_dir: Path, *, seed: int = 13, epochs: int = 2,
          batch: int = 64, lr: float = 4e-5, max_len: int = 96,
          device: str = "auto") -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = device
    rows = read_pairs(pairs, "dev")
    examples = build_examples(rows, seed)
    tok = AutoTokenizer.from_pretrained(str(source))
    model = AutoModelForSequenceClassification.from_pretrained(str(source), num_labels=1).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * ((len(examples) + batch - 1) // batch)
    # Linear warm-up over 6% of the steps, then linear decay to 0.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, s / (0.06 * steps)) * max(0.0, (steps - s) / steps))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    started, step = time.monotonic(), 0
    model.train()
    for epoch in range(epochs):
        order = list(range(len(examples)))
        random.Random(seed + epoch).shuffle(order)
        for start in range(0, len(order), batch):
            chunk = [examples[i] for i in order[start:start + batch]]
            enc = tok([c[0] for c in chunk], [c[1] for c in chunk], truncation=True,
                      max_length=max_len, padding=True, return_tensors="pt").to(dev)
            labels = torch.tensor([float(c[2]) for c in chunk], device=dev)
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
                logits = model(**enc).logits.squeeze(-1)
            loss = loss_fn(logits.float(), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step % 200 == 0:
                log.info("epoch %d step %d/%d loss %.4f", epoch, step, steps, loss.item())
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tok.save_pretrained(str(out_dir))
    info = {"seed": seed, "epochs": epochs, "batch": batch, "lr": lr, "max_len": max_len,
            "examples": len(examples), "quora_dev_pairs": len(rows), "device": dev,
            "train_s": round(time.monotonic() - started, 1), "torch": torch.__version__}
    (out_dir / "training.json").write_text(json.dumps(info, indent=1))
    return info


def export(trained: Path, out_dir: Path) -> Path:
    """ONNX of the trained model (sigmoid inside the graph), fp32 and dynamic int8."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(trained), attn_implementation="eager").eval()

    class Scored(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            logits = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).logits
            return torch.sigmoid(logits[:, 0])

    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / "model_fp32.onnx"
    ids = torch.tensor([[101, 7592, 102, 2088, 102], [101, 7592, 102, 2088, 102]])
    with torch.no_grad():
        torch.onnx.export(Scored(model), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(fp32),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["score"], opset_version=17, dynamo=False,
                          dynamic_axes={"score": {0: "batch"}} | {
                              n: {0: "batch", 1: "seq"}
                              for n in ("input_ids", "attention_mask", "token_type_ids")})
    int8 = out_dir / "model_int8.onnx"
    quantise(fp32, int8, heads=model.config.num_attention_heads, hidden=model.config.hidden_size)
    shutil.copyfile(trained / "tokenizer.json", out_dir / "tokenizer.json")
    return int8


def quantise(fp32: Path, int8: Path, *, heads: int, hidden: int) -> None:
    """The shipped CPU file: onnxruntime's transformer fusions (Attention, SkipLayerNorm,
    BiasGelu), then int8 MatMuls and embedding table with per-token activation scales
    (embeddings/rowquant.py), as for the encoder: a pair's score does not depend on its
    batch-mates. The word embeddings stay an int8 Gather (the file is ~31 MB, kept in git)."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    from semcache.embeddings.rowquant import quantise_per_token

    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False  # it needs a float embedding table
    fused_model = optimizer.optimize_model(str(fp32), model_type="bert", num_heads=heads,
                                           hidden_size=hidden, opt_level=0,
                                           optimization_options=options)
    fused = int8.with_name("model_fused.onnx")
    fused_model.save_model_to_file(str(fused))
    rewritten = quantise_per_token(fused, int8, op_types=("MatMul", "Gather"))
    log.info("verifier int8: %d per-token activation quantisers", rewritten)
    fused.unlink()


def main(argv: list[str] | None = None) -> int:
    """`semcache model train-verifier [--pairs QQP] [--out DIR] [--seed N] [--epochs N]`."""
    p = argparse.ArgumentParser(prog="semcache model train-verifier", description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=Path, default=Path("../shared/data/qqp_dev_pairs.jsonl.gz"))
    p.add_argument("--out", type=Path, default=Path(".data/verifier-train"))
    p.add_argument("--export-to", type=Path, default=None,
                   help="also export ONNX here (default: embeddings/verifier/ of the repo)")
    p.add_argument("--source", type=Path, default=None, help="MiniLM folder (default: packaged)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-export", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.source is None:
        from semcache.embeddings.export import resolve_source

        args.source = resolve_source("packaged")[1]
    info = train(args.source, args.pairs, args.out, seed=args.seed, epochs=args.epochs, device=args.device)
    print(json.dumps(info))
    if not args.no_export:
        target = args.export_to or Path(__file__).resolve().parent.parent / "embeddings" / "verifier"
        print(export(args.out, target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
