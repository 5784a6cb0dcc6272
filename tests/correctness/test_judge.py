"""The judge as one object: threshold resolution, checks, the pair model and the reasons it
gives, without HTTP (a stand-in model scores pairs; the real one is tested beside)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from semcache.proxy.judge import Ask, Candidate, Judge, JudgeSettings
from semcache.proxy.judge.observations import MemoryObservations


class Fixed:
    """A pair model that gives every pair one score and counts its calls."""

    def __init__(self, score: float) -> None:
        self.value, self.calls = score, 0

    async def score(self, pairs: list[tuple[str, str]]) -> Any:
        self.calls += 1
        return np.full(len(pairs), self.value, dtype=np.float32)


def judge(score: float | None = 0.9, runtime: float | None = None, **settings: Any) -> Judge:
    j = Judge(JudgeSettings(**settings), MemoryObservations(max_wrong_rate=0.05),
              runtime_threshold=lambda: runtime)
    j.model = None if score is None else Fixed(score)
    return j


def cand(text: str, similarity: float, **kw: Any) -> Candidate:
    return Candidate(entry_id="e1", text=text, similarity=similarity, **kw)


async def verdict(j: Judge, ask: str, cached: str, similarity: float, **ask_kw: Any) -> Any:
    return await j.session(Ask(text=ask, scope="s", **ask_kw)).consider(cand(cached, similarity))


async def test_a_request_threshold_moves_the_bar_but_keeps_checks_and_model() -> None:
    q, near = "How do I reverse a list in Python?", "How do I reverse a list in Ruby?"
    # A threshold of 0 lowers the bar; the languages check still stops another language
    v = await verdict(judge(0.99), near, q, 0.9, threshold=0.0)
    assert (v.serve, v.reason, v.threshold) == (False, "check", 0.0) and "languages" in v.checks
    # and the model still reads what the checks let through
    low = judge(0.1)
    v = await verdict(low, "how can I reverse a Python list", q, 0.5, threshold=0.0)
    assert (v.serve, v.reason, v.score) == (False, "model", pytest.approx(0.1))
    assert low.model.calls == 1  # type: ignore[union-attr]
    # a threshold above the similarity is a miss whatever the model says
    v = await verdict(judge(0.99), "how can I reverse a Python list", q, 0.9, threshold=0.95)
    assert (v.serve, v.reason) == (False, "below-threshold")
    # only an explicit similarity judgement drops the checks and the model
    v = await verdict(judge(0.1), near, q, 0.93, similarity_only=True)
    assert (v.serve, v.score, v.threshold) == (True, None, 0.92)


async def test_the_run_time_threshold_applies_with_the_model_on() -> None:
    q, para = "How do I learn Python quickly?", "How can I learn Python fast?"
    assert (await verdict(judge(0.95), para, q, 0.9)).serve  # the model's floor: 0.30
    v = await verdict(judge(0.95, runtime=0.93), para, q, 0.9)
    assert (v.serve, v.reason, v.threshold) == (False, "below-threshold", 0.93)
    assert (await verdict(judge(0.95, runtime=0.85), para, q, 0.9)).serve
    # the request's own threshold wins over the run-time one
    assert (await verdict(judge(0.95, runtime=0.93), para, q, 0.9, threshold=0.8)).serve


async def test_while_the_model_loads_nothing_under_the_configured_threshold_is_served() -> None:
    q, para = "How do I learn Python quickly?", "How can I learn Python fast?"
    loading = judge(None)
    v = await verdict(loading, para, q, 0.9)
    assert (v.serve, v.reason, v.threshold) == (False, "below-threshold", 0.92)
    assert (await verdict(loading, para, q, 0.9, threshold=0.5)).threshold == 0.92  # fail closed
    off = judge(None, model=False)  # the operator chose similarity and checks alone
    assert (await verdict(off, para, q, 0.9, threshold=0.85)).serve


async def test_one_token_of_code_changed_is_a_miss_and_the_same_code_reworded_is_not() -> None:
    code = "Why does this skip the last item?\n```js\nfor (let i = 0; i < n; i++) {\n  use(a[i]);\n}\n```"
    edited = code.replace("i < n", "i <= n")
    v = await verdict(judge(0.99), edited, code, 0.99)
    assert (v.serve, v.reason, v.checks) == (False, "check", ("code",))
    reworded = ("How come this loop misses the final element?\n\n"
                "> for (let i = 0; i < n; i++) {\n>     use(a[i]);\n> }")
    assert (await verdict(judge(0.99), reworded, code, 0.8)).serve


async def test_soft_checks_ask_more_of_the_model() -> None:
    q = "What is the boiling point of water?"
    polite = "I don't know if this is basic, but what is the boiling point of water tomorrow?"
    # 'tomorrow' fires the dates check, a soft one: the model must be surer than usual
    v = await verdict(judge(0.9), polite, q, 0.8)
    assert (v.serve, v.reason, v.checks) == (False, "check", ("dates",))
    assert (await verdict(judge(0.97), polite, q, 0.8)).serve
    # without the model a soft check stops the candidate like any other
    v = await verdict(judge(None, model=False), polite, q, 0.95)
    assert (v.serve, v.reason) == (False, "check")


async def test_one_model_run_per_lookup_and_the_best_candidate_explains_the_miss() -> None:
    j = judge(0.2)
    session = j.session(Ask(text="How can I learn Python fast?", scope="s"))
    first = await session.consider(cand("How do I learn Python quickly?", 0.95))
    second = await session.consider(cand("Best way to learn Python?", 0.9))
    assert (first.reason, second.reason) == ("model", "not-scored")
    assert j.model.calls == 1 and session.best is first  # type: ignore[union-attr]


async def test_wrong_hit_evidence_raises_an_entrys_bar_and_says_so() -> None:
    q, para = "How do I learn Python quickly?", "How can I learn Python fast?"
    wrong = cand(q, 0.9, observations=((0.9, False),))
    v = await judge(0.99).session(Ask(text=para, scope="s")).consider(wrong)
    assert (v.serve, v.reason) == (False, "raised-by-feedback") and v.threshold > 0.9
    # a request's own threshold is the client's choice: the evidence does not move it
    v = await judge(0.99).session(Ask(text=para, scope="s", threshold=0.5)).consider(wrong)
    assert v.serve and v.threshold == 0.5


async def test_long_pairs_are_checked_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks' cost grows with the text: a long pair is checked in another thread than
    the event loop's, so the loop keeps answering meanwhile."""
    import threading

    from semcache.proxy.judge import judge as judge_module

    threads: list[int] = []
    real = judge_module.run_checks

    def spy(a: str, b: str, enabled: Any) -> Any:
        threads.append(threading.get_ident())
        return real(a, b, enabled)

    monkeypatch.setattr(judge_module, "run_checks", spy)
    words = " ".join(f"term{i} value{i * 7}" for i in range(180))
    pairs = [(f"Context: {words}. Question {i}: what is item {i}?",
              f"Context: {words}. Question {i}: which is item {i}?") for i in range(20)]
    j = judge(0.9)
    worst, running = 0.0, True

    async def probe() -> None:
        nonlocal worst
        while running:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - t)

    task = asyncio.create_task(probe())
    started = time.perf_counter()
    for a, b in pairs:
        await j.session(Ask(text=b, scope="s")).consider(cand(a, 0.99))
    spent = time.perf_counter() - started
    running = False
    await task
    loop_thread = threading.get_ident()
    assert len(threads) == len(pairs) and loop_thread not in threads
    assert worst < max(0.1, spent / 2), (worst, spent)  # no wait as long as the work itself
    # a short pair is checked inline: a thread hop would cost more than the checks
    await j.session(Ask(text="How do I learn Python?", scope="s")).consider(
        cand("How can I learn Python?", 0.99))
    assert threads[-1] == loop_thread


PAIRS = [
    ("How do I learn Python quickly?", "How can I learn Python fast?"),
    ("What changed in Python 3.8?", "What changed in Python 3.12?"),
    ("Which flights go from Boston to Denver?", "Which flights go from Denver to Boston?"),
    ("What foods should I eat during pregnancy?", "What foods should I not eat during pregnancy?"),
    ("How do I close my account?", "What's the process to shut my account down?"),
    ("Write a tagline for my bakery.", "Write a mission statement for my bakery."),
    ("Summarize this article in three sentences.", "Summarize this article in three pages."),
    ("I don't want to bother you, but how do I reset my password?", "How do I reset my password?"),
    ("Fix this: `if (a && b) run();`", "Fix this: `if (a || b) run();`"),
    ("Compare AWS and Azure for a small startup.", "Compare Azure and AWS for a small startup."),
    ("Explain recursion to a five-year-old.", "Explain recursion to a software engineer."),
    ("how do i bake bread", "How do I bake bread?"),
]


@pytest.mark.slow
async def test_the_proxy_and_eval_decide_the_same(aiohttp_client: Any, redis_url: str,
                                                   upstream: Any, model_dir: Any) -> None:
    """One judge, two callers: the pairs through the running proxy (a the entry, b the
    request, each pair in its own namespace) get the verdicts `semcache eval` reports."""
    from dataclasses import replace

    from conftest import make_settings, start_judged_proxy

    from semcache.proxy.app import SERVICE
    from semcache.proxy.judge.evaluate import _Scorer, embed_all, judge_verdicts
    from semcache.proxy.judge.model import load_scorer

    settings = make_settings(redis_url, upstream.base_url, model_dir, cache__semantic=True,
                             judge__model=True)
    client = await start_judged_proxy(aiohttp_client, settings)
    proxied = []
    for i, (a, b) in enumerate(PAIRS):
        headers = {"X-Semcache-Namespace": f"pair-{i}"}
        for text, extra in ((a, {}), (b, {"Cache-Control": "no-store"})):
            body = {"model": "fake-model", "messages": [{"role": "user", "content": text}]}
            resp = await client.post("/v1/chat/completions", json=body, headers={**headers, **extra})
            await client.app[SERVICE].drain(10)
        outcome = resp.headers["X-Semcache"]
        proxied.append((outcome == "hit-semantic",
                        "served" if outcome.startswith("hit") else resp.headers["X-Semcache-Reason"]))

    eval_settings = replace(settings, embeddings=replace(settings.embeddings, device="cpu"))
    rows = [{"a": a, "b": b, "label": 0} for a, b in PAIRS]
    vectors, read = await embed_all(eval_settings, [a for a, _ in PAIRS] + [b for _, b in PAIRS])
    n = len(PAIRS)
    sims = np.round(np.sum(vectors[:n] * vectors[n:], axis=1).astype(np.float64), 5)
    scorer = _Scorer({}, load_scorer(eval_settings.judge, model_dir))
    verdicts = await judge_verdicts(rows, sims, read[:n] & read[n:], eval_settings, scorer)
    assert proxied == [(v.serve, v.reason) for v in verdicts]
    assert any(s for s, _ in proxied) and not all(s for s, _ in proxied)  # both kinds seen
