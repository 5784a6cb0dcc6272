"""CUDA graphs replay the same decoding as the eager path (needs a GPU)."""

from __future__ import annotations

import pytest
import torch

from semcache.backend.runner import ModelRunner

from .conftest import make_model

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graphs_match_eager(dtype: torch.dtype) -> None:
    model = make_model(99).to("cuda", dtype)
    prompts = [[5, 6, 7], [10, 20, 30, 40, 50, 60, 70], [9], [44, 45, 46, 47] * 9]
    outputs = []
    for graphs in (False, True):
        runner = ModelRunner(model, slots=8, max_seq_len=256, cuda_graphs=graphs)
        tokens = [[t] for t in runner.prefill(0, prompts).argmax(-1).tolist()]
        for _ in range(150):  # crosses the 128-token length bucket
            logits = runner.decode([t[-1] for t in tokens],
                                   [len(p) + len(t) - 1 for p, t in zip(prompts, tokens, strict=True)])
            for t, nxt in zip(tokens, logits.argmax(-1).tolist(), strict=True):
                t.append(nxt)
        outputs.append(tokens)
    assert outputs[0] == outputs[1]
