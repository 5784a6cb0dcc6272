"""Context chains: a conversation's context is identified by what answered it.

The scope of a chat request holds a fingerprint of every message before the last one. Taken
word for word, one reworded first turn would keep every later turn of that conversation
from ever hitting, even when the cache answered that first turn. So every answer the cache
gives or stores is remembered by a hash of its text (`Keys.answer`: tenant, namespace and
hash -> the entry that gave it); when a history's assistant message is such an answer,
that assistant turn and the user turns it answered are represented by the entry, not by
their wording. Two conversations whose first turns were paraphrases served from one entry
then share the context of their second turn; a first turn that differs in meaning was
answered by another entry, so nothing later can cross over. History that did not come from
the cache (another client's answers, an edited message) stays exact, and system prompts and
every other message are always exact. The keys hold the tenant and namespace: a chain never
crosses either.

Short follow-ups ("Make it shorter.") are judged with the turn they follow: the judge reads
`Previous request: <the prompt of the entry that answered it, or the user's words>\\n
Follow-up: <turn>`, the form the pair model was trained on (judge/training/generate.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from semcache.index.store import Store, StoreError

from ..judge.text import CONTEXT_FORMAT
from ..protocol import ParsedRequest, message_text, normalise_text

SHORT_TURN_WORDS = 12
"""A last user message of at most this many words, after an earlier user turn, is judged
together with that turn: alone, "Make it shorter." says nothing about what 'it' is."""
PREVIOUS_CHARS = 400
"""How much of the previous turn a follow-up is judged with (the model reads 128 tokens)."""


@dataclass(frozen=True, kw_only=True)
class Context:
    fingerprint: list[Any]
    """What the scope hashes for the messages before the last one."""
    previous: str | None
    """The previous user turn as the judge reads it: the prompt of the entry that answered
    it where the cache did, else its words; None when there is none."""
    chained: int = 0
    """Assistant turns recognised as the cache's answers."""


def answer_digest(text: str) -> str:
    return hashlib.sha256(b"answer\0" + normalise_text(text).encode()).hexdigest()[:32]


def judged_text(query_text: str | None, context: Context) -> str | None:
    """The text the judge and the index read for the last message: a short follow-up with
    the turn it follows, anything else as it is."""
    if query_text is None or context.previous is None:
        return query_text
    if len(query_text.split()) > SHORT_TURN_WORDS:
        return query_text
    return CONTEXT_FORMAT.format(previous=context.previous[:PREVIOUS_CHARS], turn=query_text)


class Chains:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def resolve(self, req: ParsedRequest, tenant: str, namespace: str) -> Context:
        """The context of a request's last message; exact where Redis cannot say (fail
        closed: the old fingerprint never shares more than it should)."""
        history = req.history
        if not history:
            return Context(fingerprint=req.context, previous=None)
        assistants = [i for i, m in enumerate(history)
                      if m.get("role") == "assistant" and isinstance(m.get("content"), str)
                      and m["content"].strip()]
        keys = [self.store.keys.answer(tenant, namespace, answer_digest(history[i]["content"]))
                for i in assistants]
        try:
            found = await self.store.answers(keys)
        except StoreError:
            found = [None] * len(keys)
        answered = {i: raw.decode() for i, raw in zip(assistants, found, strict=True) if raw}
        fingerprint: list[Any] = []
        turn_start: int | None = None  # where the user turns since the last answer begin
        previous: str | None = None
        for i, message in enumerate(history):
            if i in answered:  # this answer and the user turns it answered: the entry
                entry_id, _, prompt = answered[i].partition("\n")
                del fingerprint[len(fingerprint) if turn_start is None else turn_start:]
                fingerprint.append(["entry", entry_id])
                turn_start, previous = None, prompt or previous
                continue
            fingerprint.append(req.context[i])
            if message.get("role") == "user":
                turn_start = len(fingerprint) - 1 if turn_start is None else turn_start
                previous = message_text(message) or previous
            elif message.get("role") == "assistant":
                turn_start = None
        return Context(fingerprint=fingerprint, previous=previous, chained=len(answered))

    async def remember(self, tenant: str, namespace: str, answer: str, entry_id: str,
                       prompt: str, ttl_s: int) -> None:
        """Record that `entry_id` gave `answer` (at write-back; a hit serves the same
        text, so the record stands for both)."""
        if not answer.strip():
            return
        key = self.store.keys.answer(tenant, namespace, answer_digest(answer))
        await self.store.remember_answer(key, f"{entry_id}\n{prompt[:PREVIOUS_CHARS]}", ttl_s)
