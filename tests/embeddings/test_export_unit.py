"""Fast checks of the export bookkeeping (no torch run) and of the hot path's imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from semcache.embeddings import export
from semcache.embeddings.encoder import pick_device_variant
from semcache.embeddings.errors import EmbeddingError


def test_source_hash_follows_the_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights v1")
    first = export.source_hash(tmp_path)
    assert export.source_hash(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"weights v2")
    assert export.source_hash(tmp_path) != first


def test_manifest_decides_re_export(tmp_path: Path) -> None:
    (tmp_path / "model_int8.onnx").write_bytes(b"x")
    manifest = {"source_hash": "abc", "variants": {"int8": "model_int8.onnx"}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert export.is_current(tmp_path, "abc", ["int8"])
    assert not export.is_current(tmp_path, "changed", ["int8"])
    assert not export.is_current(tmp_path, "abc", ["int8", "fp32"])


def test_bad_model_folder_and_variant_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(export.ExportError, match="no config.json"):
        export.resolve_source(str(tmp_path))
    with pytest.raises(export.ExportError, match="unknown variants"):
        export.ensure_exported(tmp_path, "packaged", ("int4",))
    assert export.main(["--data-dir", str(tmp_path), "--model", str(tmp_path / "none")]) == 1
    with pytest.raises(EmbeddingError):
        pick_device_variant("tpu", "auto")


def test_cpu_auto_variant_is_int8() -> None:
    assert pick_device_variant("cpu", "auto") == ("cpu", "int8")


def test_packaged_model_is_found_without_importing_it() -> None:
    name, folder = export.resolve_source("packaged")
    assert name == "all-MiniLM-L6-v2" and (folder / "config.json").is_file()
    assert export.max_seq_length(folder) == 256


def test_service_does_not_import_torch() -> None:
    code = ("import sys, semcache.embeddings.service, semcache.embeddings.fake; "
            "bad = [m for m in ('torch', 'transformers', 'sentence_transformers') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
