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
