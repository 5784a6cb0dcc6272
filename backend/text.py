"""Turning generated token ids into text as they arrive, and finding stop sequences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TextStream:
    """Incremental detokenisation with stop strings for one choice.

    Tokens are decoded in a short window (the HF TextStreamer / vLLM scheme), so a step costs
    the same at token 500 as at token 5, and text ending in an incomplete UTF-8 character
    waits for the next token. Text that could be the start of a stop string is held back
    until it is known not to be one, so a streamed answer never shows part of a stop string."""

    def __init__(self, tokenizer: Any, stop: list[str]) -> None:
        self._tokenizer = tokenizer
        self._stop = stop
        self._hold = max((len(s) for s in stop), default=1) - 1
        self._ids: list[int] = []
        self._prefix = 0  # window start: decoding from here gives stable text
        self._read = 0  # tokens already turned into text
        self.text = ""  # all text decoded so far (before stop truncation)
        self._sent = 0  # characters of self.text already handed out
        self.stopped = False
        self.matched: str | None = None
        """The stop string that ended the text, if one did (Anthropic names it)."""
        self.tokens = 0  # tokens consumed, the completion's token count

    def _decode(self, ids: list[int]) -> str:
        # No clean-up of "tokenization spaces": it deletes real spaces before punctuation
        # in byte-level BPE output, and would make streamed and whole answers differ.
        return self._tokenizer.decode(ids, skip_special_tokens=True,
                                      clean_up_tokenization_spaces=False)

    def push(self, token: int) -> str:
        """Add a token; returns the text that may be shown now (maybe empty)."""
        return self.extend((token,))

    def extend(self, tokens: Sequence[int]) -> str:
        """Add one step's tokens (several when drafts were accepted); returns the text that
        may be shown now. With stop strings the tokens go in one at a time, so that the
        answer and its token count end at the token that completes a stop string, exactly
        as when the same tokens arrive in separate steps."""
        if self._stop and len(tokens) > 1:
            return "".join(self.extend((token,)) for token in tokens)
        if self.stopped or not tokens:
            return ""
        self.tokens += len(tokens)
        self._ids.extend(tokens)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self._ids)
        return self._release(final=False)

    def finish(self) -> str:
        """The text still held back, once no more tokens will come."""
        if not self.stopped and self._read < len(self._ids):
            before = self._decode(self._ids[self._prefix : self._read])
            self.text += self._decode(self._ids[self._prefix :])[len(before) :]
            self._read = len(self._ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self._stop and not self.stopped:
            start = max(0, self._sent - self._hold)
            hits = [(i, s) for i, s in ((self.text.find(s, start), s) for s in self._stop)
                    if i >= 0]
            if hits:
                at, self.matched = min(hits, key=lambda hit: hit[0])
                self.text = self.text[:at]
                self.stopped = True
                final = True
        end = len(self.text) if final else max(self._sent, len(self.text) - self._hold)
        if not self._stop:
            end = len(self.text)
        out = self.text[self._sent : end]
        self._sent = end
        return out
