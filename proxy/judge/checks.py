"""Cheap lexical checks for the classic near misses of a prompt cache.

Two prompts can embed within a hair of each other and still need different answers: other
numbers or versions, other dates or units, other named entities, a negation on one side, the
same words in swapped order ("from Boston to Denver" / "from Denver to Boston"), a flipped
comparative, another programming or natural language, another requested format, or a
narrower scope. Each check looks for one of these and names itself when it fires; a
candidate with any fired check is not served. They are pure string functions (microseconds),
written to let paraphrases through: typos (one-edit fuzzy matching), filler words,
abbreviations (acronyms and a small alias table), reordering of whole phrases, voice.

A word of a kind on one side only is mostly context, not another question: a name, a unit
or a vague time word ('now') fires only when the other side has one of its own in its place
('Austria' / 'Australia', 'feet' / 'yards', 'at night' / 'in the morning'); a format word
only where it is asked for ('in a table', 'write a haiku'), not where it is the subject
('the best closing paragraphs'). Specific times ('yesterday', 'on Friday') and negations
still fire alone; numbers always do.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from .code import check_code, has_code
from .settings import ALL_CHECKS, DEFAULT_CHECKS

__all__ = ["ALL_CHECKS", "DEFAULT_CHECKS", "run_checks"]

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9+#'.\-]*[A-Za-z0-9+#]|[A-Za-z]|\d+(?:[.,:]\d+)*")
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_WORD_NUMBERS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split()) if w != "one"} | {
    "thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000",
    "million": "1000000", "billion": "1000000000", "dozen": "12", "half": "0.5"}
_NEGATIONS = {"not", "no", "never", "none", "nothing", "without", "w/o", "cannot", "nor",
              "neither", "nobody", "nowhere"}
_ALIASES = {"js": "javascript", "py": "python", "golang": "go", "ts": "typescript",
            "k8s": "kubernetes", "postgres": "postgresql", "node": "node.js", "nodejs": "node.js",
            "w/o": "without", "w/": "with", "ppl": "people", "pls": "please", "plz": "please",
            "diff": "difference", "btw": "by the way", "u": "you", "ur": "your", "r": "are",
            "2": "to", "gf": "girlfriend", "bf": "boyfriend", "asap": "as soon as possible",
            "colour": "color", "autumn": "fall", "favourite": "favorite", "phd": "doctor of philosophy",
            "us": "united states", "usa": "united states", "uk": "united kingdom",
            "tho": "though", "thx": "thanks", "info": "information", "doc": "document",
            "docs": "documents", "app": "application", "pic": "picture", "pics": "pictures"}
_ANTONYMS = [
    ("good", "bad"), ("better", "worse"), ("best", "worst"), ("fast", "slow"),
    ("faster", "slower"), ("fastest", "slowest"), ("big", "small"), ("bigger", "smaller"),
    ("biggest", "smallest"), ("large", "small"), ("larger", "smaller"), ("largest", "smallest"),
    ("high", "low"), ("higher", "lower"), ("highest", "lowest"), ("hot", "cold"),
    ("hotter", "colder"), ("hottest", "coldest"), ("strong", "weak"), ("stronger", "weaker"),
    ("cheap", "expensive"), ("cheaper", "expensive"), ("cheapest", "expensive"),
    ("easy", "hard"), ("easier", "harder"), ("easiest", "hardest"), ("easy", "difficult"),
    ("heavy", "light"), ("heavier", "lighter"), ("heaviest", "lightest"), ("deep", "shallow"),
    ("deeper", "shallower"), ("hard", "soft"), ("harder", "softer"), ("smart", "dumb"),
    ("smarter", "dumber"), ("safe", "unsafe"), ("safe", "dangerous"), ("more", "less"),
    ("more", "fewer"), ("most", "least"), ("increase", "decrease"), ("before", "after"),
    ("buy", "sell"), ("up", "down"), ("min", "max"), ("minimum", "maximum"),
    ("long", "short"), ("longer", "shorter"), ("longest", "shortest"), ("early", "late"),
    ("earlier", "later"), ("first", "last"), ("win", "lose"), ("pros", "cons"),
    ("advantages", "disadvantages"), ("add", "remove"), ("enable", "disable"),
    ("encrypt", "decrypt"), ("import", "export"), ("upload", "download"), ("push", "pull"),
    ("use", "avoid"), ("rich", "poor"), ("young", "old"), ("younger", "older"),
    ("healthy", "unhealthy"), ("legal", "illegal"), ("true", "false"), ("positive", "negative"),
    ("male", "female"), ("men", "women"), ("boy", "girl"), ("inside", "outside"),
    ("import", "export"), ("open", "close"), ("on", "off"), ("always", "never"),
    ("happy", "sad"), ("love", "hate"), ("like", "dislike"), ("agree", "disagree"),
    ("possible", "impossible"), ("likely", "unlikely"), ("common", "rare"),
    ("rise", "fall"), ("rises", "falls"), ("rising", "falling"), ("rose", "fell"),
    ("difference", "similarity"), ("differences", "similarities"), ("accept", "reject"),
    ("arrive", "depart"), ("arrival", "departure"), ("enter", "exit"), ("include", "exclude"),
    ("attack", "defend"), ("borrow", "lend"), ("success", "failure"),
    ("strengths", "weaknesses"), ("overweight", "underweight"), ("ascending", "descending"),
    ("north", "south"), ("east", "west"), ("sunrise", "sunset"), ("input", "output"),
    ("internal", "external"), ("maximize", "minimize"), ("profit", "loss"), ("wet", "dry"),
    # aggregates: another statistic is another answer ("total" / "average sale amount")
    ("total", "average"), ("sum", "average"), ("total", "mean"), ("sum", "mean"),
    ("average", "median"), ("mean", "median"), ("total", "median"), ("sum", "median"),
]
_IRREGULAR = [("bought", "sold"), ("won", "lost"), ("winning", "losing"), ("wins", "loses")]


def _inflected(word: str) -> list[str]:
    """The word and its -s, -ed and -ing forms ("import": "imports", "imported",
    "importing"; "increase": "increases", "increased", "increasing"). Forms that are no
    word ("bads") are harmless: they never occur."""
    if word.endswith("e"):
        return [word, word + "s", word + "d", word[:-1] + "ing"]
    return [word, word + "s", word + "ed", word + "ing"]


_OPPOSITE: dict[str, set[str]] = {}
for _a, _b in [*_ANTONYMS, *_IRREGULAR]:
    # the same form of each: "imports" / "exports", "increased" / "decreased"
    for _fa, _fb in zip(_inflected(_a), _inflected(_b), strict=True):
        _OPPOSITE.setdefault(_fa, set()).add(_fb)
        _OPPOSITE.setdefault(_fb, set()).add(_fa)
_PROG = {"python", "javascript", "java", "c++", "c#", "rust", "ruby", "php", "kotlin", "scala",
         "haskell", "typescript", "node.js", "perl", "matlab", "bash", "powershell", "lua",
         "elixir", "erlang", "clojure", "julia", "fortran", "cobol", "dart", "objective-c",
         "sql", "html", "css", "vba", "groovy", "f#", "zig", "ocaml", "pascal", "assembly"}
_PROG_CASED = {"C", "Go", "R", "Swift"}  # languages only when capitalised
_NATURAL = {"english", "french", "spanish", "german", "italian", "portuguese", "dutch",
            "japanese", "korean", "chinese", "mandarin", "cantonese", "hindi", "arabic",
            "russian", "polish", "swedish", "norwegian", "danish", "finnish", "greek",
            "turkish", "hebrew", "latin", "thai", "vietnamese", "indonesian", "urdu",
            "bengali", "persian", "farsi", "ukrainian", "czech", "hungarian", "romanian",
            "tagalog", "swahili", "tamil", "punjabi"}
_FORMAT_GROUPS = {
    "structure": "json csv xml yaml table list bullet bullets bulleted numbered paragraph "
                 "paragraphs sentence sentences outline summary timeline markdown html diagram "
                 "chart map mind-map slides pseudocode one-liner code step-by-step",
    "genre": "essay haiku sonnet poem limerick tweet email letter story song rhyme script",
    "tone": "formal casual informal funny serious",
    "length": "detail detailed brief words",
    "audience": "child children kid kids five-year-old beginner beginners expert experts "
                "student students",
    "system": "metric imperial",
}
_FORMAT = {w: g for g, words in _FORMAT_GROUPS.items() for w in words.split()}
"""Format words and their kind. `short`/`long` are left to the antonym check (a swap of the
two is caught there; alone they mostly describe the subject: 'a short time')."""
_FORMAT_SAME = {"kid": "child", "kids": "child", "children": "child", "informal": "casual",
                "detailed": "detail", "bullets": "bullet", "bulleted": "bullet",
                "mind-map": "map"}
_FORMAT_BEFORE = {
    # What may come before a format word for it to be a request for that format, skipping
    # articles, numbers and other format modifiers: 'in a table', 'as three bullet points',
    # 'write a haiku', 'explain it to a five-year-old'.
    "structure": {"in", "as", "into", "using", "via"},
    "genre": {"in", "as", "into", "write", "give", "make", "create", "draft", "compose",
              "generate", "produce", "turn", "rewrite"},
    "tone": {"in", "as", "write", "make", "keep", "sound", "give"},
    "length": {"in", "give", "write"},
    "audience": {"in", "among"},  # 'symptoms in children'; 'for' / 'to' see _EXPLAIN
    "system": {"in", "into", "to", "using"},
}
_EXPLAIN = {"explain", "describe", "teach", "tell", "write", "summarise", "summarize",
            "define", "simplify", "introduce", "present", "eli5"}
"""With one of these verbs 'for' / 'to' / 'like' before an audience asks for an answer
pitched at it ('explain it to a child'); without, it is who the thing asked about is for
('the best book for beginners', 'a bank for students')."""
_FORMAT_COUNTED = {"sentence", "sentences", "paragraph", "paragraphs", "words"}
"""Counted formats are requests only with a count or an article: 'in one sentence', 'in a
paragraph', 'in 50 words', not 'hyphens in sentences'."""
_FORMAT_MAKERS = {"make", "create", "draw", "give", "write", "produce", "generate"}
_FORMAT_MAKER_OBJECTS = {"table", "chart", "diagram", "timeline", "outline", "summary"}
_FORMAT_AFTER = {"format", "form", "tone", "style", "voice", "register", "manner", "version",
                 "units", "unit", "system", "level", "terms"}
_FORMAT_SKIP = {"a", "an", "the", "one", "single", "me", "us", "it", "this", "that", "short",
                "long", "brief", "simple", "quick", "few", "couple", "of", "some", "detailed",
                "numbered", "bulleted", "bullet", "formal", "casual", "informal", "funny",
                "serious", "mind", "very", "more", "clear", "young", "little", "complete",
                "total", "proper", "nice", "good", "neat", "markdown", "plain", "i'm", "im",
                "i", "am", "were", "was", "you're", "university", "college", "high", "school",
                "graduate"}
_FORMAT_COUNTS = {"a", "an", "one", "single", "few", "couple"}
_WEEKDAYS = {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
_MONTHS = {"january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december"}
_SEASONS = {"spring": "spring", "summer": "summer", "autumn": "fall", "fall": "fall",
            "winter": "winter"}
_PERIODS = {"week", "weekend", "month", "year", "decade", "century", "night", "morning",
            "evening", "afternoon", "season", "semester", "quarter"} | _WEEKDAYS | _MONTHS
_RELATIVE = {"last": "last", "past": "last", "previous": "last", "next": "next",
             "coming": "next", "upcoming": "next", "this": "this", "following": "next"}
_DATE_WORDS = {"yesterday": "yesterday", "tomorrow": "tomorrow", "tonight": "tonight"}
_DATE_VAGUE = {"today": "now", "now": "now", "nowadays": "now", "currently": "now",
               "current": "now", "present": "now", "morning": "morning", "evening": "evening",
               "afternoon": "afternoon", "night": "night", "overnight": "night"}
_SEASON_BEFORE = {"in", "during", "this", "last", "next", "every", "each", "since", "until",
                  "till", "by", "of", "past", "coming"}
_AGO_PERIODS = {"second", "minute", "hour", "day", "week", "month", "year", "decade", "century",
                "centurie"}
_MONTH_BEFORE = _SEASON_BEFORE | {"on", "from", "early", "late", "mid", "end", "beginning"}
_UNIT_DIMENSION = {
    "mass": "kilogram kg gram g milligram mg pound lb lbs ounce oz ton tonne",
    "length": "meter metre m kilometer kilometre km centimeter cm millimeter mm mile mi foot "
              "feet ft inch inches yard yd",
    "volume": "liter litre l milliliter ml gallon gal quart pint cup tablespoon tbsp teaspoon "
              "tsp",
    "temperature": "celsius fahrenheit kelvin",
    "time": "second sec minute min hour hr hrs day week month year",
    "data": "byte kilobyte kb megabyte mb gigabyte gb terabyte tb",
    "power": "watt kilowatt kw", "energy": "kwh joule calorie kcal", "voltage": "volt",
    "current": "amp", "speed": "mph kph", "money": "dollar euro yen rupee rs inr usd",
    "ratio": "percent", "area": "acre hectare", "pressure": "pascal psi bar",
    "force": "newton", "angle": "degree",
}
_UNITS = {u: d for d, units in _UNIT_DIMENSION.items() for u in units.split()}
_UNIT_ALSO = {"ounce": "volume"}  # fluid ounces
_UNIT_SAME = {"kg": "kilogram", "g": "gram", "mg": "milligram", "lb": "pound", "lbs": "pound",
              "oz": "ounce", "tonne": "ton", "metre": "meter", "m": "meter", "km": "kilometer",
              "kilometre": "kilometer", "cm": "centimeter", "mm": "millimeter", "mi": "mile",
              "feet": "foot", "ft": "foot", "inches": "inch", "yd": "yard", "litre": "liter",
              "l": "liter", "ml": "milliliter", "gal": "gallon", "tbsp": "tablespoon",
              "tsp": "teaspoon", "sec": "second", "min": "minute", "hr": "hour", "hrs": "hour",
              "kb": "kilobyte", "mb": "megabyte", "gb": "gigabyte", "tb": "terabyte",
              "kw": "kilowatt", "kcal": "calorie", "rs": "rupee", "inr": "rupee",
              "usd": "dollar"}
_STOP = set("""a an the of to in on at for from by with and or but is are was were be been
being am do does did doing have has had i me my we our you your he she it its they them
their this that these those what which who whom whose when where why how can could should
would will shall may might must there here as into about than then so if any some all
each also just very really get got make s t i'm it's what's whats""".split())
_FILLER = set("""hey hi hello please pls plz thanks thank thx quick question wondering
wonder like know tell help appreciated advance um uh so well okay ok anyone anybody
kindly someone somebody guys folks need want let lets let's explain me""".split())
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n)\s*[\"'(]*([A-Za-z][\w'-]*)")


def tokens(text: str) -> list[str]:
    """Lowercased words and numbers, with aliases and number words normalised."""
    return list(_tokens(text))


# The checks look at each text many times (and a cached entry's question at every lookup that
# finds it), so the pure per-text parts are memoised: this took a candidate from 1.7 ms to
# tens of microseconds on the 2-core CI machine.
@functools.lru_cache(maxsize=8192)
def _tokens(text: str) -> tuple[str, ...]:
    out: list[str] = []
    text = text.replace("’", "'").replace("w/o ", "without ").replace("w/ ", "with ")
    for raw in _WORD.findall(text):
        word = raw.lower().rstrip(".'")
        if word.endswith("n't"):
            out += [_fix_stem(word[:-3]), "not"]
            continue
        if word in ("dont", "doesnt", "didnt", "cant", "wont", "isnt", "arent", "shouldnt",
                    "wouldnt", "couldnt", "wasnt", "werent", "havent", "hasnt"):
            out += [word[:-2] if word != "cant" else "can", "not"]
            continue
        word = _WORD_NUMBERS.get(word, word)
        alias = _ALIASES.get(word)
        out += alias.split() if alias else [word]
    return tuple(out)


def _fix_stem(stem: str) -> str:
    return {"ca": "can", "wo": "will", "sha": "shall"}.get(stem, stem)


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("es") and word[:-2] in _UNITS:
        return word[:-2]
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


_SCALED = re.compile(r"(\d+(?:\.\d+)?)\s*(k|thousand|million|mn|billion|bn)\b", re.I)
_SCALE = {"k": 1000, "thousand": 1000, "million": 10**6, "mn": 10**6, "billion": 10**9,
          "bn": 10**9}


def _scaled(m: re.Match[str]) -> str:
    value = float(m.group(1)) * _SCALE[m.group(2).lower()]
    return str(int(value)) if value == int(value) else str(value)


_STANDALONE_NUMBER = re.compile(
    r"(?<![A-Za-z])\d+(?:[.,:]\d+)*(?=(?:st|nd|rd|th|s|am|pm|k|m|b|x|h|d|kg|g|mg|km|cm|mm|ml|gb|mb|"
    r"tb|kb|hrs?|min|yrs?|mph|px|ft|lbs?|oz|in|c|f)?(?![A-Za-z]))", re.I)
"""A number that is no part of a word: 'k8s', '2FA', 'b4', 'Q3' and 'mp3' are names and
chat speak, not quantities; '3pm', '5kg', '2nd' and '10x' are numbers with a unit."""
_CHAT_DIGITS = {"2": {"the", "a", "an", "my", "your", "do", "go", "get", "be", "make", "see",
                      "know", "use", "fix", "buy", "find", "me", "you", "u", "him", "her", "us",
                      "them", "it", "this", "that", "work", "learn", "write", "start"},
                "4": {"u", "you", "me", "my", "the", "a", "an", "him", "her", "us", "them", "it",
                      "this", "that", "sale", "free", "real", "sure", "ever", "now"}}
"""'how 2 do', '4 u': chat speak for 'to' and 'for' where a word of this kind follows."""


def _chat_digit(text: str, m: re.Match[str]) -> bool:
    """Whether a lone 2 or 4 stands for 'to' or 'for' ('how 2 fix it', 'thx 4 the help')."""
    digit = m.group(0)
    if digit not in _CHAT_DIGITS:
        return False
    after = re.match(r"\s+([A-Za-z']+)", text[m.end():])
    return after is not None and after.group(1).lower() in _CHAT_DIGITS[digit]


def _spelled_in_compounds(text: str) -> str:
    """Number words inside hyphenated compounds spelled out as words ('ten-year-old' ->
    'ten year-old', 'six-mile' -> 'six mile'), so that they count like 'ten' or '10'."""
    return re.sub(r"\b([A-Za-z]+)-(?=[A-Za-z])",
                  lambda m: m.group(1) + (" " if m.group(1).lower() in _WORD_NUMBERS else "-"), text)


def numbers(text: str) -> Counter[str]:
    """Numbers of the text, spelled-out ones included; '15k', '15 thousand' and '15000' are
    one number, and so are 'a billion' and '1 billion'."""
    text = _spelled_in_compounds(_SCALED.sub(_scaled, text))
    found = Counter(m.group(0).replace(",", "") for m in _STANDALONE_NUMBER.finditer(text)
                    if not _chat_digit(text, m))
    for word in tokens(text):
        if word.isdigit() and word not in found and word in _WORD_NUMBERS.values():
            found[word] += 1
    return found


def common_ends(a: Sequence[Any], b: Sequence[Any]) -> tuple[int, int]:
    """How many items (characters, words) a and b share at their start and, after that, at
    their end: what lies between is where they differ."""
    shortest = min(len(a), len(b))
    head = 0
    while head < shortest and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < shortest - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    return head, tail


def edits(a: str, b: str) -> int:
    """Optimal-string-alignment distance (insertions, deletions, substitutions, swaps)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def one_edit(a: str, b: str) -> bool:
    """Same word up to a typo: one edit (words of 3+ letters), two for long words of nearly
    the same length ('Australia' / 'Austria' differ by two and stay different)."""
    if a == b:
        return True
    if min(len(a), len(b)) < 3 or abs(len(a) - len(b)) > 1 or any(c.isdigit() for c in a + b):
        return False
    allowed = 2 if min(len(a), len(b)) >= 8 else 1
    return edits(a, b) <= allowed


def _fuzzy_in(word: str, pool: Iterable[str]) -> bool:
    return any(one_edit(word, other) for other in pool)


_ENTITY = re.compile(r"[A-Za-z][\w+#.'’-]*[\w+#]|[A-Z]")
_POSSESSIVE = re.compile(r"['’]s?$")


def entities(text: str) -> set[str]:
    """Capitalised words that do not start a sentence (names, places, products), and words
    with a capital inside ('iPhone'); possessives dropped ('Verizon's' is 'verizon'). A
    text in Title Case Throughout has no capitals that mean anything: no entities."""
    return set(_entity_info(text)[0])


@functools.lru_cache(maxsize=8192)
def _entity_info(text: str) -> tuple[frozenset[str], bool]:
    """(entities, whether the text's capitals tell names from other words)."""
    if text == text.lower():
        return frozenset(), False
    starts = {m.start(1) for m in _SENTENCE_START.finditer(text)}
    found, capitalised, lower, small_capitals = set(), 0, 0, 0
    for m in _ENTITY.finditer(text):
        word = m.group(0)
        lowered = word.lower()
        if "'" in lowered or "’" in lowered:
            lowered = _POSSESSIVE.sub("", lowered)
        if m.start() in starts:
            continue
        if lowered in _STOP or lowered in _FILLER or lowered.startswith("i'") or word == "I":
            small_capitals += word[0].isupper() and word != "I" and not lowered.startswith("i'")
            continue
        if word[0].isupper() or word[0].isdigit():
            capitalised += 1
        elif any(c.isupper() for c in word[1:]):
            pass
        else:
            lower += 1
            continue
        found.add(lowered)
    if small_capitals >= 2 or (capitalised >= 4 and not lower):  # Title Case Throughout
        return frozenset(), False
    return frozenset(found), True


@functools.lru_cache(maxsize=8192)
def _acronyms(text: str) -> frozenset[str]:
    """Initials of every run of 2-5 words, with and without small words: 'New York City'
    -> nyc, 'Massachusetts Institute of Technology' -> mit, 'machine learning' -> ml."""
    words = [w.lower() for w in re.findall(r"[A-Za-z][\w'-]*", text)]
    out: set[str] = set()
    for i in range(len(words)):
        every = significant = ""
        for j in range(i, min(i + 5, len(words))):
            every += words[j][0]
            if words[j] not in ("of", "and", "for", "the"):
                significant += words[j][0]
            if j > i:
                out.add(every)
                out.add(significant)
    return frozenset(out)


def _unacronym(word: str) -> str:
    return word[:-1] if len(word) > 2 and word.endswith("s") else word


@functools.lru_cache(maxsize=8192)
def _raw_words(text: str) -> frozenset[str]:
    words = {w.lower() for w in re.findall(r"[A-Za-z0-9][\w+#.'’-]*[\w+#]|\w", text)}
    words |= {_POSSESSIVE.sub("", w) for w in words if "'" in w or "’" in w}
    return frozenset(words | set(_tokens(text)))


@functools.lru_cache(maxsize=8192)
def _runs(text: str) -> tuple[tuple[frozenset[str], tuple[str, ...]], ...]:
    """Every run of 2-5 words of `text` with its initials (with and without small words)."""
    words = [w.lower() for w in re.findall(r"[A-Za-z][\w'-]*", text)]
    out = []
    for i in range(len(words)):
        for j in range(i + 2, min(i + 6, len(words)) + 1):
            run = tuple(words[i:j])
            initials = frozenset(("".join(w[0] for w in run),
                                  "".join(w[0] for w in run if w not in ("of", "and", "for", "the"))))
            out.append((initials, run))
    return tuple(out)


def _spelled_out(text: str, other: str) -> set[str]:
    """Words of `text` inside a run whose initials are a word of `other` (NYC, MIT)."""
    # An acronym is written with 2+ capitals, or lowercase in an all-lowercase text.
    lower = other == other.lower()
    short = {_unacronym(w.lower()) for w in re.findall(r"\b[A-Za-z]{2,6}\b", other)
             if sum(c.isupper() for c in w) >= 2 or (lower and w not in _STOP)}
    covered: set[str] = set()
    if short:
        for initials, run in _runs(text):
            if initials & short:
                covered.update(run)
    return covered


_DEMONYM = re.compile(r"(?:[aeiouy]?)(?:n|ns|an|ans|ian|ians|ese|i|is)?")


def _same_place(word: str, other: str) -> bool:
    """A place and its people or adjective: 'India' / 'Indians', 'China' / 'Chinese',
    'Pakistan' / 'Pakistani' ('Australia' / 'Austrian' stay apart)."""
    short, long_ = sorted((word, other), key=len)
    stem = short[:-1] if short[-1] in "aeiouy" else short
    return (len(stem) >= 4 and long_.startswith(stem)
            and _DEMONYM.fullmatch(long_[len(stem):]) is not None)


_NAME_ALIASES: dict[str, tuple[str, ...]] = {
    "us": ("america", "american", "americans", "usa", "u.s", "united states"),
    "usa": ("america", "american", "americans", "us", "united states"),
    "america": ("us", "usa", "united states", "american"), "american": ("us", "usa", "america"),
    "americans": ("us", "usa", "america"),
    "uk": ("britain", "british", "united kingdom", "england"), "britain": ("uk", "british"),
    "british": ("uk", "britain", "united kingdom"), "eu": ("europe", "european union"),
    "mass": ("massachusetts",), "calif": ("california",), "penn": ("pennsylvania",),
    "philly": ("philadelphia",), "vegas": ("las vegas",), "nyc": ("new york",),
    "la": ("los angeles",), "sf": ("san francisco",), "dc": ("washington",),
    "d.c": ("washington", "dc"), "fed": ("federal reserve",), "gh": ("github",),
    "mac": ("macos", "macbook", "os x"), "macos": ("mac",), "k8s": ("kubernetes",),
    "js": ("javascript",), "ts": ("typescript",), "aws": ("amazon web services", "amazon"),
    "gcp": ("google cloud",), "hr": ("human resources",), "jan": ("january",),
    "feb": ("february",), "mar": ("march",), "apr": ("april",), "aug": ("august",),
    "sep": ("september",), "sept": ("september",), "oct": ("october",), "nov": ("november",),
    "dec": ("december",), "chrome": ("google chrome",), "vs code": ("visual studio code",),
    "gmail": ("google mail", "gmail"), "nhs": ("national health service",),
}
"""Short forms of names the acronym rule cannot see ('the US' / 'American visitors',
'Mass.' / 'Massachusetts', 'Philly' / 'Philadelphia', 'Nov.' / 'November')."""


def _unmatched_entities(text: str, other_text: str) -> list[str]:
    """Entities of `text` that `other_text` lacks, even with a typo, in another case, as a
    demonym ('India' / 'Indians') or spelled out as an acronym ('NYC' / 'New York City')."""
    ents = _entity_info(text)[0]
    if not ents:
        return []
    other_words = _raw_words(other_text)
    out = []
    for ent in ents - _spelled_out(text, other_text):
        spellings = [_ALIASES.get(ent, ent), *_NAME_ALIASES.get(ent.rstrip("."), ())]
        if any(all(_fuzzy_in(p, other_words) for p in spelling.split()) for spelling in spellings):
            continue
        if _unacronym(ent.replace(".", "")) in _acronyms(other_text):
            continue
        if any(_same_place(ent, w) for w in other_words if w[:2] == ent[:2]):
            continue
        out.append(ent)
    return out


def check_entities(a: str, b: str) -> bool:
    """Fails when each side names something the other does not ('Austria' / 'Australia',
    'Microsoft' / 'Apple'): another entity in its place. A name on one side alone adds
    context to the same question ('war with Russia' / 'the USA and war with Russia') and
    passes, unless the other side is written without capitals (its names can't be told from
    other words): then any content word of its own counts as the other name."""
    extra_a, extra_b = _unmatched_entities(a, b), _unmatched_entities(b, a)
    if not extra_a and not extra_b:
        return True
    if extra_a and extra_b:
        return False
    lone, other = (a, b) if extra_a else (b, a)
    if _entity_info(other)[1]:
        return True
    other_words = _raw_words(lone)
    return all(_fuzzy_in(w, other_words) or _unacronym(w) in _acronyms(lone)
               for w in _content(other))


def _block_move(a: list[str], b: list[str]) -> bool:
    """True when b is a with one contiguous phrase moved elsewhere (reordering)."""
    n = len(a)
    for i in range(n):
        for j in range(i + 1, n):
            for k in range(j + 1, n + 1):
                if a[:i] + a[j:k] + a[i:j] + a[k:] == b:
                    return True
    return False


_SYMMETRIC = {"and", "or", "vs", "versus", "&", "nor"}
_SYMMETRIC_CUES = {"compare", "comparing", "comparison", "difference", "differences", "between",
                   "similar", "similarity", "similarities", "which", "better", "choose", "both"}
"""Words that make 'X and Y' / 'X vs Y' symmetric: 'compare X and Y', 'X or Y, which is
better?'. Without one the order may matter ('pros of X vs Y', 'convert X and Y')."""


def _conjuncts_swapped(a: list[str], b: list[str]) -> bool:
    """True when b is a with the two sides of one 'X and Y' (or, vs, versus) swapped, each
    of one to three words, in a symmetric question: 'compare AWS and Azure' / 'compare
    Azure and AWS'. A swap around a verb ('A hired B') stays a change of roles."""
    if not set(a) & _SYMMETRIC_CUES:
        return False
    for k, word in enumerate(a):
        if word not in _SYMMETRIC:
            continue
        for left in range(1, 4):
            for right in range(1, 4):
                i, j = k - left, k + 1 + right
                if i < 0 or j > len(a):
                    continue
                swapped = a[:i] + a[k + 1:j] + [word] + a[i:k] + a[j:]
                if swapped == b:
                    return True
    return False


_FROM_TO = re.compile(r"\bfrom\s+(.+?)\s+(?:to|into)\s+(\S+(?:\s+\S+)?)", re.I)


def check_order(a: str, b: str) -> bool:
    """Same words in another order fail unless one whole phrase moved (swaps of two words
    with others between them flip a direction or a role: 'dog chases cat')."""
    ta, tb = tokens(a), tokens(b)
    if (ta != tb and Counter(ta) == Counter(tb) and len(ta) <= 40 and not _block_move(ta, tb)
            and not _conjuncts_swapped(ta, tb)):
        return False
    ma, mb = _FROM_TO.search(a), _FROM_TO.search(b)
    if ma and mb:
        fa, ta_ = ma.group(1).lower(), ma.group(2).lower()
        fb, tb_ = mb.group(1).lower(), mb.group(2).lower()
        if fa.split()[0] in tb_ and fb.split()[0] in ta_:
            return False
    return True


def _absent_from(extra: Collection[str], other: str) -> bool:
    """Whether a word of `extra` is missing from `other`, even allowing a typo or an acronym
    ('SQL' / 'Structured Query Language')."""
    if not extra:
        return False
    words = _raw_words(other)
    return any(not _fuzzy_in(w, words) and _unacronym(w) not in _acronyms(other) for w in extra)


_FENCE_TAG = re.compile(r"^([ \t>]*(?:```|~~~))[\w+#.-]+", re.M)
_AS_LANGUAGE = re.compile(
    r"\b(?:in|into|to|from|speak|speaks|speaking|learn|learning|translate|translation|write|"
    r"say|native|fluent)\s+(?:\w+\s+)?$", re.I)


def _languages(text: str) -> set[str]:
    """Programming languages, and natural languages where they are used as languages ('in
    French', 'learn Spanish', 'Japanese translation'), not as a people or an adjective ('the
    Chinese built', 'a German car'). A fence's language tag is layout, not a request."""
    text = _FENCE_TAG.sub(r"\1", text)
    found = {t for t in tokens(text) if t in _PROG}
    for m in re.finditer(r"[A-Za-z]+", text):
        word = m.group(0).lower()
        if word in _NATURAL and (_AS_LANGUAGE.search(text[max(0, m.start() - 30):m.start()])
                                 or re.match(r"\s+(?:translation|language|speakers?|word|words|"
                                             r"phrase|version|subtitles|grammar|lessons?)\b",
                                             text[m.end():], re.I)):
            found.add(word)
    found |= {w.lower() for w in re.findall(r"(?<![.\w])(?:C|Go|R|Swift)\b(?![+#.])", text)
              if w in _PROG_CASED and not re.search(rf"(?:^|[.!?]\s+){w}\b", text)}
    return found


def check_languages(a: str, b: str) -> bool:
    """Fails when one side names a language the other lacks (a typo or an acronym
    forgiven: 'JS' / 'JavaScript'). A programming language named beside code that the other
    side has too is what the code is written in, not another request ('Why does this Python
    crash?' + code / 'Why does this crash?' + the same code)."""
    la, lb = _languages(a), _languages(b)
    extra_a, extra_b = la - lb, lb - la
    if extra_a and extra_b:
        return not (_absent_from(extra_a, b) or _absent_from(extra_b, a))
    extra, other = (extra_a, b) if extra_a else (extra_b, a)
    if not extra:
        return True
    if extra <= _PROG and has_code(other) and has_code(a if other is b else b):
        return True
    return not _absent_from(extra, other)


def _content(text: str) -> set[str]:
    return {_singular(t) for t in tokens(text) if t not in _STOP and t not in _FILLER}


def check_scope(a: str, b: str) -> bool:
    """One side's content words all appear in the other, which adds 2+ more: a narrower
    question ('symptoms of flu' / 'symptoms of flu in children') wants another answer."""
    ca, cb = _content(a), _content(b)
    small, big = (ca, cb) if len(ca) <= len(cb) else (cb, ca)
    return not (small and small < big and len(big - small) >= 2)


def check_antonyms(a: str, b: str) -> bool:
    ta, tb = set(tokens(a)), set(tokens(b))
    for word in ta - tb:
        if _OPPOSITE.get(word, set()) & (tb - ta):
            return False
    return True


def run_checks(a: str, b: str, enabled: Iterable[str] = ALL_CHECKS) -> tuple[str, ...]:
    """Names of the enabled checks that find a and b asking different things ((): none)."""
    failed = []
    for name in enabled:
        if not _CHECKS[name](a, b):
            failed.append(name)
    return tuple(failed)


_UNITS_NEED_NUMBER = {"m", "g", "l", "ml", "mg", "min", "second", "sec", "day", "week",
                      "month", "year", "degree", "bar", "pound", "tb", "mb", "gb", "kb", "mi",
                      "hour", "hr", "hrs", "minute", "gal", "cup"}
_UNIT_COUNTERS = {"many", "per", "few", "several"}


@functools.lru_cache(maxsize=8192)
def _units(text: str) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """Units named in the text, one spelling each ('kg' is 'kilogram'), and the (number,
    unit) pairs among them; ambiguous units ('degree', 'ml', 'week', 'cup') count only after
    a number or 'how many' / 'per'."""
    toks = [_WORD_NUMBERS.get(w, w) for w in (
        w.lower().rstrip(".'") for w in _WORD.findall(text.replace("%", " percent ")))]
    found, quantities = set(), set()
    for i, t in enumerate(toks):
        unit = _singular(t)
        if unit not in _UNITS:
            if t not in _UNITS:
                continue
            unit = t
        after_number = i > 0 and _NUMBER.fullmatch(toks[i - 1]) is not None
        if unit in _UNITS_NEED_NUMBER and not (after_number or toks[i - 1] in _UNIT_COUNTERS):
            continue
        unit = _UNIT_SAME.get(unit, unit)
        found.add(unit)
        if after_number:
            quantities.add((toks[i - 1].replace(",", ""), unit))
    return frozenset(found), frozenset(quantities)


def check_units(a: str, b: str) -> bool:
    """Fails when one unit stands in for another of the same kind: each side has a unit of
    that kind the other lacks ('in Celsius' / 'in Fahrenheit', 'how many liters' / 'how many
    cups'), or one number carries another unit ('3 pounds' / '3 kilograms'). A unit on one
    side alone ('under 500' / 'under 500 rupees', 'rupee value' / 'rupee value against the
    dollar') leaves the quantity the same; a different number is the numbers check's."""
    (ua, qa), (ub, qb) = _units(a), _units(b)
    extra_a, extra_b = ua - ub, ub - ua
    if extra_a and extra_b and _unit_kinds(extra_a) & _unit_kinds(extra_b):
        return False
    for number, unit in qa ^ qb:
        mine, theirs = (qa, qb) if (number, unit) in qa else (qb, qa)
        if any(n == number and u != unit and _unit_kinds({u}) & _unit_kinds({unit})
               for n, u in theirs - mine):
            return False
    return True


def _unit_kinds(units: Iterable[str]) -> set[str]:
    return {_UNITS[u] for u in units} | {_UNIT_ALSO[u] for u in units if u in _UNIT_ALSO}


_NOT_NEGATION = re.compile(
    r"\b(?:why or why not|whether or not|or not|or no|not only|not just|no matter|no doubt"
    r"|no wonder|not to mention)\b|\bno\.(?=\s*\d)", re.I)
_NO_ABBREVIATION = re.compile(r"\b([A-Za-z]+)\s+no\.(?=\s+\S)", re.I)
_NEGATIVE_WORDS = {"unable", "fail", "fails", "failed", "failing", "failure", "lack", "lacks",
                   "lacked", "lacking", "refuse", "refuses", "refused", "absent", "absence",
                   "hardly", "barely", "rarely", "seldom", "impossible", "unlike", "instead",
                   "ignored", "ignore", "stop", "stops", "avoid", "prevent"}
_NEGATIVE_PREFIXES = ("non-", "non", "un", "in", "im", "il", "ir", "dis", "mis")


def _no_abbreviation(m: re.Match[str]) -> str:
    word = m.group(1)
    return m.group(0) if word.lower() in _STOP or word.lower() in ("say", "said") else word


_POLITE = (r"bother|trouble|disturb|pester|rude|sure|certain|know if|know whether|urgent|rush|"
           r"judge|dumb|silly|stupid|weird|strange|obvious|expert|native|first language|lecture|"
           r"textbook|fancy|dramatic|complain|cheat|mind|your time|much time|picky|pushy|"
           r"clueless|overthink|sound|mean to|big deal|right place|right question|right person|"
           r"worries|offend|nag|spam|technical|jargon|person at all|good at")
_POLITE_NEGATION = re.compile(
    rf"(?:^|(?<=[.!?:]\s))[^.!?:\n]*?\b(?:not|no|never|don't|dont|doesn't|isn't|won't|can't|"
    rf"wasn't|didn't|haven't)\b[^.!?:\n]*?\b(?:{_POLITE})\b[^.!?:\n]*?(?:,?\s+but\b|[:.!]|,\s+(?=just\b))"
    rf"|\bif (?:you|u) (?:don't|dont|do not) mind\b|\bno worries if not\b|\bif it'?s no trouble\b"
    rf"|\bno rush\b|\bno pressure\b|\bnot to be \w+\b,?\s*(?:but\b)?",
    re.I)
"""A clause of politeness or self-deprecation that happens to hold a negation ("I don't want
to bother you, but", "Not sure if this is the right place to ask, but", "if you don't
mind", "no rush"): it negates nothing that is asked. Only a clause with such a word goes:
"I'm not allowed to use loops, but ..." is a constraint, and stays."""


@functools.lru_cache(maxsize=8192)
def _negated(text: str) -> bool:
    """A negation word outside idioms that negate nothing: 'why or why not', 'or not',
    'not only', 'no matter', polite filler ("I don't want to bother you, but"), and 'no.'
    for 'number' ('roll no. 12', 'rational no. and')."""
    text = _POLITE_NEGATION.sub(" ", text.replace("’", "'"))
    text = _NOT_NEGATION.sub(" ", _NO_ABBREVIATION.sub(_no_abbreviation, text))
    return any(t in _NEGATIONS for t in tokens(text))


def check_negation(a: str, b: str) -> bool:
    """Fails when only one side is negated ('foods to eat' / 'foods not to eat'), unless the
    other says the negative in one word: a negative verb or adverb ('not getting medals' /
    'fails to win medals', 'can't' / 'unable') or a prefix on a word of the negated side
    ('not commonly known' / 'unknown')."""
    na, nb = _negated(a), _negated(b)
    if na == nb:
        return True
    negated, plain = (a, b) if na else (b, a)
    words, negated_words = set(tokens(plain)), set(tokens(negated))
    if words & _NEGATIVE_WORDS:
        return False if words & _NEGATIVE_WORDS <= negated_words else True
    for word in words - negated_words:
        for prefix in _NEGATIVE_PREFIXES:
            stem = word[len(prefix):]
            if word.startswith(prefix) and len(stem) >= 3 and stem in negated_words:
                return True
    return False


def _format_requested(toks: tuple[str, ...], i: int, kind: str, word: str) -> bool:
    if i + 1 < len(toks) and toks[i + 1] in _FORMAT_AFTER:
        return True  # 'JSON format', 'formal tone', 'metric units'
    j = i - 1
    while j >= 0 and i - j <= 4 and (toks[j] in _FORMAT_SKIP or _NUMBER.fullmatch(toks[j])):
        j -= 1
    if j < 0:
        return False
    if word in _FORMAT_COUNTED and not any(
            t in _FORMAT_COUNTS or _NUMBER.fullmatch(t) for t in toks[j + 1:i]):
        return False
    if toks[j] in _FORMAT_BEFORE[kind]:
        return True
    if kind == "audience" and toks[j] in ("for", "to", "like"):
        return any(t in _EXPLAIN for t in toks)
    return toks[j] in _FORMAT_MAKERS and word in _FORMAT_MAKER_OBJECTS


@functools.lru_cache(maxsize=8192)
def _formats(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """(formats the text asks for, format words it has at all), one spelling each."""
    toks = _tokens(text)
    asked, named = set(), set()
    for i, t in enumerate(toks):
        word = "step-by-step" if t == "step" and toks[i + 1:i + 3] == ("by", "step") else t
        kind = _FORMAT.get(word)
        if kind is None:
            continue
        norm = _FORMAT_SAME.get(word, _singular(word))
        named.add(norm)
        if _format_requested(toks, i, kind, word):
            asked.add(norm)
    return frozenset(asked), frozenset(named)


def check_format(a: str, b: str) -> bool:
    """Fails when one side asks for a format the other does not have ('in one paragraph' /
    'as a bulleted list', 'for a five-year-old' / 'for a university student', 'in a table').
    A format word counts as asked for only in a request: after 'in', 'as', 'into', a writing
    verb ('write a haiku'), 'for' / 'to' for an audience, or before 'format', 'tone', 'style'.
    Elsewhere it is the subject of the question ('closing lines and paragraphs', 'what did
    you do as a kid', 'a list of my accounts') and passes."""
    asked_a, named_a = _formats(a)
    asked_b, named_b = _formats(b)
    return not (_absent_from(asked_a - named_b, b) or _absent_from(asked_b - named_a, a))


@functools.lru_cache(maxsize=8192)
def _dates(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """(specific, vague) time references of the text, one spelling each. Specific: weekdays,
    months, 'yesterday' / 'tomorrow' / 'tonight', 'last/next/this + period', '... ago', a
    season after 'in' / 'this' / 'last'... Vague: 'today' / 'now' / 'currently' (all one),
    'at night', 'in the morning'. Not dates: 'last' / 'next' alone ('how long does it
    last', 'next to you'), 'may' / 'march' as verbs, 'fall' as a verb or noun ('hair fall'),
    a bare period ('in a week' is a duration; with a number, the numbers check sees it)."""
    words = [_POSSESSIVE.sub("", w.lower()) for w in re.findall(r"[A-Za-z][A-Za-z'’]*|\d+", text)]
    specific, vague = set(), set()
    skip = -1
    for i, w in enumerate(words):
        if i <= skip:
            continue
        prev = words[i - 1] if i else ""
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w in _DATE_WORDS:
            specific.add(_DATE_WORDS[w])
        elif w in _RELATIVE and (nxt in _PERIODS or nxt in _SEASONS):
            named = _SEASONS.get(nxt, nxt)
            # 'this Friday' is 'Friday'; 'this year' / 'next Friday' are their own
            this_named = w == "this" and (named in _WEEKDAYS or named in _MONTHS or nxt in _SEASONS)
            specific.add(named if this_named else f"{_RELATIVE[w]} {named}")
            skip = i + 1
        elif w in _WEEKDAYS or (w[:-1] in _WEEKDAYS and w.endswith("s")):
            specific.add(w.rstrip("s"))
        elif w in _MONTHS:
            if w not in ("may", "march") or prev in _MONTH_BEFORE or nxt.isdigit() or (
                    prev.isdigit()):
                specific.add(w)
        elif w in _SEASONS:
            before = words[i - 2] if prev == "the" and i > 1 else prev
            if before in _SEASON_BEFORE or (nxt.isdigit() and len(nxt) == 4):
                specific.add(_SEASONS[w])
        elif w == "ago" and _singular(prev) in _AGO_PERIODS:
            specific.add("ago " + _singular(prev))
        elif w in _DATE_VAGUE and (w not in ("present", "current") or nxt in (
                "day", "days", "time", "times", "year", "date")):
            vague.add(_DATE_VAGUE[w])
        elif w == "these" and nxt == "days":
            vague.add("now")
    return frozenset(specific), frozenset(vague)


def check_dates(a: str, b: str) -> bool:
    """Fails when a specific time reference of one side is missing from the other
    ('yesterday' / 'last week', 'on Saturday' / ''), or when both sides name a time and they
    differ ('at night' / 'in the morning'). A vague one on one side alone ('is it safe to
    travel there now?' / 'is it safe to travel there?') passes."""
    spec_a, vague_a = _dates(a)
    spec_b, vague_b = _dates(b)
    all_a, all_b = spec_a | vague_a, spec_b | vague_b
    if spec_a - all_b or spec_b - all_a:
        return False
    return not (all_a - all_b and all_b - all_a)


_SYMBOLS = re.compile(r"[\d\s.,:;!?*+\-/^%=<>#$&|~()\[\]{}]*")


_WEAK_NUMBERS = {"1": re.compile(r"\bone\b", re.I), "2": re.compile(r"\btwo\b", re.I)}
"""Number words that `numbers` does not count: 'one' is seldom a number ('which one', 'no
one'), and 'two' is read as 'to' in chat speak; a paraphrase also trades them for 'a',
'a couple', 'both' or 'twice', which no check could follow."""


def _spelled_cover(text: str, mine: Counter[str], other: Counter[str]) -> Counter[str]:
    """`mine` with the text's words 'one' and 'two' counted as 1 and 2 where the other
    prompt writes more 1s or 2s than this one ('one cup' / '1 cup', 'two kids' / '2 kids');
    nowhere else."""
    counted = mine.copy()
    for digit, word in _WEAK_NUMBERS.items():
        short = other[digit] - mine[digit]
        if short > 0:
            counted[digit] += min(short, len(word.findall(text)))
    return counted


def check_numbers(a: str, b: str) -> bool:
    """Fails on other numbers ('Python 3.8' / '3.12', 'one cup' / 'two cups'), and on the
    same text whose one differing stretch is digits and symbols only, with a digit in it:
    the same numbers in another order or with other operators ('0 3 * * 1' / '0 3 1 * *'
    in a crontab, 'x^2 + 3' / 'x^3 + 2'). Punctuation alone ('?' / '??', '1,000' / '1000')
    and spelled-out forms ('1st' / 'first') are not that."""
    na, nb = numbers(a), numbers(b)
    if na != nb and _spelled_cover(a, na, nb) != _spelled_cover(b, nb, na):
        return False
    head, tail = common_ends(a, b)
    da, db = a[head:len(a) - tail], b[head:len(b) - tail]
    return not (da != db and any(c.isdigit() for c in da + db)
                and _SYMBOLS.fullmatch(da) is not None and _SYMBOLS.fullmatch(db) is not None)


_CHECKS: dict[str, Callable[[str, str], bool]] = {
    "numbers": check_numbers,
    "negation": check_negation,
    "entities": check_entities,
    "order": check_order,
    "antonyms": check_antonyms,
    "languages": check_languages,
    "format": check_format,
    "dates": check_dates,
    "units": check_units,
    "code": check_code,
    "scope": check_scope,
}
