"""Reproducible generators of training pairs that look like prompts.

Every generator takes a seed prompt and a seeded `random.Random` and returns a rewrite, or
None when the prompt offers nothing to rewrite. Paraphrases (label 1): one answer still
serves both. Near misses (label 0): one answer-changing detail differs. They are applied to
the hand-written prompts (handwritten/), the Quora questions and templated instructions; the
evaluation sets (loadtest/data/) are never read here.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from ..checks import _ANTONYMS
from ..text import CONTEXT_FORMAT

Rewrite = Callable[[str, random.Random], "str | None"]

# -- tables -------------------------------------------------------------------------------

ABBREVIATIONS = [
    ("ETA", "estimated time of arrival"), ("SLA", "service level agreement"),
    ("ROI", "return on investment"), ("FAQ", "frequently asked questions"),
    ("HR", "human resources"), ("PTO", "paid time off"), ("KPI", "key performance indicator"),
    ("DB", "database"), ("k8s", "Kubernetes"), ("JS", "JavaScript"), ("TS", "TypeScript"),
    ("ML", "machine learning"), ("AI", "artificial intelligence"), ("the US", "the United States"),
    ("the UK", "the United Kingdom"), ("NYC", "New York City"), ("LA", "Los Angeles"),
    ("SF", "San Francisco"), ("the EU", "the European Union"), ("ASAP", "as soon as possible"),
    ("FYI", "for your information"), ("DM", "direct message"), ("PR", "pull request"),
    ("CI", "continuous integration"), ("IDE", "integrated development environment"),
    ("OS", "operating system"), ("VPN", "virtual private network"), ("2FA", "two-factor authentication"),
    ("MFA", "multi-factor authentication"), ("SSO", "single sign-on"), ("DOB", "date of birth"),
    ("APR", "annual percentage rate"), ("ETF", "exchange-traded fund"), ("IPO", "initial public offering"),
    ("SaaS", "software as a service"), ("UX", "user experience"), ("UI", "user interface"),
    ("SEO", "search engine optimization"), ("CEO", "chief executive officer"),
    ("CFO", "chief financial officer"), ("Q1", "the first quarter"), ("Q4", "the fourth quarter"),
    ("w/o", "without"), ("approx.", "approximately"), ("info", "information"), ("docs", "documentation"),
    ("app", "application"), ("DC", "Washington, D.C."), ("Mass.", "Massachusetts"),
    ("Calif.", "California"), ("Philly", "Philadelphia"), ("Vegas", "Las Vegas"),
    ("the Fed", "the Federal Reserve"), ("IRS", "Internal Revenue Service"),
    ("NHS", "National Health Service"), ("GP", "general practitioner"), ("BP", "blood pressure"),
    ("OOO", "out of office"), ("EOD", "end of day"), ("WFH", "work from home"),
    ("MoM", "month over month"), ("YoY", "year over year"), ("P&L", "profit and loss"),
    ("CSV", "comma-separated values"), ("API", "application programming interface"),
    ("HTTP", "HyperText Transfer Protocol"), ("DNS", "Domain Name System"),
    ("CLI", "command line"), ("repo", "repository"), ("config", "configuration"),
    ("env var", "environment variable"), ("func", "function"), ("arg", "argument"),
]
CHAT = [("you", "u"), ("your", "ur"), ("are", "r"), ("please", "pls"), ("please", "plz"),
        ("thanks", "thx"), ("people", "ppl"), ("because", "bc"), ("because", "cuz"),
        ("before", "b4"), ("going to", "gonna"), ("want to", "wanna"), ("got to", "gotta"),
        ("do not know", "dunno"), ("I don't know", "idk"), ("to be honest", "tbh"),
        ("right now", "rn"), ("something", "smth"), ("message", "msg"), ("tomorrow", "tmrw"),
        ("should", "shud"), ("what", "wat"), ("really", "rly"), ("probably", "prob"),
        ("okay", "ok"), ("with", "w/"), ("without", "w/o")]
CONTRACTIONS = [("do not", "don't"), ("does not", "doesn't"), ("is not", "isn't"),
                ("cannot", "can't"), ("I am", "I'm"), ("what is", "what's"), ("it is", "it's"),
                ("I have", "I've"), ("I would", "I'd"), ("we are", "we're"), ("they are", "they're"),
                ("that is", "that's"), ("there is", "there's"), ("will not", "won't")]
PREFIXES = ["Hi! ", "Hey, ", "Hello there. ", "Quick question: ", "Quick one: ", "Help please: ",
            "Could you help me? ", "I was wondering: ", "Sorry if this is a dumb question, but ",
            "Not sure if this is the right place to ask, but ", "I don't want to bother you, but ",
            "I hope this isn't a silly question: ", "If you don't mind, ", "This isn't urgent, but ",
            "I'm not an expert, so bear with me: ", "No idea if you can help, but ",
            "Don't laugh, but ", "Hoping you can help. ", "Question for you: ", "Okay so ",
            "Please help, ", "I can't figure this out: ", "Random question, "]
SUFFIXES = [" Thanks!", " Thanks in advance.", " Any help appreciated.", " I'd really appreciate it.",
            " No rush.", " Thank you!", " Cheers.", " TIA", " Much appreciated!", " :)",
            " No worries if not.", " Thanks a lot."]
ASKS = {  # question <-> imperative frames around the same request
    "how_do_i": ["How do I {x}?", "How can I {x}?", "Tell me how to {x}.", "Explain how to {x}.",
                 "What's the best way to {x}?", "I need to {x}. How?", "Show me how to {x}.",
                 "How would I {x}?", "What are the steps to {x}?", "how to {x}", "Steps to {x}?",
                 "Can you walk me through how to {x}?", "I want to {x}, what do I do?"],
    "what_is": ["What is {x}?", "What's {x}?", "Explain {x}.", "Tell me what {x} is.",
                "Can you explain {x}?", "{X}: what is it?", "I'd like to understand {x}.",
                "Could you tell me what {x} means?", "Define {x}.", "what is {x}"],
    "write": ["Write {x}.", "Can you write {x}?", "Please write {x}.", "Could you write {x}?",
              "I need {x}. Can you write it?", "Help me write {x}.", "Draft {x}.",
              "Write me {x}, please.", "I'd like you to write {x}.", "pls write {x}"],
    "give": ["Give me {x}.", "Can you give me {x}?", "I need {x}.", "Could you provide {x}?",
             "Please list {x}.", "What are {x}?", "Share {x}, please.", "I'm looking for {x}."],
}
_ASK_PATTERNS = [
    ("how_do_i", re.compile(r"^(?:how (?:do|can|should|would) i|how to|tell me how to|explain how to|"
                            r"what(?:'s| is) the best way to|show me how to|what are the steps to) "
                            r"(?P<x>[^?.!]{4,120})[?.!]*$", re.I)),
    ("what_is", re.compile(r"^(?:what(?:'s| is)|explain|define|tell me what) (?P<x>[^?.!]{3,100}?)"
                           r"(?: is| means)?[?.!]*$", re.I)),
    ("write", re.compile(r"^(?:please )?(?:write|draft|compose)(?: me)? (?P<x>(?:a|an|the|some|\d+) "
                         r"[^?!]{3,160}?)[.!]*$", re.I)),
    ("give", re.compile(r"^(?:give me|list|share|provide) (?P<x>[^?!]{3,120}?)[.!]*$", re.I)),
]

# Near misses: alternatives that need another answer (one group: interchangeable in form,
# not in meaning). Each is tried as a whole word or phrase, case-insensitively.
ALTERNATIVES = [
    ["wired", "wireless"], ["leased", "owned", "financed"], ["economy", "business class", "first class"],
    ["vegan", "vegetarian", "gluten-free", "keto"], ["refund", "exchange", "store credit"],
    ["domestic", "international"], ["monthly", "annual", "weekly", "quarterly"],
    ["new", "used", "refurbished"], ["manual", "automatic"], ["iOS", "Android"],
    ["Windows", "macOS", "Linux"], ["indoor", "outdoor"], ["full-time", "part-time"],
    ["one-way", "round-trip"], ["checked bag", "carry-on"], ["public", "private"],
    ["gross", "net"], ["before tax", "after tax"], ["personal", "business"],
    ["single", "married"], ["rent", "buy"], ["renting", "owning"], ["beginner", "advanced"],
    ["hardcover", "paperback", "ebook"], ["frozen", "fresh", "canned"], ["decaf", "regular"],
    ["gas", "electric"], ["front-end", "back-end"], ["synchronous", "asynchronous"],
    ["GET", "POST", "PUT", "DELETE"], ["SQL", "NoSQL"], ["upload", "download"],
    ["inbound", "outbound"], ["debit", "credit"], ["checking", "savings"], ["Roth", "traditional"],
    ["fixed-rate", "variable-rate"], ["term", "whole"], ["employee", "contractor"],
    ["salaried", "hourly"], ["window seat", "aisle seat"], ["nonstop", "connecting"],
    ["queen", "king", "twin"], ["breakfast", "lunch", "dinner"], ["oven", "microwave", "air fryer"],
    ["baking soda", "baking powder"], ["red wine", "white wine"], ["hot", "iced"],
    ["cat", "dog"], ["puppy", "adult dog"], ["toddler", "teenager"], ["men", "women"],
    ["left", "right"], ["upstairs", "downstairs"], ["north", "south"], ["east", "west"],
    ["summer", "winter"], ["spring", "autumn"], ["primary", "replica"], ["staging", "production"],
    ["unit test", "integration test", "end-to-end test"], ["merge", "rebase"],
    ["list", "tuple", "set", "dictionary"], ["array", "linked list"], ["stack", "queue"],
    ["TCP", "UDP"], ["IPv4", "IPv6"], ["HTTP", "HTTPS"], ["JSON", "YAML", "XML", "CSV"],
    ["ascending", "descending"], ["inner join", "left join", "outer join"],
    ["mean", "median", "mode"], ["sum", "average", "count"], ["minimum", "maximum"],
    ["first", "last"], ["oldest", "newest"], ["cheapest", "most expensive"],
    ["shortest", "longest"], ["easiest", "hardest"], ["import", "export"],
    ["encrypt", "decrypt"], ["compress", "decompress"], ["install", "uninstall"],
    ["enable", "disable"], ["lock", "unlock"], ["increase", "decrease"], ["add", "remove"],
    ["pros", "cons"], ["advantages", "disadvantages"], ["causes", "effects", "symptoms"],
    ["prevent", "treat", "diagnose"], ["acute", "chronic"], ["generic", "brand-name"],
    ["morning", "evening", "night"], ["weekday", "weekend"], ["AM", "PM"],
]
DELIVERABLES = ["tagline", "mission statement", "press release", "product description",
                "blog post", "tweet", "LinkedIn post", "cover letter", "resignation letter",
                "thank-you note", "abstract", "conclusion", "introduction", "outline",
                "executive summary", "meeting agenda", "job description", "privacy policy",
                "haiku", "limerick", "sonnet", "short story", "essay", "email", "text message",
                "speech", "toast", "FAQ", "slogan", "performance review", "apology letter",
                "complaint letter", "newsletter", "product review", "elevator pitch", "poem",
                "recipe", "lesson plan", "quiz", "study guide", "headline", "title", "summary"]
SAME_DELIVERABLE = [{"tagline", "slogan"}, {"poem", "haiku", "limerick", "sonnet"}]
"""Near-synonyms never swapped for each other: a poem asked for is a poem."""
AUDIENCES = ["a five-year-old", "a teenager", "a lawyer", "a doctor", "a beginner", "an expert",
             "my boss", "a customer", "a new hire", "my grandmother", "a software engineer",
             "a high school student", "a PhD student", "investors", "a non-technical manager",
             "kids", "senior citizens", "a nurse"]
LENGTHS = ["in one sentence", "in three sentences", "in one paragraph", "in three paragraphs",
           "in 50 words", "in 200 words", "in 500 words", "in three pages", "in a few bullet points",
           "in one line", "briefly", "in detail", "in depth", "in under 100 words"]
TONES = ["formal", "casual", "funny", "serious", "sarcastic", "persuasive", "friendly",
         "professional", "enthusiastic", "apologetic", "neutral", "poetic"]
TIMES = [("9am", "9pm"), ("9 AM", "9 PM"), ("3pm", "3am"), ("7:30 am", "7:30 pm"),
         ("noon", "midnight"), ("this morning", "this evening"), ("tonight", "tomorrow night"),
         ("EST", "PST"), ("ET", "PT"), ("UTC", "CET"), ("GMT", "IST"), ("CST", "EST"),
         ("Eastern time", "Pacific time"), ("London time", "New York time"),
         ("Monday", "Friday"), ("Tuesday", "Thursday"), ("Saturday", "Sunday"),
         ("January", "July"), ("March", "May"), ("today", "tomorrow"), ("yesterday", "last week"),
         ("next week", "last week"), ("next month", "this month"), ("2023", "2024"), ("2024", "2025")]
FORMATS = ["as a table", "as a bulleted list", "as a numbered list", "in JSON", "in YAML",
           "as CSV", "in Markdown", "as a flowchart", "as pseudocode", "as a timeline",
           "in plain text", "as an email"]
LANGUAGES = ["English", "Spanish", "French", "German", "Italian", "Portuguese", "Japanese",
             "Chinese", "Korean", "Hindi", "Arabic", "Dutch", "Polish", "Russian"]
PROGRAMMING = ["Python", "JavaScript", "TypeScript", "Java", "C#", "Go", "Rust", "Ruby", "PHP",
               "Kotlin", "Swift", "C++", "Bash", "SQL", "Scala", "R"]
NAMES = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Maria", "Omar",
         "Priya", "Sam", "Tom", "Sarah", "the manager", "the client", "the landlord", "the tenant",
         "the buyer", "the seller", "the employer", "the employee", "my sister", "my brother"]
ROLE_VERBS = ["hired", "fired", "paid", "emailed", "sued", "beat", "called", "owes", "thanked",
              "invited", "replaced", "interviewed", "reports to", "manages", "texted", "blamed",
              "trained", "mentored", "outranks", "hit", "followed", "sent money to", "sold a car to"]
SCOPES = ["for beginners", "on a budget", "in winter", "without a car", "for kids",
          "for a small business", "with no experience", "in a small apartment", "for seniors",
          "in under an hour", "without an oven", "for a large team", "offline", "on a Mac",
          "for free", "at night", "in the rain", "for a first date", "during pregnancy"]
FOLLOW_UPS = [  # (request, paraphrases, different requests)
    ("Make it shorter.", ["Can you shorten it?", "Shorter please.", "Trim it down a bit.",
                          "Make that more concise.", "Could you cut it down?"],
     ["Make it longer.", "Make it funnier.", "Make it more formal.", "Make it sound friendlier."]),
    ("Make it more formal.", ["Can you make the tone more formal?", "More professional, please.",
                              "Rewrite it in a formal register."],
     ["Make it more casual.", "Make it shorter.", "Make it funnier."]),
    ("Translate it into French.", ["Now in French, please.", "Can you put that in French?",
                                   "French version please."],
     ["Translate it into Spanish.", "Translate it into German.", "Make it shorter."]),
    ("Add an example.", ["Can you include an example?", "Give an example too.",
                         "Please add one example."],
     ["Remove the example.", "Add three examples.", "Add a summary."]),
    ("Explain it more simply.", ["Can you simplify that?", "Say it in simpler words.",
                                 "ELI5 please.", "Dumb it down a bit."],
     ["Explain it in more detail.", "Explain it more technically.", "Make it shorter."]),
    ("Now write it in Python.", ["Can you do that in Python?", "Python version please.",
                                 "Same thing but in Python."],
     ["Now write it in JavaScript.", "Now write it in Go.", "Now add tests."]),
    ("Add error handling.", ["Can you add error handling?", "Handle the errors too.",
                             "Please make it handle errors."],
     ["Remove the error handling.", "Add logging.", "Add type hints."]),
    ("What about for two people?", ["And for 2 people?", "How about for a couple?"],
     ["What about for six people?", "What about for ten people?"]),
    ("Make it rhyme.", ["Can it rhyme?", "Please make it rhyme."],
     ["Make it not rhyme.", "Make it longer.", "Make it sadder."]),
    ("Use bullet points.", ["Put it in bullet points.", "As bullets, please.", "Bullet it out."],
     ["Use a table.", "Use numbered steps.", "Write it as one paragraph."]),
    ("Make it sound more confident.", ["Can you make it more confident?", "Sound surer of myself."],
     ["Make it sound more humble.", "Make it sound more urgent."]),
    ("Why?", ["Why is that?", "How come?", "Why so?"],
     ["How?", "When?", "Are you sure?"]),
    ("Give me three more.", ["Three more please.", "Can I have 3 more?", "Another three?"],
     ["Give me ten more.", "Give me one more.", "Give me three fewer."]),
    ("What are the side effects?", ["Any side effects?", "Does it have side effects?"],
     ["What is the dosage?", "What are the benefits?", "What are the alternatives?"]),
    ("How much does it cost?", ["What's the price?", "How expensive is it?", "What does it cost?"],
     ["How long does it take?", "Where can I buy it?", "Is it worth it?"]),
]
STATEMENT_CONTEXTS = [  # short context turns that change what follows
    ("I rent my flat.", ["I'm renting my apartment.", "My flat is rented."], ["I own my flat."]),
    ("I live in Canada.", ["I'm based in Canada.", "I'm Canadian and live there."],
     ["I live in Australia.", "I live in the US."]),
    ("I'm vegetarian.", ["I don't eat meat.", "I follow a vegetarian diet."], ["I'm vegan."]),
    ("I'm using Python 3.12.", ["My Python version is 3.12."], ["I'm using Python 3.8."]),
    ("I have two kids.", ["I've got 2 children."], ["I have three kids.", "I have no kids."]),
    ("My budget is $500.", ["I can spend 500 dollars."], ["My budget is $5,000."]),
    ("I work remotely.", ["I work from home."], ["I work in an office."]),
    ("I'm a beginner.", ["I'm new to this."], ["I'm an expert."]),
]


# -- paraphrases --------------------------------------------------------------------------

def _sub_word(text: str, old: str, new: str, count: int = 1) -> str:
    return re.sub(rf"(?<![\w-]){re.escape(old)}(?![\w-])", lambda m: _case_like(m.group(0), new),
                  text, count=count, flags=re.I)


def _case_like(found: str, new: str) -> str:
    if found[:1].isupper() and new[:1].islower():
        return new[:1].upper() + new[1:]
    return new


def _has(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text, re.I) is not None


def reframe(text: str, rng: random.Random) -> str | None:
    """The same request in another frame: question <-> imperative, more or less polite."""
    stripped = text.strip()
    for kind, pattern in _ASK_PATTERNS:
        m = pattern.match(stripped)
        if m:
            x = m.group("x").strip()
            frame = rng.choice([f for f in ASKS[kind] if not _same_frame(f, stripped, x)] or ASKS[kind])
            out = frame.replace("{x}", x).replace("{X}", x[:1].upper() + x[1:])
            return out if out != stripped else None
    return None


def _same_frame(frame: str, text: str, x: str) -> bool:
    return frame.replace("{x}", x).replace("{X}", x[:1].upper() + x[1:]).lower() == text.lower()


def politeness(text: str, rng: random.Random) -> str | None:
    """Filler before or after, with or without a 'not' in it: nothing the answer depends on."""
    if len(text) > 600:
        return None
    body = text[:1].lower() + text[1:] if rng.random() < 0.6 and not text[:2].isupper() else text
    op = rng.randrange(3)
    if op == 0:
        return rng.choice(PREFIXES) + body
    if op == 1:
        return text.rstrip() + rng.choice(SUFFIXES)
    return rng.choice(PREFIXES) + body.rstrip() + rng.choice(SUFFIXES)


def chat_speak(text: str, rng: random.Random) -> str | None:
    """Short forms, lower case, dropped punctuation and apostrophes: how people type."""
    if "```" in text or "`" in text:
        return None
    out = text
    found = [(long, short) for long, short in CHAT if _has(out, long)]
    rng.shuffle(found)
    for long, short in found[:rng.choice((1, 2, 3))]:
        out = _sub_word(out, long, short)
    if rng.random() < 0.7:
        out = out.lower()
    if rng.random() < 0.5:
        out = re.sub(r"[?.!,]+(?=\s|$)", "", out).replace("'", "")
    if rng.random() < 0.3:
        out = re.sub(r"\b(?:the|a|an) ", "", out, count=2)
    return out if out != text else None


def abbreviate(text: str, rng: random.Random) -> str | None:
    """An abbreviation for its expansion or the other way round (ETA, SLA, the US, NYC)."""
    pairs = [(s, long) for s, long in ABBREVIATIONS if _has(text, long)] + [
        (long, s) for s, long in ABBREVIATIONS if _has(text, s)]
    if not pairs:
        return None
    old, new = rng.choice(pairs)
    out = _sub_word(text, old, new)
    return out if out != text else None


def contract(text: str, rng: random.Random) -> str | None:
    """Contractions written out or put in (register, not meaning)."""
    pairs = [(a, b) for a, b in CONTRACTIONS if _has(text, a)] + [
        (b, a) for a, b in CONTRACTIONS if _has(text, b)]
    if not pairs:
        return None
    out = text
    for old, new in rng.sample(pairs, min(len(pairs), 2)):
        out = _sub_word(out, old, new)
    return out if out != text else None


_PAIR = re.compile(r"\b(difference between|compare|comparing|differences between|similarities between|"
                   r"choose between|which is better,?)\s+(?P<a>[\w.+#-]+(?: [\w.+#-]+)?)\s+"
                   r"(?P<op>and|or|vs\.?|versus|with)\s+"
                   r"(?P<b>[\w.+#-]+(?: [\w.+#-]+)?)(?=[\s?.!,]|$)", re.I)


def symmetric(text: str, rng: random.Random) -> str | None:
    """The two sides of a symmetric comparison swapped ('X and Y' / 'Y and X')."""
    m = _PAIR.search(text)
    if not m:
        return None
    return text[:m.start("a")] + m.group("b") + f" {m.group('op')} " + m.group("a") + text[m.end("b"):]


_CLAUSE = re.compile(r"^(?P<main>[^,;]{8,150}?) (?P<cond>(?:if|when|because|since|before|after|while|unless) "
                     r"[^,;?.!]{4,120})(?P<end>[?.!]*)$", re.I)


def clause_order(text: str, rng: random.Random) -> str | None:
    """'X if Y?' <-> 'If Y, X?'; two sentences of context and question swapped."""
    m = _CLAUSE.match(text.strip())
    if m:
        cond, main = m.group("cond"), m.group("main")
        return f"{cond[:1].upper()}{cond[1:]}, {main[:1].lower()}{main[1:]}{m.group('end')}"
    sentences = re.split(r"(?<=[.!])\s+(?=[A-Z])", text.strip())
    if len(sentences) == 2 and sentences[1].endswith("?") and "`" not in text:
        return f"{sentences[1]} {sentences[0]}"
    return None


KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]


def typo(text: str, rng: random.Random) -> str | None:
    """One to three keyboard slips in words of prose (never inside code)."""
    if "`" in text:
        return None
    chars = list(text)
    for _ in range(rng.choice((1, 1, 2, 3))):
        spots = [i for i in range(1, len(chars) - 2)
                 if chars[i].isalpha() and chars[i + 1].isalpha() and chars[i - 1].isalpha()]
        if not spots:
            return None
        i = rng.choice(spots)
        op = rng.randrange(4)
        if op == 0:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif op == 1:
            del chars[i]
        elif op == 2:
            chars.insert(i, chars[i])
        else:
            row = next((r for r in KEYBOARD if chars[i].lower() in r), None)
            if row:
                k = row.index(chars[i].lower())
                chars[i] = row[max(0, min(len(row) - 1, k + rng.choice((-1, 1))))]
    out = "".join(chars)
    return out if out != text else None


_FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def code_layout(text: str, rng: random.Random) -> str | None:
    """The same code laid out otherwise: re-indented, fenced or not, a language tag added or
    dropped, quoted with '> ', blank lines around it changed."""
    m = _FENCE.search(text)
    if not m:
        return None
    lang, body = m.group(1), m.group(2)
    op = rng.randrange(5)
    if op == 0:  # indentation 4 <-> 2
        new = re.sub(r"^((?:    )+)", lambda g: "  " * (len(g.group(1)) // 4), body, flags=re.M)
        if new == body:
            new = re.sub(r"^((?:  )+)", lambda g: "    " * (len(g.group(1)) // 2), body, flags=re.M)
        block = f"```{lang}\n{new}```"
    elif op == 1:  # no fence
        block = body.rstrip("\n")
    elif op == 2:  # tag
        block = f"```{'' if lang else rng.choice(['python', 'js', 'text', 'bash', 'sql'])}\n{body}```"
    elif op == 3:  # quoted
        block = "\n".join("> " + line for line in body.rstrip("\n").split("\n"))
    else:  # blank lines
        block = f"\n```{lang}\n{body}```\n"
    out = text[:m.start()] + block + text[m.end():]
    return out if out != text else None


PARAPHRASES: dict[str, Rewrite] = {
    "reframe": reframe, "politeness": politeness, "chat-speak": chat_speak,
    "abbreviation": abbreviate, "register": contract, "symmetric": symmetric,
    "clause-order": clause_order, "typos": typo, "code-layout": code_layout,
}


# -- near misses --------------------------------------------------------------------------

def swap_alternative(text: str, rng: random.Random) -> str | None:
    """An attribute, mode, statistic or opposite for another of its group (wired / wireless,
    economy / first class, mean / median, import / export)."""
    groups = ALTERNATIVES + [list(pair) for pair in _ANTONYMS]
    found = [(g, w) for g in groups for w in g if _has(text, w)]
    if not found:
        return None
    group, word = rng.choice(found)
    other = rng.choice([w for w in group if w.lower() != word.lower()])
    if _has(text, other):
        return None  # both in the text already: a swap would only reorder them
    out = _sub_word(text, word, other)
    return out if out != text else None


def swap_deliverable(text: str, rng: random.Random) -> str | None:
    found = [d for d in DELIVERABLES if _has(text, d)]
    if not found:
        return None
    word = rng.choice(found)
    same = next((g for g in SAME_DELIVERABLE if word in g), {word})
    other = rng.choice([d for d in DELIVERABLES if d not in same])
    out = _sub_word(text, word, other)
    return _articles(out) if out != text else None


def _articles(text: str) -> str:
    def article(m: re.Match[str]) -> str:
        return m.group(1) + ("n " if m.group(2).lower()[0] in "aeiou" else " ")
    return re.sub(r"\b([Aa])n? (?=(\w))", article, text)




def change_audience(text: str, rng: random.Random) -> str | None:
    """Another reader ('for a lawyer' / 'for a teenager'), or one where none was named."""
    for audience in AUDIENCES:
        if _has(text, audience):
            other = rng.choice([a for a in AUDIENCES if a != audience])
            return _sub_word(text, audience, other)
    if re.match(r"^(?:explain|describe|write|summari[sz]e|tell)", text.strip(), re.I) and len(text) < 300:
        return _before_end(text, f" for {rng.choice(AUDIENCES)}")
    return None


def change_length(text: str, rng: random.Random) -> str | None:
    """Another length or depth ('in three sentences' / 'in three pages', 'briefly' / 'in detail')."""
    for length in LENGTHS:
        if _has(text, length):
            return _sub_word(text, length, rng.choice([x for x in LENGTHS if x != length]))
    m = re.search(r"\b(one|two|three|four|five|\d+)[ -]"
                  r"(sentences?|paragraphs?|pages?|words|lines?|bullet points?)\b", text, re.I)
    if m:
        unit = rng.choice([u for u in ("sentences", "paragraphs", "pages", "words", "bullet points")
                           if not m.group(2).lower().startswith(u[:4])])
        return text[:m.start(2)] + unit + text[m.end(2):]
    if len(text) < 300 and re.match(r"^(?:explain|describe|write|summari[sz]e|tell|give)",
                                    text.strip(), re.I):
        return _before_end(text, " " + rng.choice(LENGTHS))
    return None


def change_tone(text: str, rng: random.Random) -> str | None:
    for tone in TONES:
        if _has(text, tone):
            return _sub_word(text, tone, rng.choice([t for t in TONES if t != tone]))
    if re.match(r"^(?:write|draft|rewrite|compose)", text.strip(), re.I) and len(text) < 300:
        return _before_end(text, f" in a {rng.choice(TONES)} tone")
    return None


def change_time(text: str, rng: random.Random) -> str | None:
    """Another time of day, time zone, weekday, month or year."""
    found = [(a, b) for a, b in TIMES if _has(text, a)] + [(b, a) for a, b in TIMES if _has(text, b)]
    if not found:
        m = re.search(r"\b(\d{1,2})(?::(\d{2}))?\s?([ap])\.?m\.?\b", text, re.I)
        if not m:
            return None
        flipped = "p" if m.group(3).lower() == "a" else "a"
        return text[:m.start(3)] + (flipped if m.group(3).islower() else flipped.upper()) + text[m.end(3):]
    old, new = rng.choice(found)
    return _sub_word(text, old, new)


def change_format(text: str, rng: random.Random) -> str | None:
    for fmt in FORMATS:
        if _has(text, fmt):
            return _sub_word(text, fmt, rng.choice([f for f in FORMATS if f != fmt]))
    for a in ("JSON", "YAML", "XML", "CSV", "Markdown", "HTML"):
        if _has(text, a):
            return _sub_word(text, a, rng.choice([b for b in ("JSON", "YAML", "XML", "CSV", "Markdown")
                                                  if b != a]))
    if len(text) < 300 and re.match(r"^(?:list|give|summari[sz]e|compare|show)", text.strip(), re.I):
        return _before_end(text, " " + rng.choice(FORMATS))
    return None


def change_language(text: str, rng: random.Random) -> str | None:
    for pool in (PROGRAMMING, LANGUAGES):
        found = [w for w in pool if _has(text, w)]
        if found:
            word = rng.choice(found)
            return _sub_word(text, word, rng.choice([w for w in pool if w != word]))
    return None


_NAMES_RE, _VERBS_RE = "|".join(map(re.escape, NAMES)), "|".join(map(re.escape, ROLE_VERBS))
_ROLE = re.compile(rf"\b(?P<a>{_NAMES_RE}) (?P<v>{_VERBS_RE}) (?P<b>{_NAMES_RE})\b", re.I)


def swap_roles(text: str, rng: random.Random) -> str | None:
    """'A hired B' / 'B hired A'."""
    m = _ROLE.search(text)
    if not m or m.group("a").lower() == m.group("b").lower():
        return None
    a, b = m.group("a"), m.group("b")
    first = b[:1].upper() + b[1:] if a[:1].isupper() else b
    second = a if a[:1].isupper() and a.split()[0] not in ("The", "My") else a[:1].lower() + a[1:]
    return text[:m.start()] + f"{first} {m.group('v')} {second}" + text[m.end():]


def role_prompt(rng: random.Random) -> tuple[str, str]:
    """A made-up prompt about who did what to whom, and the same with the roles swapped."""
    a, b = rng.sample(NAMES, 2)
    verb = rng.choice(ROLE_VERBS)
    ask = rng.choice(["What should {a} do now?", "Is that legal?", "Write an email about it.",
                      "How should I respond?", "Who pays the fees?", "What are the next steps?",
                      "Summarize the situation.", "Can {b} refuse?"])
    first = f"{a[:1].upper()}{a[1:]} {verb} {b}. {ask.format(a=a, b=b)}"
    second = f"{b[:1].upper()}{b[1:]} {verb} {a}. {ask.format(a=a, b=b)}"
    return first, second


_NUM = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.])")


def change_number(text: str, rng: random.Random) -> str | None:
    found = list(_NUM.finditer(text))
    if not found:
        return None
    m = rng.choice(found)
    n = m.group(1)
    if "." in n:
        new = f"{float(n) + rng.choice((0.1, 0.5, 1, -0.1)):.{len(n.split('.')[1])}f}"
    else:
        v = int(n)
        new = str(v + rng.choice((1, 2, 5, 10, -1)) if v > 1 else v + rng.choice((1, 2, 3)))
        if rng.random() < 0.2 and v > 2:
            new = str(v * 2)
    return text[:m.start(1)] + new + text[m.end(1):]


def add_negation(text: str, rng: random.Random) -> str | None:
    m = re.search(r"\b(should|can|do|does|is|are|will|must|could|would|did)\b (?!not|n't)"
                  r"(I |you |we |it |they |he |she )?", text, re.I)
    if not m or "`" in text:
        return None
    if m.group(2):
        return text[:m.end()] + "not " + text[m.end():]
    return text[:m.end(1)] + " not" + text[m.end(1):]


def narrow(text: str, rng: random.Random) -> str | None:
    """A qualifier that narrows what is asked ('... for beginners', '... on a budget')."""
    if len(text) > 250 or any(_has(text, s) for s in SCOPES):
        return None
    return _before_end(text, " " + rng.choice(SCOPES))


def _before_end(text: str, insert: str) -> str:
    stripped = text.rstrip()
    end = len(stripped.rstrip("?.!"))
    return stripped[:end] + insert + stripped[end:]


_OPS = [("<=", "<"), (">=", ">"), ("==", "!="), ("===", "=="), ("&&", "||"), ("+=", "-="),
        ("*=", "/="), (" and ", " or "), ("++", "--"), (" + ", " - "), (" * ", " / "),
        ("True", "False"), ("true", "false"), ("append", "extend"), ("min(", "max("),
        ("sorted(", "reversed("), ("const ", "let "), ("async ", ""), ("await ", ""),
        (".map(", ".filter("), ("range(1, ", "range(0, "), ("[0]", "[1]"), ("[-1]", "[0]"),
        ("LEFT JOIN", "INNER JOIN"), ("ASC", "DESC"), ("COUNT(", "SUM("), ("> 0", ">= 0"),
        ("+", "*"), ("\\d+", "\\d*"), ("\\w+", "\\w*"), ("?", "+")]


def code_edit(text: str, rng: random.Random) -> str | None:
    """One token of code changed: an operator, a bound, a literal or an identifier."""
    spans = [(m.start(2), m.end(2)) for m in _FENCE.finditer(text)]
    spans += [(m.start(1), m.end(1)) for m in re.finditer(r"`([^`\n]+)`", text)]
    if not spans:
        return None
    start, end = rng.choice(spans)
    code = text[start:end]
    options = [(a, b) for a, b in _OPS if a in code] + [(b, a) for a, b in _OPS if b and b in code]
    if rng.random() < 0.3 or not options:
        literals = list(re.finditer(r"(?<![\w.])\d+(?![\w.])|'[^'\n]{1,20}'|\"[^\"\n]{1,20}\"", code))
        names = [m for m in re.finditer(r"\b[a-z_][a-z0-9_]{2,}\b", code)
                 if m.group(0) not in ("def", "return", "for", "while", "print", "import", "from",
                                       "const", "let", "var", "function", "class", "self", "true",
                                       "false", "none", "null", "and", "not", "elif", "else")]
        if literals and (rng.random() < 0.5 or not names):
            m = rng.choice(literals)
            tok = m.group(0)
            new = (str(int(tok) + rng.choice((1, -1, 10))) if tok.isdigit()
                   else tok[0] + tok[1:-1][::-1] + tok[-1])
            if new == tok:
                return None
            code = code[:m.start()] + new + code[m.end():]
        elif names:
            m = rng.choice(names)
            tok = m.group(0)
            new = rng.choice([tok + "s", tok[:-1] if len(tok) > 3 else tok + "_2", "new_" + tok, tok.upper()])
            code = code[:m.start()] + new + code[m.end():]
        else:
            return None
    else:
        old, new = rng.choice(options)
        positions = [i for i in range(len(code)) if code.startswith(old, i)]
        i = rng.choice(positions)
        code = code[:i] + new + code[i + len(old):]
    out = text[:start] + code + text[end:]
    return out if out != text else None


NEAR_MISSES: dict[str, Rewrite] = {
    "attribute": swap_alternative, "deliverable": swap_deliverable, "audience": change_audience,
    "length": change_length, "tone": change_tone, "time": change_time, "format": change_format,
    "language": change_language, "roles": swap_roles, "number": change_number,
    "negation": add_negation, "scope": narrow, "code-token": code_edit,
}



def follow_up_pairs(prompts: list[str], rng: random.Random, n: int) -> list[tuple[str, str, int, str]]:
    """Short conversational turns judged with the request they follow: the same follow-up
    after the same request reworded (1), another follow-up (0), the same follow-up after
    another request (0), and context statements that change the answer (0)."""
    out = []
    for _ in range(n):
        previous = rng.choice(prompts)
        turn, same, others = rng.choice(FOLLOW_UPS)
        op = rng.randrange(4)
        a = CONTEXT_FORMAT.format(previous=previous, turn=turn)
        if op == 0:
            b = CONTEXT_FORMAT.format(previous=previous, turn=rng.choice(same))
            out.append((a, b, 1, "follow-up-reword"))
        elif op == 1:
            b = CONTEXT_FORMAT.format(previous=previous, turn=rng.choice(others))
            out.append((a, b, 0, "follow-up-other"))
        elif op == 2:
            other_prev = rng.choice(prompts)
            if other_prev != previous:
                out.append((a, CONTEXT_FORMAT.format(previous=other_prev, turn=turn), 0, "follow-up-context"))
        else:
            statement, same_s, other_s = rng.choice(STATEMENT_CONTEXTS)
            ask = rng.choice(prompts)
            a = CONTEXT_FORMAT.format(previous=statement, turn=ask)
            if rng.random() < 0.5:
                out.append((a, CONTEXT_FORMAT.format(previous=rng.choice(same_s), turn=ask), 1,
                            "context-reword"))
            else:
                out.append((a, CONTEXT_FORMAT.format(previous=rng.choice(other_s), turn=ask), 0,
                            "context-statement"))
    return out


def generate(seeds: list[str], rng: random.Random, per_kind: int) -> list[tuple[str, str, int, str]]:
    """About `per_kind` pairs of every paraphrase and near-miss kind, from the seed prompts,
    plus role swaps and follow-ups. Deterministic for a given rng state and seed order."""
    out: list[tuple[str, str, int, str]] = []
    for label, table in ((1, PARAPHRASES), (0, NEAR_MISSES)):
        for kind, rewrite in table.items():
            made, tries = 0, 0
            while made < per_kind and tries < per_kind * 30:
                tries += 1
                seed = rng.choice(seeds)
                new = rewrite(seed, rng)
                if new is None or new.strip() == seed.strip():
                    continue
                if label == 1 and rng.random() < 0.3:  # paraphrases stack: a chatty typo'd reframe
                    second = rng.choice(list(PARAPHRASES.values()))(new, rng)
                    new = second or new
                out.append((seed, new, label, kind))
                made += 1
    for _ in range(per_kind):
        a, b = role_prompt(rng)
        out.append((a, b, 0, "roles"))
    out += follow_up_pairs(seeds, rng, per_kind * 3)
    return out
