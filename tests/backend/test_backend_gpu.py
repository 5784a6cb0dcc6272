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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_verify_graphs_match_eager() -> None:
    """A verifying step replayed from a graph (fixed width 1 + max_draft, padded rows and
    chunks) gives the eager step's logits, and the prefix pool copies work on the GPU."""
    model = make_model(99).to("cuda", torch.float32)
    prompts = [[5, 6, 7], [10, 20, 30, 40, 50, 60, 70], [9], [44, 45, 46, 47] * 9]
    chunks = [[8, 9, 10], [71], [11, 12, 13, 14, 15], [48, 49]]
    results = []
    for graphs in (False, True):
        runner = ModelRunner(model, slots=8, max_seq_len=256, cuda_graphs=graphs,
                             max_draft=4, prefix_blocks=8)
        if graphs:
            runner.warmup()
            assert len(runner._graphs) == (len(runner.batch_buckets) * len(runner.len_buckets)
                                           * 2)
        runner.prefill(0, prompts)
        logits = runner.verify(chunks, [len(p) for p in prompts])
        results.append([logits[i, : len(c)].cpu() for i, c in enumerate(chunks)])
        runner.save_prefix(3, [(0, 2), (1, 5)])  # blocks 0-1 of slot 3 into pool 2 and 5
        runner.load_prefix(6, [2, 5])
        assert torch.equal(runner.k_cache[:, 6, :, :32], runner.k_cache[:, 3, :, :32])
    for eager, graphed in zip(*results, strict=True):
        torch.testing.assert_close(graphed, eager, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prefill_graphs_match_eager() -> None:
    """Short prefills replayed from captured graphs (padded to a graph width, batch padded
    with rows that write only spare room, after a prefix copied from the pool) give the
    eager prefill's logits and K/V, leave another slot's cache alone, and decoding after
    them goes on identically."""
    model = make_model(99).to("cuda", torch.float32)
    system = [3 + i % 90 for i in range(3 * 16 + 5)]
    prompts = [system + q for q in ([70, 71, 72], [80, 81], [90, 91, 92, 93])]
    runs = []
    for graphs in (False, True):
        runner = ModelRunner(model, slots=8, max_seq_len=256, cuda_graphs=graphs,
                             max_draft=4, prefix_blocks=8)
        if graphs:
            runner.warmup()
            assert runner._prefill_graphs and runner.graph_count > len(runner._graphs)
        runner.prefill(0, [system + [7, 8, 9]])  # slot 0: a bystander's cache
        bystander = runner.k_cache[:, 0, :, :256].clone()
        runner.prefill(4, [system])
        runner.save_prefix(4, [(0, 0), (1, 1), (2, 2)])
        for slot in (1, 2, 3):
            runner.load_prefix(slot, [0, 1, 2])
        logits = runner.prefill(1, [p[48:] for p in prompts], [48] * 3)
        assert torch.equal(runner.k_cache[:, 0, :, :256], bystander)
        tokens = [[t] for t in logits.argmax(-1).tolist()]
        runner.move_slot(1, 0, 256)  # slots 0..2 now hold the three prompts
        runner.move_slot(2, 1, 256)
        runner.move_slot(3, 2, 256)
        for step in range(20):
            nxt = runner.decode([t[-1] for t in tokens],
                                [len(p) + step for p in prompts]).argmax(-1).tolist()
            for t, n in zip(tokens, nxt, strict=True):
                t.append(n)
        runs.append((logits.cpu(), runner.k_cache[:, :3, :, :60].cpu(), tokens))
    torch.testing.assert_close(runs[1][0], runs[0][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(runs[1][1], runs[0][1], atol=1e-4, rtol=1e-4)
    assert runs[1][2] == runs[0][2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
async def test_engine_on_cuda_speculation_and_prefix_cache(dtype: torch.dtype) -> None:
    """The whole engine on the GPU with graphs: concurrent greedy requests sharing a
    prefix, with speculation and prefix caching on and off. In float32 the answers are the
    same token for token. In bfloat16 a verifying step's wider matrix products round
    differently from a decoding step's, which can flip a near-tie and then the rest of that
    answer (batching alone does the same): most answers must still agree completely."""
    import asyncio
    import dataclasses

    from semcache.backend.engine import SamplingParams
    from semcache.backend.server import build_engine

    from .conftest import TINY_SETTINGS, make_tokenizer

    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer)).to("cuda", dtype)
    system = list(range(3, 60))
    prompts = [system + [70 + i, 71 + i] * (i + 1) for i in range(12)]
    params = SamplingParams(max_tokens=48, temperature=0.0, ignore_eos=True)

    async def answers(**overrides) -> tuple[list[list[int]], dict]:
        settings = dataclasses.replace(TINY_SETTINGS, device="cuda", cuda_graphs=True,
                                       max_seq_len=256, **overrides)
        engine = build_engine(model, tokenizer, settings, "tiny")
        engine.decoder.warmup()
        engine.start()
        try:
            async def one(prompt: list[int]) -> list[int]:
                return [t async for e in engine.open_stream(prompt, params) for t in e.tokens]

            first = await one(prompts[0])  # leaves the shared prefix cached
            rest = await asyncio.gather(*(one(p) for p in prompts[1:]))
            return [first, *rest], engine.stats()
        finally:
            engine.stop()

    plain, _ = await answers(speculative="off", prefix_cache_tokens=0)
    both, stats = await answers(speculative_ngram_min=1)
    assert stats["prefix_cached_tokens"] >= 11 * 48 and stats["draft_tokens_accepted"] > 0
    assert all(len(a) == 48 for a in both)
    same = sum(a == b for a, b in zip(plain, both, strict=True))
    assert same == len(prompts) if dtype == torch.float32 else same >= len(prompts) - 2
