"""Adaptive thresholds: the similarity bar an entry (and its scope) must reach, from the
outcomes observed on it. Pure functions, shared by the proxy and `semcache eval`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

MIN_EVIDENCE = 20
"""Observations needed before a threshold drops below its default, and before a scope's pool
replaces the default at all."""
CONFIDENCE_Z = 1.645
"""z of the one-sided 95% upper confidence bound on a wrong-hit rate."""


def wrong_rate_bound(wrong: int, n: int, z: float = CONFIDENCE_Z) -> float:
    """Upper confidence bound on a wrong-hit rate after `wrong` of `n` lookups (Wilson score
    interval; 1 for n = 0): with 0 wrong it is z^2 / (n + z^2), within 5% from n = 52."""
    if n == 0:
        return 1.0
    p, z2 = wrong / n, z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre + spread) / (1 + z2 / n)


def entry_threshold(observations: Sequence[tuple[float, bool]], default: float,
                    max_wrong_rate: float, *, min_evidence: int = MIN_EVIDENCE) -> float:
    """An entry's own threshold from the lookups it answered, in the spirit of vCache
    (Schroeder et al. 2025): the smallest threshold at which the entry's wrong-hit rate, as
    bounded from above with 95% confidence by its lookups at or above it, stays within
    `max_wrong_rate`.

    observations: (similarity, correct) per lookup (from client feedback, or a sampled
    comparison of the cached answer with the upstream's).
    Above `default` the configured threshold is trusted until a wrong hit says otherwise:
    then the threshold rises to the lowest point with enough correct evidence above it, else
    just past the highest wrong hit. Below `default` it drops only on at least `min_evidence`
    lookups at or above the new value (and the confidence bound), so a few lucky hits never
    lower it. A confidence bound rather than the observed rate: picking the lowest threshold
    whose observed rate passes would pick the luckiest noise, and overshoot the bound.
    """
    obs = sorted(observations)
    if not obs:
        return default
    sims = [s for s, _ in obs]
    # wrong_from[i]: wrong observations among obs[i:] (suffix counts, so each rate is O(log n))
    wrong_from = [0] * (len(obs) + 1)
    for i in range(len(obs) - 1, -1, -1):
        wrong_from[i] = wrong_from[i + 1] + (not obs[i][1])

    def within_bound(t: float, need: int) -> bool:
        i = bisect.bisect_left(sims, t)
        n = len(obs) - i
        return n >= need and wrong_rate_bound(wrong_from[i], n) <= max_wrong_rate

    first_above = bisect.bisect_left(sims, default)
    if wrong_from[first_above]:  # raise
        for t in [default] + [s + 1e-4 for s in sims[first_above:]]:
            if within_bound(t, 1):
                return round(t, 4)
        return round(max(s for s, ok in obs if not ok) + 1e-4, 4)
    for s in sims[:first_above]:  # lower
        if within_bound(s, min_evidence):
            return round(s, 4)
    return default


def scope_threshold(observations: Sequence[tuple[float, bool]], default: float,
                    max_wrong_rate: float, *, min_evidence: int = MIN_EVIDENCE) -> float:
    """The fallback for entries with little evidence of their own: the same rule over every
    observation of the scope (in `semcache eval`, of the whole pair set), taking effect only
    once the pool holds `min_evidence` observations, so one report moves one entry, never a
    whole scope."""
    if len(observations) < min_evidence:
        return default
    return entry_threshold(observations, default, max_wrong_rate, min_evidence=min_evidence)


def applied_threshold(entry_obs: Sequence[tuple[float, bool]], scope_t: float, default: float,
                      max_wrong_rate: float) -> float:
    """The threshold a candidate entry must reach: its own, from its observations, starting
    from its scope's (`scope_t`, from scope_threshold). Its own evidence may take it below the
    scope's threshold, but never below min(default, scope_t): the proxy does not fetch
    candidates under that from Redis."""
    if not entry_obs:
        return scope_t
    own = entry_threshold(entry_obs, scope_t, max_wrong_rate)
    return max(own, min(default, scope_t))
