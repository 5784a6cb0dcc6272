"""The hit decision and the cheap near-miss checks (pure functions, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semcache.proxy.checks import ALL_CHECKS, DEFAULT_CHECKS, one_edit, run_checks
from semcache.proxy.decision import decide, needs_verifier

NEAR_MISS = Path(__file__).resolve().parents[2] / "loadtest" / "data" / "near_miss.jsonl"


def test_decide_threshold_checks_and_verifier() -> None:
    assert decide(0.95, 0.92)
    assert not decide(0.91, 0.92)
    assert decide(0.92, 0.92)  # the threshold itself is a hit
    assert not decide(0.99, 0.92, checks=("numbers",))
    assert not decide(0.95, 0.92, 0.2)
    assert decide(0.95, 0.92, 0.8)
    assert decide(0.95, 0.92, 0.6, verifier_min=0.6)
    assert not decide(0.5, 0.92, 1.0)  # the verifier never rescues a candidate below the floor


def test_verifier_band() -> None:
    assert needs_verifier(0.9, 0.85, 0.97)
    assert not needs_verifier(0.98, 0.85, 0.97)
    assert not needs_verifier(0.8, 0.85, 0.97)


@pytest.mark.parametrize(("a", "b", "check"), [
    ("What's new in Python 3.8?", "What's new in Python 3.12?", "numbers"),
    ("Find flights from Boston to Denver", "Find flights from Denver to Boston", "order"),
    ("Is Python faster than Java?", "Is Java faster than Python?", "order"),
    ("What foods to eat when pregnant?", "What foods not to eat when pregnant?", "negation"),
    ("Why doesn't my code compile?", "Why does my code compile?", "negation"),
    ("What is the capital of Australia?", "What is the capital of Austria?", "entities"),
    ("Why is Python slower than C?", "Why is Python faster than C?", "antonyms"),
    ("How do I reverse a string in Python?", "How do I reverse a string in Ruby?", "languages"),
    ("Translate 'hello' into French.", "Translate 'hello' into German.", "languages"),
    ("Explain gravity in one paragraph.", "Explain gravity as a bulleted list.", "format"),
    ("What happened yesterday in tech?", "What happened last week in tech?", "dates"),
    ("Convert 10 feet to meters.", "Convert 10 yards to meters.", "units"),
    ("What are the symptoms of flu?", "What are the symptoms of flu in young children?", "scope"),
])
def test_near_miss_kinds_fire(a: str, b: str, check: str) -> None:
    assert check in run_checks(a, b, ALL_CHECKS)


@pytest.mark.parametrize(("a", "b"), [
    ("How do I reverse a list in Python?", "how do i revrese a list in ptyhon"),  # typos
    ("What is the capital of Australia?", "what is the capital of Austrlia"),
    ("How do I reset my router?", "Hey, quick question: how do I reset my router? Thanks!"),
    ("In Excel, how do I merge two columns?", "How do I merge two columns in Excel?"),
    ("Who wrote Hamlet?", "By whom was Hamlet written?"),
    ("What is the population of New York City?", "what's the population of NYC?"),
    ("How do I learn JavaScript fast?", "how do i learn JS fast?"),
    ("How do I cook pasta without a stove?", "how do i cook pasta w/o a stove?"),
    ("Why do leaves change color in autumn?", "Why do leaves change colour in the fall?"),
])
def test_paraphrases_pass(a: str, b: str) -> None:
    assert run_checks(a, b, DEFAULT_CHECKS) == ()


def test_one_edit_keeps_different_names_apart() -> None:
    assert one_edit("python", "ptyhon")
    assert one_edit("australia", "austrlia")
    assert not one_edit("australia", "austria")
    assert not one_edit("3.8", "3.9")


def test_checks_on_the_near_miss_set() -> None:
    """The set's label-0 pairs are mostly stopped and its paraphrases mostly pass."""
    rows = [json.loads(line) for line in NEAR_MISS.read_text().splitlines()]
    assert len(rows) >= 300
    stopped = [bool(run_checks(r["a"], r["b"], DEFAULT_CHECKS)) for r in rows]
    wrong = sum(s for s, r in zip(stopped, rows, strict=True) if r["label"] == 0)
    passed = sum(not s for s, r in zip(stopped, rows, strict=True) if r["label"] == 1)
    negatives = sum(r["label"] == 0 for r in rows)
    assert wrong / negatives >= 0.9
    assert passed / (len(rows) - negatives) >= 0.95
