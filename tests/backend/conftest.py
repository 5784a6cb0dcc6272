"""Fixtures of the backend tests: a tiny random Llama and a tiny byte-level tokenizer."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

# The backend is torch: an extra (semcache[backend]) that `make test` leaves out and
# `make test-all` (CI) installs.
torch = pytest.importorskip(
    "torch", reason="the bundled backend needs torch: semcache[backend] (make test-all installs it)")

from semcache.backend.engine import Engine  # noqa: E402 (after the skip above)
from semcache.backend.server import build_app, build_engine  # noqa: E402
from semcache.backend.settings import BackendSettings  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait for a condition the engine's worker thread makes true; fail after timeout_s."""
    for _ in range(int(timeout_s / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached in time")


def make_tokenizer() -> Any:
    """Byte-level BPE over printable ASCII and newline, no merges: one token per character,
    so any generated id decodes to clean text (random weights pick ids at random)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_map = {b: c for b, c in zip(range(256), _byte_chars(), strict=True)}
    chars = [byte_map[b] for b in [10, *range(32, 127)]]
    assert set(chars) <= set(alphabet)
    vocab = {tok: i for i, tok in enumerate(SPECIALS + chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def _byte_chars() -> list[str]:
    # GPT-2's byte-to-unicode table, which the ByteLevel pre-tokenizer uses.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs, strict=True))
    return [chr(table[b]) for b in range(256)]


def make_model(vocab_size: int, seed: int = 0) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, eos_token_id=2, bos_token_id=1,
                         pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    # Larger weights than the default init make the random model's greedy choices varied
    # and far from ties, so batched-vs-alone comparisons test the cache, not rounding.
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5)
        model.model.embed_tokens.weight.normal_(0, 1.0)
    return model.eval()


@pytest.fixture(scope="session")
def tiny() -> tuple[Any, Any]:
    tokenizer = make_tokenizer()
    return make_model(len(tokenizer)), tokenizer


TINY_SETTINGS = BackendSettings(device="cpu", max_batch=8, max_queue=16, max_seq_len=512,
                                default_max_tokens=32, cuda_graphs=False, model_name="tiny",
                                embedding_model="off")


@pytest.fixture
def make_engine(tiny) -> Callable[..., Engine]:
    engines: list[Engine] = []

    def make(**overrides: Any) -> Engine:
        settings = dataclasses.replace(TINY_SETTINGS, **overrides)
        engine = build_engine(tiny[0], tiny[1], settings, "tiny")
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop()


@pytest.fixture
async def make_client(aiohttp_client, tiny) -> AsyncIterator[Callable]:
    async def make(**overrides: Any):
        settings = dataclasses.replace(TINY_SETTINGS, **overrides)
        engine = build_engine(tiny[0], tiny[1], settings, "tiny")
        client = await aiohttp_client(build_app(settings, engine))
        return client, engine

    yield make
