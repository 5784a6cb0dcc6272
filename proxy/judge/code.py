"""Code in prompts: a difference inside code is a different question.

"Why does `for (i = 0; i < n; i++)` skip the last item?" and the same with `i <= n` embed
within a hair of each other, and a pair model trained on prose reads them as one question.
This check finds the code of each prompt (fenced blocks, `inline code`, lines that look
like code, and operator expressions in prose such as `i <= n`) and fails unless every piece
of code on one side appears, token for token, somewhere in the other. How the code is laid
out is no difference: indentation, line wrapping, blank lines, a fence or its language tag,
backticks and `> ` quoting are dropped before comparing, and the request around the same
code may be reworded freely ("Fix this:" / "Why does this crash?").
"""

from __future__ import annotations

import functools
import re

_FENCE = re.compile(r"^[ \t]*(```|~~~)[\w+#.-]*[ \t]*$", re.M)
_QUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)+", re.M)
_INLINE = re.compile(r"`([^`\n]+)`")
_TOKEN = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(?:\+\+|#)?"          # words and identifiers (C++, C#)
    r"|\d+(?:\.\d+)*"                              # numbers
    r"|===|!==|<<=|>>=|\*\*=|//=|\.\.\."           # three-character operators
    r"|==|!=|<=|>=|&&|\|\||\+=|-=|\*=|/=|%=|&=|\|=|\^=|->|=>|::|\*\*|<<|>>|\+\+|--|:="
    r"|\S"                                         # any other single character
)
_CODE_LINE = re.compile(
    r"^(?:[ \t]{2,}|\t)\S.*[=(){}\[\];<>]"            # indented and with code punctuation
    r"|^\s*(?:def|class|import|from\s+\S+\s+import|return|elif|try:|except\b|raise|"
    r"async\s+def|const|let|var|function|public|private|protected|static|package|"
    r"#include|#define|using\s+namespace|fn|impl|struct|enum|SELECT|INSERT|UPDATE|DELETE|"
    r"CREATE|ALTER)\b.*[=(){}\[\];:<>,]"
    r"|^\s*(?:if|for|while|switch|catch)\s*\(.*\)"
    r"|^[^.!?]*[;{}]\s*$"                              # ends with ; { or } and is no sentence
    r"|^\s*[\w.\[\]'\"]+\s*(?:[-+*/%]?=)\s*\S"         # an assignment
    r"|^\s*[$#]\s+\w"                                  # a shell prompt
)
_PROSE_OPERATORS = frozenset(
    "=== !== <<= >>= **= //= == != <= >= && || += -= *= /= %= &= |= ^= :: ++ -- := "
    "< > = & | ^ ~ { } [ ] \\".split())
"""Operators that are code even in prose ('is 5 < 6?'). `+`, `*`, `%`, `$`, `(`, `->`,
`;` and the like also stand in sentences ('$49', '50%', 'x -> y', 'closed; open') and count
only inside code."""


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


@functools.lru_cache(maxsize=4096)
def code_pieces(text: str) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    """(the code of the text as token sequences, every token of the text in order): the
    fenced blocks, the inline code, the lines that look like code, and each prose operator
    with a token either side."""
    text = _QUOTE.sub("", text)
    pieces: list[tuple[str, ...]] = []
    marks = list(_FENCE.finditer(text))
    prose, pos = [], 0
    for i in range(0, len(marks), 2):  # the fence lines are layout: only what lies between
        start = marks[i].end()
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        prose.append(text[pos:marks[i].start()])
        pieces.append(tuple(_tokens(text[start:end])))
        pos = marks[i + 1].end() if i + 1 < len(marks) else len(text)
    prose.append(text[pos:])
    for part in prose:
        for line in part.splitlines():
            if _CODE_LINE.match(line):
                pieces.append(tuple(_tokens(line.replace("`", " "))))
                continue
            pieces += [tuple(_tokens(m.group(1))) for m in _INLINE.finditer(line)]
            words = _tokens(_INLINE.sub(" ", line))
            pieces += [_operands(words, i) for i, w in enumerate(words) if w in _PROSE_OPERATORS]
    everything = tuple(t for t in _tokens(text.replace("`", " ")) if t not in ("```", "~~~"))
    return tuple(p for p in pieces if p), everything


def _operands(words: list[str], i: int) -> tuple[str, ...]:
    """An operator in prose with the operands beside it that look like code ('i <= n',
    '5 < 6'); a word beside it is prose ('what does --install do')."""
    def operand(j: int) -> bool:
        return 0 <= j < len(words) and (len(words[j]) <= 2 or not words[j].isalpha()
                                         or _IDENTIFIER.fullmatch(words[j]) is not None)
    return tuple(words[j] for j in (i - 1, i, i + 1) if j == i or operand(j))


_IDENTIFIER = re.compile(r"[A-Za-z]\w*_\w+|_\w+|[a-z]{2,}[A-Z]\w*")
"""snake_case, _private and camelCase (two small letters first: 'iPhone' is a name)."""


def _trim(piece: tuple[str, ...]) -> tuple[str, ...]:
    """A piece without the punctuation it starts or ends with ('.gitignore' is 'gitignore'
    in prose), or an empty call's parentheses ('.then()' is 'then')."""
    if len(piece) > 2 and piece[-2:] == ("(", ")"):
        piece = piece[:-2]
    start, end = 0, len(piece)
    while start < end and not piece[start][0].isalnum() and piece[start] not in _PROSE_OPERATORS:
        start += 1
    while end > start and not piece[end - 1][0].isalnum() and piece[end - 1] not in (
            _PROSE_OPERATORS | {")", "]", "}"}):
        end -= 1
    return piece[start:end]


def _contains(haystack: tuple[str, ...], needle: tuple[str, ...]) -> bool:
    if not needle:
        return True
    if len(needle) == 1 and needle[0].isalpha():  # a single word: case is spelling in prose
        return needle[0].lower() in {t.lower() for t in haystack}
    n = len(needle)
    first = needle[0]
    return any(haystack[i] == first and haystack[i:i + n] == needle
               for i in range(len(haystack) - n + 1))


def has_code(text: str) -> bool:
    return bool(code_pieces(text)[0])


def check_code(a: str, b: str) -> bool:
    """Fails when a piece of code of one prompt is not, token for token, in the other."""
    pieces_a, all_a = code_pieces(a)
    pieces_b, all_b = code_pieces(b)
    return (all(_contains(all_b, _trim(p)) for p in pieces_a)
            and all(_contains(all_a, _trim(p)) for p in pieces_b))
