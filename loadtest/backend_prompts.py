"""Prompts of the backend benchmark (bench_backend.py), fixed here so that numbers taken at
different commits measure the same work.

Extraction-heavy prompts ask for an answer that copies much of the prompt (edit a pasted
text, change code, summarise, extract): that is where prompt-lookup drafts are right. Open
chat asks for new text, where they rarely are. The shared system prompt is ~1,000 tokens
of assistant rules, for time to first token with and without prefix caching.
"""

from __future__ import annotations

from collections.abc import Callable

ARTICLE = """The town of Halden sits where the river Tista meets the fjord, and for most of
its history it lived from timber. Logs were floated down the river from the forests in the
east, sawn in mills along the banks and shipped from the harbour to Holland and England.
In the nineteenth century the mills gave way to paper factories, which needed the same
water and the same wood, and the town grew around them. The fortress above the town,
Fredriksten, was built in the seventeenth century to guard the border with Sweden, and it
was besieged several times; the Swedish king Charles XII was killed in front of its walls in
1718. Today the fortress is a park, the paper factory still runs, and the harbour is used by
small boats in summer. Visitors come for the old wooden houses, the fortress and the canal,
which links the fjord to a chain of lakes through a series of locks built between 1857 and
1877. The canal was made for timber, but now it carries tourists on an old steamer that
climbs more than fifty metres through the locks at Brekke, the highest in northern Europe."""

ARTICLE_WITH_TYPOS = (ARTICLE.replace("history", "histroy").replace("floated", "floatted")
                      .replace("nineteenth", "ninteenth").replace("factories", "factorys")
                      .replace("besieged", "beseiged").replace("Visitors", "Vistors")
                      .replace("series", "serise").replace("tourists", "tourits"))

CODE = '''import csv
from dataclasses import dataclass


@dataclass
class Order:
    order_id: str
    customer: str
    amount: float
    paid: bool


def parse_line(row):
    order_id, customer, amount, paid = row
    return Order(order_id, customer.strip(), float(amount), paid == "yes")


def load_orders(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        return [parse_line(row) for row in reader]


def unpaid_total(orders):
    total = 0.0
    for order in orders:
        if not order.paid:
            total += order.amount
    return total


def customers_with_debt(orders):
    names = set()
    for order in orders:
        if not order.paid:
            names.add(order.customer)
    return sorted(names)


if __name__ == "__main__":
    orders = load_orders("orders.csv")
    print("unpaid:", unpaid_total(orders))
    print("customers:", ", ".join(customers_with_debt(orders)))
'''

EMAIL = """Hi Tom,

the report you sent is late again and half of the numbers are wrong. The sales figures for
March are copied from February, the table on page 4 has no totals and the chart on page 6
shows the wrong region. I need a fixed version by Thursday, because the board meets on
Friday morning and I will not present this. Also, next time send it to Anna as well, she
has to check the budget part before it goes out.

Send me the new file when it is done.

Maria"""

NOTES = """Project notes, spring planning.
On 3 March the team agreed to move the launch of the new website to 14 April.
The designers deliver the final page layouts on 21 March.
Testing with twenty customers runs from 28 March to 4 April.
The press release is written by 7 April and approved by legal on 10 April.
On 12 April the old site is frozen and the content is copied over.
The launch party is on 15 April at the office, and the first report on traffic is due on
30 April."""

EXTRACTION = [
    "Correct the spelling mistakes in the following text. Return the whole corrected text "
    "and nothing else.\n\n" + ARTICLE_WITH_TYPOS,
    "In this Python code, rename the function parse_line to parse_order everywhere it "
    "appears. Return the complete code.\n\n```python\n" + CODE + "```",
    "Add a short docstring to every function in this Python code. Return the complete "
    "code.\n\n```python\n" + CODE + "```",
    "Rewrite this email so that it is polite and friendly, but keep every fact and request "
    "in it.\n\n" + EMAIL,
    "List every date in these notes with what happens on it, one per line, in the form "
    "'date: event'.\n\n" + NOTES,
    "Summarise this text in five bullet points, using the text's own words where you "
    "can.\n\n" + ARTICLE,
]

CHAT = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator keeps food cold.",
    "What are some good habits for someone learning a new language?",
    "Why do leaves change colour in autumn?",
    "Give me ideas for a rainy weekend at home with two children.",
    "Describe what a day in the life of a medieval baker might have looked like.",
]

# Questions a new user might try first: the default max_tokens is measured on these.
FIRST_QUESTIONS = [
    "What is the capital of France?",
    "Tell me a joke.",
    "How do I make a cup of tea?",
    "What is a semantic cache?",
    "Write a haiku about the sea.",
]

TOPICS = ["billing", "shipping", "returns", "accounts", "privacy", "warranties",
          "gift cards", "orders", "subscriptions", "refunds", "discounts", "delivery times",
          "damaged items", "passwords", "invoices", "store locations", "loyalty points",
          "international orders", "product sizes", "payment methods"]

RULES = [
    "When a customer asks about {t}, answer from the policy below, quote the relevant rule "
    "number, and never promise anything the policy does not say.",
    "If a question about {t} needs account details, ask for the order number first and do "
    "not ask for passwords or full card numbers.",
    "Keep answers about {t} under one hundred words, use plain language, and end by asking "
    "whether anything else is needed.",
]

QUESTIONS = [f"I have a question about {t}: what is your policy, in short?" for t in TOPICS]


def system_prompt(count_tokens: Callable[[str], int], target: int = 1000) -> str:
    """The shared system prompt: rules per topic until it holds `target` tokens of the
    model's tokenizer (the benchmark records the exact count)."""
    lines = ["You are the support assistant of an online shop. Follow these rules."]
    n = 0
    while count_tokens("\n".join(lines)) < target:
        lines.append(f"Rule {n + 1}. " + RULES[n % len(RULES)].format(t=TOPICS[n % len(TOPICS)]))
        n += 1
    return "\n".join(lines)
