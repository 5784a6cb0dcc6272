"""The HTTP surface of the backend on a tiny random Llama: OpenAI shapes, SSE, limits."""

from __future__ import annotations

import asyncio
import json

import pytest

from .conftest import until

CHAT = {"messages": [{"role": "user", "content": "Tell me a story."}], "temperature": 0,
        "max_tokens": 24, "ignore_eos": True}


async def sse(response) -> list[dict | str]:
    """Parse an SSE body strictly: only `data:` events separated by blank lines."""
    body = (await response.read()).decode()
    assert body.endswith("\n\n")
    events: list[dict | str] = []
    for block in body.strip("\n").split("\n\n"):
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def test_chat_completion_shape(make_client) -> None:
    client, _ = await make_client()
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200
    body = await resp.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "tiny"
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 24
    assert body["usage"]["total_tokens"] == 24 + body["usage"]["prompt_tokens"]


async def test_streaming_chunks_are_well_formed(make_client) -> None:
    client, _ = await make_client()
    whole = await (await client.post("/v1/chat/completions", json=CHAT)).json()
    resp = await client.post("/v1/chat/completions", json={
        **CHAT, "stream": True, "stream_options": {"include_usage": True}})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events = await sse(resp)
    assert events[-1] == "[DONE]" and "[DONE]" not in events[:-1]
    chunks = [e for e in events[:-1] if isinstance(e, dict)]
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == whole["choices"][0]["message"]["content"]
    reasons = [c["choices"][0]["finish_reason"] for c in chunks[:-1]]
    assert reasons[-1] == "length" and set(reasons[:-1]) == {None}


async def test_completions_stream_and_max_tokens(make_client) -> None:
    client, _ = await make_client()
    body = {"prompt": "Once upon a time", "max_tokens": 7, "temperature": 0, "ignore_eos": True}
    whole = await (await client.post("/v1/completions", json=body)).json()
    assert whole["object"] == "text_completion"
    assert whole["usage"]["completion_tokens"] == 7
    assert whole["choices"][0]["finish_reason"] == "length"
    events = await sse(await client.post("/v1/completions", json={**body, "stream": True}))
    text = "".join(e["choices"][0]["text"] for e in events[:-1])
    assert text == whole["choices"][0]["text"]
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert "usage" not in events[-2]  # no usage chunk unless asked for


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_sequence_truncates(make_client, stream: bool) -> None:
    client, _ = await make_client()
    full = (await (await client.post("/v1/chat/completions", json=CHAT)).json())
    text = full["choices"][0]["message"]["content"]
    stop = text[8:11]
    cut = text[: text.index(stop)]
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stop": [stop, "\x00never"],
                                                             "stream": stream})
    if stream:
        events = await sse(resp)
        got = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])
        reason = events[-2]["choices"][0]["finish_reason"]
    else:
        body = await resp.json()
        got, reason = body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"]
        assert body["usage"]["completion_tokens"] < 24
    assert got == cut and reason == "stop"


async def test_n_choices_and_seed(make_client) -> None:
    client, _ = await make_client()
    body = {**CHAT, "temperature": 1.0, "seed": 7, "n": 3, "max_tokens": 10}
    first = await (await client.post("/v1/chat/completions", json=body)).json()
    second = await (await client.post("/v1/chat/completions", json=body)).json()
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert first["choices"] == second["choices"]
    assert first["usage"]["completion_tokens"] == 30
    events = await sse(await client.post("/v1/chat/completions", json={**body, "stream": True}))
    streamed = {i: "" for i in range(3)}
    for e in events[:-1]:
        streamed[e["choices"][0]["index"]] += e["choices"][0]["delta"].get("content") or ""
    assert [streamed[i] for i in range(3)] == [c["message"]["content"] for c in first["choices"]]


@pytest.mark.parametrize("body, param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"content": "x"}]}, "messages[0]"),
    ({**CHAT, "temperature": 3}, "temperature"),
    ({**CHAT, "max_tokens": 0}, "max_tokens"),
    ({**CHAT, "n": 100}, "n"),
    ({**CHAT, "stop": 5}, "stop"),
    ({**CHAT, "top_p": "high"}, "top_p"),
    ({"messages": [{"role": "user", "content": "x" * 600}]}, "messages"),
])
async def test_bad_input_is_an_openai_400(make_client, body: dict, param: str) -> None:
    client, _ = await make_client()
    resp = await client.post("/v1/chat/completions", json=body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"]


async def test_malformed_json_and_unknown_routes(make_client) -> None:
    client, _ = await make_client()
    resp = await client.post("/v1/completions", data=b"{not json")
    assert resp.status == 400 and "error" in await resp.json()
    resp = await client.get("/v1/nothing")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "404"
    resp = await client.get("/v1/models")
    assert (await resp.json())["data"][0]["id"] == "tiny"
    assert (await client.get("/healthz")).status == 200


async def test_full_queue_is_429(make_client) -> None:
    client, engine = await make_client(max_batch=1, max_queue=2)
    engine.pause()
    waiting = [asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT))
               for _ in range(2)]
    await until(lambda: engine.stats()["waiting"] == 2)
    for stream in (False, True):
        resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert resp.status == 429
        assert (await resp.json())["error"]["code"] == "queue_full"
    engine.resume()
    assert [r.status for r in await asyncio.gather(*waiting)] == [200, 200]


@pytest.mark.parametrize("stream", [True, False])
async def test_disconnect_cancels_the_sequence(make_client, stream: bool) -> None:
    client, engine = await make_client(max_seq_len=512)
    body = {**CHAT, "max_tokens": 480, "stream": stream}
    if stream:
        resp = await client.post("/v1/chat/completions", json=body)
        await resp.content.readline()
        resp.close()  # drop the connection mid-stream
    else:
        task = asyncio.ensure_future(client.post("/v1/chat/completions", json=body))
        await until(lambda: engine.stats()["running"] == 1)
        task.cancel()
    before = engine.stats()["tokens_generated"]
    await until(lambda: engine.stats()["running"] == 0)
    assert engine.stats()["tokens_generated"] - before < 480


async def test_dead_engine_answers_503(make_client) -> None:
    client, engine = await make_client()
    engine.runner.prefill = None  # the worker's next prefill raises TypeError
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 503
    assert (await resp.json())["error"]["type"] == "server_error"
    assert (await client.get("/healthz")).status == 503
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status == 503


def test_command_line_flags_override_settings() -> None:
    from semcache.backend.server import parse_args

    settings = parse_args(["--port", "9000", "--max-batch", "4", "--device", "cpu",
                           "--data-dir", "/tmp/x", "--no-cuda-graphs"])
    assert (settings.port, settings.max_batch, settings.device) == (9000, 4, "cpu")
    assert settings.data_dir == "/tmp/x" and settings.cuda_graphs is False
    assert parse_args([]).cuda_graphs is True
    with pytest.raises(SystemExit):
        parse_args(["--max-batch", "0"])


def test_speculation_and_prefix_flags() -> None:
    from semcache.backend.server import parse_args

    settings = parse_args(["--speculative", "off", "--prefix-cache-tokens", "0",
                           "--speculative-tokens", "3", "--default-max-tokens", "64"])
    assert (settings.speculative, settings.prefix_cache_tokens) == ("off", 0)
    assert (settings.speculative_tokens, settings.default_max_tokens) == (3, 64)
    with pytest.raises(SystemExit):  # a draft model is required for speculative = model
        parse_args(["--speculative", "model"])
    assert parse_args(["--speculative", "model", "--draft-model", "/m"]).draft_model == "/m"


def test_default_max_tokens_depends_on_the_device() -> None:
    from semcache.backend.settings import (
        CPU_DEFAULT_MAX_TOKENS,
        CUDA_DEFAULT_MAX_TOKENS,
        BackendSettings,
    )

    auto = BackendSettings()
    assert auto.max_tokens_for("cpu") == CPU_DEFAULT_MAX_TOKENS < CUDA_DEFAULT_MAX_TOKENS
    assert auto.max_tokens_for("cuda") == CUDA_DEFAULT_MAX_TOKENS
    assert BackendSettings(default_max_tokens=50).max_tokens_for("cuda") == 50


async def test_request_without_max_tokens_gets_the_device_default(make_client) -> None:
    from semcache.backend.settings import CPU_DEFAULT_MAX_TOKENS

    client, _ = await make_client(default_max_tokens=0)
    body = {k: v for k, v in CHAT.items() if k != "max_tokens"}
    answer = await (await client.post("/v1/chat/completions", json=body)).json()
    assert answer["usage"]["completion_tokens"] == CPU_DEFAULT_MAX_TOKENS
    # A request's own max_tokens always wins, above the default too.
    longer = await (await client.post("/v1/chat/completions",
                                      json={**body, "max_tokens": 150})).json()
    assert longer["usage"]["completion_tokens"] == 150


async def test_healthz_reports_prefill_saved_and_drafts(make_client) -> None:
    client, _ = await make_client(speculative_ngram_min=1)
    system = {"role": "system", "content": "You answer in haiku. " * 8}
    for question in ("What is rain?", "What is snow?"):
        body = {**CHAT, "messages": [system, {"role": "user", "content": question}],
                "max_tokens": 60}
        assert (await client.post("/v1/chat/completions", json=body)).status == 200
    stats = await (await client.get("/healthz")).json()
    assert stats["prefix_hits"] == 1 and stats["prefix_cached_tokens"] >= 160
    assert stats["speculation"] == "ngram" and stats["draft_tokens"] > 0
    assert 0 <= stats["draft_acceptance"] <= 1


async def test_streamed_and_whole_answers_agree_with_multi_token_steps(make_client) -> None:
    """Steps that yield several tokens reach SSE as fewer, longer deltas; the text and
    the usage are those of the whole answer."""
    client, engine = await make_client(speculative_ngram_min=1)
    body = {**CHAT, "max_tokens": 80}
    whole = await (await client.post("/v1/chat/completions", json=body)).json()
    resp = await client.post("/v1/chat/completions", json={**body, "stream": True,
                                                           "stream_options": {"include_usage": True}})
    events = [e for e in await sse(resp) if isinstance(e, dict)]
    deltas = [e["choices"][0]["delta"].get("content") for e in events if e["choices"]]
    assert "".join(d or "" for d in deltas) == whole["choices"][0]["message"]["content"]
    assert events[-1]["usage"] == whole["usage"]
    assert engine.stats()["draft_tokens_accepted"] > 0
    assert len([d for d in deltas if d]) < 80  # some deltas carried several tokens


def test_text_stream_extend_equals_pushing_one_by_one(tiny) -> None:
    """Several tokens at once give the same text, and with a stop string the same cut and
    the same token count, as the tokens one at a time."""
    from semcache.backend.text import TextStream

    tokenizer = tiny[1]
    ids = tokenizer.encode("Hello there, general. Over the hills and far away!")
    for stop in ([], ["far"], ["ll"]):
        one = TextStream(tokenizer, stop)
        shown_one = "".join(one.push(t) for t in ids) + one.finish()
        many = TextStream(tokenizer, stop)
        shown_many = "".join(many.extend(ids[i : i + 5]) for i in range(0, len(ids), 5))
        shown_many += many.finish()
        assert (shown_many, many.text, many.tokens) == (shown_one, one.text, one.tokens)
        if stop:
            assert many.stopped and stop[0] not in many.text and many.tokens < len(ids)


def test_serve_hands_every_backend_setting_to_the_child() -> None:
    """`semcache serve` starts the backend with the [backend] section as flags, and the
    backend's own parser reads them back into the same settings."""
    import dataclasses

    from semcache.backend.server import parse_args
    from semcache.backend.settings import BackendSettings
    from semcache.proxy.bundled import BundledBackend
    from semcache.proxy.config import load_settings

    base = load_settings(environ={})
    backend = dataclasses.replace(BackendSettings(), max_queue=17, default_max_tokens=99,
                                  speculative="off", prefix_cache_tokens=0, cuda_graphs=False,
                                  draft_model="/models/tiny", threads=3)
    command = BundledBackend(dataclasses.replace(base, backend=backend)).command()
    flags = command[command.index("semcache.backend") + 1:]
    parsed = parse_args(flags)
    for name in ("max_queue", "default_max_tokens", "speculative", "prefix_cache_tokens",
                 "cuda_graphs", "draft_model", "threads", "model", "device"):
        assert getattr(parsed, name) == getattr(backend, name), name


async def test_healthz_breaks_down_the_time_to_first_token(make_client) -> None:
    """Each streamed request's way to its first token is stamped phase by phase; /healthz
    reports the means, and sums from which a client takes the mean over its own requests."""
    from semcache.backend.timing import PHASES

    client, _ = await make_client()
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200  # not streamed
    for question in ("What is rain?", "What is snow?"):
        body = {**CHAT, "stream": True, "messages": [{"role": "user", "content": question}]}
        await sse(await client.post("/v1/chat/completions", json=body))
    breakdown = (await (await client.get("/healthz")).json())["ttft_breakdown"]
    assert breakdown["requests"] == breakdown["window"] == 2
    mean = breakdown["mean_ms"]
    assert set(mean) == {name for name, _, _ in PHASES} | {"total"}
    assert all(ms >= 0 for ms in mean.values())
    # Consecutive marks: the phases add up to the whole.
    assert sum(ms for name, ms in mean.items() if name != "total") == pytest.approx(
        mean["total"], abs=0.02)
    assert breakdown["sum_ms"]["total"] == pytest.approx(2 * mean["total"], abs=0.01)


def test_backend_command_serves_with_start_up_objects_frozen(tiny, tmp_path) -> None:
    """`python -m semcache.backend` on a model folder serves, and the objects of start-up
    (torch, transformers, the model) are frozen out of the garbage collector's walks."""
    import re
    import subprocess
    import sys
    import urllib.request

    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    proc = subprocess.Popen(
        [sys.executable, "-m", "semcache.backend", "--model", str(tmp_path / "tiny"),
         "--device", "cpu", "--port", "0", "--embedding-model", "off", "--max-batch", "2",
         "--max-seq-len", "256"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            found = re.search(r"serving .* on (http://\S+)", line)
            if found:
                break
        else:
            raise AssertionError("the backend exited without serving")
        with urllib.request.urlopen(found.group(1) + "/healthz", timeout=30) as resp:
            health = json.loads(resp.read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert health["status"] == "ok" and health["embeddings"] == "off"
    assert health["gc"]["frozen_objects"] > 50_000
