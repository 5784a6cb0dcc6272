"""The official openai client against the backend on a real port; and the packaged model."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from semcache.backend.server import build_app, build_engine

from .conftest import TINY_SETTINGS

DATA_DIR = Path(__file__).resolve().parents[2] / ".data"


async def test_openai_client_streaming_and_not(aiohttp_server, tiny) -> None:
    import openai

    engine = build_engine(tiny[0], tiny[1], TINY_SETTINGS, "tiny")
    server = await aiohttp_server(build_app(TINY_SETTINGS, engine))
    client = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="unused",
                                max_retries=0)
    messages = [{"role": "user", "content": "Hello there"}]
    whole = await client.chat.completions.create(model="tiny", messages=messages,
                                                 temperature=0, max_tokens=12)
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage is not None and whole.usage.completion_tokens <= 12
    stream = await client.chat.completions.create(
        model="tiny", messages=messages, temperature=0, max_tokens=12, stream=True,
        stream_options={"include_usage": True})
    parts, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
        usage = chunk.usage or usage
    assert "".join(parts) == whole.choices[0].message.content
    assert usage is not None and usage.total_tokens == whole.usage.total_tokens
    text = await client.completions.create(model="tiny", prompt="abc", max_tokens=5,
                                           temperature=0)
    assert text.choices[0].text is not None and text.usage.prompt_tokens == 3
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="tiny", messages=messages, temperature=5)
    models = await client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    await client.close()


@pytest.fixture
def packaged_engine():
    """The default model, converted from the GGUF into the repo's .data on first use."""
    from semcache.backend.model import load_model

    settings = dataclasses.replace(TINY_SETTINGS, model="packaged", data_dir=str(DATA_DIR),
                                   model_name="")
    loaded = load_model("packaged", DATA_DIR, "cpu")
    engine = build_engine(loaded.model, loaded.tokenizer, settings, loaded.name)
    return settings, engine


@pytest.mark.slow
async def test_packaged_smollm2_answers(aiohttp_client, packaged_engine) -> None:
    settings, engine = packaged_engine
    client = await aiohttp_client(build_app(settings, engine))
    question = {"role": "user", "content": "What is the capital of France?"}
    body = {"messages": [question], "temperature": 0, "max_tokens": 20}
    resp = await client.post("/v1/chat/completions", json=body)
    answer = await resp.json()
    assert answer["model"] == "SmolLM2-135M-Instruct"
    assert "Paris" in answer["choices"][0]["message"]["content"]
    assert answer["choices"][0]["finish_reason"] == "stop"
    # Greedy answers agree between a lone request and one among others.
    others = [{**body, "messages": [{"role": "user", "content": f"Count to {i}."}]}
              for i in range(3, 8)]
    results = await asyncio.gather(*(client.post("/v1/chat/completions", json=b)
                                     for b in [body, *others]))
    batched = await results[0].json()
    assert batched["choices"][0]["message"] == answer["choices"][0]["message"]


@pytest.mark.slow
async def test_packaged_smollm2_same_answers_with_speculation_and_prefix_cache(
        packaged_engine) -> None:
    """The real model on extraction prompts: greedy answers equal with prompt lookup and the
    prefix cache on (the defaults) and both off, and drafts were kept."""
    from semcache.backend.engine import SamplingParams
    from semcache.loadtest.backend_prompts import EXTRACTION

    settings, engine = packaged_engine
    plain = build_engine(engine.runner.model, engine.tokenizer,
                         dataclasses.replace(settings, speculative="off", prefix_cache_tokens=0))
    tokenizer = engine.tokenizer
    prompts = [tokenizer.encode(tokenizer.apply_chat_template(
        [{"role": "system", "content": "You are a careful editor. Keep the author's words "
          "where you can, change only what the task asks for, and return the whole text."},
         {"role": "user", "content": text}], add_generation_prompt=True, tokenize=False),
        add_special_tokens=False) for text in EXTRACTION[2:5]]
    answers = []
    for eng in (engine, plain):
        eng.start()
        params = SamplingParams(max_tokens=48, temperature=0.0)
        answers.append(await asyncio.gather(*(
            _collect(eng.open_stream(p, params)) for p in prompts)))
        eng.stop()
    assert answers[0] == answers[1]
    stats = engine.stats()
    assert stats["draft_tokens_accepted"] > 0 and stats["prefix_cached_tokens"] > 0


async def _collect(stream) -> list[int]:
    return [t async for event in stream for t in event.tokens]


@pytest.mark.slow
async def test_packaged_smollm2_answers_json_objects(aiohttp_client, packaged_engine) -> None:
    import json

    settings, engine = packaged_engine
    client = await aiohttp_client(build_app(settings, engine))
    # Questions the 135M model answers in a short object; on others it may ramble inside
    # the object until max_tokens (still a prefix of one: the fast test checks that).
    for question in ('What is the capital of France? Answer as JSON with the key "capital".',
                     'Return a JSON object with keys "city" and "country" for Paris.'):
        body = {"messages": [{"role": "user", "content": question}], "temperature": 0,
                "max_tokens": 200, "response_format": {"type": "json_object"}}
        answer = await (await client.post("/v1/chat/completions", json=body)).json()
        choice = answer["choices"][0]
        assert choice["finish_reason"] == "stop", choice
        assert isinstance(json.loads(choice["message"]["content"]), dict)
