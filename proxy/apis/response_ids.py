"""Responses the cache answered, kept by the id it gave them, so that a later turn naming
one as its `previous_response_id` can still be answered.

A response served from the cache has an id the upstream never saw (`resp_semcache_...`).
Clients of the Responses API chain turns by naming the previous response's id, so each such
hit (unless the request said `store: false`, whose ids the upstream would not keep either)
is recorded in Redis under its tenant: the request's input items and the answer's output, as
input items. A later request of the same tenant naming that id is rewritten before anything
else reads it: `previous_response_id` is replaced by those items followed by its own input,
which is what the upstream would have done with its stored response (instructions are not
carried over, as the API does not carry them). The request is then complete in itself: the
cache can answer it, and the upstream can, whatever it stored.

An id the cache did not give (the upstream's own) is left alone: that request depends on
state only the upstream holds, and bypasses the cache (`server-state`, apis/responses.py).
An id of the cache's that is not found (another tenant's, expired, Redis unavailable) is left
alone too, and the upstream answers it as it answers any id it does not know.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from semcache.index.store import Store, StoreError

from .answers import text_answer

PREFIX = "resp_semcache_"
"""The ids of responses the cache served."""


def mint() -> str:
    return PREFIX + uuid.uuid4().hex


def input_items(value: Any) -> list[Any]:
    return [{"role": "user", "content": value}] if isinstance(value, str) else list(value)


def output_as_input(response: dict[str, Any]) -> list[Any]:
    """A response's output as the input items of the next turn: a plain text answer as an
    assistant message, anything else as the items themselves (valid input items)."""
    answer = text_answer(response)
    if answer is not None:
        return [{"role": "assistant", "content": answer.text}]
    return list(response.get("output") or [])


class ResponseIds:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def remember(self, tenant: str, body: dict[str, Any], response: dict[str, Any],
                       ttl_s: int) -> None:
        """Record a served response (`response["id"]` from `mint`) with the request `body`
        it answered. Raises StoreError."""
        turns = {"input": input_items(body["input"]), "output": output_as_input(response)}
        await self.store.remember_answer(self.store.response_key(tenant, response["id"]),
                                         orjson.dumps(turns).decode(), ttl_s)

    async def expand(self, tenant: str, body: dict[str, Any]) -> dict[str, Any]:
        """The body with a `previous_response_id` the cache gave replaced by the turns it
        names; the body unchanged otherwise."""
        previous = body.get("previous_response_id")
        if not isinstance(previous, str) or not previous.startswith(PREFIX):
            return body
        current = body.get("input")
        if not isinstance(current, str | list):
            return body  # invalid: the parser says so
        try:
            found = await self.store.answers([self.store.response_key(tenant, previous)])
        except StoreError:
            return body
        if not found or found[0] is None:
            return body
        turns = orjson.loads(found[0])
        rest = {k: v for k, v in body.items() if k != "previous_response_id"}
        return {**rest, "input": [*turns["input"], *turns["output"], *input_items(current)]}
