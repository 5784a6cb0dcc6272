"""Fixtures of the embedding tests: real sentences, and one ONNX export per test session."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

QQP = Path(__file__).resolve().parents[3] / "shared" / "data" / "qqp_dev_pairs.jsonl.gz"
FALLBACK = Path("/work/shared/data/qqp_dev_pairs.jsonl.gz")


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    """300 distinct real questions (of varied length) from the Quora development pairs."""
    path = QQP if QQP.is_file() else FALLBACK
    if not path.is_file():
        pytest.skip("qqp_dev_pairs.jsonl.gz not found")
    seen: dict[str, None] = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            pair = json.loads(line)
            for text in (pair["a"], pair["b"]):
                seen.setdefault(text, None)
            if len(seen) >= 300:
                break
    return list(seen)[:300]


@pytest.fixture(scope="session")
def exported_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged MiniLM exported once (fp32 and int8) into a session data dir."""
    from semcache.embeddings.export import ensure_exported

    data_dir = tmp_path_factory.mktemp("embeddings-data")
    ensure_exported(data_dir, "packaged", ("fp32", "int8"))
    return data_dir
