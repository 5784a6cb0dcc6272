"""Prefix caching: the block bookkeeping, the KV copies, and the engine reusing prefixes."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from semcache.backend.prefix_cache import BLOCK_TOKENS, PrefixCache, chain_keys
from semcache.backend.runner import ModelRunner
from semcache.backend.sequence import TokenEvent

from .conftest import until
from .test_backend_engine import greedy, run

SYSTEM = list(range(3, 3 + 3 * BLOCK_TOKENS + 5))  # three full blocks and a bit
QUESTIONS = [[70, 71, 72], [80, 81], [90, 91, 92, 93], [60, 61, 62, 63, 64]]


# ---- bookkeeping ------------------------------------------------------------------------


def test_chain_keys_name_the_whole_prefix() -> None:
    a = chain_keys(list(range(40)), 40)
    assert len(a) == 2  # full blocks only
    assert chain_keys(list(range(40)), 40, known=a[:1]) == a
    # The same second block after a different first block is another key.
    other = chain_keys([99] + list(range(1, 40)), 40)
    assert other[0] != a[0] and other[1] != a[1]
    assert chain_keys(list(range(40)), 20) == a[:1]


def test_lru_eviction_keeps_recent_prefixes_and_whole_chains() -> None:
    cache = PrefixCache(blocks=4)
    first = chain_keys(list(range(48)), 48)  # 3 blocks
    assert [i for i, _ in cache.insert(first)] == [0, 1, 2]
    second = chain_keys(list(range(100, 132)), 32)  # 2 blocks: evicts first's oldest
    assert len(cache.insert(second)) == 2
    assert cache.evictions == 1
    assert cache.match(first) == []  # its first block is gone, so nothing matches
    assert len(cache.match(second)) == 2
    # A chain longer than the pool keeps its beginning, never evicting its own blocks.
    long = chain_keys(list(range(200, 296)), 96)  # 6 blocks
    placed = cache.insert(long)
    assert [i for i, _ in placed] == [0, 1, 2, 3]
    assert len(cache.match(long)) == 4 and len(cache) == 4


# ---- the runner's copies ------------------------------------------------------------------


def test_prefix_reuse_gives_identical_logits(tiny) -> None:
    """Prefilling only the part after a copied prefix gives the logits of prefilling the
    whole prompt, and decoding continues identically. Equal within float32 rounding: the
    shorter matrix products may sum in another order; they are not recomputations of a
    different thing."""
    model = tiny[0]
    runner = ModelRunner(model, slots=2, max_seq_len=128, cuda_graphs=False,
                         prefix_blocks=8)
    prompt = SYSTEM + QUESTIONS[0]
    whole = runner.prefill(0, [prompt])
    cache = PrefixCache(blocks=8)
    keys = chain_keys(prompt, len(prompt))
    runner.save_prefix(0, cache.insert(keys))
    blocks = cache.match(chain_keys(prompt, len(prompt)))
    cached = len(blocks) * BLOCK_TOKENS
    runner.load_prefix(1, blocks)
    reused = runner.prefill(1, [prompt[cached:]], [cached])
    torch.testing.assert_close(reused, whole, atol=1e-5, rtol=1e-5)
    assert reused.argmax(-1).tolist() == whole.argmax(-1).tolist()
    # The copied KV is the computed KV, bit for bit.
    assert torch.equal(runner.k_cache[:, 1, :, :cached], runner.k_cache[:, 0, :, :cached])
    token = int(whole.argmax())
    for position in range(len(prompt), len(prompt) + 10):
        both = runner.decode([token, token], [position, position])
        torch.testing.assert_close(both[1], both[0], atol=1e-5, rtol=1e-5)
        assert int(both[0].argmax()) == int(both[1].argmax())
        token = int(both[0].argmax())


def test_prefill_graph_after_a_prefix_gives_the_eager_logits(tiny) -> None:
    """The short-prefill graph path (static buffer, width padded to 32, the batch padded
    with rows that write only the spare cache position, slots read by index) gives the
    eager prefill's logits and K/V, after a cached prefix too, and leaves the cache of a
    sequence in another slot untouched. The CUDA graph is replaced by running its body,
    so this checks the path's logic on the CPU; test_backend_gpu replays real graphs."""
    from .test_backend_speculative import fake_graphs

    eager = ModelRunner(tiny[0], slots=8, max_seq_len=256, cuda_graphs=False, prefix_blocks=8)
    graphed = ModelRunner(tiny[0], slots=8, max_seq_len=256, cuda_graphs=False,
                          prefix_blocks=8)
    _, prefills = fake_graphs(graphed)
    bystander = SYSTEM + [7, 8, 9]
    prompts = [SYSTEM + q for q in QUESTIONS[:3]]
    for runner in (eager, graphed):
        runner.prefill(0, [bystander])  # slot 0: a live sequence's cache
        runner.prefill(4, [SYSTEM])  # slot 4: the prefix, then saved into the pool
        runner.save_prefix(4, [(0, 0), (1, 1), (2, 2)])
    before = graphed.k_cache[:, 0].clone()
    cached = 3 * BLOCK_TOKENS
    results = []
    for runner in (eager, graphed):
        for slot in (1, 2, 3):
            runner.load_prefix(slot, [0, 1, 2])
        results.append(runner.prefill(1, [p[cached:] for p in prompts], [cached] * 3))
    assert prefills == {(1, 128, 128), (4, 128, 32)}  # bystander/prefix, then 3 rows -> 4
    torch.testing.assert_close(results[1], results[0], atol=1e-5, rtol=1e-5)
    for slot, p in zip((1, 2, 3), prompts, strict=True):
        torch.testing.assert_close(graphed.k_cache[:, slot, :, : len(p)],
                                   eager.k_cache[:, slot, :, : len(p)], atol=1e-5, rtol=1e-5)
    assert torch.equal(graphed.k_cache[:, 0, :, : graphed.max_seq_len],
                       before[:, :, : graphed.max_seq_len])
    # A prefill too long for the graphs runs eagerly.
    long = [3 + i % 90 for i in range(130)]
    torch.testing.assert_close(graphed.prefill(5, [long]), eager.prefill(5, [long]),
                               atol=1e-5, rtol=1e-5)
    assert all(w <= 128 for _, _, w in prefills) and len(prefills) == 2


# ---- the engine -------------------------------------------------------------------------


async def test_shared_prefix_is_reused_and_counted(make_engine) -> None:
    prompts = [SYSTEM + q for q in QUESTIONS]
    plain = make_engine(prefix_cache_tokens=0)
    plain.start()
    expected = [(await run(plain, p, greedy(12)))[0] for p in prompts]
    engine = make_engine()
    engine.start()
    assert [(await run(engine, p, greedy(12)))[0] for p in prompts] == expected
    stats = engine.stats()
    shared = 3 * BLOCK_TOKENS
    # The first prompt computes the shared blocks; the three after it copy them.
    assert stats["prefix_cached_tokens"] == 3 * shared
    assert stats["prefix_hits"] == 3
    assert stats["prefill_tokens"] == sum(len(p) for p in prompts) - 3 * shared
    assert plain.stats()["prefix_cached_tokens"] == 0


async def test_a_burst_sharing_an_uncached_prefix_computes_it_once(make_engine) -> None:
    """Four prompts with one uncached system prompt arrive together: the first is
    prefilled alone, the others a step later from the cached prefix."""
    prompts = [SYSTEM + q for q in QUESTIONS]
    engine = make_engine()
    engine.pause()
    engine.start()
    streams = [engine.open_stream(p, greedy(6)) for p in prompts]
    engine.resume()
    results = [[t async for e in s for t in e.tokens] for s in streams]
    steps = [s.seq.admitted_step for s in streams]
    assert steps[0] < steps[1] == steps[2] == steps[3]
    assert engine.stats()["prefix_cached_tokens"] == 3 * 3 * BLOCK_TOKENS
    plain = make_engine(prefix_cache_tokens=0)
    plain.start()
    assert results == [(await run(plain, p, greedy(6)))[0] for p in prompts]


async def test_next_turn_reuses_the_previous_answer(make_engine) -> None:
    """A conversation's next prompt holds the previous prompt and answer: their blocks
    were kept when the first answer finished."""
    engine = make_engine()
    engine.start()
    first = SYSTEM + QUESTIONS[0]
    answer, _ = await run(engine, first, greedy(30))
    before = engine.stats()["prefix_cached_tokens"]
    follow_up = first + answer + QUESTIONS[1]
    tokens, _ = await run(engine, follow_up, greedy(8))
    # Every full block of prompt + answer except the answer's last token (never fed).
    kept = (len(first) + len(answer) - 1) // BLOCK_TOKENS * BLOCK_TOKENS
    assert engine.stats()["prefix_cached_tokens"] - before == kept
    plain = make_engine(prefix_cache_tokens=0)
    plain.start()
    assert tokens == (await run(plain, follow_up, greedy(8)))[0]


async def test_prefix_cache_with_speculation_and_concurrency(make_engine) -> None:
    """Both on (the defaults), many requests sharing a prefix at once, some cancelled
    midway: every completed answer equals its answer with both off."""
    prompts = [SYSTEM + q + [7] * i for i in range(3) for q in QUESTIONS]
    plain = make_engine(prefix_cache_tokens=0, speculative="off")
    plain.start()
    expected = [(await run(plain, p, greedy(20)))[0] for p in prompts]
    engine = make_engine(max_batch=4, speculative_ngram_min=1)
    engine.start()
    doomed = [engine.open_stream(p, greedy(200)) for p in prompts[:3]]
    results = await asyncio.gather(*(run(engine, p, greedy(20)) for p in prompts))
    for stream in doomed:
        stream.cancel()
    assert [t for t, _ in results] == expected
    stats = engine.stats()
    assert stats["prefix_cached_tokens"] > 0 and stats["draft_tokens_accepted"] > 0


async def test_first_token_leaves_before_the_prompt_is_indexed(make_engine) -> None:
    """The copy of a new prompt's blocks into the prefix cache is not on the way to its
    first token: the token is handed over first and the blocks are cached right after; a
    sequence that finished at its first token kept its blocks too."""
    engine = make_engine()
    cached_at_event: list[int] = []
    done = threading.Event()

    def sink(event: TokenEvent) -> None:  # on the worker thread, as events are handed over
        cached_at_event.append(len(engine.decoder.prefix))
        if event.finish_reason is not None:
            done.set()

    engine.start()
    engine.submit(SYSTEM + QUESTIONS[0], greedy(3), sink)
    await until(done.is_set)
    assert cached_at_event[0] == 0 and cached_at_event[-1] >= 3
    other = [7] * (2 * BLOCK_TOKENS + 1)
    tokens, reason = await run(engine, other, greedy(1))
    assert (len(tokens), reason) == (1, "length")
    before = engine.stats()["prefix_cached_tokens"]
    await run(engine, other + [9], greedy(2))
    assert engine.stats()["prefix_cached_tokens"] - before == 2 * BLOCK_TOKENS


@pytest.mark.parametrize("pool_blocks", [
    [0, 1, 2],  # one run: slice copies
    [5, 6, 1],  # two runs
    [7, 3, 5],  # three runs
    None,  # more runs than MAX_SLICE_RUNS: the gather
])
def test_prefix_copies_in_runs_and_gathers_move_the_same_kv(tiny, pool_blocks) -> None:
    from semcache.backend.runner import MAX_SLICE_RUNS

    runner = ModelRunner(tiny[0], slots=2, max_seq_len=256, cuda_graphs=False,
                         prefix_blocks=16)
    prompt = [3 + (7 * i) % 90 for i in range(9 * BLOCK_TOKENS)]
    runner.prefill(0, [prompt])
    if pool_blocks is None:  # every other pool block: one run per block
        pool_blocks = [2 * i for i in range(MAX_SLICE_RUNS + 2)]
    placed = list(enumerate(pool_blocks))
    runner.save_prefix(0, placed)
    for at, block in placed:
        theirs = slice(block * BLOCK_TOKENS, (block + 1) * BLOCK_TOKENS)
        mine = slice(at * BLOCK_TOKENS, (at + 1) * BLOCK_TOKENS)
        assert torch.equal(runner.k_pool[:, :, theirs], runner.k_cache[:, 0, :, mine])
        assert torch.equal(runner.v_pool[:, :, theirs], runner.v_cache[:, 0, :, mine])
    runner.load_prefix(1, pool_blocks)
    n = len(pool_blocks) * BLOCK_TOKENS
    assert torch.equal(runner.k_cache[:, 1, :, :n], runner.k_cache[:, 0, :, :n])
    assert torch.equal(runner.v_cache[:, 1, :, :n], runner.v_cache[:, 0, :, :n])
