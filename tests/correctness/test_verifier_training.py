"""The verifier's training data: the synthetic near misses and paraphrases it learns from, the
calibration split its cut-off is chosen on, and the batching (no torch needed)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from semcache.proxy.judge.pairs import in_calibration, read_pairs, split_of
from semcache.proxy.judge.training import train as vt

QUORA = Path(__file__).resolve().parents[3] / "shared" / "data" / "qqp_dev_pairs.jsonl.gz"
if not QUORA.exists():
    QUORA = Path("/work/shared/data/qqp_dev_pairs.jsonl.gz")
pytestmark = pytest.mark.skipif(not QUORA.exists(), reason="qqp_dev_pairs.jsonl.gz not found")


def test_passive_voice_of_who_questions() -> None:
    assert vt.passive("Who wrote Hamlet?") in ("By whom was Hamlet written?",
                                               "Who was Hamlet written by?")
    assert vt.passive("Who invented the light bulb?") in (
        "By whom was the light bulb invented?", "Who was the light bulb invented by?")
    assert vt.passive("Which band recorded Abbey Road?") == "By which band was Abbey Road recorded?"
    assert vt.passive("Who is the president?") is None  # no past form: nothing to turn
    assert vt.passive("How do I learn guitar?") is None


def test_abbreviations_shorten_words_and_names() -> None:
    rng = random.Random(0)
    outs = {vt.abbreviate("How many people live in the United Kingdom without a visa?", rng)
            for _ in range(20)}
    assert all(o is not None for o in outs)
    assert any("ppl" in o or "w/o" in o for o in outs if o)
    assert any("UK" in o for o in outs if o)
    assert vt.abbreviate("Why is the sky blue?", rng) is None


def test_near_misses_change_what_is_asked() -> None:
    rng = random.Random(1)
    made = {vt.near_miss("Is Python faster than Java?", rng, []) for _ in range(30)}
    assert "Is Java faster than Python?" in made
    made = {vt.near_miss("How do I convert Celsius to Fahrenheit?", rng, []) for _ in range(30)}
    assert "How do I convert Fahrenheit to Celsius?" in made
    assert any(m and m.startswith("How do I convert Celsius to Fahrenheit ") for m in made)  # a format
    assert all(m != "How do I convert Celsius to Fahrenheit?" for m in made)


def test_typos_keep_the_text_recognisable() -> None:
    rng = random.Random(2)
    q = "What are the symptoms of vitamin deficiency?"
    for _ in range(50):
        t = vt.typo(q, rng)
        assert abs(len(t) - len(q)) <= 5 and t[:1] == q[:1]


def test_examples_are_seeded_and_labelled_both_ways() -> None:
    rows = read_pairs(QUORA, "dev", limit=400)
    a, b = vt.build_examples(rows, 7, aug_share=0.3), vt.build_examples(rows, 7, aug_share=0.3)
    assert a == b
    assert a != vt.build_examples(rows, 8, aug_share=0.3)
    labels = [y for _, _, y in a]
    synthetic = len(a) - len(rows)
    assert 0.5 * 0.3 * len(rows) < synthetic and 0 < sum(labels) < len(labels)


def test_calibration_is_a_tenth_of_dev_and_never_test() -> None:
    rows = read_pairs(QUORA, "all", limit=5000)
    calib = [r for r in rows if in_calibration(r["a"], r["b"])
             and split_of(r["a"], r["b"]) == "dev"]
    dev = [r for r in rows if split_of(r["a"], r["b"]) == "dev"]
    assert 0.07 < len(calib) / len(dev) < 0.13
    assert read_pairs(QUORA, "calibration", limit=100) == [
        r for r in read_pairs(QUORA, "dev", limit=3000) if in_calibration(r["a"], r["b"])][:100]
    assert not any(split_of(r["a"], r["b"]) == "test" for r in read_pairs(QUORA, "calibration", limit=300))


def test_batches_hold_every_example_once_and_group_lengths() -> None:
    rng = random.Random(3)
    ex = [("x" * rng.randrange(1, 200), "y", 1) for _ in range(1000)]
    batches = vt._batches(ex, 16, seed=5)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    spread = [max(len(ex[i][0]) for i in b) - min(len(ex[i][0]) for i in b) for b in batches]
    assert sum(spread) / len(spread) < 40  # random batches of 16 would spread ~170
    assert vt._batches(ex, 16, seed=5) == batches


def test_long_prompts_are_two_questions_labelled_by_the_deciding_pair() -> None:
    same = [{"a": "How do I learn Python?", "b": "What is the best way to learn Python?", "label": 1}]
    differ = [{"a": "What is the capital of Peru?", "b": "What is the capital of Chile?", "label": 0}]
    rng = random.Random(3)
    kinds = set()
    for _ in range(60):
        long = vt.compose(differ, same, rng, ["Lima"])
        if long is None:
            continue
        a, b, label = long
        assert "learn Python" in a and "capital of Peru" in a  # both questions, either order
        if "Chile" in b:  # both parts reworded: the same only if every part is
            assert label == 0 and "best way to learn Python" in b
            kinds.add("reworded")
        else:  # the prompt itself, a detail changed (0) or typos and short forms (1)
            kinds.add(label)
    assert kinds == {"reworded", 0, 1}
    long_same = [vt.compose(same, same, random.Random(i), []) for i in range(40)]
    assert {y for _, b, y in filter(None, long_same) if "best way" in b} == {1}
    assert any(b.startswith("What is the best") and b.endswith("learn Python?")
               for _, b, _ in filter(None, long_same))  # parts reworded
    rows = read_pairs(QUORA, "dev", limit=400)
    with_long = vt.build_examples(rows, 7, aug_share=0.3, long_share=0.3)
    without = vt.build_examples(rows, 7, aug_share=0.3, long_share=0.0)
    assert len(with_long) - len(without) == int(0.3 * len(rows))


def test_prompt_generators_are_deterministic_and_keep_their_promises() -> None:
    from semcache.proxy.judge.training import generate as g

    seeds = ["How do I reset my password?", "Write a tagline for my bakery.",
             "Explain recursion to a five-year-old.", "Compare AWS and Azure for a startup.",
             "Why does this loop never end?\n```python\nwhile i < 10:\n    print(i)\n```",
             "Book an economy flight from Boston to Denver at 9am EST.",
             "What is the difference between TCP and UDP?", "Alice hired Bob. Is that legal?"]
    one, two = g.generate(seeds, random.Random(5), 20), g.generate(seeds, random.Random(5), 20)
    assert one == two and one != g.generate(seeds, random.Random(6), 20)
    kinds = {k for *_, k in one}
    assert {"reframe", "symmetric", "code-layout", "code-token", "roles", "deliverable",
            "audience", "time", "follow-up-reword", "follow-up-other"} <= kinds
    for a, b, label, _ in one:
        # a stacked paraphrase can undo the first (a swap swapped back): the same text, label 1
        assert label in (0, 1) and (a != b or label == 1)
    rng = random.Random(0)
    assert g.symmetric("What is the difference between TCP and UDP?", rng) == (
        "What is the difference between UDP and TCP?")
    assert g.swap_roles("Alice hired Bob. Is that legal?", rng) == "Bob hired Alice. Is that legal?"
    edited = g.code_edit(seeds[4], random.Random(1))
    assert edited is not None and edited != seeds[4] and edited.split("```")[0] == seeds[4].split("```")[0]
    assert g.reframe("How do I reset my password?", random.Random(2)) != "How do I reset my password?"


def test_handwritten_pairs_split_into_train_and_dev_by_hash() -> None:
    train, dev = vt.read_handwritten("train"), vt.read_handwritten("dev")
    assert len(train) > 4000 and 500 < len(dev) < 1100
    assert not {(r["a"], r["b"]) for r in train} & {(r["a"], r["b"]) for r in dev}
    assert {r["label"] for r in dev} == {0, 1}
