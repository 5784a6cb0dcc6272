"""Cheap lexical checks for the classic near misses of a prompt cache.

Two prompts can embed within a hair of each other and still need different answers: other
numbers or versions, other dates or units, other named entities, a negation on one side, the
same words in swapped order ("from Boston to Denver" / "from Denver to Boston"), a flipped
comparative, another programming or natural language, another requested format, or a
narrower scope. Each check looks for one of these and names itself when it fires; a
candidate with any fired check is not served. They are pure string functions (microseconds),
written to let paraphrases through: typos (one-edit fuzzy matching), filler words,
abbreviations (acronyms and a small alias table), reordering of whole phrases, voice.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable

ALL_CHECKS = ("numbers", "negation", "entities", "order", "antonyms", "languages", "format",
              "dates", "units", "scope")
DEFAULT_CHECKS = ALL_CHECKS[:-1]
"""`scope` is off by default: on Quora duplicates it fired as often as on non-duplicates."""

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
]
_OPPOSITE: dict[str, set[str]] = {}
for _a, _b in _ANTONYMS:
    _OPPOSITE.setdefault(_a, set()).add(_b)
    _OPPOSITE.setdefault(_b, set()).add(_a)
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
_FORMAT = {"json", "csv", "xml", "yaml", "table", "list", "bullet", "bullets", "bulleted",
           "paragraph", "paragraphs", "sentence", "sentences", "essay", "haiku", "sonnet",
           "poem", "limerick", "timeline", "tweet", "email", "letter", "markdown", "html",
           "outline", "summary", "formal", "casual", "informal", "funny", "serious",
           "detail", "detailed", "brief", "short", "long", "step-by-step", "steps", "code",
           "diagram", "chart", "map", "slides", "script", "story", "song", "rhyme", "metric",
           "imperial", "child", "children", "kid", "kids", "five-year-old", "beginner",
           "beginners", "expert", "experts", "student", "students", "university", "words",
           "pseudocode", "one-liner", "numbered", "mind"}
_DATES = {"yesterday", "today", "tomorrow", "tonight", "morning", "evening", "night",
          "week", "weekend", "month", "year", "decade", "century", "monday", "tuesday",
          "wednesday", "thursday", "friday", "saturday", "sunday", "january", "february",
          "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december", "spring", "summer", "autumn", "fall", "winter", "last",
          "next", "past", "ago", "recent", "current", "now"}
_UNITS = {"kilogram", "kg", "gram", "g", "milligram", "mg", "pound", "lb", "lbs", "ounce",
          "oz", "ton", "tonne", "meter", "metre", "m", "kilometer", "kilometre", "km",
          "centimeter", "cm", "millimeter", "mm", "mile", "mi", "foot", "feet", "ft", "inch",
          "inches", "yard", "yd", "liter", "litre", "l", "milliliter", "ml", "gallon", "gal",
          "quart", "pint", "cup", "tablespoon", "tbsp", "teaspoon", "tsp", "celsius",
          "fahrenheit", "kelvin", "second", "sec", "minute", "min", "hour", "hr", "day",
          "week", "month", "year", "byte", "kilobyte", "kb", "megabyte", "mb", "gigabyte",
          "gb", "terabyte", "tb", "watt", "kilowatt", "kw", "kwh", "volt", "amp", "mph",
          "kph", "dollar", "euro", "yen", "rupee", "percent", "degree", "acre",
          "hectare", "calorie", "kcal", "joule", "newton", "pascal", "psi", "bar"}
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


def numbers(text: str) -> Counter[str]:
    found = Counter(n.replace(",", "") for n in _NUMBER.findall(text))
    for word in tokens(text):
        if word.isdigit() and word not in found and word in _WORD_NUMBERS.values():
            found[word] += 1
    return found


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


def entities(text: str) -> set[str]:
    """Capitalised words that do not start a sentence (names, places, products)."""
    starts = {m.start(1) for m in _SENTENCE_START.finditer(text)}
    found = set()
    for m in re.finditer(r"[A-Za-z][\w+#.'-]*[\w+#]|[A-Z]", text):
        word = m.group(0)
        if m.start() in starts or not (word[0].isupper() or word[0].isdigit()) or word == "I":
            continue
        lowered = word.lower()
        if lowered in _STOP or lowered in _FILLER:
            continue
        found.add(lowered)
    return found


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
    words = {w.lower() for w in re.findall(r"[A-Za-z0-9][\w+#.'-]*[\w+#]|\w", text)}
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


def check_entities(a: str, b: str) -> bool:
    for text, ents, other_text in ((a, entities(a), b), (b, entities(b), a)):
        if not ents:
            continue
        other_words = _raw_words(other_text)
        for ent in ents - _spelled_out(text, other_text):
            parts = _ALIASES.get(ent, ent).split()
            if all(_fuzzy_in(p, other_words) for p in parts):
                continue
            if _unacronym(ent.replace(".", "")) in _acronyms(other_text):
                continue
            return False
    return True


def _block_move(a: list[str], b: list[str]) -> bool:
    """True when b is a with one contiguous phrase moved elsewhere (reordering)."""
    n = len(a)
    for i in range(n):
        for j in range(i + 1, n):
            for k in range(j + 1, n + 1):
                if a[:i] + a[j:k] + a[i:j] + a[k:] == b:
                    return True
    return False


_FROM_TO = re.compile(r"\bfrom\s+(.+?)\s+(?:to|into)\s+(\S+(?:\s+\S+)?)", re.I)


def check_order(a: str, b: str) -> bool:
    """Same words in another order fail unless one whole phrase moved (swaps of two words
    with others between them flip a direction or a role: 'dog chases cat')."""
    ta, tb = tokens(a), tokens(b)
    if ta != tb and Counter(ta) == Counter(tb) and len(ta) <= 40 and not _block_move(ta, tb):
        return False
    ma, mb = _FROM_TO.search(a), _FROM_TO.search(b)
    if ma and mb:
        fa, ta_ = ma.group(1).lower(), ma.group(2).lower()
        fb, tb_ = mb.group(1).lower(), mb.group(2).lower()
        if fa.split()[0] in tb_ and fb.split()[0] in ta_:
            return False
    return True


def _tolerant(name: str, pick: Callable[[str], set[str]]) -> Callable[[str, str], bool]:
    """A set-valued check that forgives a word the other side has with a typo or spelled
    out as an acronym ('SQL' / 'Structured Query Language')."""
    def check(a: str, b: str) -> bool:
        sa, sb = pick(a), pick(b)
        for extra, other in ((sa - sb, b), (sb - sa, a)):
            if not extra:
                continue
            words = _raw_words(other)
            if any(not _fuzzy_in(w, words) and _unacronym(w) not in _acronyms(other)
                   for w in extra):
                return False
        return True
    check.__name__ = f"check_{name}"
    return check


def _languages(text: str) -> set[str]:
    found = {t for t in tokens(text) if t in _PROG or t in _NATURAL}
    found |= {w.lower() for w in re.findall(r"\b(?:C|Go|R|Swift)\b(?![+#])", text)
              if w in _PROG_CASED and not re.search(rf"(?:^|[.!?]\s+){w}\b", text)}
    return found


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
                      "hour", "minute", "gal", "cup"}


def _units(text: str) -> set[str]:
    """Units named in the text; ambiguous ones ('degree', 'ml', 'week') only after a number."""
    toks = tokens(text)
    found = set()
    for i, t in enumerate(toks):
        unit = _singular(t)
        if unit not in _UNITS and t not in _UNITS:
            continue
        if unit in _UNITS_NEED_NUMBER and not (i and _NUMBER.fullmatch(toks[i - 1])):
            continue
        found.add(unit)
    return found


def _picked(pick: Callable[[str], bool]) -> Callable[[str], set[str]]:
    return lambda text: {_singular(t) for t in tokens(text) if pick(t)}


_CHECKS: dict[str, Callable[[str, str], bool]] = {
    "numbers": lambda a, b: numbers(a) == numbers(b),
    "negation": lambda a, b: (sum(t in _NEGATIONS for t in tokens(a)) > 0)
    == (sum(t in _NEGATIONS for t in tokens(b)) > 0),
    "entities": check_entities,
    "order": check_order,
    "antonyms": check_antonyms,
    "languages": _tolerant("languages", _languages),
    "format": _tolerant("format", _picked(lambda t: t in _FORMAT)),
    "dates": _tolerant("dates", _picked(lambda t: t in _DATES)),
    "units": _tolerant("units", _units),
    "scope": check_scope,
}
