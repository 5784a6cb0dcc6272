"""Listing entries page by page, hit counts across a rewrite, flush by API key, prices,
and who may read /metrics."""

from __future__ import annotations

import time
from typing import Any

import pytest
from admin.admin_helpers import CHAT, api, ask, chat, metrics_text, sample
from admin.conftest import TOKEN
from conftest import make_settings

from semcache.index.store import Entry
from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.admin.api import SCAN_BATCH, PageCursor
from semcache.proxy.app import SERVICE, STORE, build_app
from semcache.proxy.prices import Pricing, lookup


async def put_entries(proxy: Any, n: int, *, same_time: bool = False) -> set[str]:
    store, now, ids = proxy.app[STORE], time.time(), set()
    for i in range(n):
        entry_id = f"e{i:04d}"
        await store.put(Entry(id=entry_id, scope="s", tenant="t", namespace="", endpoint="chat",
                              model="m", query=f"question {i}", response=b'{"choices": []}',
                              created=now if same_time else now + i / 1000, ttl_s=3600))
        ids.add(entry_id)
    return ids


async def all_pages(proxy: Any, limit: int, query: str = "") -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(1000):
        path = f"entries?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        page = await api(proxy, "GET", path)
        assert len(page["entries"]) <= limit
        seen += [e["id"] for e in page["entries"]]
        cursor = page["cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the cursor never ran out")


@pytest.mark.parametrize("limit", [1, 7, 50, 500])
async def test_pages_return_every_entry_exactly_once(proxy: Any, limit: int) -> None:
    ids = await put_entries(proxy, 130)
    seen = await all_pages(proxy, limit)
    assert sorted(seen) == sorted(ids)  # every one, none twice


async def test_pages_across_ties_and_a_filter(proxy: Any) -> None:
    """Entries written at one instant (equal LRU scores, more than one Redis batch of them)
    are ordered by id; a filter pages over the matching ones only."""
    ids = await put_entries(proxy, SCAN_BATCH + 30, same_time=True)
    assert sorted(await all_pages(proxy, 40)) == sorted(ids)
    matching = {f"e{i:04d}" for i in range(SCAN_BATCH + 30) if "7" in str(i)}
    assert sorted(await all_pages(proxy, 9, "&q=7")) == sorted(matching)


async def test_deletions_between_pages_drop_no_other_entry(proxy: Any) -> None:
    ids = await put_entries(proxy, 60)
    first = await api(proxy, "GET", "entries?limit=20")
    seen = [e["id"] for e in first["entries"]]
    # delete the last entry shown and two not shown yet: the cursor still resumes in place
    gone = {seen[-1], "e0030", "e0045"}
    for entry_id in gone:
        await api(proxy, "DELETE", f"entries/{entry_id}")
    cursor = first["cursor"]
    while cursor:
        page = await api(proxy, "GET", f"entries?limit=20&cursor={cursor}")
        seen += [e["id"] for e in page["entries"]]
        cursor = page["cursor"]
    assert set(seen) >= ids - gone and len(seen) == len(set(seen))


async def test_a_bad_cursor_is_400(proxy: Any) -> None:
    await api(proxy, "GET", "entries?cursor=nonsense", expect=400)
    await api(proxy, "GET", "entries?cursor=12.5:bad*id", expect=400)
    assert PageCursor.decode(PageCursor(1.5, "abc").encode()) == PageCursor(1.5, "abc")


async def test_hit_counts_survive_a_no_cache_rewrite(proxy: Any) -> None:
    await ask(proxy, "count my hits")
    for _ in range(3):
        assert (await ask(proxy, "count my hits")).headers["X-Semcache"] == "hit-exact"
    await proxy.app[SERVICE].hits.flush()
    entry_id = (await api(proxy, "GET", "entries?q=count"))["entries"][0]["id"]
    assert (await api(proxy, "GET", f"entries/{entry_id}"))["hits"] == 3
    rewrite = await ask(proxy, "count my hits", **{"Cache-Control": "no-cache"})
    assert rewrite.headers["X-Semcache"] == "miss"
    entry = await api(proxy, "GET", f"entries/{entry_id}")
    assert entry["hits"] == 3 and entry["last_hit"] is not None
    assert entry["age_s"] < 5  # the answer is the new one; the count is the entry's own
    stats = await api(proxy, "GET", "stats")
    assert [(e["id"], e["hits"]) for e in stats["top_entries"]] == [(entry_id, 3)]


async def test_flush_by_api_key(proxy: Any) -> None:
    await ask(proxy, "mine", Authorization="Bearer sk-alice")
    await ask(proxy, "also mine", Authorization="Bearer sk-alice")
    await ask(proxy, "theirs", Authorization="Bearer sk-bob")
    await api(proxy, "POST", "flush", {"api_key": ""}, expect=400)
    await api(proxy, "POST", "flush", {"api_key": "sk-alice", "tenant": "x"}, expect=400)
    gone = await api(proxy, "POST", "flush", {"api_key": "sk-alice"})
    assert gone["deleted"] == 2 and gone["tenant"]
    assert [e["query"] for e in (await api(proxy, "GET", "entries"))["entries"]] == ["theirs"]
    assert (await ask(proxy, "theirs", Authorization="Bearer sk-bob")).headers["X-Semcache"] == "hit-exact"
    assert (await ask(proxy, "mine", Authorization="Bearer sk-alice")).headers["X-Semcache"] == "miss"


def test_built_in_prices_by_model_family() -> None:
    builtin = Pricing({}, {}, builtin=True)
    assert builtin.per_1k("gpt-4o-mini") == (0.00015, 0.0006)
    assert builtin.per_1k("gpt-4o-mini-2024-07-18") == (0.00015, 0.0006)  # not gpt-4o's
    assert builtin.per_1k("gpt-4o-2024-08-06") == (0.0025, 0.01)
    assert builtin.per_1k("openai/gpt-4o") == (0.0025, 0.01)
    assert builtin.per_1k("claude-3-5-sonnet-20241022") == (0.003, 0.015)
    assert builtin.per_1k("gpt-4oops") == (0.0, 0.0)  # a prefix only counts up to a "-"
    assert builtin.per_1k("my-own-model") == (0.0, 0.0) and builtin.configured
    assert not Pricing({}, {}).configured and Pricing({}, {}).per_1k("gpt-4o") == (0.0, 0.0)
    assert lookup({"gpt-4": 1.0}, "gpt-4-0613") == 1.0 and lookup({"gpt-4": 1.0}, "gpt-45") is None


def test_configured_prices_win_and_star_comes_last() -> None:
    pricing = Pricing({"gpt-4o": 1.0, "*": 0.5}, {"*": 0.25}, builtin=True)
    assert pricing.per_1k("gpt-4o-2024-08-06") == (1.0, 0.01)  # own prompt price, listed completion
    assert pricing.per_1k("gpt-4o-mini") == (0.00015, 0.0006)  # listed beats "*"
    assert pricing.per_1k("unlisted") == (0.5, 0.25)
    assert pricing.cost("unlisted", 2000, 4000) == pytest.approx(2.0)


async def test_money_saved_from_the_first_hit_without_a_price_table(proxy: Any) -> None:
    body = {**chat("what does a hit save?"), "model": "gpt-4o-mini"}
    for _ in range(2):
        resp = await proxy.post(CHAT, json=body)
        await resp.read()
        await proxy.app[SERVICE].drain(5)
    assert resp.headers["X-Semcache"] == "hit-exact"
    assert sample(await metrics_text(proxy), "semcache_cost_saved_usd_total") > 0
    assert (await api(proxy, "GET", "stats"))["prices_configured"] is True


async def test_metrics_need_a_token_once_one_is_set(aiohttp_client: Any, redis_url: str,
                                                    upstream: FakeUpstream, tmp_path: Any) -> None:
    settings = make_settings(redis_url, upstream.base_url, tmp_path, server__admin_token=TOKEN,
                             server__metrics_token="scrape-me")
    proxy = await aiohttp_client(build_app(settings))
    assert (await proxy.get("/metrics")).status == 401
    assert (await proxy.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
    for token in ("scrape-me", TOKEN):
        resp = await proxy.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200 and "semcache_requests" in await resp.text()
    # the metrics token opens /metrics only, not the admin API
    await api(proxy, "GET", "stats", token="scrape-me", expect=401)


async def test_the_admin_token_alone_closes_metrics(token_proxy: Any) -> None:
    assert (await token_proxy.get("/metrics")).status == 401
    resp = await token_proxy.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200


async def test_metrics_are_open_without_tokens_and_carry_process_figures(proxy: Any) -> None:
    text = await metrics_text(proxy)
    assert sample(text, "process_resident_memory_bytes") > 0
    assert sample(text, "process_cpu_seconds_total") > 0
    assert "python_info{" in text and "python_gc_collections_total" in text
