"""Labelled prompt pairs: reading them and the fixed dev/test split (stdlib only)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

TEST_SHARE = 5
"""One pair in TEST_SHARE (by hash) is held out as `test`."""


def _pair_hash(a: str, b: str, salt: bytes = b"") -> int:
    """A number fixed by the pair's text (order-independent), not by its file position."""
    key = "\x00".join(sorted((a, b))).encode()
    return int.from_bytes(hashlib.sha256(salt + key).digest()[:4], "big")


def split_of(a: str, b: str) -> str:
    """`test` or `dev`."""
    return "test" if _pair_hash(a, b) % TEST_SHARE == 0 else "dev"


CALIBRATION_SHARE = 10
"""One dev pair in CALIBRATION_SHARE (by another hash) is also in the `calibration` split: the
verifier is trained on the rest of dev and its cut-off (`cache.verifier_min`) is chosen on
these, so neither the training nor that choice sees `test`, and the choice does not see
pairs the model was fitted to."""


def in_calibration(a: str, b: str) -> bool:
    return _pair_hash(a, b, b"calib") % CALIBRATION_SHARE == 0


def _in_split(row: dict[str, Any], split: str) -> bool:
    if split == "all":
        return True
    part = split_of(row["a"], row["b"])
    if split == "calibration":
        return part == "dev" and in_calibration(row["a"], row["b"])
    return part == split


def read_pairs(path: Path, split: str = "all", limit: int = 0) -> list[dict[str, Any]]:
    """Rows {"a", "b", "label", ["kind"]} of a .jsonl or .jsonl.gz file, one split of them
    (all, dev, test, or calibration: a tenth of dev)."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[dict[str, Any]] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            if _in_split(row, split):
                rows.append(row)
            if limit and len(rows) >= limit:
                break
    return rows
