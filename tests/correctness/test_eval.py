"""`semcache eval`: the split, the sweep and the whole command's determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from semcache.proxy.judge.evaluate import main, metrics, operating_point, simulate_adaptive, sweep
from semcache.proxy.judge.pairs import split_of


def test_split_is_fixed_by_text_and_holds_out_a_fifth() -> None:
    assert split_of("a?", "b?") == split_of("b?", "a?")
    splits = [split_of(f"question {i}", f"other {i}") for i in range(5000)]
    assert 0.17 < splits.count("test") / len(splits) < 0.23


def test_metrics_and_operating_point() -> None:
    labels = np.array([1, 1, 0, 0])
    m = metrics(np.array([True, False, True, False]), labels)
    assert (m["precision"], m["recall"], m["wrong_hit_rate"]) == (0.5, 0.5, 0.5)
    sims = np.array([0.99, 0.95, 0.93, 0.60])
    curves = sweep(sims, labels, [(), (), (), ()], None, verify_below=1.0, verifier_min=0.5)
    assert set(curves) == {"static", "checks"}
    point = operating_point(curves["static"], 0.95)
    assert point is not None and point["recall"] == 1.0 and 0.93 < point["threshold"] <= 0.95
    # The checks stage drops a pair whose checks fired, whatever its similarity.
    curves = sweep(sims, labels, [(), (), ("numbers",), ()], None, verify_below=1.0,
                   verifier_min=0.5)
    assert operating_point(curves["checks"], 0.95)["threshold"] <= 0.93  # type: ignore[index]


def test_pairs_not_read_whole_are_served_only_when_the_verifier_scored_them() -> None:
    """As the proxy decides: prompts the encoder cut off (cosine 1.0, say) are not served on
    similarity alone; where the verifier read them its score decides."""
    from semcache.proxy.judge.evaluate import served_at

    sims, fired = np.array([1.0, 1.0, 0.95]), [(), (), ()]
    whole = np.array([False, True, False])
    kw = dict(verify_below=1.0, verifier_min=0.8, whole=whole)
    assert served_at(0.9, sims, fired, None, "static", **kw).tolist() == [False, True, False]
    scores = np.array([0.9, 0.1, 0.95])  # a cosine of 1.0 is verified too
    assert served_at(0.3, sims, fired, scores, "checks+verifier", **kw).tolist() == [True, False, True]


def synthetic_pairs(n: int = 3000) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pairs whose similarity says little below 0.97: a quarter of those are wrong."""
    rng = np.random.default_rng(7)
    sims = np.round(rng.uniform(0.85, 1.0, n), 5)
    labels = np.where(sims >= 0.97, 1, (rng.random(n) < 0.75).astype(int))
    return [f"entry {i % (n // 2)}" for i in range(n)], sims, labels


def test_adaptive_replay_is_deterministic_and_learns_the_bound() -> None:
    entries, sims, labels = synthetic_pairs()
    fired: list[tuple[str, ...]] = [()] * len(sims)

    def run(seed: int, **kw: object) -> dict[str, object]:
        args: dict[str, object] = dict(stage="static", default=0.92, verify_below=1.0,
                                       verifier_min=0.5, max_wrong_rate=0.05, sample=0.1,
                                       seed=seed)
        return simulate_adaptive(entries, sims, labels, fired, None, **{**args, **kw})  # type: ignore[arg-type]

    first = run(0)
    assert first == run(0)
    assert first != run(1)
    static = metrics(sims >= 0.92, labels)
    assert static["precision"] < 0.9
    # the pool raises the threshold to where wrong hits are within the bound
    assert 0.95 < first["final_scope_threshold"] <= 0.975  # type: ignore[operator]
    assert first["precision"] >= 0.95 > static["precision"]  # type: ignore[operator]
    assert 0 < first["verified"] < 0.1 * len(sims)  # type: ignore[operator]
    # per entry only: two lookups per entry are too little evidence to move much
    alone = run(0, scope_pool=False)
    assert alone["final_scope_threshold"] == 0.92 and alone["precision"] < 0.9  # type: ignore[operator]
    # nothing verified, nothing learnt: the static decision
    frozen = run(0, sample=0.0)
    assert frozen["verified"] == 0
    assert {k: frozen[k] for k in ("precision", "recall")} == {
        k: static[k] for k in ("precision", "recall")}


@pytest.mark.slow
def test_eval_command_is_deterministic(model_dir: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(r) for r in [
        {"a": "How do I learn Python quickly?", "b": "How can I learn Python fast?", "label": 1},
        {"a": "Flights from Boston to Denver", "b": "Flights from Denver to Boston", "label": 0},
        {"a": "What's new in Python 3.8?", "b": "What's new in Python 3.12?", "label": 0},
        {"a": "How do I bake bread?", "b": "how do i bake bred", "label": 1},
    ]))
    outputs = []
    for run in ("one", "two"):
        out = tmp_path / run
        assert main([str(pairs), "--data-dir", str(model_dir), "--out", str(out),
                     "--no-verifier", "--name", "t"]) == 0
        result = json.loads((out / "eval_t.json").read_text())
        assert (out / "eval_t.png").stat().st_size > 0
        outputs.append({k: v for k, v in result.items() if k not in ("seconds", "machine")})
    assert outputs[0] == outputs[1]
    assert set(outputs[0]["adaptive"]["runs"]) == {"adaptive", "adaptive, per-entry only"}
    checks = outputs[0]["stages"]["checks"]["at_configured_threshold"]
    assert checks["wrong_hit_rate"] == 0.0
