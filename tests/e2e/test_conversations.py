"""Conversations and long prompts through the proxy with the official `openai` client, the
real encoder and the shipped pair model: context chains, short follow-ups judged with the
turn they follow, long prompts compared without their layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import make_settings, start_judged_proxy

from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.app import SERVICE

pytestmark = pytest.mark.slow


@pytest.fixture
async def proxy(aiohttp_client: Any, redis_url: str, upstream: FakeUpstream, model_dir: Path) -> Any:
    upstream.answer_with_history = True  # a model's answer depends on the conversation
    settings = make_settings(redis_url, upstream.base_url, model_dir, cache__semantic=True,
                             judge__model=True)
    return await start_judged_proxy(aiohttp_client, settings)


class Chat:
    """One conversation as a user has it: each answer goes back as the assistant turn."""

    def __init__(self, proxy: Any, key: str = "sk-one", namespace: str | None = None) -> None:
        self.proxy = proxy
        headers = {"X-Semcache-Namespace": namespace} if namespace else {}
        self.client = openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key=key,
                                         max_retries=0, default_headers=headers)
        self.messages: list[dict[str, str]] = []

    async def say(self, text: str, answer: str | None = None) -> str:
        """Send a user turn; the outcome (X-Semcache). `answer` replaces the answer that
        goes back into the history (a client that edits or writes its own history)."""
        self.messages.append({"role": "user", "content": text})
        raw = await self.client.chat.completions.with_raw_response.create(
            model="fake-model", messages=self.messages)  # type: ignore[arg-type]
        await self.proxy.app[SERVICE].drain(10)
        content = raw.parse().choices[0].message.content or ""
        self.messages.append({"role": "assistant", "content": answer or content})
        return raw.headers["x-semcache"]


async def test_a_follow_up_after_a_reworded_first_turn_hits(proxy: Any, upstream: FakeUpstream) -> None:
    first = Chat(proxy)
    assert await first.say("How do I make a sourdough starter from scratch?") == "miss"
    assert await first.say("Make it shorter.") == "miss"
    second = Chat(proxy)
    assert await second.say("What's the way to make a sourdough starter from scratch?") == "hit-semantic"
    # the first turns were answered by one entry: the second turns share their context
    assert await second.say("Make it shorter.") == "hit-exact"
    calls = len(upstream.calls)
    third = Chat(proxy)
    assert await third.say("What's the way to make a sourdough starter from scratch?") == "hit-semantic"
    # a short follow-up is judged with the turn it follows: another request is a miss
    assert await third.say("Make it funnier.") == "miss"
    assert len(upstream.calls) == calls + 1


async def test_a_first_turn_that_differs_never_lets_a_follow_up_cross(proxy: Any) -> None:
    first = Chat(proxy)
    assert await first.say("Write a cover letter for a junior accountant job.") == "miss"
    assert await first.say("Make it more formal.") == "miss"
    other = Chat(proxy)
    assert await other.say("Write a resignation letter for a junior accountant job.") == "miss"
    assert await other.say("Make it more formal.") == "miss"


async def test_history_that_did_not_come_from_the_cache_is_matched_word_for_word(proxy: Any) -> None:
    own = "Sourdough needs flour and water, fed daily for a week."
    first = Chat(proxy)
    await first.say("How do I make a sourdough starter from scratch?", answer=own)
    assert await first.say("Make it shorter.") == "miss"
    again = Chat(proxy)
    await again.say("How do I make a sourdough starter from scratch?", answer=own)
    assert await again.say("Make it shorter.") == "hit-exact"  # the same history, as before
    edited = Chat(proxy)
    await edited.say("How do I make a sourdough starter from scratch?", answer=own + " Or two.")
    assert await edited.say("Make it shorter.") == "miss"


async def test_chains_stay_within_their_tenant_and_namespace(proxy: Any) -> None:
    first = Chat(proxy, key="sk-one")
    await first.say("How do I make a sourdough starter from scratch?")
    await first.say("Make it shorter.")
    for other in (Chat(proxy, key="sk-two"), Chat(proxy, key="sk-one", namespace="other-app")):
        # the same history, the cache's own answer included, from another key or namespace
        other.messages = list(first.messages[:2])
        assert await other.say("Make it shorter.") == "miss"


CODE = "\n".join(f"    total_{i} = price_{i} * quantity_{i}" for i in range(12))
LONG = (f"Here is a function from our billing service:\n\n```python\ndef totals(rows):\n{CODE}\n"
        f"    return total_0 + total_1\n```\n\nThe totals are off by a few cents on large "
        f"invoices. Why does this happen, and how should I fix it?")


async def test_a_long_prompt_with_one_line_of_code_changed_misses(proxy: Any) -> None:
    assert await Chat(proxy).say(LONG) == "miss"
    changed = LONG.replace("total_7 = price_7 * quantity_7", "total_7 = price_7 + quantity_7")
    assert await Chat(proxy).say(changed) == "miss"


async def test_the_same_long_prompt_rewrapped_and_quoted_hits(proxy: Any) -> None:
    assert await Chat(proxy).say(LONG) == "miss"
    quoted = LONG.replace("```python\n", "").replace("\n```", "")
    quoted = "\n".join("> " + line if line.startswith("    ") or line.startswith("def ")
                       else line for line in quoted.split("\n"))
    rewrapped = quoted.replace("are off by a few cents on large invoices.",
                               "are off by a few cents\non large invoices.")
    assert await Chat(proxy).say(rewrapped) == "hit-semantic"
