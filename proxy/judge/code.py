"""Code in prompts: a difference inside code is a different question.

"Why does `for (i = 0; i < n; i++)` skip the last item?" and the same with `i <= n` embed
within a hair of each other, and a pair model trained on prose reads them as one question.
This check compares the two prompts token by token (identifiers, literals and operators
apart) and fails when a stretch where they differ touches code: text in a fenced block or
backticks, a line that looks like code, an operator, or an identifier (`snake_case`,
`camelCase`, `call()`). How the code is laid out is no difference: indentation, line
wrapping, blank lines, a fence or its language tag, backticks, and `> ` quoting are dropped
before comparing. The request around the same code may be reworded freely.
"""

from __future__ import annotations

import difflib
import functools
import re

_FENCE = re.compile(r"^\s*(?:>\s?)*(```|~~~)[\w+#.-]*\s*$", re.M)
_QUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)+", re.M)
_INLINE = re.compile(r"`([^`\n]+)`")
_TOKEN = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(?:\+\+|#)?"          # words and identifiers (C++, C#)
    r"|\d+(?:\.\d+)*"                              # numbers (the numbers check reads them too)
    r"|===|!==|<<=|>>=|\*\*=|//=|\.\.\."           # three-character operators
    r"|==|!=|<=|>=|&&|\|\||\+=|-=|\*=|/=|%=|&=|\|=|\^=|->|=>|::|\*\*|//|<<|>>|\+\+|--|:="
    r"|\S"                                         # any other single character
)
_CODE_LINE = re.compile(
    r"^(?:[ \t]{2,}|\t)\S.*[=(){}\[\];:<>]"           # indented and with code punctuation
    r"|^\s*(?:def|class|import|from\s+\S+\s+import|return|elif|else:|try:|except|raise|"
    r"async\s+def|await|const|let|var|function|public|private|protected|static|package|"
    r"#include|#define|using\s+namespace|fn|impl|struct|enum|SELECT|INSERT|UPDATE|DELETE|"
    r"CREATE|ALTER|WITH)\b.*[=(){}\[\];:<>,]"
    r"|^\s*(?:if|for|while|switch|catch)\s*\(.*\)"
    r"|.*[;{}]\s*$"                                    # ends with ; { or }
    r"|^\s*[\w.\[\]'\"]+\s*(?:[-+*/%]?=)\s*\S"         # an assignment
    r"|^\s*[$#]\s+\w"                                  # a shell prompt
)
_OPERATORS = frozenset(
    "=== !== <<= >>= **= //= == != <= >= && || += -= *= /= %= &= |= ^= -> => :: ** // << >> "
    "++ -- := < > = & | ^ ~ { } [ ] ; \\ $ @ % * + ( )".split()
)
"""Tokens that are code wherever they stand; `.`, `,`, `:`, `!`, `?`, `-`, `/`, `'` and
quotes also end or join sentences, so they count only inside code."""
_IDENTIFIER = re.compile(r"[A-Za-z]\w*_\w+|_\w+|[a-z]{2,}[A-Z]\w*")
"""snake_case, _private and camelCase (two small letters first: 'iPhone' is a name)."""


@functools.lru_cache(maxsize=4096)
def code_tokens(text: str) -> tuple[tuple[str, bool], ...]:
    """(token, inside code) for every token of the text, code laid out any way at all."""
    text = _QUOTE.sub("", text)
    fenced = _fenced_spans(text)
    out: list[tuple[str, bool]] = []
    pos = 0
    for start, end in fenced:
        out += _prose_tokens(text[pos:start])
        out += [(t, True) for t in _TOKEN.findall(text[start:end])]
        pos = end
    out += _prose_tokens(text[pos:])
    return tuple(out)


def _fenced_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the contents of each fenced block; an unclosed fence runs to the end."""
    marks = list(_FENCE.finditer(text))
    # The fence lines themselves are layout: a span starts after its opening line and
    # ends before its closing one.
    return [(marks[i].end(), marks[i + 1].start() if i + 1 < len(marks) else len(text))
            for i in range(0, len(marks), 2)]


def _prose_tokens(text: str) -> list[tuple[str, bool]]:
    """Tokens outside fences: inline `code`, lines that look like code, and the rest."""
    text = _FENCE.sub("", text)
    out: list[tuple[str, bool]] = []
    for line in text.splitlines():
        if _CODE_LINE.match(line):
            out += [(t, True) for t in _TOKEN.findall(line.replace("`", " "))]
            continue
        pos = 0
        for m in _INLINE.finditer(line):
            out += [(t, False) for t in _TOKEN.findall(line[pos:m.start()])]
            out += [(t, True) for t in _TOKEN.findall(m.group(1))]
            pos = m.end()
        out += [(t, False) for t in _TOKEN.findall(line[pos:])]
    return out


def has_code(text: str) -> bool:
    return any(inside or tok in _OPERATORS for tok, inside in code_tokens(text))


def _is_code(token: str, inside: bool) -> bool:
    return inside or token in _OPERATORS or _IDENTIFIER.fullmatch(token) is not None


def check_code(a: str, b: str) -> bool:
    """Fails when the two prompts differ anywhere in their code: a changed, added or
    dropped token that is code, or that stands where the other side has code."""
    ta, tb = code_tokens(a), code_tokens(b)
    if not any(_is_code(t, i) for t, i in ta) and not any(_is_code(t, i) for t, i in tb):
        return True
    wa, wb = [t for t, _ in ta], [t for t, _ in tb]
    matcher = difflib.SequenceMatcher(None, wa, wb, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        if any(_is_code(t, i) for t, i in ta[i1:i2]) or any(_is_code(t, i) for t, i in tb[j1:j2]):
            return False
    return True
