"""JSON mode (`response_format: {"type": "json_object"}`) by constrained decoding.

Each step a JSON sequence takes the most likely token (or samples among the likely ones)
whose text keeps its answer a prefix of a JSON object, and its answer ends at the object's
closing brace. The check is a pushdown automaton over characters (`step`), whose states are
immutable tuples, so trying a token from the current state costs a few dozen character
steps and changes nothing until a token is chosen.

Candidates are tried in order of probability from the CANDIDATES most likely; only when
none of them fits is the whole vocabulary scanned (rare: once an answer is inside an
object, the model's likely tokens mostly fit). Sampled rows draw from the candidates that
fit, renormalised, with the sequence's own random number, so a seeded answer is
reproducible. Speculation is off for JSON rows: their every token is checked.
"""

from __future__ import annotations

from typing import Any

import torch

from .sampling import probabilities

CANDIDATES = 64
"""Most likely tokens tried before the whole vocabulary is scanned."""
MAX_BLANK = 16
"""Most whitespace characters in a row outside strings: a small model can otherwise
fill its whole answer with newlines, every one of which keeps the JSON valid."""

# A state: (mode, stack of open containers, aux, blanks in a row). Modes:
# V value, K key (or } right after {), KA key after a comma, C colon, A array value (or ]),
# N after a value in a container, S string (aux "k" for a key), E escape, U unicode escape
# (aux: hex digits left), L literal (aux: its remaining letters), M number (aux: its part),
# D the top-level object is complete.
State = tuple[str, str, Any, int]
START: State = ("start", "", None, 0)
_BLANK = " \t\n\r"
_NUMBER_END = {"int", "zero", "frac", "exp"}


def _end_value(stack: str) -> State:
    return ("D", "", None, 0) if not stack else ("N", stack, None, 0)


def _value(ch: str, stack: str) -> State | None:
    if ch == "{":
        return ("K", stack + "{", None, 0)
    if ch == "[":
        return ("A", stack + "[", None, 0)
    if ch == '"':
        return ("S", stack, "v", 0)
    if ch == "-":
        return ("M", stack, "minus", 0)
    if ch == "0":
        return ("M", stack, "zero", 0)
    if ch.isdigit() and ch.isascii():
        return ("M", stack, "int", 0)
    for word in ("true", "false", "null"):
        if ch == word[0]:
            return ("L", stack, word[1:], 0)
    return None


def _number(ch: str, part: str, stack: str) -> State | None:
    digit = ch.isascii() and ch.isdigit()
    nxt = {"minus": "zero" if ch == "0" else "int" if digit else None,
           "zero": "dot" if ch == "." else "e" if ch in "eE" else None,
           "int": "int" if digit else "dot" if ch == "." else "e" if ch in "eE" else None,
           "dot": "frac" if digit else None,
           "frac": "frac" if digit else "e" if ch in "eE" else None,
           "e": "exp" if digit else "sign" if ch in "+-" else None,
           "sign": "exp" if digit else None,
           "exp": "exp" if digit else None}[part]
    if nxt is not None:
        return ("M", stack, nxt, 0)
    if part not in _NUMBER_END:
        return None
    return step(_end_value(stack), ch)  # the number ended: this character comes after it


def step(state: State, ch: str) -> State | None:
    """The state after one more character, or None if no JSON object starts this way."""
    mode, stack, aux, blanks = state
    if mode in ("S", "E", "U"):
        if mode == "E":
            if ch == "u":
                return ("U", stack, (aux, 4), 0)
            return ("S", stack, aux, 0) if ch in '"\\/bfnrt' else None
        if mode == "U":
            kind, left = aux
            if ch not in "0123456789abcdefABCDEF":
                return None
            return ("S", stack, kind, 0) if left == 1 else ("U", stack, (kind, left - 1), 0)
        if ch == '"':
            return ("C", stack, None, 0) if aux == "k" else _end_value(stack)
        if ch == "\\":
            return ("E", stack, aux, 0)
        return None if ord(ch) < 0x20 else state
    if mode == "M":
        return _number(ch, aux, stack)
    if mode == "L":
        return (("L", stack, aux[1:], 0) if len(aux) > 1 else _end_value(stack)) \
            if ch == aux[0] else None
    if mode == "start":  # the answer opens with its brace, as OpenAI's JSON mode does
        return ("K", "{", None, 0) if ch == "{" else None
    if ch in _BLANK:
        return None if mode == "D" or blanks >= MAX_BLANK else (mode, stack, aux, blanks + 1)
    if mode == "V":
        return _value(ch, stack)
    if mode == "A":
        return _end_value(stack[:-1]) if ch == "]" else _value(ch, stack)
    if mode in ("K", "KA"):
        if ch == '"':
            return ("S", stack, "k", 0)
        return _end_value(stack[:-1]) if ch == "}" and mode == "K" else None
    if mode == "C":
        return ("V", stack, None, 0) if ch == ":" else None
    if mode == "N":
        top = stack[-1]
        if ch == ",":
            return ("KA", stack, None, 0) if top == "{" else ("V", stack, None, 0)
        if (ch, top) in (("}", "{"), ("]", "[")):
            return _end_value(stack[:-1])
    return None


def feed(state: State, text: str) -> State | None:
    for ch in text:
        next_state = step(state, ch)
        if next_state is None:
            return None
        state = next_state
    return state


def token_texts(tokenizer: Any, vocab_size: int) -> list[str | None]:
    """Each token's text; None for tokens JSON mode never picks: special tokens (end of
    sequence among them: the answer ends at the object's end instead), tokens past the
    tokenizer's vocabulary, and byte pieces of a character that decode to no text alone."""
    special = set(getattr(tokenizer, "all_special_ids", []))
    out: list[str | None] = []
    for i in range(vocab_size):
        if i in special or i >= len(tokenizer):
            out.append(None)
            continue
        text = tokenizer.decode([i], skip_special_tokens=False,
                                clean_up_tokenization_spaces=False)
        out.append(text if text and "\ufffd" not in text else None)
    return out


class JsonConstraint:
    """One sequence's JSON state, and the choice of its next token."""

    def __init__(self, texts: list[str | None]) -> None:
        self.texts = texts
        self.state: State = START

    @property
    def done(self) -> bool:
        return self.state[0] == "D"

    def _fits(self, token: int) -> State | None:
        text = self.texts[token] if token < len(self.texts) else None
        return None if text is None else feed(self.state, text)

    def choose(self, logits: torch.Tensor, temperature: float, top_p: float,
               uniform: float) -> int:
        """The next token from one row of float32 logits [vocab]; advances the state."""
        if temperature > 0:
            probs = probabilities(logits[None], temperature, top_p)[0]
            mass, ids = torch.topk(probs, min(CANDIDATES, probs.shape[-1]))
            fitting = [(i, m) for i, m in zip(ids.tolist(), mass.tolist(), strict=True)
                       if m > 0 and self._fits(i) is not None]
            if fitting:
                target, running = uniform * sum(m for _, m in fitting), 0.0
                chosen = fitting[-1][0]  # rounding may leave the target past the last one
                for token, m in fitting:
                    running += m
                    if running >= target:
                        chosen = token
                        break
                return self._take(chosen)
        for order in (torch.topk(logits, min(CANDIDATES, logits.shape[-1])).indices,
                      torch.argsort(logits, descending=True)):
            for token in order.tolist():
                if self._fits(token) is not None:
                    return self._take(token)
        raise RuntimeError("no token continues the JSON answer")  # every state has one

    def _take(self, token: int) -> int:
        state = self._fits(token)
        assert state is not None
        self.state = state
        return token
