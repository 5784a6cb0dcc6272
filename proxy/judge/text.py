"""Text helpers of the pair model: the same question in two spellings, typo repair, and
the part of two long prompts that differs. Pure functions; run on the model's tokenizer
thread (judge/model.py), never on the event loop."""

from __future__ import annotations

import re
from typing import Any

from .checks import common_ends, edits

CONTEXT_FORMAT = "Previous request: {previous}\nFollow-up: {turn}"
"""How the judge shows the pair model a short follow-up with the turn it follows (the form
its training pairs take: judge/training/generate.py)."""

_QUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)+", re.M)
_FENCE_LINE = re.compile(r"^[ \t]*(?:```|~~~)[\w+#.-]*[ \t]*$", re.M)


def layout_free(text: str) -> str:
    """A prompt without its layout: '> ' quoting, fence lines, indentation, line breaks and
    runs of blank space. Two long prompts that paste the same material, quoted or fenced or
    wrapped otherwise, then share their words, and the part where they differ is what is
    left to read."""
    return " ".join(_FENCE_LINE.sub(" ", _QUOTE.sub("", text)).split())

_PUNCTUATION = re.compile(r"[\s?.!,;:\"`]+")
_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc]")
PARTICIPLES = {"wrote": "written", "made": "made", "built": "built", "drew": "drawn",
               "sang": "sung", "gave": "given", "took": "taken", "began": "begun",
               "found": "found", "won": "won", "led": "led", "sold": "sold", "bought": "bought",
               "taught": "taught", "ran": "run", "told": "told", "sent": "sent", "paid": "paid",
               "held": "held", "wore": "worn", "chose": "chosen", "broke": "broken",
               "stole": "stolen", "ate": "eaten", "shot": "shot", "spoke": "spoken",
               "threw": "thrown", "sank": "sunk", "struck": "struck", "forgot": "forgotten",
               "hid": "hidden", "froze": "frozen"}
"""Past forms whose participle differs from them ("wrote" / "written"); a regular verb's
are one form ("invented")."""
_BE = r"(?:was|were|is|are)"
_NOT_ACTIVE = {"was", "were", "is", "are", "has", "have", "had", "did", "does", "do", "will",
               "would", "can", "could", "should", "may", "might", "must", "else"}
_VOICE_FORMS = (  # (pattern, index of the verb, index of the object, passive?)
    (re.compile(r"who (\w+) (.+)"), 1, 2, False),               # who wrote hamlet
    (re.compile(rf"by whom {_BE} (.+) (\w+)"), 2, 1, True),      # by whom was hamlet written
    (re.compile(rf"who {_BE} (.+) (\w+) by"), 2, 1, True),       # who was hamlet written by
    (re.compile(rf"(.+) {_BE} (\w+) by whom"), 2, 1, True),      # hamlet was written by whom
)


def _canon(text: str) -> str:
    """Case, spacing, sentence punctuation and apostrophes ("isn't" / "isnt") ignored."""
    return _PUNCTUATION.sub(" ", _APOSTROPHES.sub("", text.casefold())).strip()


def _voice_key(text: str) -> tuple[str, str] | None:
    """(participle, object) of a who-question in the active or the passive voice ("Who wrote
    Hamlet?", "By whom was Hamlet written?", "Who was Hamlet written by?", "Hamlet was
    written by whom?" are all ("written", "hamlet")); None for any other text."""
    canon = _canon(text)
    for pattern, verb_at, obj_at, passive in _VOICE_FORMS:
        m = pattern.fullmatch(canon)
        if m is None:
            continue
        verb, obj = m.group(verb_at), m.group(obj_at)
        if passive:
            if verb.endswith(("ed", "en", "n", "t")) or verb in PARTICIPLES.values():
                return verb, obj
        elif verb not in _NOT_ACTIVE:
            part = PARTICIPLES.get(verb) or (verb if verb.endswith("ed") else None)
            if part:
                return part, obj
    return None


def same_question(cached: str, new: str) -> bool:
    """The same words in the same order, ignoring case, spacing and sentence punctuation
    ("What is X?" / "what is x"), or the same who-question in the other voice ("Who wrote
    Hamlet?" / "By whom was Hamlet written?"): one answer serves both, and the model is not
    asked. Symbols that change the question ("C++", "3.8", "-") are kept."""
    if _canon(cached) == _canon(new):
        return True
    key = _voice_key(cached)
    return key is not None and key == _voice_key(new)


_WORDS = re.compile(r"[A-Za-z]+")


_CONTRACTIONS = {"whats", "thats", "dont", "doesnt", "didnt", "cant", "wont", "isnt", "arent",
                 "im", "ive", "youre", "theyre", "hows", "wheres", "whos", "lets", "shouldnt"}


def known_words(tokenizer: Any) -> frozenset[str]:
    """The whole words of the tokenizer's vocabulary (~22k English words and names), and
    contractions typed without their apostrophe."""
    return frozenset(w for w in tokenizer.get_vocab() if w.isalpha() and w.islower()) | _CONTRACTIONS


def _close(typed: str, word: str) -> bool:
    """One slip apart (a letter dropped, added, changed, or two swapped), or two for words of
    8 letters or more."""
    limit = 2 if min(len(typed), len(word)) >= 8 else 1
    return abs(len(typed) - len(word)) <= limit and edits(typed, word) <= limit


def repair_typos(cached: str, new: str, known: frozenset[str]) -> tuple[str, str]:
    """Each side's misspelt words replaced by the word of the other side they are a slip
    away from ("vitmain" -> "vitamin", "asutraalia" -> "australia"). Only a word that is no
    known word becomes a known one: a real word ("lit", "Iraq" for "Iran") is a different
    question as far as this goes, and two unknown ones ("gigabytes" / "megabytes", names)
    stay apart, and so do words that differ in their first letter ("bake" / "cake": not every
    word is in the vocabulary); the checks and the model decide those."""
    def fix(text: str, other: str) -> str:
        theirs = {w.lower() for w in _WORDS.findall(other) if len(w) >= 4} & known
        if not theirs:
            return text

        def sub(m: re.Match[str]) -> str:
            typed = m.group(0).lower()
            if len(typed) < 3 or typed in known or typed in theirs:
                return m.group(0)
            for word in theirs:  # people rarely mistype a word's first letter
                if word[0] == typed[0] and _close(typed, word):
                    return word
            return m.group(0)
        return _WORDS.sub(sub, text)
    return fix(cached, new), fix(new, cached)


FOCUS_CONTEXT = (12, 6, 3, 0)
"""Words kept either side of the part of a long pair that differs: as many as still fit."""


def focus(cached: str, new: str, context: int = FOCUS_CONTEXT[0]) -> tuple[str, str]:
    """The part of two prompts that differs, with `context` words either side: the words
    both share at their start and at their end are cut ("..." marks a cut). Used for a pair
    too long for the model to read whole, so that a difference in the tail of two long
    prompts ("<the same 300-token code> Why does it crash?" / "... How do I make it
    faster?") is what the model reads, not their identical head."""
    a, b = cached.split(), new.split()
    head, tail = common_ends(a, b)
    start, cut = max(0, head - context), max(0, tail - context)

    def window(words: list[str]) -> str:
        inner = " ".join(words[start:len(words) - cut])
        return ("... " if start else "") + inner + (" ..." if cut else "")
    return window(a), window(b)
