"""How a batch is cut into model runs (OnnxEncoder._split) and the CUDA wait-mode switch."""

from __future__ import annotations

import numpy as np
import pytest

from semcache.embeddings.encoder import OnnxEncoder, set_cuda_sync
from semcache.embeddings.errors import EmbeddingError


class Rule:
    """Just the two attributes _split reads."""

    def __init__(self, slack: float, floor: float, chunk_rows: int) -> None:
        self.pad_rule = (slack, floor)
        self.chunk_rows = chunk_rows


@pytest.mark.parametrize("slack,floor,chunk_rows", [(1.25, 64, 32), (1.1, 8192, 1024),
                                                     (1.0, 0, 7), (4.0, 16384, 1024)])
def test_runs_are_greedy_and_within_the_rule(slack: float, floor: float, chunk_rows: int) -> None:
    rng = np.random.default_rng(int(slack * 100 + chunk_rows))
    for _ in range(50):
        lengths = np.sort(rng.integers(1, 257, size=int(rng.integers(1, 3000))))
        runs = OnnxEncoder._split(Rule(slack, floor, chunk_rows), lengths)  # type: ignore[arg-type]
        # The runs tile the batch in order.
        assert runs[0].start == 0 and runs[-1].stop == len(lengths)
        assert all(a.stop == b.start for a, b in zip(runs, runs[1:], strict=False))
        for run in runs:
            part = lengths[run]
            n = len(part)
            assert 1 <= n <= chunk_rows
            if n > 1:  # padded to its longest, within slack x real + floor
                assert n * part[-1] <= slack * part.sum() + floor
            if run.stop < len(lengths) and n < chunk_rows:
                # Greedy: the next row would have broken the rule.
                grown = lengths[run.start:run.stop + 1]
                assert (n + 1) * grown[-1] > slack * grown.sum() + floor


def test_a_small_batch_is_one_run_on_cuda() -> None:
    """The CUDA rule's floor keeps a live proxy's batches whole (64 texts of up to 128 tokens)."""
    from semcache.embeddings.encoder import PAD_RULE

    lengths = np.sort(np.r_[np.full(63, 8), 128])
    runs = OnnxEncoder._split(Rule(*PAD_RULE["cuda"], 1024), lengths)  # type: ignore[arg-type]
    assert len(runs) == 1


def test_cuda_sync_modes() -> None:
    assert set_cuda_sync("auto")  # CUDA's default: nothing to set, on any machine
    with pytest.raises(EmbeddingError, match="cuda_sync"):
        set_cuda_sync("busy")
