"""The hit decision and the cheap near-miss checks (pure functions, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semcache.proxy.judge import needs_model, rule
from semcache.proxy.judge.checks import ALL_CHECKS, DEFAULT_CHECKS, one_edit, run_checks

NEAR_MISS = Path(__file__).resolve().parents[2] / "loadtest" / "data" / "near_miss.jsonl"


def decide(similarity: float, threshold: float, score: float | None = None,
           checks: tuple[str, ...] = (), model_min: float = 0.5, base: float | None = None) -> bool:
    return rule(similarity, threshold if base is None else base, threshold, score, checks,
                model_min=model_min, read_whole=True)[0]


def test_rule_threshold_checks_and_model() -> None:
    assert decide(0.95, 0.92)
    assert not decide(0.91, 0.92)
    assert decide(0.92, 0.92)  # the threshold itself is a hit
    assert not decide(0.99, 0.92, checks=("numbers",))
    assert not decide(0.95, 0.92, 0.2)
    assert decide(0.95, 0.92, 0.8)
    assert decide(0.95, 0.92, 0.6, model_min=0.6)
    assert not decide(0.5, 0.92, 1.0)  # the model never rescues a candidate below the bar
    reasons = [rule(s, 0.3, t, score, c, model_min=0.8, read_whole=whole)[1]
               for s, t, score, c, whole in [(0.2, 0.3, None, (), True), (0.5, 0.6, None, (), True),
                                             (0.9, 0.3, 0.9, ("numbers",), True),
                                             (0.9, 0.3, 0.1, (), True), (0.9, 0.3, None, (), False),
                                             (0.9, 0.3, 0.9, (), True)]]
    assert reasons == ["below-threshold", "raised-by-feedback", "check", "model", "too-long",
                       "served"]


def test_model_band() -> None:
    assert needs_model(0.9, 0.97)
    assert not needs_model(0.98, 0.97)
    # 1.0 reads everything above the threshold, a cosine of 1.0 (or a rounding past it)
    # included: prompts that differ only past the encoder's window embed identically.
    assert needs_model(1.0, 1.0) and needs_model(1.0000001, 1.0)


@pytest.mark.parametrize(("a", "b", "check"), [
    ("What's new in Python 3.8?", "What's new in Python 3.12?", "numbers"),
    # the same numbers in another order, other operators: a digits-and-symbols-only change
    ("When does '0 3 * * 1 /opt/backup.sh' run?", "When does '0 3 1 * * /opt/backup.sh' run?", "numbers"),
    ("Simplify x^2 + 3 for me", "Simplify x^3 + 2 for me", "numbers"),
    ("Which formula gives the total sales of the North region?",  # another statistic
     "Which formula gives the average sales of the North region?", "antonyms"),
    ("Find flights from Boston to Denver", "Find flights from Denver to Boston", "order"),
    ("Is Python faster than Java?", "Is Java faster than Python?", "order"),
    ("What foods to eat when pregnant?", "What foods not to eat when pregnant?", "negation"),
    ("Why doesn't my code compile?", "Why does my code compile?", "negation"),
    ("What is the capital of Australia?", "What is the capital of Austria?", "entities"),
    ("Why is Python slower than C?", "Why is Python faster than C?", "antonyms"),
    ("Why did housing prices rise in 2008?", "Why did housing prices fall in 2008?", "antonyms"),
    ("What goods does the UK mostly imports from China?",  # inflected forms of a pair
     "What goods does the UK mostly exports to China?", "antonyms"),
    ("Why has crime increased in the city?", "Why has crime decreased in the city?", "antonyms"),
    ("Which stocks were bought most this week?", "Which stocks were sold most this week?", "antonyms"),
    ("What are the similarities between frogs and toads?",
     "What are the differences between frogs and toads?", "antonyms"),
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
    ("Is 1,000 dollars a lot?", "is 1000 dollars a lot??"),  # punctuation is no other number
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


@pytest.mark.parametrize(("a", "b"), [
    # format words that are the subject of the question, not a requested format
    ("Which poems have the most memorable final stanzas and paragraphs?",
     "What are the most memorable endings of poems?"),
    ("What was the silliest prank you pulled as a kid?",
     "What was the silliest prank you pulled as a child?"),
    ("How do I reach a friend who lives a long way off?", "How do I reach a friend far away?"),
    ("What is the best guitar method for beginners?", "What is the best guitar method?"),
    ("How can I export a list of my saved passwords?", "How do I see all my saved passwords?"),
    # time words that are not dates, or a vague 'now' on one side only
    ("How long does fresh pasta last in the fridge?", "How long can fresh pasta be kept in the fridge?"),
    ("Is it safe to hike in Patagonia now?", "Is it safe to hike in Patagonia?"),
    ("Why does my hair fall so much?", "Why am I losing so much hair?"),
    ("What will be the most useful skill in 10 years?",
     "Which skill will be the next big thing in 10 years?"),
    ("May I park on the street overnight?", "Can I park on the street overnight?"),
    # names: case, possessives, misspellings, demonyms, a name adding context on one side
    ("How do I cancel my netflix subscription?", "How do I cancel my Netflix subscription?"),
    ("How do I reset my Garmin's watch face?", "How do I reset my Garmin watch face?"),
    ("What do people in Kenya eat for breakfast?", "What do Kenyans eat for breakfast?"),
    ("Will Canada join the trade war against Mexico?", "How likely is a trade war against Mexico?"),
    ("Can the Roman Empire's fall be blamed on Caligula?",
     "Can the Roman Empire's fall be blamed on its emperors?"),
    ("Should President Lincoln Have Freed The Slaves Earlier?",
     "Should Lincoln have freed the slaves earlier?"),
    # negation idioms and abbreviations, and a negative said in one word
    ("Is coffee bad for your heart? Why or why not?", "Is coffee bad for your heart?"),
    ("Is my landlord allowed to raise the rent or not?", "Is my landlord allowed to raise the rent?"),
    ("What is the difference between a whole no. and an integer?",
     "What is the difference between a whole number and an integer?"),
    ("What are some good hiking trails that are not widely known?",
     "What are some good unknown hiking trails?"),
    ("Why is Peru not winning any football tournaments?", "Why does Peru fail to win football tournaments?"),
    # units: one side names a unit or a currency the other leaves implicit
    ("What is the best camera under 800?", "What is the best camera under 800 dollars?"),
    ("Will the euro fall?", "Will the euro fall against the dollar?"),
    ("What percentage of voters stayed home?", "What percent of voters stayed home?"),
    ("How heavy is a 5 kg bag of rice in kilograms?", "How heavy is a 5 kilogram bag of rice in kilograms?"),
    # numbers written another way
    ("Which tablet is best under 20k?", "Which tablet is best under 20000?"),
    ("What would you do with a billion dollars?", "What would you do with 1 billion dollars?"),
    # 'one' and 'two' against the digits (not counted alone: 'which one', chat speak '2')
    ("I use one cup of rice to two cups of water.", "i use 1 cup rice to 2 cups water"),
    ("My two kids love it.", "my 2 kids love it"),
    ("She has had a fever of 38.9°C since noon.", "she has had a fever of 38.9C since noon"),
])
def test_quora_style_paraphrases_pass(a: str, b: str) -> None:
    assert run_checks(a, b, DEFAULT_CHECKS) == ()


@pytest.mark.parametrize(("a", "b", "check"), [
    ("Explain inflation in a table.", "Explain inflation.", "format"),
    ("Summarise the plot of Dune in two sentences.", "Summarise the plot of Dune in a paragraph.", "format"),
    ("Give me the planets as YAML.", "Give me the planets as XML.", "format"),
    ("Write a limerick about cats.", "Write a sonnet about cats.", "format"),
    ("Explain black holes to a child.", "Explain black holes to an expert.", "format"),
    ("Write a thank-you note in a formal tone.", "Write a thank-you note in a casual tone.", "format"),
    ("Describe the steps in detail.", "Describe the steps.", "format"),
    ("Give me the recipe in imperial units.", "Give me the recipe.", "format"),
    ("What are the signs of dehydration?", "What are the signs of dehydration in kids?", "format"),
    ("What is on TV tonight?", "What is on TV?", "dates"),
    ("What happened in the markets last month?", "What happened in the markets?", "dates"),
    ("Is the museum open on Tuesday?", "Is the museum open on Thursday?", "dates"),
    ("Is it better to run at night?", "Is it better to run in the morning?", "dates"),
    ("What should I plant in the spring?", "What should I plant in the autumn?", "dates"),
    ("Which concerts are in Oslo in May?", "Which concerts are in Oslo?", "dates"),
    ("Who designed the Eiffel Tower?", "Who designed the Chrysler Building?", "entities"),
    ("what is the capital of peru", "What is the capital of Chile?", "entities"),
    ("Is the University of Oslo better than Aalto University?",
     "Is the University of Oslo better than Lund University?", "entities"),
    ("How many ounces are in a quart?", "How many cups are in a quart?", "units"),
    ("How far is 20 miles?", "How far is 20 kilometers?", "units"),
    ("Sell 4 pounds of apples at $3 per pound.", "Sell 4 kilograms of apples at $3 per pound.", "units"),
    ("Is 40 degrees Celsius hot?", "Is 40 degrees Fahrenheit hot?", "units"),
    ("Which snacks are healthy for toddlers?", "Which snacks are not healthy for toddlers?", "negation"),
    ("Why does my phone charge?", "Why won't my phone charge?", "negation"),
    ("Can I take ibuprofen with coffee?", "Can I never take ibuprofen with coffee?", "negation"),
    ("Which laptop is best under 30k?", "Which laptop is best under 40000?", "numbers"),
    ("Boil one cup of rice in 2 cups of water.", "Boil 2 cups of rice in 2 cups of water.", "numbers"),
    ("My two kids love it.", "My 3 kids love it.", "numbers"),
    ("A fever of 38.9C in a toddler", "A fever of 39.8C in a toddler", "numbers"),
])
def test_near_misses_still_fire(a: str, b: str, check: str) -> None:
    assert check in run_checks(a, b, DEFAULT_CHECKS)
