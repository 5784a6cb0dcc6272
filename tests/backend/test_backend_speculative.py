"""Speculative decoding: drafts, the acceptance rule, and the engine with it on and off."""

from __future__ import annotations

import asyncio
import collections
import copy
import dataclasses
import random
from typing import Any

import pytest
import torch

from semcache.backend.decoding import Decoder, Speculation
from semcache.backend.engine import Engine, SamplingParams
from semcache.backend.runner import ModelRunner
from semcache.backend.sampling import probabilities, sample
from semcache.backend.sequence import Sequence
from semcache.backend.server import build_engine
from semcache.backend.speculative import NgramDrafter, accept_exact, accept_sampled

from .conftest import TINY_SETTINGS
from .test_backend_engine import greedy, run

# Prompts chosen so that, with n-grams down to 1 token, the tiny model's answers both
# accept and reject drafts (its random weights fall into loops, which drafts predict).
PROMPTS = [list(range(10, 30)) + [14, 15, 16], [40, 41, 42, 43] * 3 + [40, 41],
           list(range(60, 70)) * 2 + [60, 61, 62], [5, 6, 7, 8, 9, 5, 6],
           [50, 51, 52, 53, 54, 55, 56, 50, 51, 52], [33, 34]]
LENGTHS = [40, 33, 47, 25, 38, 30]
NGRAM_ALL = {"speculative": "ngram", "speculative_ngram_min": 1}


async def outputs(engine: Engine, params_for, together: bool = True) -> list[list[int]]:
    if together:
        results = await asyncio.gather(*(run(engine, p, params_for(i))
                                         for i, p in enumerate(PROMPTS)))
    else:
        results = [await run(engine, p, params_for(i)) for i, p in enumerate(PROMPTS)]
    return [tokens for tokens, _ in results]


# ---- prompt lookup ----------------------------------------------------------------------


def test_ngram_drafter_proposes_what_followed_the_latest_occurrence() -> None:
    drafter = NgramDrafter([1, 2, 3, 4, 9, 1, 2, 3, 7, 1, 2], sizes=(3, 2))
    # "1 2" occurred twice before; the latest occurrence was followed by 3 7 1 2.
    assert drafter.propose(3) == [3, 7, 1]
    drafter.extend([3])
    # Now "1 2 3" (the longest size) matches: its latest occurrence is at 5..7, then 7.
    assert drafter.propose(10) == [7, 1, 2, 3]
    drafter.extend([5])
    assert drafter.propose(4) == []  # "3 5" and "2 3 5" never occurred before
    assert drafter.propose(0) == []


def test_ngram_drafter_built_incrementally_equals_built_at_once() -> None:
    rng = random.Random(3)
    tokens = [rng.randrange(6) for _ in range(300)]
    grown = NgramDrafter(tokens[:10], sizes=(4, 2, 1))
    for i in range(10, 300, 7):
        grown.extend(tokens[i : i + 7])
        whole = NgramDrafter(tokens[: i + 7], sizes=(4, 2, 1))
        assert grown.propose(5) == whole.propose(5)
        assert grown._seen == whole._seen


# ---- the acceptance rule -----------------------------------------------------------------


def test_accept_exact_keeps_drafts_up_to_the_first_mismatch() -> None:
    assert accept_exact([4, 5, 6, 7], [4, 5, 6]) == [4, 5, 6, 7]  # all kept, plus the bonus
    assert accept_exact([4, 9, 6, 7], [4, 5, 6]) == [4, 9]  # the target's token replaces 5
    assert accept_exact([8, 5, 6, 7], [4, 5, 6]) == [8]  # nothing kept: one token, as ever
    assert accept_exact([3], []) == [3]


def _seq(seed: int, temperature: float = 1.0, top_p: float = 1.0) -> Sequence:
    params = SamplingParams(max_tokens=10, temperature=temperature, top_p=top_p)
    return Sequence(0, [1], params, lambda e: None, random.Random(seed))


def _tv(counts: collections.Counter, probs: torch.Tensor, total: int) -> float:
    return 0.5 * sum(abs(counts.get(t, 0) / total - float(p)) for t, p in enumerate(probs))


def test_accept_sampled_emits_the_target_distribution() -> None:
    """Drafts drawn from a q far from the target's p: the emitted tokens follow p, at the
    first position and at the second one whenever the first draft was kept."""
    target = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, 1.5], [0.0, 2.5, -0.5, 1.0, 0.3, -2.0]])
    drafter = torch.tensor([[0.0, 0.0, 3.0, 0.0, 1.0, -1.0]])
    p = probabilities(target, 1.0, 1.0)
    q = probabilities(drafter, 1.0, 1.0)
    first, second = collections.Counter(), collections.Counter()
    kept, trials = 0, 5000
    for i in range(trials):
        seq = _seq(i)
        x = random.Random(10**6 + i).choices(range(6), weights=q[0].tolist())[0]
        tokens = accept_sampled(target, q, [x], seq)
        first[tokens[0]] += 1
        if len(tokens) == 2:
            kept += 1
            second[tokens[1]] += 1
    # Bounds of about three standard errors at these counts; a rule that is off (keeping
    # drafts with probability p instead of p / q, say) misses them by a factor of several.
    assert _tv(first, p[0], trials) < 0.03
    assert _tv(second, p[1], kept) < 0.05
    # Acceptance is sum(min(p, q)), the rule's optimum for this pair.
    assert abs(kept / trials - float(torch.minimum(p[0], q[0]).sum())) < 0.02


def test_accept_sampled_respects_top_p() -> None:
    """A draft outside the target's nucleus is always rejected, and nothing outside the
    nucleus is ever emitted."""
    target = torch.tensor([[3.0, 2.5, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    q = torch.tensor([[0.1, 0.1, 0.7, 0.1]])
    emitted = collections.Counter()
    for i in range(2000):
        tokens = accept_sampled(target, q, [2], _seq(i, temperature=1.0, top_p=0.7))
        emitted[tokens[0]] += 1
    assert set(emitted) <= {0, 1}


# ---- the engine: identical outputs, on and off -----------------------------------------


@pytest.fixture(scope="module")
def draft_model(tiny) -> Any:
    """The tiny model with noise on its output layer: a drafter that agrees with it about
    half the time, so drafts are kept and rejected and the rule's residual path runs."""
    draft = copy.deepcopy(tiny[0])
    noise = torch.randn(draft.lm_head.weight.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        draft.lm_head.weight.add_(noise * 0.2)
    return draft


def _engine(tiny, draft: Any = None, **overrides: Any) -> Engine:
    settings = dataclasses.replace(TINY_SETTINGS, **overrides)
    return build_engine(tiny[0], tiny[1], settings, "tiny", draft)


@pytest.fixture
def engines(tiny):
    made: list[Engine] = []

    def make(draft: Any = None, **overrides: Any) -> Engine:
        engine = _engine(tiny, draft, **overrides)
        engine.start()
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.stop()


async def test_greedy_outputs_identical_with_and_without_speculation(engines) -> None:
    plain = await outputs(engines(speculative="off"), lambda i: greedy(LENGTHS[i]), False)
    lookup = engines(**NGRAM_ALL)
    assert await outputs(lookup, lambda i: greedy(LENGTHS[i])) == plain
    stats = lookup.stats()
    # Both paths ran: drafts kept and drafts rejected, rows with and without drafts.
    assert 0 < stats["draft_tokens_accepted"] < stats["draft_tokens"]
    assert stats["verify_steps"] > 0 and stats["decode_steps"] > 0
    assert stats["tokens_generated"] == sum(LENGTHS)
    assert stats["steps"] < sum(LENGTHS)  # fewer steps than one token per step alone


async def test_greedy_outputs_identical_with_a_draft_model(engines, tiny, draft_model) -> None:
    plain = await outputs(engines(speculative="off"), lambda i: greedy(LENGTHS[i]), False)
    for draft in (draft_model, tiny[0]):  # a poor drafter, and the model as its own
        engine = engines(draft, speculative="model", draft_model="given",
                         speculative_tokens=3)
        assert await outputs(engine, lambda i: greedy(LENGTHS[i])) == plain
        stats = engine.stats()
        assert stats["verify_steps"] > 0 and stats["draft_tokens_accepted"] > 0
        if draft is tiny[0]:
            assert stats["draft_acceptance"] == 1.0  # its own drafts are always right
        else:
            assert stats["draft_tokens_accepted"] < stats["draft_tokens"]


async def test_seeded_sampling_identical_with_prompt_lookup(engines) -> None:
    """Prompt-lookup drafts are kept exactly when they are the token the sequence's own
    random number picks, so seeded answers are the same token for token."""

    def params(i: int) -> SamplingParams:
        return SamplingParams(max_tokens=LENGTHS[i], temperature=0.8, top_p=0.9,
                              seed=7 + i, ignore_eos=True)

    plain = await outputs(engines(speculative="off"), params, False)
    lookup = engines(**NGRAM_ALL)
    assert await outputs(lookup, params) == plain
    assert lookup.stats()["draft_tokens_accepted"] > 0


async def test_sampling_with_a_draft_model_is_seeded_and_batch_independent(
        engines, draft_model) -> None:
    def params(i: int) -> SamplingParams:
        return SamplingParams(max_tokens=LENGTHS[i], temperature=0.9, seed=11 + i,
                              ignore_eos=True)

    engine = engines(draft_model, speculative="model", draft_model="given",
                     speculative_tokens=3)
    alone = await outputs(engine, params, together=False)
    together = await outputs(engine, params)
    assert together == alone
    assert [len(t) for t in alone] == LENGTHS
    assert 0 < engine.stats()["draft_tokens_accepted"] < engine.stats()["draft_tokens"]


async def test_stop_token_inside_kept_drafts_ends_the_answer(engines, monkeypatch) -> None:
    """A token that finishes the answer in the middle of a step's kept drafts ends it
    there: the drafts after it are dropped, as if the tokens came one per step."""
    import semcache.backend.decoding as decoding

    prompt = PROMPTS[0]
    reference, _ = await run(engines(speculative="off"), prompt, greedy(40))
    stop = reference[4]
    expected = reference[: reference.index(stop) + 1]
    monkeypatch.setattr(decoding, "NgramDrafter", lambda tokens, sizes: OracleDrafter(
        list(tokens), reference, [99], 99))  # drafts the true continuation: all kept
    lookup = engines(speculative="ngram")
    lookup.eos_token_ids = {stop}
    stream = lookup.open_stream(prompt, SamplingParams(max_tokens=40, temperature=0.0))
    events = [e async for e in stream]
    assert [t for e in events for t in e.tokens] == expected
    assert events[-1].finish_reason == "stop" and len(events[-1].tokens) > 1
    # max_tokens inside a step's drafts: exactly max_tokens tokens.
    tokens, reason = await run(lookup, prompt, greedy(9))
    assert (tokens, reason) == (reference[:9], "length")
    assert lookup.stats()["steps"] < len(expected) + 9


async def test_setting_turns_speculation_off(engines, tiny) -> None:
    engine = engines(speculative="off")
    await outputs(engine, lambda i: greedy(LENGTHS[i]))
    stats = engine.stats()
    assert stats["speculation"] == "off"
    assert stats["verify_steps"] == stats["draft_tokens"] == 0
    assert stats["decode_steps"] >= max(LENGTHS) - 1
    # No verify width is compiled or reserved either.
    assert engine.runner.widths == (1,) and engine.runner.max_draft == 0
    on = engines(**NGRAM_ALL)
    await outputs(on, lambda i: greedy(LENGTHS[i]))
    assert on.stats()["verify_steps"] > 0 and on.runner.widths == (1, 7)


async def test_step_token_bound_shortens_drafts_not_answers(engines) -> None:
    plain = await outputs(engines(speculative="off"), lambda i: greedy(LENGTHS[i]), False)
    bounded = engines(**NGRAM_ALL, speculative_step_tokens=12)  # 6 rows: 1 draft each
    assert await outputs(bounded, lambda i: greedy(LENGTHS[i])) == plain
    stats = bounded.stats()
    assert stats["verify_steps"] > 0
    assert stats["draft_tokens"] <= stats["verify_steps"] * len(PROMPTS)


# ---- the KV cache after rejections ----------------------------------------------------


class OracleDrafter:
    """Drafts the known greedy continuation with one token spoilt at a chosen depth, so
    each step keeps exactly that many drafts: every partial rejection depth, per row."""

    def __init__(self, prompt: list[int], reference: list[int], depths: list[int],
                 vocab: int) -> None:
        self.tokens = list(prompt)
        self.prompt_len, self.reference = len(prompt), reference
        self.depths, self.vocab, self.calls = depths, vocab, 0

    def extend(self, new: list[int]) -> None:
        self.tokens.extend(new)

    def propose(self, k: int) -> list[int]:
        done = len(self.tokens) - self.prompt_len
        draft = self.reference[done : done + k]
        depth = self.depths[self.calls % len(self.depths)]
        self.calls += 1
        if depth < len(draft):
            draft[depth] = (draft[depth] + 1) % self.vocab
        return draft


def _prefilled(runner: ModelRunner, decoder: Decoder, prompts: list[list[int]],
               params: SamplingParams) -> list[Sequence]:
    seqs = [Sequence(i, p, params, lambda e: None, random.Random(i))
            for i, p in enumerate(prompts)]
    for seq, first in zip(seqs, decoder.prefill(seqs, 0), strict=True):
        seq.slot = seqs.index(seq)
        seq.generated.extend(first)
    decoder.index_prompts(seqs)
    return seqs


def test_kv_cache_consistent_after_rejections(tiny) -> None:
    """After many steps that rejected drafts at every depth, each slot's KV up to the
    sequence's length equals that of prefilling its tokens afresh, and decoding goes on
    exactly as it would have."""
    model = tiny[0]
    vocab = model.config.vocab_size
    prompts = [PROMPTS[0], PROMPTS[3], PROMPTS[4]]
    # Rows keep fewer or more drafts per step, so they advance at different speeds: the
    # reference runs far enough ahead for the fastest.
    params = greedy(200)
    plain = Decoder(ModelRunner(model, slots=4, max_seq_len=320, cuda_graphs=False))
    seqs = _prefilled(plain.runner, plain, prompts, params)
    while len(seqs[0].generated) < 200:
        for seq, gained in zip(seqs, plain.step(seqs), strict=True):
            seq.generated.extend(gained)
    reference = [s.generated for s in seqs]

    runner = ModelRunner(model, slots=4, max_seq_len=320, cuda_graphs=False, max_draft=5)
    spec = Decoder(runner, speculation=Speculation(mode="ngram", tokens=5))
    seqs = _prefilled(runner, spec, prompts, params)
    for seq, ref, depths in zip(seqs, reference, ([0, 3, 1], [5, 2], [4, 0, 0, 2]),
                                strict=True):
        seq.drafter = OracleDrafter(seq.prompt, ref, depths, vocab)
    while min(len(s.generated) for s in seqs) < 40:
        for seq, gained in zip(seqs, spec.step(seqs), strict=True):
            seq.generated.extend(gained)
    assert [s.generated for s in seqs] == [r[: len(s.generated)] for s, r in zip(seqs, reference,
                                                                                 strict=True)]
    assert 0 < spec.accepted < spec.drafted

    fresh = ModelRunner(model, slots=4, max_seq_len=320, cuda_graphs=False)
    for seq in seqs:
        length = seq.next_position  # positions with valid KV
        tokens = (seq.prompt + seq.generated)[:length]
        fresh.prefill(seq.slot, [tokens])
        for cache, clean in ((runner.k_cache, fresh.k_cache), (runner.v_cache, fresh.v_cache)):
            torch.testing.assert_close(cache[:, seq.slot, :, :length],
                                       clean[:, seq.slot, :, :length], atol=1e-5, rtol=1e-5)
    logits = runner.decode([s.generated[-1] for s in seqs], [s.next_position for s in seqs])
    again = fresh.decode([s.generated[-1] for s in seqs], [s.next_position for s in seqs])
    torch.testing.assert_close(logits, again, atol=1e-4, rtol=1e-4)
    assert logits.argmax(-1).tolist() == [r[len(s.generated)] for s, r in zip(seqs, reference,
                                                                              strict=True)]


def test_verify_logits_equal_step_by_step_decoding(tiny) -> None:
    """One verifying pass over [newest, d1, d2, d3] gives the logits that feeding the same
    tokens one step at a time gives, in rows whose chunks have different lengths."""
    model = tiny[0]
    runner = ModelRunner(model, slots=2, max_seq_len=128, cuda_graphs=False, max_draft=3)
    prompts = [[5, 6, 7], [10, 20, 30, 40, 50]]
    runner.prefill(0, prompts)
    chunks = [[8, 9, 10, 11], [60, 61]]
    wide = runner.verify(chunks, [3, 5])
    step = ModelRunner(model, slots=2, max_seq_len=128, cuda_graphs=False)
    step.prefill(0, prompts)
    for j in range(4):
        rows = [0, 1] if j < 2 else [0]
        logits = step.decode([chunks[r][j] for r in rows], [len(prompts[r]) + j for r in rows])
        for r in rows:
            torch.testing.assert_close(wide[r, j], logits[r], atol=1e-4, rtol=1e-4)


def test_sample_is_what_exact_acceptance_compares_against() -> None:
    """accept_exact's targets come from `sample` with each position's own number: the same
    call plain decoding makes, so a kept draft is the token decoding would have chosen."""
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(1))
    uniforms = [0.1, 0.5, 0.9, 0.3, 0.7]
    together = sample(logits, [0.7] * 5, [0.9] * 5, uniforms)
    one_by_one = [sample(logits[i : i + 1], [0.7], [0.9], [u])[0] for i, u in enumerate(uniforms)]
    assert together == one_by_one


class EagerGraph:
    """Stands in for a captured CUDA graph on the CPU: replaying runs the same static body
    (a step, or a prefill) into the same output buffer, so the graph path's own logic (batch
    and length buckets, the fixed verify width, padded prefills, padding rows and queries,
    static inputs) runs without a GPU."""

    def __init__(self, body: Any, out: torch.Tensor, batch: int, kv_len: int,
                 width: int) -> None:
        self.body, self.out, self.shape = body, out, (batch, width, kv_len)

    def replay(self) -> None:
        self.out.copy_(self.body(*self.shape))


def fake_graphs(runner: ModelRunner) -> tuple[set, set]:
    """Put EagerGraphs in place of the runner's CUDA graphs; returns the (batch, kv_len,
    width) shapes of the steps and of the prefills that ran."""
    steps: set[tuple[int, int, int]] = set()
    prefills: set[tuple[int, int, int]] = set()
    made: dict[tuple, EagerGraph] = {}

    def graph(kind: str, body: Any, shapes: set) -> Any:
        def get(batch: int, kv_len: int, width: int) -> tuple[EagerGraph, torch.Tensor]:
            shapes.add((batch, kv_len, width))
            key = (kind, batch, kv_len, width)
            if key not in made:
                # A step's logits are [batch, width, vocab]; a prefill's [batch, vocab].
                shape = (batch, width) if kind == "step" else (batch,)
                out = torch.empty(*shape, runner.vocab_size)
                made[key] = EagerGraph(body, out, batch, kv_len, width)
            return made[key], made[key].out
        return get

    runner._graph = graph("step", runner._run_static, steps)  # type: ignore[method-assign]
    runner._prefill_graph = graph(  # type: ignore[method-assign]
        "prefill", runner._run_prefill_static, prefills)
    runner.use_graphs = True
    return steps, prefills


async def test_graph_path_buckets_and_padding_give_the_eager_answers(engines) -> None:
    plain = await outputs(engines(speculative="off", prefix_cache_tokens=0),
                          lambda i: greedy(LENGTHS[i]), False)
    engine = engines(**NGRAM_ALL, max_batch=8)
    runner = engine.runner
    shapes, prefills = fake_graphs(runner)
    assert await outputs(engine, lambda i: greedy(LENGTHS[i])) == plain
    # The prompts (2-23 tokens) were prefilled through the 32-wide prefill graphs.
    assert prefills and {w for _, _, w in prefills} == {32}
    assert {b for b, _, _ in prefills} <= set(runner.batch_buckets)
    widths = {w for _, _, w in shapes}
    assert widths == {1, 7}  # decoding, and verifying at the fixed width 1 + max_draft
    assert {b for b, _, _ in shapes} <= set(runner.batch_buckets)
    assert {n for _, n, _ in shapes} <= set(runner.len_buckets)
    assert any(b > 1 for b, _, _ in shapes)  # padded batches ran too


async def test_graphed_steps_draft_only_where_the_full_width_fits(engines) -> None:
    """Under CUDA graphs a verifying step is always 1 + k wide, so the step bound is all or
    nothing: with room for two rows of 7, steps of more rows decode plainly (the drafters
    skipped) and the answers stay those of plain decoding."""
    plain = await outputs(engines(speculative="off", prefix_cache_tokens=0),
                          lambda i: greedy(LENGTHS[i]), False)
    engine = engines(**NGRAM_ALL, max_batch=8, speculative_step_tokens=14)
    steps, _ = fake_graphs(engine.runner)
    assert await outputs(engine, lambda i: greedy(LENGTHS[i])) == plain
    wide = {b for b, _, w in steps if w == 7}
    assert wide and wide <= {1, 2}  # verify graphs ran, only for batches of 1-2 rows
    assert any(b > 2 for b, _, w in steps if w == 1)  # fuller batches decoded plainly
    assert engine.stats()["draft_tokens"] > 0
