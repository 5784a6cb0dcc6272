# ruff: noqa: E501  (tables of prompt pairs read best one pair a line)
"""Write near_miss.jsonl: labelled prompt pairs for the hit decision (run from the repo root).

    python loadtest/data/make_near_miss.py

label 0: near misses that one cached answer must NOT serve (different numbers, versions,
dates, units, named entities, negation, direction/order, comparative flips, programming or
natural language, requested format, scope). label 1: paraphrases that must still hit
(typos, filler words, abbreviations, reordering, voice, synonyms). Every pair is written from
hand-made templates over varied topics; the output is deterministic (seeded).
This set is only for evaluation: the verifier's training augmentations are generated
separately from Quora questions (semcache.proxy.verifier_train), never from these templates.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "near_miss.jsonl"

# (template, value A, value B): the pair differs only in the slot.
NUMBERS = [
    ("How many calories are in {} grams of cooked rice?", "100", "250"),
    ("What is {} divided by 7?", "84", "91"),
    ("Convert {} degrees Fahrenheit to Celsius.", "68", "86"),
    ("What is the monthly payment on a {} dollar loan at 5% over 30 years?", "200,000", "350,000"),
    ("Write a {}-word summary of the French Revolution.", "100", "500"),
    ("Give me {} ideas for a birthday party for a 7-year-old.", "3", "10"),
    ("How long does it take to walk {} kilometers?", "5", "12"),
    ("What is the square root of {}?", "144", "169"),
    ("Plan a {}-day itinerary for Rome.", "3", "7"),
    ("How much protein should a {} kg adult eat per day?", "60", "90"),
    ("Is {} a prime number?", "91", "97"),
    ("What is {} percent of 360?", "15", "25"),
    ("How many hours of sleep does a {}-year-old need?", "2", "16"),
    ("List the top {} most populated countries.", "5", "20"),
]
VERSIONS = [
    ("What's new in Python {}?", "3.8", "3.12"),
    ("How do I install Node.js {} on Ubuntu?", "16", "20"),
    ("Is Java {} still supported?", "8", "17"),
    ("What are the breaking changes in React {}?", "17", "18"),
    ("How do I upgrade to PostgreSQL {}?", "14", "16"),
    ("Does Windows {} support Android apps?", "10", "11"),
    ("What changed in the iPhone {} camera?", "14", "15"),
    ("How do I migrate a project to Angular {}?", "15", "17"),
    ("Is Django {} compatible with Python 3.11?", "3.2", "4.2"),
    ("What are the system requirements for macOS {}?", "Monterey", "Sonoma"),
    ("How do I enable GPU support in TensorFlow {}?", "1.15", "2.15"),
    ("Which features did C++{} add?", "17", "20"),
]
DATES = [
    ("Who won the FIFA World Cup in {}?", "2014", "2018"),
    ("What happened in Europe in {}?", "1848", "1989"),
    ("What day of the week was {}?", "July 4, 1976", "July 4, 1977"),
    ("What are the public holidays in Germany in {}?", "2023", "2024"),
    ("Summarise the news from {}.", "yesterday", "last week"),
    ("Who was the US president in {}?", "1995", "2005"),
    ("What was the inflation rate in the UK in {}?", "2021", "2022"),
    ("What events are happening in Paris on {}?", "Saturday", "Sunday"),
    ("Which movies won the Oscar in {}?", "2010", "2020"),
    ("Show the weather forecast for {}.", "tomorrow", "next Monday"),
    ("What was the price of Bitcoin in {}?", "January 2021", "January 2023"),
]
UNITS = [
    ("How much is 5 {} in pounds?", "kilograms", "ounces"),
    ("Convert 10 {} to meters.", "feet", "yards"),
    ("How many {} are in a gallon?", "liters", "cups"),
    ("What is 100 {} per hour in miles per hour?", "kilometers", "meters"),
    ("How many {} is a marathon?", "miles", "kilometers"),
    ("Convert 2 {} of flour to grams.", "cups", "tablespoons"),
    ("How long is 90 {} in hours?", "minutes", "seconds"),
    ("What is 30 degrees {} in Kelvin?", "Celsius", "Fahrenheit"),
    ("How many {} are in a terabyte?", "gigabytes", "megabytes"),
    ("Price 3 {} of coffee beans at $12 per pound.", "pounds", "kilograms"),
]
ENTITIES = [
    ("What is the capital of {}?", "Australia", "Austria"),
    ("Who founded {}?", "Microsoft", "Apple"),
    ("What is the population of {}?", "Canada", "Mexico"),
    ("Tell me about the history of {}.", "Rome", "Athens"),
    ("What are the best restaurants in {}?", "Chicago", "Boston"),
    ("Summarise the plot of {}.", "Hamlet", "Macbeth"),
    ("What is {} best known for?", "Marie Curie", "Ada Lovelace"),
    ("How do I get a work visa for {}?", "Japan", "South Korea"),
    ("What are {}'s main exports?", "Brazil", "Argentina"),
    ("Write a short biography of {}.", "Nelson Mandela", "Martin Luther King"),
    ("Which league does {} play in?", "Real Madrid", "Bayern Munich"),
    ("What is the stock ticker of {}?", "Tesla", "Toyota"),
    ("How tall is {}?", "Mount Everest", "Mont Blanc"),
    ("What time zone is {} in?", "Seattle", "Sydney"),
    ("Explain the main ideas of {}.", "Kant", "Hegel"),
]
FORMAT = [
    ("Explain photosynthesis {}.", "in one paragraph", "as a bulleted list"),
    ("Give me the list of US states {}.", "as JSON", "as a CSV"),
    ("Summarise this article {}.", "in three bullet points", "in one sentence"),
    ("Write a poem about the sea {}.", "as a haiku", "as a sonnet"),
    ("Describe the water cycle {}.", "for a five-year-old", "for a university student"),
    ("Compare SQL and NoSQL {}.", "in a table", "in an essay"),
    ("Write a cover letter for a data analyst role {}.", "in a formal tone", "in a casual tone"),
    ("Explain how vaccines work {}.", "in 50 words", "in detail"),
    ("Give me a recipe for pancakes {}.", "in metric units", "in cups and spoons"),
    ("Outline the causes of World War I {}.", "as a timeline", "as a mind map"),
]
PROG_LANG = [
    ("How do I reverse a string in {}?", "Python", "JavaScript"),
    ("How do I read a file line by line in {}?", "Java", "Go"),
    ("Write a function to check for palindromes in {}.", "C++", "Rust"),
    ("How do I sort a dictionary by value in {}?", "Python", "Ruby"),
    ("How do I make an HTTP request in {}?", "Node.js", "PHP"),
    ("Show me how to parse JSON in {}.", "C#", "Kotlin"),
    ("How do I handle exceptions in {}?", "Swift", "Scala"),
    ("Write a binary search in {}.", "Go", "Haskell"),
    ("How do I connect to a MySQL database from {}?", "Python", "Java"),
    ("How do I create a thread in {}?", "C", "Rust"),
]
NAT_LANG = [
    ("Translate 'good morning' into {}.", "French", "Spanish"),
    ("How do you say 'thank you' in {}?", "Japanese", "Korean"),
    ("Answer in {}: what is the weather like in spring?", "German", "Italian"),
    ("Translate this sentence into {}: where is the train station?", "Portuguese", "Dutch"),
    ("Write a birthday message in {}.", "Hindi", "Arabic"),
    ("What are the most common verbs in {}?", "Russian", "Polish"),
    ("Teach me to count to ten in {}.", "Mandarin", "Cantonese"),
    ("Write a short story for children in {}.", "English", "Swedish"),
]
SCOPE = [
    ("What are the health benefits of {}?", "green tea", "green tea for pregnant women"),
    ("How do I lose weight?", "", ""),
    ("What are the symptoms of {}?", "flu", "flu in children"),
    ("How do I file my taxes {}?", "", "as a freelancer"),
    ("What is the best laptop {}?", "", "for video editing under $1000"),
    ("How do I cook {}?", "rice", "rice in a pressure cooker"),
    ("What are the side effects of {}?", "ibuprofen", "long-term ibuprofen use"),
    ("How do I invest {}?", "in stocks", "in stocks for retirement"),
    ("What should I see {}?", "in London", "in London with kids in winter"),
    ("Explain {}.", "machine learning", "the math behind gradient descent in machine learning"),
    ("How do I clean {}?", "an oven", "a self-cleaning oven door glass"),
    ("How do I get a passport?", "", ""),
]
SCOPE_PAIRS = [
    ("How do I lose weight?", "How do I lose weight after pregnancy?"),
    ("How do I get a passport?", "How do I get a passport for my newborn baby?"),
    ("How do I write a resume?", "How do I write a resume with no work experience?"),
    ("What is the best way to learn guitar?", "What is the best way to learn jazz guitar chords?"),
]
NEGATION = [
    ("What foods should I eat during pregnancy?", "What foods should I not eat during pregnancy?"),
    ("Which medications can be taken with alcohol?", "Which medications can't be taken with alcohol?"),
    ("Why do cats purr when they are happy?", "Why do cats purr when they are not happy?"),
    ("What plants are safe for dogs?", "What plants are not safe for dogs?"),
    ("Is it safe to drink tap water in Mexico?", "Is it unsafe to drink tap water in Mexico?"),
    ("What should you do after a job interview?", "What should you never do after a job interview?"),
    ("Which fruits are high in sugar?", "Which fruits are not high in sugar?"),
    ("Why does my code compile?", "Why doesn't my code compile?"),
    ("Which countries require a visa for US citizens?", "Which countries don't require a visa for US citizens?"),
    ("Should I use semicolons in JavaScript?", "Should I avoid semicolons in JavaScript?"),
    ("What are things to do in Tokyo?", "What are things not to do in Tokyo?"),
    ("Can I freeze cooked rice?", "Can I not freeze cooked rice?"),
    ("List vegetables that grow well in shade.", "List vegetables that do not grow well in shade."),
    ("Why is my car starting?", "Why is my car not starting?"),
    ("Which exercises are good for back pain?", "Which exercises are bad for back pain?"),
    ("What is allowed in carry-on luggage?", "What is not allowed in carry-on luggage?"),
]
DIRECTION = [
    ("Find flights from {a} to {b}.", "Boston", "Denver"),
    ("How long is the drive from {a} to {b}?", "Berlin", "Munich"),
    ("Translate this from {a} to {b}: I love you.", "English", "French"),
    ("Convert {a} to {b}: 100.", "euros", "dollars"),
    ("What is the cheapest train from {a} to {b}?", "London", "Paris"),
    ("How do I migrate from {a} to {b}?", "MySQL", "PostgreSQL"),
    ("How do I transfer money from {a} to {b}?", "PayPal", "my bank account"),
    ("Write a converter from {a} to {b}.", "Celsius", "Fahrenheit"),
    ("What is the time difference from {a} to {b}?", "New York", "Tokyo"),
    ("How do I port code from {a} to {b}?", "Python 2", "Python 3"),
    ("Is it cheaper to ship from {a} to {b}?", "China", "Canada"),
    ("What is the exchange rate from {a} to {b}?", "yen", "pounds"),
]
ORDER_PAIRS = [
    ("Does the dog chase the cat?", "Does the cat chase the dog?"),
    ("Why did Germany declare war on France in 1914?", "Why did France declare war on Germany in 1914?"),
    ("Subtract 5 from 12.", "Subtract 12 from 5."),
    ("Is Python faster than Java?", "Is Java faster than Python?"),
    ("Did Apple buy Beats?", "Did Beats buy Apple?"),
    ("Can a son inherit from his father?", "Can a father inherit from his son?"),
]
COMPARATIVE = [
    ("Why is {} than Java?", "Python slower", "Python faster"),
    ("Which is {}: a cat or a dog?", "smarter", "dumber"),
    ("What makes steel {} than iron?", "stronger", "weaker"),
    ("Why are summers getting {}?", "hotter", "colder"),
    ("Which city is {}, Paris or London?", "more expensive", "cheaper"),
    ("Why is the Pacific {} than the Atlantic?", "deeper", "shallower"),
    ("What is the {} planet in the solar system?", "largest", "smallest"),
    ("Which programming language is the {} to learn?", "easiest", "hardest"),
    ("Why does bread get {} in the fridge?", "harder", "softer"),
    ("Which car gets the {} gas mileage?", "best", "worst"),
    ("Is it {} to rent or buy a house?", "better", "worse"),
    ("What is the {} time to visit Iceland?", "best", "worst"),
    ("Which metals are {} than gold?", "heavier", "lighter"),
    ("How do I make my internet {}?", "faster", "slower"),
]

# Paraphrases (label 1) ---------------------------------------------------------------------
BASE = [
    "How do I reverse a list in Python?", "What is the capital of Australia?",
    "How do I make sourdough bread at home?", "What are the symptoms of vitamin D deficiency?",
    "How can I improve my credit score?", "What is the difference between a virus and bacteria?",
    "How do I change a flat tire?", "What causes the northern lights?",
    "How do I center a div in CSS?", "What is the best way to learn Spanish?",
    "How do I remove a stripped screw?", "Why is the sky blue?",
    "How do I write a cover letter for a marketing job?", "What is compound interest?",
    "How do I stop my cat from scratching the sofa?", "What are the benefits of meditation?",
    "How do I reset my router?", "What is the theory of relativity?",
    "How do I grow tomatoes on a balcony?", "How does a mortgage work?",
    "What is the plot of Pride and Prejudice?", "How do I clean a cast iron pan?",
    "How do I set up a Git repository?", "What are black holes made of?",
    "How do I negotiate a higher salary?", "What is the Pythagorean theorem?",
    "How do I train for a half marathon?", "How do I unclog a kitchen sink?",
    "What is inflation and why does it happen?", "How do vaccines work?",
]
FILLERS = [
    ("Hey, quick question: ", ""), ("", " Thanks!"), ("Can you tell me ", ""),
    ("Hi there! ", " Thanks in advance."), ("I was wondering, ", ""), ("Please help: ", ""),
    ("So, um, ", ""), ("", " Any help appreciated."), ("Quick one - ", ""),
    ("I'd like to know: ", ""),
]
ABBREVIATIONS = [
    ("How do I learn JavaScript fast?", "how do i learn JS fast?"),
    ("What is machine learning?", "what is ML?"),
    ("Please explain artificial intelligence.", "pls explain AI"),
    ("What is the difference between RAM and storage?", "whats the diff between RAM and storage?"),
    ("How do I convert a PDF to a Word document?", "how 2 convert pdf to word doc?"),
    ("What is the best laptop for programming, by the way?", "btw what's the best laptop for programming?"),
    ("How do I get to the United States from Europe?", "how do i get to the US from Europe?"),
    ("What is the population of New York City?", "what's the population of NYC?"),
    ("How do I cook pasta without a stove?", "how do i cook pasta w/o a stove?"),
    ("What does an application programming interface do?", "what does an API do?"),
    ("How many people live in the United Kingdom?", "how many ppl live in the UK?"),
    ("What is the best text editor for Python?", "whats the best text editor for py?"),
    ("How do I write a for loop in Python?", "how do i write a for loop in python"),
    ("Tell me about the Massachusetts Institute of Technology.", "tell me about MIT"),
    ("What are frequently asked questions about visas?", "visa FAQs?"),
    ("How do I improve my Structured Query Language skills?", "how do I improve my SQL skills?"),
    ("What is a good gift for my girlfriend, as soon as possible?", "good gift for my gf asap?"),
    ("What is the difference between a Doctor of Philosophy and a master's degree?",
     "diff between a PhD and a masters?"),
]
REORDER = [
    ("How do I reverse a list in Python?", "In Python, how do I reverse a list?"),
    ("What is the best way to save money on groceries?", "On groceries, what is the best way to save money?"),
    ("In winter, how can I keep my house warm cheaply?", "How can I keep my house warm cheaply in winter?"),
    ("Using pandas, how do I drop duplicate rows?", "How do I drop duplicate rows using pandas?"),
    ("What should I pack for a trip to Iceland in March?", "For a trip to Iceland in March, what should I pack?"),
    ("How do I remove red wine stains from a carpet?", "From a carpet, how do I remove red wine stains?"),
    ("For beginners, which guitar is best?", "Which guitar is best for beginners?"),
    ("How can I learn to code at home for free?", "How can I learn to code for free at home?"),
    ("What are good books about history for teenagers?", "For teenagers, what are good books about history?"),
    ("On a Mac, how do I take a screenshot?", "How do I take a screenshot on a Mac?"),
    ("Without an oven, how can I bake a cake?", "How can I bake a cake without an oven?"),
    ("During a job interview, what questions should I ask?", "What questions should I ask during a job interview?"),
    ("With a small budget, how do I start a business?", "How do I start a business with a small budget?"),
    ("In Excel, how do I merge two columns?", "How do I merge two columns in Excel?"),
    ("What are some quick dinner recipes with chicken?", "With chicken, what are some quick dinner recipes?"),
]
VOICE = [
    ("Who wrote Hamlet?", "By whom was Hamlet written?"),
    ("Who invented the telephone?", "Who was the telephone invented by?"),
    ("Who painted the Mona Lisa?", "By whom was the Mona Lisa painted?"),
    ("When did Columbus discover America?", "When was America discovered by Columbus?"),
    ("Who composed the Four Seasons?", "Who were the Four Seasons composed by?"),
    ("Who designed the Eiffel Tower?", "Who was the Eiffel Tower designed by?"),
    ("Who discovered penicillin?", "By whom was penicillin discovered?"),
    ("Which company makes the PlayStation?", "By which company is the PlayStation made?"),
    ("Who directed the movie Jaws?", "Who was the movie Jaws directed by?"),
    ("How do bees make honey?", "How is honey made by bees?"),
    ("Who built the Great Wall of China?", "By whom was the Great Wall of China built?"),
    ("What causes earthquakes?", "By what are earthquakes caused?"),
]
SYNONYMS = [
    ("What is the fastest way to learn to type?", "What is the quickest way to learn to type?"),
    ("How can I fix a leaking faucet?", "How can I repair a dripping tap?"),
    ("What are good ways to reduce stress?", "What are effective ways to lower stress?"),
    ("How do I begin running as a beginner?", "How do I start running as a beginner?"),
    ("What is a cheap way to travel across Europe?", "What is an inexpensive way to travel across Europe?"),
    ("How do I get rid of ants in my kitchen?", "How do I eliminate ants in my kitchen?"),
    ("What should I buy for a new puppy?", "What should I purchase for a new puppy?"),
    ("How do I boost my immune system?", "How do I strengthen my immune system?"),
    ("What are some simple dinner ideas?", "What are some easy dinner ideas?"),
    ("How can I become a better public speaker?", "How can I improve as a public speaker?"),
    ("How big is the Amazon rainforest?", "How large is the Amazon rainforest?"),
    ("What is the right way to store fresh herbs?", "What is the correct way to store fresh herbs?"),
    ("How do I quit smoking?", "How do I stop smoking?"),
    ("Why do leaves change color in autumn?", "Why do leaves change colour in the fall?"),
    ("What are the advantages of electric cars?", "What are the benefits of electric cars?"),
]


def typo(text: str, rng: random.Random, n: int) -> str:
    """n keyboard slips: a swapped pair, a dropped or doubled letter, inside words of 4+."""
    chars = list(text)
    for _ in range(n):
        spots = [i for i in range(1, len(chars) - 2)
                 if chars[i].isalpha() and chars[i + 1].isalpha() and chars[i - 1].isalpha()]
        i = rng.choice(spots)
        kind = rng.randrange(3)
        if kind == 0:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif kind == 1:
            del chars[i]
        else:
            chars.insert(i, chars[i])
    return "".join(chars)


def slot_pairs(table: list[tuple[str, str, str]], kind: str) -> list[dict]:
    out = []
    for template, a, b in table:
        if "{}" not in template or not (a or b):
            continue
        qa, qb = template.format(a), template.format(b)
        qa, qb = (" ".join(q.split()).replace(" ?", "?").replace(" .", ".") for q in (qa, qb))
        out.append({"a": qa, "b": qb, "label": 0, "kind": kind})
    return out


def build() -> list[dict]:
    rng = random.Random(20250607)
    rows: list[dict] = []
    for table, kind in ((NUMBERS, "numbers"), (VERSIONS, "versions"), (DATES, "dates"),
                        (UNITS, "units"), (ENTITIES, "entities"), (FORMAT, "format"),
                        (PROG_LANG, "programming-language"), (NAT_LANG, "natural-language"),
                        (SCOPE, "scope"), (COMPARATIVE, "comparative")):
        rows += slot_pairs(table, kind)
    rows += [{"a": a, "b": b, "label": 0, "kind": "scope"} for a, b in SCOPE_PAIRS]
    rows += [{"a": a, "b": b, "label": 0, "kind": "negation"} for a, b in NEGATION]
    for template, x, y in DIRECTION:
        rows.append({"a": template.format(a=x, b=y), "b": template.format(a=y, b=x),
                     "label": 0, "kind": "direction"})
    rows += [{"a": a, "b": b, "label": 0, "kind": "direction"} for a, b in ORDER_PAIRS]
    for q in BASE:
        rows.append({"a": q, "b": typo(q, rng, 1), "label": 1, "kind": "typos"})
        rows.append({"a": q, "b": typo(q, rng, 2).lower().rstrip("?"), "label": 1, "kind": "typos"})
        pre, post = rng.choice(FILLERS)
        body = q[0].lower() + q[1:] if pre else q
        rows.append({"a": q, "b": f"{pre}{body}{post}", "label": 1, "kind": "filler"})
    rows += [{"a": a, "b": b, "label": 1, "kind": "abbreviations"} for a, b in ABBREVIATIONS]
    rows += [{"a": a, "b": b, "label": 1, "kind": "reordering"} for a, b in REORDER]
    rows += [{"a": a, "b": b, "label": 1, "kind": "voice"} for a, b in VOICE]
    rows += [{"a": a, "b": b, "label": 1, "kind": "synonyms"} for a, b in SYNONYMS]
    return rows


def main() -> None:
    rows = build()
    with OUT.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    kinds: dict[str, int] = {}
    for row in rows:
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
    print(f"{len(rows)} pairs -> {OUT}: {kinds}")


if __name__ == "__main__":
    main()
