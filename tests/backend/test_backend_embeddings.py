"""/v1/embeddings on the backend: the real MiniLM encoder, through the official openai client
against the backend app on a real port."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from semcache.backend.server import build_app, build_engine

from .conftest import TINY_SETTINGS

DATA_DIR = Path(__file__).resolve().parents[2] / ".data"
SETTINGS = dataclasses.replace(TINY_SETTINGS, embedding_model="packaged", data_dir=str(DATA_DIR))


@pytest.fixture
async def server(aiohttp_server, tiny):
    engine = build_engine(tiny[0], tiny[1], SETTINGS, "tiny")
    return await aiohttp_server(build_app(SETTINGS, engine))


@pytest.fixture
async def client(server):
    import openai

    client = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="unused",
                                max_retries=0)
    yield client
    await client.close()


def _cos(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


async def test_openai_client_embeds_with_the_real_encoder(client) -> None:
    texts = ["How do I reset my password?", "How can I change my password?",
             "The weather in Paris is sunny today."]
    # The SDK asks for base64 unless told otherwise and decodes it with numpy.
    encoded = await client.embeddings.create(model="any", input=texts)
    plain = await client.embeddings.create(model="any", input=texts, encoding_format="float")
    assert [d.index for d in plain.data] == [0, 1, 2]
    vectors = [d.embedding for d in plain.data]
    assert all(len(v) == 384 for v in vectors)
    assert np.array_equal(np.array([d.embedding for d in encoded.data], dtype=np.float32),
                          np.array(vectors, dtype=np.float32))
    assert abs(np.linalg.norm(vectors[0]) - 1.0) < 1e-4
    # A real sentence encoder: paraphrases are close, an unrelated sentence is not.
    assert _cos(vectors[0], vectors[1]) > 0.7 > 0.3 > _cos(vectors[0], vectors[2])
    assert plain.model == "all-MiniLM-L6-v2"
    # WordPiece: [CLS] how do i reset my password ? [SEP] is 9 tokens, and so on.
    assert plain.usage.prompt_tokens == plain.usage.total_tokens == 9 + 9 + 10
    single = await client.embeddings.create(model="any", input=texts[0], encoding_format="float")
    assert np.allclose(single.data[0].embedding, vectors[0], atol=1e-6)


async def test_wire_format_and_base64_are_openais(server) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        url = str(server.make_url("/v1/embeddings"))
        async with session.post(url, json={"model": "m", "input": "hello world"}) as resp:
            assert resp.status == 200
            plain = await resp.json()
        async with session.post(url, json={"input": ["hello world"],
                                           "encoding_format": "base64"}) as resp:
            encoded = await resp.json()
    assert set(plain) == {"object", "data", "model", "usage"}
    assert plain["object"] == "list" and plain["usage"] == {"prompt_tokens": 4,
                                                            "total_tokens": 4}
    assert set(plain["data"][0]) == {"object", "index", "embedding"}
    assert plain["data"][0]["object"] == "embedding" and plain["data"][0]["index"] == 0
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert len(raw) == 384 * 4
    assert np.array_equal(np.frombuffer(raw, dtype="<f4"),
                          np.array(plain["data"][0]["embedding"], dtype=np.float32))


async def test_dimensions_only_the_models_own(client) -> None:
    import openai

    same = await client.embeddings.create(model="m", input="hi", dimensions=384)
    assert len(same.data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as refused:
        await client.embeddings.create(model="m", input="hi", dimensions=256)
    error = refused.value.body
    assert error["param"] == "dimensions" and error["code"] == "unsupported_parameter"


@pytest.mark.parametrize(("body", "param"), [
    ({"input": []}, "input"),
    ({"input": ""}, "input"),
    ({"input": [1, 2, 3]}, "input"),
    ({"input": [[1, 2], [3]]}, "input"),
    ({"input": ["ok", 3]}, "input"),
    ({"input": ["x"] * 2049}, "input"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "truncate": "END"}, "truncate"),
])
async def test_bad_embedding_requests_are_400s(server, body, param) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(
            str(server.make_url("/v1/embeddings")), json=body) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


async def test_a_large_batch_does_not_block_the_loop(server) -> None:
    """2,048 inputs: encoding, counting and rendering them all happen off the event loop,
    so a ticker on the loop keeps ticking while they run. (The client reads raw bytes: the
    openai SDK would parse 2,048 vectors on this same loop.)"""
    import json

    import aiohttp

    texts = [f"sentence number {i} about topic {i % 37}" for i in range(2048)]
    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.ensure_future(tick())
    start = time.perf_counter()
    async with aiohttp.ClientSession() as session, session.post(
            str(server.make_url("/v1/embeddings")), json={"input": texts}) as resp:
        raw = await resp.read()
    took = time.perf_counter() - start
    ticker.cancel()
    assert [d["index"] for d in json.loads(raw)["data"]] == list(range(2048))
    assert took > 0.5  # long enough that a blocking stage would show in the gaps
    assert max(gaps) < 0.15, (max(gaps), took)


async def test_embeddings_off_is_a_404_and_healthz_says_so(aiohttp_client, tiny) -> None:
    engine = build_engine(tiny[0], tiny[1], TINY_SETTINGS, "tiny")
    client = await aiohttp_client(build_app(TINY_SETTINGS, engine))
    resp = await client.post("/v1/embeddings", json={"input": "hi"})
    assert resp.status == 404
    assert (await (await client.get("/healthz")).json())["embeddings"] == "off"


async def test_a_missing_encoder_is_a_503_not_a_crash(aiohttp_client, tiny, tmp_path) -> None:
    settings = dataclasses.replace(SETTINGS, embedding_model=str(tmp_path / "nothing"))
    engine = build_engine(tiny[0], tiny[1], settings, "tiny")
    client = await aiohttp_client(build_app(settings, engine))
    resp = await client.post("/v1/embeddings", json={"input": "hi"})
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "embeddings_unavailable"
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok" and health["embeddings"] == "unavailable"
    chat = await client.post("/v1/chat/completions",
                             json={"messages": [{"role": "user", "content": "hi"}],
                                   "max_tokens": 2})
    assert chat.status == 200
