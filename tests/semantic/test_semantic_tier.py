"""The semantic tier with real Redis and the real encoder (int8 on the CPU)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import make_settings
from sse_helpers import stream_text

from semcache.index.redis_server import free_port
from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.app import SEMANTIC, SERVICE, STORE, build_app
from semcache.proxy.readiness import ChildExitedError, wait_for_200

CHAT = "/v1/chat/completions"
PARAPHRASES = ("How do I learn Python quickly?", "How can I learn Python fast?")  # cosine 0.96


def chat(q: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": q}], **extra}


async def start_proxy(aiohttp_client: Any, redis_url: str, upstream: FakeUpstream, model_dir: Path,
                      **overrides: object) -> Any:
    settings = make_settings(redis_url, upstream.base_url, model_dir, cache__semantic=True, **overrides)
    client = await aiohttp_client(build_app(settings))
    await asyncio.wait_for(client.app[SEMANTIC].ready.wait(), 60)
    return client


async def ask(client: Any, body: dict[str, Any], **headers: str) -> tuple[Any, dict[str, Any]]:
    resp = await client.post(CHAT, json=body, headers=headers)
    data = await resp.json()
    await client.app[SERVICE].drain(10)
    return resp, data


@pytest.fixture
async def proxy(aiohttp_client: Any, redis_url: str, upstream: FakeUpstream, model_dir: Path) -> Any:
    return await start_proxy(aiohttp_client, redis_url, upstream, model_dir)


async def test_paraphrase_hits_and_unrelated_misses(proxy: Any, upstream: FakeUpstream) -> None:
    await ask(proxy, chat(PARAPHRASES[0]))
    resp, data = await ask(proxy, chat(PARAPHRASES[1]))
    assert resp.headers["X-Semcache"] == "hit-semantic"
    assert data["choices"][0]["message"]["content"] == f"answer to: {PARAPHRASES[0]}"
    similarity = float(resp.headers["X-Semcache-Similarity"])
    assert 0.92 <= similarity < 1.0
    assert float(resp.headers["X-Semcache-Threshold"]) == pytest.approx(0.92)
    assert resp.headers["X-Semcache-Entry"] and int(resp.headers["Age"]) >= 0
    resp, _ = await ask(proxy, chat("How do I bake sourdough bread?"))
    assert resp.headers["X-Semcache"] == "miss"
    assert len(upstream.calls) == 2


async def test_threshold_header_and_streaming_hit(proxy: Any, upstream: FakeUpstream) -> None:
    await ask(proxy, chat(PARAPHRASES[0]))
    resp, _ = await ask(proxy, chat(PARAPHRASES[1]),
                        **{"X-Semcache-Threshold": "0.99", "Cache-Control": "no-store"})
    assert resp.headers["X-Semcache"] == "miss"  # 0.96 < 0.99
    stream = await proxy.post(CHAT, json=chat("how can i learn python fast", stream=True))
    raw = await stream.read()
    assert stream.headers["X-Semcache"] == "hit-semantic"
    assert stream_text(raw)[0] == f"answer to: {PARAPHRASES[0]}"


async def test_other_scopes_never_hit_even_at_threshold_zero(proxy: Any, upstream: FakeUpstream) -> None:
    await ask(proxy, chat(PARAPHRASES[0]), Authorization="Bearer tenant-a")
    anything = {"X-Semcache-Threshold": "0"}
    variants = [
        (chat(PARAPHRASES[1]), {"Authorization": "Bearer tenant-b"}),
        ({**chat(PARAPHRASES[1]), "model": "other"}, {"Authorization": "Bearer tenant-a"}),
        (chat(PARAPHRASES[1], temperature=0.7), {"Authorization": "Bearer tenant-a"}),
        (chat(PARAPHRASES[1]), {"Authorization": "Bearer tenant-a", "X-Semcache-Namespace": "n2"}),
        ({"model": "fake-model", "messages": [{"role": "system", "content": "Answer in French."},
                                              {"role": "user", "content": PARAPHRASES[1]}]},
         {"Authorization": "Bearer tenant-a"}),
    ]
    for body, headers in variants:
        resp, _ = await ask(proxy, body, **headers, **anything)
        assert resp.headers["X-Semcache"] == "miss", (body, headers)
    # In its own scope a threshold of 0 lowers the bar but keeps the checks: another
    # language is another question...
    resp, _ = await ask(proxy, chat("Which programming book should I read first?"),
                        Authorization="Bearer tenant-a", **anything, **{"Cache-Control": "no-store"})
    assert resp.headers["X-Semcache"] == "miss"
    assert resp.headers["X-Semcache-Reason"] == "check"
    assert resp.headers["X-Semcache-Checks"] == "languages"
    assert resp.headers["X-Semcache-Threshold"] == "0.0000"
    # ...unless the client asks for similarity alone: then the nearest entry is served
    resp, _ = await ask(proxy, chat("Which programming book should I read first?"),
                        Authorization="Bearer tenant-a", **anything,
                        **{"X-Semcache-Judge": "similarity"})
    assert resp.headers["X-Semcache"] == "hit-semantic"


async def test_follow_up_questions_stay_in_their_conversation(proxy: Any, upstream: FakeUpstream) -> None:
    def convo(topic: str, follow_up: str) -> dict[str, Any]:
        return {"model": "fake-model", "messages": [
            {"role": "user", "content": f"Tell me about {topic}"},
            {"role": "assistant", "content": f"{topic} is a broad subject."},
            {"role": "user", "content": follow_up}]}

    await ask(proxy, convo("inflation", "What are its types?"))
    resp, _ = await ask(proxy, convo("diabetes", "What are its types?"))
    assert resp.headers["X-Semcache"] == "miss"
    resp, data = await ask(proxy, convo("inflation", "What are its different types?"))  # 0.945
    assert resp.headers["X-Semcache"] == "hit-semantic"
    assert data["choices"][0]["message"]["content"] == "answer to: What are its types?"


async def test_image_only_question_uses_exact_tier(proxy: Any, upstream: FakeUpstream) -> None:
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    body = {"model": "fake-model", "messages": [{"role": "user", "content": image}]}
    await ask(proxy, body)
    resp, _ = await ask(proxy, body)
    assert resp.headers["X-Semcache"] == "hit-exact"
    assert len(proxy.app[SEMANTIC].index) == 0  # no vector was written for it


async def test_text_with_another_image_is_another_question(proxy: Any, upstream: FakeUpstream) -> None:
    """Same text, other picture: the encoder reads only the text, so a message with any
    non-text part is matched exactly or not at all."""
    def with_image(data: str, text: str = "What is in this picture?") -> dict[str, Any]:
        parts = [{"type": "text", "text": text},
                 {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}]
        return {"model": "fake-model", "messages": [{"role": "user", "content": parts}]}

    await ask(proxy, with_image("CAT0"))
    resp, _ = await ask(proxy, with_image("DOG0"))
    assert resp.headers["X-Semcache"] == "miss"
    resp, _ = await ask(proxy, with_image("DOG0", "What's in this picture?"))
    assert resp.headers["X-Semcache"] == "miss"  # no match by meaning either
    resp, _ = await ask(proxy, with_image("CAT0"))
    assert resp.headers["X-Semcache"] == "hit-exact"
    assert len(proxy.app[SEMANTIC].index) == 0
    # A message of text parts only is still matched by meaning.
    text_parts = {"model": "fake-model", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is the capital city of France?"}]}]}
    await ask(proxy, chat("What is the capital of France?"))
    resp, _ = await ask(proxy, text_parts)
    assert resp.headers["X-Semcache"] == "hit-semantic"


async def test_prompts_past_semantic_max_chars_use_the_exact_tier(
        aiohttp_client: Any, redis_url: str, upstream: FakeUpstream, model_dir: Path) -> None:
    proxy = await start_proxy(aiohttp_client, redis_url, upstream, model_dir,
                              cache__semantic_max_chars=60)
    long = "Please summarise this paragraph about the history of the Roman Empire for me."
    await ask(proxy, chat(long))
    resp, _ = await ask(proxy, chat(long.replace("summarise", "summarize")))
    assert resp.headers["X-Semcache"] == "miss"
    assert resp.headers["X-Semcache-Checks"] == "too-long"  # why it was not matched
    resp, _ = await ask(proxy, chat(long))
    assert resp.headers["X-Semcache"] == "hit-exact"
    assert len(proxy.app[SEMANTIC].index) == 0  # neither was embedded
    await ask(proxy, chat("What is the capital of France?"))  # short ones still are
    resp, _ = await ask(proxy, chat("What's the capital city of France?"))
    assert resp.headers["X-Semcache"] == "hit-semantic"


async def test_ttl_expiry_and_deletion_remove_hits(proxy: Any, upstream: FakeUpstream) -> None:
    await ask(proxy, chat(PARAPHRASES[0]), **{"X-Semcache-TTL": "1"})
    resp, _ = await ask(proxy, chat(PARAPHRASES[1]))
    assert resp.headers["X-Semcache"] == "hit-semantic"
    entry_id = resp.headers["X-Semcache-Entry"]
    await asyncio.sleep(2.1)
    resp, _ = await ask(proxy, chat(PARAPHRASES[1]))
    assert resp.headers["X-Semcache"] == "miss"
    assert entry_id not in proxy.app[SEMANTIC].index  # the expired entry's vector was dropped
    # deletion (the admin API's path) removes the hit at once
    await ask(proxy, chat("What is the capital of France?"))
    resp, _ = await ask(proxy, chat("What's the capital city of France?"))
    assert resp.headers["X-Semcache"] == "hit-semantic"
    victim = resp.headers["X-Semcache-Entry"]
    assert await proxy.app[STORE].delete(victim)
    for _ in range(50):
        if victim not in proxy.app[SEMANTIC].index:
            break
        await asyncio.sleep(0.02)
    assert victim not in proxy.app[SEMANTIC].index
    resp, _ = await ask(proxy, chat("What's the capital city of France?",),
                        **{"Cache-Control": "no-store"})
    assert resp.headers["X-Semcache"] == "miss"


async def test_max_entries_evicts_least_recently_used(aiohttp_client: Any, redis_url: str,
                                                      upstream: FakeUpstream, model_dir: Path) -> None:
    proxy = await start_proxy(aiohttp_client, redis_url, upstream, model_dir, cache__max_entries=2)
    await ask(proxy, chat("first question about volcanoes"))
    await ask(proxy, chat("second question about glaciers"))
    await ask(proxy, chat("first question about volcanoes"))  # a hit makes it recently used
    await ask(proxy, chat("third question about deserts"))
    resp, _ = await ask(proxy, chat("second question about glaciers"), **{"Cache-Control": "no-store"})
    assert resp.headers["X-Semcache"] == "miss"  # evicted
    resp, _ = await ask(proxy, chat("first question about volcanoes"))
    assert resp.headers["X-Semcache"] == "hit-exact"


async def test_restarted_proxy_serves_earlier_entries(aiohttp_client: Any, redis_url: str,
                                                      upstream: FakeUpstream, model_dir: Path) -> None:
    first = await start_proxy(aiohttp_client, redis_url, upstream, model_dir)
    await ask(first, chat(PARAPHRASES[0]))
    await first.close()
    second = await start_proxy(aiohttp_client, redis_url, upstream, model_dir)
    assert len(second.app[SEMANTIC].index) == 1  # rebuilt from Redis
    resp, _ = await ask(second, chat(PARAPHRASES[1]))
    assert resp.headers["X-Semcache"] == "hit-semantic"
    assert len(upstream.calls) == 1


async def test_two_replicas_share_one_cache(aiohttp_client: Any, redis_url: str, upstream: FakeUpstream,
                                            model_dir: Path) -> None:
    """A second proxy *process* on the same Redis sees writes and deletes within 100 ms."""
    port = free_port()
    env = {**os.environ, "SEMCACHE__JUDGE__THRESHOLD": "0.92", "HF_HUB_OFFLINE": "1",
           "SEMCACHE__CACHE__ANONYMOUS": "shared"}  # as make_settings: requests carry no key
    replica = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
        [sys.executable, "-m", "semcache.proxy", "serve", "--port", str(port), "--redis", redis_url,
         "--upstream", upstream.base_url, "--data-dir", str(model_dir), "--device", "cpu"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            await wait_ready(url, replica)
            local = await start_proxy(aiohttp_client, redis_url, upstream, model_dir)
            await ask(local, chat(PARAPHRASES[0]))  # written through this replica
            written = time.monotonic()
            while True:
                async with session.post(url + CHAT, json=chat(PARAPHRASES[1]),
                                        headers={"Cache-Control": "no-store"}) as resp:
                    outcome = resp.headers["X-Semcache"]
                    entry_id = resp.headers.get("X-Semcache-Entry")
                if outcome == "hit-semantic" or time.monotonic() - written > 0.1:
                    break
            assert outcome == "hit-semantic", "not visible on the other replica within 100 ms"
            assert entry_id is not None
            await local.app[STORE].delete(entry_id)  # deleted through this replica
            deleted = time.monotonic()
            while True:
                async with session.post(url + CHAT, json=chat(PARAPHRASES[1]),
                                        headers={"Cache-Control": "no-store"}) as resp:
                    outcome = resp.headers["X-Semcache"]
                if outcome == "miss" or time.monotonic() - deleted > 0.1:
                    break
            assert outcome == "miss", "deletion not honoured by the other replica within 100 ms"
    finally:
        replica.terminate()
        replica.wait(15)


async def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    try:
        await wait_for_200(url + "/readyz", proc.poll, timeout_s=60)
    except ChildExitedError:
        raise AssertionError("replica exited") from None
    except TimeoutError:
        raise AssertionError("replica never became ready") from None


async def test_feedback_removes_a_wrong_hit_from_every_replica(
    aiohttp_client: Any, redis_url: str, upstream: FakeUpstream, model_dir: Path
) -> None:
    one = await start_proxy(aiohttp_client, redis_url, upstream, model_dir)
    two = await start_proxy(aiohttp_client, redis_url, upstream, model_dir)
    await ask(one, chat(PARAPHRASES[0]))
    resp, _ = await ask(two, chat(PARAPHRASES[1]), **{"Cache-Control": "no-store"})
    assert resp.headers["X-Semcache"] == "hit-semantic"
    entry_id = resp.headers["X-Semcache-Entry"]
    report = await two.post("/admin/api/feedback", json={"entry_id": entry_id, "reason": "wrong"})
    assert report.status == 200 and (await report.json())["removed"] is True
    for _ in range(50):
        if entry_id not in one.app[SEMANTIC].index and entry_id not in two.app[SEMANTIC].index:
            break
        await asyncio.sleep(0.02)
    assert entry_id not in one.app[SEMANTIC].index and entry_id not in two.app[SEMANTIC].index
    for replica in (one, two):
        resp, _ = await ask(replica, chat(PARAPHRASES[1]), **{"Cache-Control": "no-store"})
        assert resp.headers["X-Semcache"] == "miss"
        resp, _ = await ask(replica, chat(PARAPHRASES[0]), **{"Cache-Control": "no-store"})
        assert resp.headers["X-Semcache"] == "miss"  # both tiers


async def test_default_decision_with_the_real_verifier(aiohttp_client: Any, redis_url: str,
                                                       upstream: FakeUpstream, model_dir: Path) -> None:
    """The shipped defaults: checks and the bundled verifier decide paraphrases and near misses."""
    proxy = await start_proxy(aiohttp_client, redis_url, upstream, model_dir, judge__model=True)
    for _ in range(300):
        if proxy.app[SERVICE].pair_model is not None:
            break
        await asyncio.sleep(0.05)
    assert proxy.app[SERVICE].pair_model is not None, "the verifier did not load"
    stored = ["How do I learn Python quickly?", "Cheapest flights from Boston to Denver in May",
              "What foods should I eat when pregnant?", "How do I reset my password?"]
    for question in stored:
        await ask(proxy, chat(question))
    expected = {
        "How can I learn Python fast?": "hit-semantic",
        "how do i reset my pasword": "hit-semantic",  # a typo still hits
        "Cheapest flights from Denver to Boston in May": "miss",  # direction swapped
        "What foods should I not eat when pregnant?": "miss",  # negation
    }
    for question, outcome in expected.items():
        resp, _ = await ask(proxy, chat(question), **{"Cache-Control": "no-store"})
        assert resp.headers["X-Semcache"] == outcome, question
    assert proxy.app[SERVICE].pair_model.calls >= 1
