"""The verifier: loading the bundled int8 model on the CPU, and its place in the proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semcache.proxy.judge.model import SHIPPED, PairModel, PairModelError, PairModelService


def test_bundled_verifier_loads_on_cpu_and_scores_in_order() -> None:
    verifier = PairModel.open(device="cpu")
    pairs = [("How do I learn Python quickly?", "How can I learn Python fast?"),
             ("What foods should I eat when pregnant?", "What foods should I not eat when pregnant?"),
             ("What is the capital of Australia?", "What is the capital of Austria?")]
    scores = verifier.score(pairs)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    assert scores[0] > 0.5 > max(scores[1], scores[2])
    # Batching must not change a pair's score (per-row arithmetic, sorted chunks).
    alone = np.array([verifier.score([p])[0] for p in pairs])
    assert np.allclose(scores, alone, atol=2e-3)
    assert (SHIPPED / "model_int8.onnx").stat().st_size < 30 * 1024 * 1024


def test_the_same_question_in_other_case_and_punctuation_is_served_without_the_model() -> None:
    from semcache.proxy.judge.text import same_question

    verifier = PairModel.open(device="cpu")
    q = "What does it feel like to be an introvert?"
    assert same_question(q, "WhAt does it  feel like to be an introvert")
    assert not same_question("Is C++ hard to learn?", "Is C hard to learn?")
    assert not same_question("What changed in Python 3.8?", "What changed in Python 38?")
    scores = verifier.score([(q, "what does it feel like to be an introvert"),
                             (q, "WhAt does it feel like to be an introvert?"),
                             ("Is C++ hard to learn?", "Is C hard to learn?")])
    assert scores[0] == scores[1] == 1.0 and scores[2] < 0.5
    # Apostrophes are spelling, not meaning.
    assert same_question("Why isn't my code working? I'm stuck", "why isnt my code working im stuck")


def test_the_same_who_question_in_the_other_voice_is_served_without_the_model() -> None:
    from semcache.proxy.judge.text import same_question

    active = "Who composed the Moonlight Sonata?"
    for passive in ("By whom was the Moonlight Sonata composed?",
                    "Who was the Moonlight Sonata composed by?",
                    "the moonlight sonata was composed by whom"):
        assert same_question(active, passive) and same_question(passive, active)
    assert same_question("Who drew this map?", "By whom was this map drawn?")  # irregular
    assert not same_question(active, "Who composed the Ninth Symphony?")
    assert not same_question(active, "By whom was the Moonlight Sonata performed?")
    assert not same_question("Who hired Anna?", "Who was hired by Anna?")  # roles swapped
    assert not same_question("Who is the mayor?", "Who was the mayor?")


def test_misspellings_are_repaired_against_the_other_side_only_into_known_words() -> None:
    from tokenizers import Tokenizer

    from semcache.proxy.judge.text import known_words, repair_typos, same_question

    known = known_words(Tokenizer.from_file(str(SHIPPED / "tokenizer.json")))
    cached = "What are the health benefits of turmeric and ginger?"
    for typed in ("What are the health benefist of turmeric and ginger?",  # swapped letters
                  "what are the helth benefits of turmeric and ginger",    # dropped letter
                  "What are the health beneffits of turmeric and gingger?"):  # doubled
        a, b = repair_typos(cached, typed, known)
        assert same_question(a, b), (a, b)
    # Real words, two unknown words, another first letter: left for the checks and the model.
    for a, b in (("What is the capital of Iran?", "What is the capital of Iraq?"),
                 ("How do I sort a list?", "How do I sort a lit?"),
                 ("How many gigabytes in a terabyte?", "How many megabytes in a terabyte?"),
                 ("How do I bake bread?", "How do I make bread?")):
        assert repair_typos(a, b, known) == (a, b)


def test_focus_keeps_the_part_that_differs_with_context() -> None:
    from semcache.proxy.judge.text import focus

    head = " ".join(f"w{i}" for i in range(40))
    a, b = focus(f"{head} Why does it crash?", f"{head} How do I make it faster?", context=3)
    assert (a, b) == ("... w37 w38 w39 Why does it crash?", "... w37 w38 w39 How do I make it faster?")
    a, b = focus(f"Translate this: {head}", f"Summarise this: {head}", context=2)
    assert (a, b) == ("Translate this: w0 ...", "Summarise this: w0 ...")
    assert focus("a b c", "a b c d") == ("a b c", "a b c d")  # nothing to cut
    assert focus("same words", "same words") == ("same words", "same words")


def test_long_prompts_are_judged_on_what_differs_or_not_served() -> None:
    """Two prompts that share a long head (beyond the 96 tokens the model reads) and differ
    in their final question: the model reads the differing tail, not the identical head, and
    turns the pair down. A pair that differs all through and is too long to read whole
    scores 0 (a miss), never a guess from its first tokens."""
    verifier = PairModel.open(device="cpu")
    code = "\n".join(f"def step_{i}(data):\n    return sorted(x * {i} for x in data)" for i in range(30))
    crash, faster = (f"Here is my module:\n{code}\nWhy does it crash with a KeyError?",
                     f"Here is my module:\n{code}\nHow can I make it run faster?")
    assert not verifier.fits(crash, faster)
    typo = crash.replace("Why does it crash", "Why dose it crash")
    reworded = " ".join(reversed(crash.split()))
    scores = verifier.score([(crash, faster), (crash, typo), (crash, reworded)])
    assert scores[0] < 0.5 and scores[1] > 0.8, scores  # the tail decides, a typo is a typo
    assert scores[2] == 0.0 and verifier.too_long == 1


def test_a_long_prompt_reworded_throughout_is_read_within_the_long_length() -> None:
    """A prompt of ~100 words reworded from start to end has no shared part to cut to and
    does not fit the 128 tokens the model was trained on: it is read whole within
    `long_len` (256) and scored like any pair, a paraphrase above the same text with its
    terms changed; before, it scored 0 unread."""
    verifier = PairModel.open(device="cpu")
    a = ("I run a small bakery with two shops and we take orders over the phone, which means my "
         "staff spend a lot of the morning writing tickets by hand and sometimes lose them. I would "
         "like a simple way for customers to order cakes online a few days ahead, pick a collection "
         "time and pay a deposit. We have no developer, a tiny budget and an old laptop in each "
         "shop. Which kind of tool should I look at, and what should I watch out for when I set it up?")
    b = ("My bakery has two locations and orders come in by phone, so every morning the team is "
         "stuck handwriting tickets, and now and then one goes missing. I'd like customers to be "
         "able to place cake orders on the web several days in advance, choose when to collect, and "
         "put down a deposit. There's no programmer on staff, money is tight and each shop only has "
         "an aging laptop. What sort of tool would suit us, and what pitfalls should I be aware of "
         "while configuring it?")
    changed = b.replace("put down a deposit", "pay in full").replace("several days in advance",
                                                                      "the same day")
    assert verifier.long_len == 256 and not verifier.fits(a, b) and verifier.fits(a, b, 256)
    scores = verifier.score([(a, b), (a, changed)])
    assert verifier.too_long == 0
    assert scores[0] > 0.75 and scores[0] > scores[1] + 0.1, scores
    short = PairModel(verifier.session, verifier.tokenizer, max_len=128, long_len=128)
    assert short.score([(a, b)])[0] == 0.0 and short.too_long == 1  # the old reading


def test_missing_model_is_a_verifier_error(tmp_path: Path) -> None:
    with pytest.raises(PairModelError):
        PairModel.open(tmp_path, device="cpu")


async def test_service_scores_off_the_loop() -> None:
    service = await PairModelService.open(device="cpu")
    try:
        scores = await service.score([("How do I reset my router?",
                                        "Hi, quick question: how do I reset my router?")])
        assert scores[0] > 0.5 and service.calls == 1
    finally:
        await service.close()


def test_float_graph_for_gpus_scores_like_the_int8_file() -> None:
    """The CUDA path dequantises the shipped int8 file; checked here on the CPU provider."""
    import onnx
    import onnxruntime as ort

    from semcache.proxy.judge.model import _gpu_model

    int8 = PairModel.open(device="cpu")
    graph = _gpu_model(SHIPPED)
    ops = {n.op_type for n in onnx.load_from_string(graph).graph.node}
    assert "MatMul" in ops and not ops & {"MatMulIntegerToFloat", "QuantizeLinear"}
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    floats = PairModel(session, int8.tokenizer)
    pairs = [("How do I learn Python quickly?", "How can I learn Python fast?"),
             ("What is the capital of Australia?", "What is the capital of Austria?"),
             ("Flights from Boston to Denver", "Flights from Denver to Boston"),
             ("How do I reset my router?", "Hi, quick question: how do I reset my router?")]
    a, b = int8.score(pairs), floats.score(pairs)
    assert np.abs(a - b).max() < 0.1
    clear = np.abs(a - 0.5) > 0.1  # a pair this close to the middle may fall either way
    assert ((a > 0.5) == (b > 0.5))[clear].all() and clear.sum() >= 3


async def test_concurrent_lookups_are_scored_in_shared_runs() -> None:
    import asyncio

    service = await PairModelService.open(device="cpu")
    try:
        pairs = [(f"How do I cook rice in {n} minutes?", f"How can I cook rice in {n} minutes?")
                 for n in range(24)]
        alone = service.model.score(pairs)
        scores = await asyncio.gather(*(service.score([p]) for p in pairs))
        assert np.allclose(np.concatenate(scores), alone, atol=2e-3)
        assert service.calls == 24 and service.stats.batches < 24
    finally:
        await service.close()


class _Fixed:
    """A stand-in verifier service that gives every pair the same score."""

    def __init__(self, score: float) -> None:
        self.value, self.calls = score, 0

    async def score(self, pairs: list[tuple[str, str]]) -> Any:
        self.calls += 1
        return np.full(len(pairs), self.value, dtype=np.float32)

    async def close(self) -> None:
        pass


@pytest.mark.slow
async def test_proxy_asks_the_verifier_in_its_band(aiohttp_client: Any, redis_url: str,
                                                   upstream: Any, model_dir: Path) -> None:
    from conftest import make_settings, start_judged_proxy

    from semcache.proxy.app import SERVICE

    settings = make_settings(redis_url, upstream.base_url, model_dir, cache__semantic=True,
                             judge__model=True, judge__threshold=0.99, judge__model_floor=0.8,
                             judge__verify_below=0.999)
    # The app loads the bundled verifier; swap in stand-ins after it.
    client = await start_judged_proxy(aiohttp_client, settings)
    client.app[SERVICE].pair_model = None
    question = {"role": "user", "content": "How do I learn Python quickly?"}
    body = {"model": "fake-model", "messages": [question]}
    await client.post("/v1/chat/completions", json=body)
    await client.app[SERVICE].drain(10)
    para = {**body, "messages": [{"role": "user", "content": "How can I learn Python fast?"}]}
    # No verifier loaded yet: the configured threshold (0.99) decides alone.
    no_store = {"Cache-Control": "no-store"}
    resp = await client.post("/v1/chat/completions", json=para, headers=no_store)
    assert resp.headers["X-Semcache"] == "miss"
    client.app[SERVICE].pair_model = _Fixed(0.1)  # type: ignore[assignment]
    resp = await client.post("/v1/chat/completions", json=para, headers=no_store)
    assert resp.headers["X-Semcache"] == "miss"
    client.app[SERVICE].pair_model = fixed = _Fixed(0.9)  # type: ignore[assignment]
    resp = await client.post("/v1/chat/completions", json=para, headers=no_store)
    assert resp.headers["X-Semcache"] == "hit-semantic" and fixed.calls == 1


@pytest.mark.slow
async def test_default_decision_through_the_proxy(aiohttp_client: Any, redis_url: str,
                                                  upstream: Any, model_dir: Path) -> None:
    """The shipped configuration, end to end with the real encoder and bundled verifier:
    typo'd and shortened paraphrases hit (they score as low as 0.3 on cosine), near misses
    of each kind stay misses."""
    from conftest import make_settings, start_judged_proxy

    from semcache.proxy.app import SERVICE
    from semcache.proxy.config import load_settings

    shipped = load_settings(environ={}).judge
    settings = make_settings(redis_url, upstream.base_url, model_dir, cache__semantic=True,
                             judge__model=True, judge__model_floor=shipped.model_floor,
                             judge__model_min=shipped.model_min)
    client = await start_judged_proxy(aiohttp_client, settings)

    async def ask(text: str) -> Any:
        body = {"model": "fake-model", "messages": [{"role": "user", "content": text}]}
        resp = await client.post("/v1/chat/completions", json=body)
        await client.app[SERVICE].drain(10)
        return resp

    stored = ["How do I bake chocolate chip cookies?", "Which flights go from Boston to Denver?",
              "How do I convert Celsius to Fahrenheit?", "What changed in Python 3.8?",
              "What foods should I eat during pregnancy?", "How many people live in the United Kingdom?"]
    for text in stored:
        assert (await ask(text)).headers["X-Semcache"] == "miss"
    for para, source in (("how do i bake choclate chip cookeis", stored[0]),
                         ("how many ppl live in the UK?", stored[5]),
                         ("Hey, how do I bake chocolate chip cookies? Thanks!", stored[0])):
        resp = await ask(para)
        assert resp.headers["X-Semcache"] == "hit-semantic", para
        assert float(resp.headers["X-Semcache-Verifier"]) >= shipped.model_min  # why it hit
        answer = (await resp.json())["choices"][0]["message"]["content"]
        assert answer.startswith(f"answer to: {source}")
    for near in ("Which flights go from Denver to Boston?", "How do I convert Fahrenheit to Celsius?",
                 "What changed in Python 3.12?", "What foods should I not eat during pregnancy?",
                 "How many people live in the United States?"):
        resp = await ask(near)
        assert resp.headers["X-Semcache"] == "miss", near
        why = resp.headers.get("X-Semcache-Checks") or resp.headers["X-Semcache-Verifier"]
        assert why and (why[0].isalpha() or float(why) < shipped.model_min), (near, why)
    # Long prompts that differ only past the encoder's 256 tokens embed identically (cosine
    # 1.0); the verifier still reads where they differ.
    code = "\n".join(f"def step_{i}(data):\n    return sorted(x * {i} for x in data)" for i in range(40))
    assert (await ask(f"Here is my module:\n{code}\nWhy does it crash?")).headers["X-Semcache"] == "miss"
    resp = await ask(f"Here is my module:\n{code}\nHow can I make it run faster?")
    assert resp.headers["X-Semcache"] == "miss"
    assert float(resp.headers["X-Semcache-Similarity"]) > 0.999  # the encoder cannot tell them apart
    assert float(resp.headers["X-Semcache-Verifier"]) < shipped.model_min


@pytest.mark.slow
async def test_long_prompts_without_a_verifier_fail_closed(aiohttp_client: Any, redis_url: str,
                                                           upstream: Any, model_dir: Path) -> None:
    """With no verifier to read them (off here; also while it loads, or for a request that
    names its own threshold), two prompts that differ only past the encoder's 256 tokens
    embed identically: the proxy must not serve one for the other. Short prompts still hit."""
    import asyncio

    from conftest import make_settings

    from semcache.proxy.app import SEMANTIC, SERVICE, build_app

    settings = make_settings(redis_url, upstream.base_url, model_dir, cache__semantic=True,
                             judge__model=False, judge__threshold=0.9)
    client = await aiohttp_client(build_app(settings))
    await asyncio.wait_for(client.app[SEMANTIC].ready.wait(), 60)

    async def ask(text: str) -> Any:
        body = {"model": "fake-model", "messages": [{"role": "user", "content": text}]}
        resp = await client.post("/v1/chat/completions", json=body)
        await client.app[SERVICE].drain(10)
        return resp

    code = "\n".join(f"def step_{i}(data):\n    return sorted(x * {i} for x in data)" for i in range(40))
    assert (await ask(f"Here is my module:\n{code}\nWhy does it crash?")).headers["X-Semcache"] == "miss"
    resp = await ask(f"Here is my module:\n{code}\nHow can I make it run faster?")
    assert resp.headers["X-Semcache"] == "miss"
    assert float(resp.headers["X-Semcache-Similarity"]) > 0.999
    assert resp.headers["X-Semcache-Checks"] == "too-long"
    assert (await ask("How do I learn Python quickly?")).headers["X-Semcache"] == "miss"
    assert (await ask("How do I learn Python quickly??")).headers["X-Semcache"] == "hit-semantic"
