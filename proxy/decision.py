"""The hit decision: one pure function shared by the proxy and `semcache eval`.

A candidate entry is served when its cosine similarity reaches the threshold (the entry's own
adaptive one, or the configured one), no cheap check found the two prompts asking different
things, and, where the verifier ran, it judged one answer to serve both. Keeping this in one
place is what makes the precision measured by `semcache eval` the precision of the proxy.
"""

from __future__ import annotations

from collections.abc import Sequence


def needs_verifier(similarity: float, threshold: float, verify_below: float) -> bool:
    """The verifier runs only for candidates in [threshold, verify_below): above the band the
    similarity alone is trusted, below it the candidate is a miss without asking."""
    return threshold <= similarity < verify_below


def decide(similarity: float, threshold: float, verifier_score: float | None = None,
           checks: Sequence[str] = (), *, verifier_min: float = 0.5) -> bool:
    """True to serve the candidate.

    similarity: cosine of the query and the entry's prompt.
    threshold: the minimum similarity (adaptive per entry, or the configured one).
    verifier_score: probability from the verifier that one answer serves both prompts;
        None where it did not run (disabled, or the similarity was above its band).
    checks: names of the cheap checks that fired (see checks.run_checks); any one is a miss.
    """
    if similarity < threshold or checks:
        return False
    return verifier_score is None or verifier_score >= verifier_min


def entry_threshold(observations: Sequence[tuple[float, bool]], default: float,
                    max_wrong_rate: float, *, min_evidence: int = 20) -> float:
    """An entry's own threshold from the lookups it answered, in the spirit of vCache
    (Schroeder et al. 2025): the smallest threshold whose estimated wrong-hit rate among
    the entry's lookups at or above it stays within `max_wrong_rate`.

    observations: (similarity, correct) per lookup served (correct from client feedback).
    Above `default` the configured threshold is trusted until feedback says otherwise: a
    wrong hit there raises the entry's threshold past it unless enough correct ones above
    keep the rate within the bound. Below `default` the threshold drops only on evidence:
    at least `min_evidence` lookups at or above the new value, with the rate's Laplace
    estimate (wrong + 1) / (n + 2) within the bound, so a few lucky hits never lower it.
    """
    obs = sorted(observations)
    if not obs:
        return default

    def rate_at(t: float, laplace: bool) -> tuple[int, float]:
        above = [ok for s, ok in obs if s >= t]
        wrong = sum(not ok for ok in above)
        n = len(above)
        if laplace:
            return n, (wrong + 1) / (n + 2)
        return n, wrong / n if n else 0.0

    # Raise: the smallest t >= default whose observed wrong rate is within the bound.
    wrong_sims = [s for s, ok in obs if not ok and s >= default]
    if wrong_sims:
        for t in [default] + [s + 1e-4 for s, _ in obs if s >= default]:
            n, rate = rate_at(t, laplace=False)
            if rate <= max_wrong_rate:
                return round(t, 4)
        return round(max(wrong_sims) + 1e-4, 4)
    # Lower: the smallest observed similarity below default with enough evidence above it.
    for s, _ in obs:
        if s >= default:
            break
        n, rate = rate_at(s, laplace=True)
        if n >= min_evidence and rate <= max_wrong_rate:
            return round(s, 4)
    return default
