"""Per-entry thresholds from served lookups and their feedback (judge.thresholds.entry_threshold)."""

from __future__ import annotations

from semcache.index.store import decode_observations, encode_observation
from semcache.proxy.judge.thresholds import (
    MIN_EVIDENCE,
    applied_threshold,
    entry_threshold,
    scope_threshold,
    wrong_rate_bound,
)


def test_no_observations_keep_the_default() -> None:
    assert entry_threshold([], 0.92, 0.05) == 0.92


def test_a_wrong_hit_raises_the_entry_threshold_past_it() -> None:
    obs = [(0.93, False), (0.97, True)]
    t = entry_threshold(obs, 0.92, 0.05)
    assert 0.93 < t <= 0.9701


def test_many_correct_hits_above_a_wrong_one_keep_the_rate_within_the_bound() -> None:
    correct = [(0.95 + i * 0.0004, True) for i in range(100)]
    assert entry_threshold([(0.93, False)] + correct, 0.92, 0.05) == 0.92  # 1 of 101: bound 4.6%
    # 1 wrong of 31 is 3% observed, but 31 lookups cannot show the rate is within 5%
    assert entry_threshold([(0.93, False)] + correct[:30], 0.92, 0.05) == 0.9301


def test_the_wrong_rate_bound_needs_evidence() -> None:
    assert wrong_rate_bound(0, 0) == 1.0
    assert wrong_rate_bound(0, 51) > 0.05 >= wrong_rate_bound(0, 52)
    assert wrong_rate_bound(1, 31) > 0.05 >= wrong_rate_bound(1, 95)
    assert wrong_rate_bound(10, 100) > 0.1


def test_the_threshold_drops_only_on_enough_evidence() -> None:
    few = [(0.85, True), (0.88, True), (0.9, True)]
    assert entry_threshold(few, 0.92, 0.05) == 0.92
    many = [(0.85 + i * 0.002, True) for i in range(60)]
    assert entry_threshold(many, 0.92, 0.05) < 0.92
    with_wrong = many + [(0.86, False), (0.87, False), (0.88, False), (0.89, False)]
    assert entry_threshold(with_wrong, 0.92, 0.05) > entry_threshold(many, 0.92, 0.05)


def test_a_scope_pool_takes_over_only_with_enough_evidence() -> None:
    wrong = [(0.95, False)] * 19
    assert scope_threshold(wrong, 0.92, 0.05) == 0.92  # 19 < MIN_EVIDENCE
    assert scope_threshold(wrong + [(0.95, False)], 0.92, 0.05) == 0.9501
    right = [(0.93 + i * 0.001, True) for i in range(MIN_EVIDENCE)]
    assert scope_threshold(right, 0.92, 0.05) == 0.92


def test_applied_threshold_starts_from_the_scope_and_never_drops_below_what_is_fetched() -> None:
    assert applied_threshold([], 0.96, 0.92, 0.05) == 0.96
    assert applied_threshold([(0.97, False)], 0.92, 0.92, 0.05) == 0.9701
    many = [(0.85 + i * 0.002, True) for i in range(60)]
    # enough evidence lowers the entry below its scope's threshold, but not below the
    # default: candidates under min(default, scope) are never fetched by the proxy
    assert applied_threshold(many, 0.96, 0.92, 0.05) == 0.92
    assert entry_threshold(many, 0.96, 0.05) < applied_threshold(many, 0.96, 0.92, 0.05)
    assert applied_threshold(many, 0.92, 0.92, 0.05) == 0.92


def test_observations_round_trip_through_their_encoding() -> None:
    raw = ",".join(encode_observation(s, ok) for s, ok in [(0.96071, False), (1.0, True), (-0.2, True)])
    assert raw == "9607-,10000+,0+"
    assert decode_observations(raw) == ((0.9607, False), (1.0, True), (0.0, True))
    assert decode_observations("9607-,junk,,12x+,9000+") == ((0.9607, False), (0.9, True))
