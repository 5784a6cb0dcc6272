"""Per-entry thresholds from served lookups and their feedback (decision.entry_threshold)."""

from __future__ import annotations

from semcache.proxy.decision import entry_threshold


def test_no_observations_keep_the_default() -> None:
    assert entry_threshold([], 0.92, 0.05) == 0.92


def test_a_wrong_hit_raises_the_entry_threshold_past_it() -> None:
    obs = [(0.93, False), (0.97, True)]
    t = entry_threshold(obs, 0.92, 0.05)
    assert 0.93 < t <= 0.9701


def test_many_correct_hits_above_a_wrong_one_keep_the_rate_within_the_bound() -> None:
    obs = [(0.93, False)] + [(0.95 + i * 0.001, True) for i in range(30)]
    assert entry_threshold(obs, 0.92, 0.05) == 0.92  # 1 wrong of 31 is within 5%


def test_the_threshold_drops_only_on_enough_evidence() -> None:
    few = [(0.85, True), (0.88, True), (0.9, True)]
    assert entry_threshold(few, 0.92, 0.05) == 0.92
    many = [(0.85 + i * 0.002, True) for i in range(60)]
    assert entry_threshold(many, 0.92, 0.05) < 0.92
    with_wrong = many + [(0.86, False), (0.87, False), (0.88, False), (0.89, False)]
    assert entry_threshold(with_wrong, 0.92, 0.05) > entry_threshold(many, 0.92, 0.05)
