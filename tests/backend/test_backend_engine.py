"""The scheduler and the runner on a tiny random Llama (CPU, fp32)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from semcache.backend.engine import Engine, SamplingParams
from semcache.backend.errors import EngineStopped, InvalidRequest, QueueFull

from .conftest import until

PROMPTS = [[5, 6, 7], [10, 20, 30, 40, 50, 60, 70], [9], [44, 45, 46, 47, 48] * 4,
           [60, 61], [33, 34, 35, 36]]


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)


async def run(engine: Engine, prompt: list[int], params: SamplingParams,
              started: asyncio.Event | None = None) -> tuple[list[int], str]:
    tokens, reason = [], ""
    async for event in engine.open_stream(prompt, params):
        if event.tokens:
            tokens.extend(event.tokens)
            if started is not None:
                started.set()
        reason = event.finish_reason or reason
    return tokens, reason


async def alone(engine: Engine, prompts, params_for) -> list[list[int]]:
    return [(await run(engine, p, params_for(i)))[0] for i, p in enumerate(prompts)]


def test_runner_matches_transformers_generate(tiny) -> None:
    from semcache.backend.runner import ModelRunner

    model, _ = tiny
    runner = ModelRunner(model, slots=2, max_seq_len=128, cuda_graphs=False)
    prompt = PROMPTS[1]
    expected = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                              dtype=torch.long), max_new_tokens=12, do_sample=False,
                              eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    tokens = [int(runner.prefill(1, [prompt]).argmax())]  # slot 1: slots are independent
    runner.move_slot(1, 0, len(prompt))
    for i in range(11):
        tokens.append(int(runner.decode([tokens[-1]], [len(prompt) + i]).argmax()))
    assert tokens == expected


async def test_batched_equals_alone_greedy(make_engine) -> None:
    engine = make_engine()
    engine.start()
    lengths = [12, 20, 7, 16, 25, 3]
    solo = await alone(engine, PROMPTS, lambda i: greedy(lengths[i]))
    together = await asyncio.gather(*(run(engine, p, greedy(lengths[i]))
                                      for i, p in enumerate(PROMPTS)))
    assert [t for t, _ in together] == solo
    assert all(reason == "length" for _, reason in together)
    assert [len(t) for t in solo] == lengths
    assert engine.stats()["peak_running"] == len(PROMPTS)


async def test_joins_and_leaves_mid_generation(make_engine) -> None:
    """Sequences join while others decode and leave at different steps (slots get
    compacted under the survivors); every output still equals its solo run."""
    engine = make_engine(max_batch=4)
    engine.start()
    lengths = [40, 5, 30, 9, 22, 14]
    solo = await alone(engine, PROMPTS, lambda i: greedy(lengths[i]))
    tasks = []
    for i, prompt in enumerate(PROMPTS):
        started = asyncio.Event()
        tasks.append(asyncio.ensure_future(run(engine, prompt, greedy(lengths[i]), started)))
        await started.wait()  # the next one joins a batch that is mid-generation
    results = await asyncio.gather(*tasks)
    assert [t for t, _ in results] == solo


async def test_newcomer_does_not_wait_for_long_sequences(make_engine) -> None:
    """A request arriving while 31 others generate joins them at the next step."""
    # Speculation off: the test counts steps, and accepted drafts would shorten them.
    engine = make_engine(max_batch=32, max_queue=64, speculative="off")
    engine.start()
    started = asyncio.Event()
    long_runs = [asyncio.ensure_future(run(engine, PROMPTS[i % len(PROMPTS)], greedy(200),
                                           started)) for i in range(31)]
    await started.wait()
    stream = engine.open_stream(PROMPTS[4], greedy(5))
    async for _ in stream:
        pass
    await asyncio.gather(*long_runs)
    # It was admitted mid-generation and left after its own 5 tokens, while the others,
    # which need 200 steps, were still generating.
    assert stream.seq.admitted_step > 0
    assert stream.seq.finished_step - stream.seq.admitted_step == 5
    assert stream.seq.finished_step < 200
    assert engine.stats()["peak_running"] == 32
    assert all(len(r.result()[0]) == 200 for r in long_runs)


async def test_seeded_sampling_is_independent_of_the_batch(make_engine) -> None:
    engine = make_engine()
    engine.start()

    def params(i: int) -> SamplingParams:
        return SamplingParams(max_tokens=15, temperature=0.9, top_p=0.8, seed=100 + i,
                              ignore_eos=True)

    solo = await alone(engine, PROMPTS, params)
    together = await asyncio.gather(*(run(engine, p, params(i)) for i, p in enumerate(PROMPTS)))
    assert [t for t, _ in together] == solo
    again = await run(engine, PROMPTS[0], params(1))  # another seed, another answer
    assert again[0] != solo[0]


async def test_cancel_frees_the_slot(make_engine) -> None:
    engine = make_engine()
    engine.start()
    stream = engine.open_stream(PROMPTS[0], greedy(400))
    async for _ in stream:
        break
    stream.cancel()
    await until(lambda: engine.stats()["running"] == 0)
    assert stream.seq.finish_reason == "cancelled"
    assert len(stream.seq.generated) < 400


async def test_queue_bound_and_prompt_limits(make_engine) -> None:
    engine = make_engine(max_queue=2, max_seq_len=64)
    engine.pause()
    engine.start()
    streams = [engine.open_stream(PROMPTS[0], greedy(3)) for _ in range(2)]
    with pytest.raises(QueueFull):
        engine.open_stream(PROMPTS[0], greedy(3))
    with pytest.raises(InvalidRequest):
        engine.open_stream(list(range(3, 70)), greedy(3))
    engine.resume()
    for stream in streams:
        assert [e async for e in stream][-1].finish_reason == "length"


async def test_eos_stops_and_context_limit_is_length(make_engine) -> None:
    engine = make_engine(max_seq_len=16)
    engine.start()
    tokens, reason = await run(engine, PROMPTS[0], greedy(100))
    assert reason == "length" and len(PROMPTS[0]) + len(tokens) == 16
    eos_engine = make_engine()
    eos_engine.eos_token_ids = {tokens[2]}
    eos_engine.start()
    tokens2, reason2 = await run(eos_engine, PROMPTS[0], SamplingParams(max_tokens=50,
                                                                      temperature=0.0))
    assert reason2 == "stop" and tokens2 == tokens[: tokens.index(tokens[2]) + 1]


async def test_top_p_zero_is_greedy(make_engine) -> None:
    engine = make_engine()
    engine.start()
    tokens, _ = await run(engine, PROMPTS[1], greedy(12))
    nucleus = SamplingParams(max_tokens=12, temperature=1.5, top_p=0.0, ignore_eos=True)
    assert (await run(engine, PROMPTS[1], nucleus))[0] == tokens


async def test_a_failing_worker_fails_its_requests(make_engine) -> None:
    engine = make_engine()

    def broken(*args, **kwargs):
        raise RuntimeError("device lost")

    engine.runner.decode = broken  # type: ignore[method-assign]
    engine.start()
    with pytest.raises(EngineStopped):
        await run(engine, PROMPTS[0], greedy(5))
    assert not engine.healthy
    with pytest.raises(EngineStopped):
        engine.open_stream(PROMPTS[0], greedy(5))


def test_settings_refuse_bad_values() -> None:
    from semcache.backend.settings import BackendSettings

    with pytest.raises(ValueError, match="backend.max_batch"):
        BackendSettings(max_batch=0)
    with pytest.raises(ValueError, match="backend.device"):
        BackendSettings(device="tpu")


def test_unsupported_architectures_are_refused() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from semcache.backend.errors import ModelLoadError
    from semcache.backend.runner import ModelRunner

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=99))
    with pytest.raises(ModelLoadError, match="gpt2"):
        ModelRunner(gpt2, slots=2, max_seq_len=64)


async def test_prefill_budget_splits_admission(make_engine) -> None:
    """With a budget of 40 padded tokens, a 30-token prompt is prefilled alone and short
    ones after it in a later step; greedy outputs are unchanged."""
    prompts = [list(range(3, 33)), [5, 6], [7, 8, 9], [10, 11]]
    # No prefix cache: the solo runs would leave the long prompt's first block cached.
    engine = make_engine(max_prefill_tokens=40, prefix_cache_tokens=0)
    engine.start()
    solo = await alone(engine, prompts, lambda i: greedy(6))
    engine.pause()
    streams = [engine.open_stream(p, greedy(6)) for p in prompts]
    engine.resume()
    results = [[t async for e in s for t in e.tokens] for s in streams]
    assert results == solo
    steps = [s.seq.admitted_step for s in streams]
    assert steps[0] < steps[1] == steps[2] == steps[3]
