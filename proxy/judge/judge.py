"""The judge: may the answer cached for one prompt be served for another?

One object, no HTTP, shared by the proxy and `semcache eval`, so that what eval measures is
what the proxy serves. A judgement, for one lookup (`Judge.session`), goes candidate by
candidate, best first:

1. the similarity bar: the request's `X-Semcache-Threshold` (taken as it is), else the
   run-time threshold or, when the pair model reads candidates, its floor, else
   `judge.threshold`; without a request's own bar, adaptive thresholds raise it for entries
   and scopes whose observations call for it (judge/thresholds.py);
2. the cheap near-miss checks (judge/checks.py), whatever the threshold: any one stops the
   candidate, except a soft one (`judge.soft_checks`) where the model reads it, which
   then needs `judge.model_min_checked` of the model instead of `judge.model_min`;
3. the pair model, once per lookup, for a candidate in [bar, verify_below).
A request switches the checks and the model off only by asking for similarity alone
(`X-Semcache-Judge: similarity`).

Every verdict says why: `served`, `below-threshold`, `raised-by-feedback`, `check`,
`model`, `not-scored` (the lookup's one model run went to a better candidate) or
`too-long` (no model read a prompt the encoder cut off).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .checks import run_checks
from .settings import JudgeSettings
from .thresholds import applied_threshold

log = logging.getLogger(__name__)

INLINE_CHECK_CHARS = 1200
"""Pairs shorter than this are checked on the event loop (tens of microseconds, memoised);
longer ones in a thread: the checks' cost grows with the text (~4 ms per 1,000 characters)."""


class PairScorer(Protocol):
    """The pair model as the judge uses it (judge/model.py: PairModelService)."""

    async def score(self, pairs: list[tuple[str, str]]) -> np.ndarray: ...


class Observations(Protocol):
    """Where the scopes' adaptive thresholds come from (Redis in the proxy, memory in eval)."""

    def scope_threshold(self, scope: str, default: float) -> float: ...


@dataclass(frozen=True, kw_only=True)
class Ask:
    """The request side of a judgement."""

    text: str
    """The prompt matched by meaning (the last user message's text)."""
    scope: str
    """The scope id: adaptive thresholds are per scope."""
    threshold: float | None = None
    """The request's own similarity bar (`X-Semcache-Threshold`); None: the usual one."""
    similarity_only: bool = False
    """`X-Semcache-Judge: similarity`: the similarity alone decides, no checks, no model."""


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A cached entry the index found for an ask."""

    entry_id: str
    text: str
    """The prompt the entry answered."""
    similarity: float
    """Cosine similarity of the two prompts' embeddings."""
    observations: tuple[tuple[float, bool], ...] = ()
    """(similarity, correct) of the entry's observed semantic hits, oldest first."""


@dataclass(frozen=True, kw_only=True)
class Verdict:
    serve: bool
    reason: str
    """served | below-threshold | raised-by-feedback | check | model | not-scored | too-long"""
    entry_id: str
    similarity: float
    threshold: float
    """The similarity bar this candidate had to reach (adaptive evidence included)."""
    score: float | None = None
    """The pair model's probability that one answer serves both; None where it did not run."""
    checks: tuple[str, ...] = ()
    """The near-miss checks that fired."""


def rule(similarity: float, base: float, threshold: float, score: float | None,
         checks: Sequence[str], *, model_min: float, read_whole: bool) -> tuple[bool, str]:
    """The decision once its parts are known: (serve, reason). `base` is the bar before
    adaptive evidence, `threshold` after it. `semcache eval` sweeps this over thresholds
    with parts computed once; the proxy reaches it through `JudgeSession.consider`."""
    if similarity < threshold:
        return False, _short_reason(similarity, base)
    if checks:
        return False, "check"
    if score is not None:
        return (True, "served") if score >= model_min else (False, "model")
    return (True, "served") if read_whole else (False, "too-long")


def _short_reason(similarity: float, base: float) -> str:
    """Why a candidate under its threshold is not served: under the usual bar, or under
    the bar its observations raised."""
    return "below-threshold" if similarity < base else "raised-by-feedback"


def needs_model(similarity: float, verify_below: float) -> bool:
    """Above `verify_below` similarity alone is trusted; verify_below >= 1.0 reads every
    candidate, a cosine of 1.0 included (prompts that differ only past the encoder's
    window embed identically)."""
    return verify_below >= 1.0 or similarity < verify_below


class Judge:
    """Decides candidates; holds the pair model once it has loaded."""

    def __init__(self, settings: JudgeSettings, observations: Observations, *,
                 runtime_threshold: Callable[[], float | None] = lambda: None,
                 reads_whole: Callable[[str], bool] = lambda text: True) -> None:
        self.settings = settings
        self.observations = observations
        self.runtime_threshold = runtime_threshold
        """The operator's run-time threshold (admin API), None when unset."""
        self.reads_whole = reads_whole
        """Whether the encoder read a text whole (only asked where no model reads it)."""
        self.model: PairScorer | None = None
        """Set once the pair model has loaded (with `judge.model` on)."""

    def model_reads(self, ask: Ask) -> bool:
        return self.settings.model and self.model is not None and not ask.similarity_only

    def base_threshold(self, ask: Ask) -> float:
        """The similarity bar before adaptive evidence. While a configured model is still
        loading, fail closed: nothing under `judge.threshold` is served on similarity."""
        settings = self.settings
        runtime = self.runtime_threshold()
        # 0 is a valid threshold (serve the nearest entry), so only fall back on None.
        chosen = ask.threshold if ask.threshold is not None else runtime
        if self.model_reads(ask):
            return settings.model_floor if chosen is None else chosen
        if chosen is None:
            return settings.threshold
        if settings.model and not ask.similarity_only:  # model wanted, not there yet
            return max(chosen, settings.threshold)
        return chosen

    def session(self, ask: Ask, *, adaptive: bool = True) -> JudgeSession:
        """A judgement for one lookup; adaptive=False ignores the observations (what the
        un-adapted decision would do: sampled checks ask that)."""
        return JudgeSession(self, ask, adaptive=adaptive)


class JudgeSession:
    """One lookup's judgement: candidates come best first; the model runs at most once."""

    def __init__(self, judge: Judge, ask: Ask, *, adaptive: bool = True) -> None:
        self.judge = judge
        self.ask = ask
        self.base = judge.base_threshold(ask)
        # A request's own bar is the client's choice: adaptive evidence does not move it.
        self.adaptive = adaptive and ask.threshold is None
        self.scope_threshold = (judge.observations.scope_threshold(ask.scope, self.base)
                                if self.adaptive else self.base)
        self.bar = min(self.base, self.scope_threshold)
        """No candidate under this similarity can be served: the index search stops there."""
        self.best: Verdict | None = None
        """The first verdict given (the best candidate): what explains a miss."""
        self._scored = False

    def threshold_for(self, candidate: Candidate) -> float:
        if not self.adaptive:
            return self.base
        return applied_threshold(candidate.observations, self.scope_threshold, self.base,
                                 self.judge.settings.max_wrong_rate)

    async def consider(self, candidate: Candidate) -> Verdict:
        verdict = await self._verdict(candidate)
        if self.best is None or verdict.serve:
            self.best = verdict
        return verdict

    async def _verdict(self, candidate: Candidate) -> Verdict:
        judge, ask, settings = self.judge, self.ask, self.judge.settings
        sim = candidate.similarity
        threshold = self.threshold_for(candidate)
        made = functools.partial(Verdict, entry_id=candidate.entry_id, similarity=sim,
                                 threshold=threshold)
        if sim < threshold:
            return made(serve=False, reason=_short_reason(sim, self.base))
        enabled = () if ask.similarity_only else settings.checks
        checks = await check_pair(candidate.text, ask.text, enabled)
        reads = judge.model_reads(ask) and needs_model(sim, settings.verify_below)
        soft = reads and bool(checks) and set(checks) <= set(settings.soft_checks)
        if checks and not soft:
            return made(serve=False, reason="check", checks=checks)
        score = None
        if reads:
            if self._scored:
                return made(serve=False, reason="not-scored", checks=checks)
            self._scored = True
            score = await _score(judge.model, candidate.text, ask.text)
        read_whole = score is not None or await self._read_whole(candidate.text, ask.text)
        needed = settings.model_min_checked if soft else settings.model_min
        serve, reason = rule(sim, self.base, threshold, score, (), model_min=needed,
                             read_whole=read_whole)
        if soft and not serve and reason == "model":
            reason = "check"  # the model did not clear what the soft check asked
        return made(serve=serve, reason=reason, score=score, checks=checks)

    async def _read_whole(self, cached: str, new: str) -> bool:
        """Whether the encoder read both prompts whole: asked only where no model read them;
        tokenising a long prompt is done in a thread."""
        reads = self.judge.reads_whole
        if len(cached) + len(new) < INLINE_CHECK_CHARS:
            return reads(cached) and reads(new)
        return await asyncio.to_thread(lambda: reads(cached) and reads(new))


async def check_pair(cached: str, new: str, enabled: Sequence[str]) -> tuple[str, ...]:
    """The checks that fire on a pair; long pairs are checked in a thread."""
    if len(cached) + len(new) < INLINE_CHECK_CHARS:
        return run_checks(cached, new, enabled)
    return await asyncio.to_thread(run_checks, cached, new, enabled)


async def _score(model: PairScorer | None, cached: str, new: str) -> float:
    """The model's score; a broken or vanished model costs a miss, never a wrong hit."""
    if model is None:
        return 0.0
    try:
        return float((await model.score([(cached, new)]))[0])
    except Exception:  # noqa: BLE001 - any failure of the model is a miss
        log.exception("pair model failed")
        return 0.0
