"""The verifier: a cross-encoder that reads both prompts and says whether one answer serves both.

Trained by `semcache model train-verifier` (proxy/verifier_train.py) and kept in the repo as
embeddings/verifier/model_int8.onnx (31 MB, fused graph, int8 with per-token activation
scales, sigmoid inside the graph) with its tokenizer. Only candidates whose similarity falls
in the band [threshold, verify_below) are scored, so most hits never pay for it. On a GPU it
runs on CUDA: from a model_fp32.onnx next to the int8 one if there is one (the training
command writes it), else from the int8 file with its weights dequantised at load
(embeddings/rowquant.float_graph).

Concurrent lookups are scored together: `VerifierService` puts the verifier behind the same
micro-batcher as the encoder (embeddings/service.py: one model thread, a bounded queue, an
LRU of recent pairs), so a burst of semantic candidates is one model run and the event loop
never runs the model.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from semcache.embeddings.encoder import Batch
from semcache.embeddings.service import EmbeddingService
from semcache.embeddings.settings import EmbeddingSettings

from .checks import common_ends, edits

BUNDLED = Path(__file__).resolve().parent.parent / "embeddings" / "verifier"
MAX_LEN = 96
"""Tokens of the pair together (the training length); longer pairs are truncated."""
CHUNK = 32
"""Pairs per model run on a CPU."""
BATCHING = EmbeddingSettings(max_batch=64, max_wait_ms=1.0, max_queue=1024, lru_size=4096)
"""How concurrent lookups' pairs are gathered into one run."""


_PUNCTUATION = re.compile(r"[\s?.!,;:\"`]+")
_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc]")
PARTICIPLES = {"wrote": "written", "made": "made", "built": "built", "drew": "drawn",
               "sang": "sung", "gave": "given", "took": "taken", "began": "begun",
               "found": "found", "won": "won", "led": "led", "sold": "sold", "bought": "bought",
               "taught": "taught", "ran": "run", "told": "told", "sent": "sent", "paid": "paid",
               "held": "held", "wore": "worn", "chose": "chosen", "broke": "broken",
               "stole": "stolen", "ate": "eaten", "shot": "shot", "spoke": "spoken",
               "threw": "thrown", "sank": "sunk", "struck": "struck", "forgot": "forgotten",
               "hid": "hidden", "froze": "frozen"}
"""Past forms whose participle differs from them ("wrote" / "written"); a regular verb's
are one form ("invented")."""
_BE = r"(?:was|were|is|are)"
_NOT_ACTIVE = {"was", "were", "is", "are", "has", "have", "had", "did", "does", "do", "will",
               "would", "can", "could", "should", "may", "might", "must", "else"}
_VOICE_FORMS = (  # (pattern, index of the verb, index of the object, passive?)
    (re.compile(r"who (\w+) (.+)"), 1, 2, False),               # who wrote hamlet
    (re.compile(rf"by whom {_BE} (.+) (\w+)"), 2, 1, True),      # by whom was hamlet written
    (re.compile(rf"who {_BE} (.+) (\w+) by"), 2, 1, True),       # who was hamlet written by
    (re.compile(rf"(.+) {_BE} (\w+) by whom"), 2, 1, True),      # hamlet was written by whom
)


def _canon(text: str) -> str:
    """Case, spacing, sentence punctuation and apostrophes ("isn't" / "isnt") ignored."""
    return _PUNCTUATION.sub(" ", _APOSTROPHES.sub("", text.casefold())).strip()


def _voice_key(text: str) -> tuple[str, str] | None:
    """(participle, object) of a who-question in the active or the passive voice ("Who wrote
    Hamlet?", "By whom was Hamlet written?", "Who was Hamlet written by?", "Hamlet was
    written by whom?" are all ("written", "hamlet")); None for any other text."""
    canon = _canon(text)
    for pattern, verb_at, obj_at, passive in _VOICE_FORMS:
        m = pattern.fullmatch(canon)
        if m is None:
            continue
        verb, obj = m.group(verb_at), m.group(obj_at)
        if passive:
            if verb.endswith(("ed", "en", "n", "t")) or verb in PARTICIPLES.values():
                return verb, obj
        elif verb not in _NOT_ACTIVE:
            part = PARTICIPLES.get(verb) or (verb if verb.endswith("ed") else None)
            if part:
                return part, obj
    return None


def same_question(cached: str, new: str) -> bool:
    """The same words in the same order, ignoring case, spacing and sentence punctuation
    ("What is X?" / "what is x"), or the same who-question in the other voice ("Who wrote
    Hamlet?" / "By whom was Hamlet written?"): one answer serves both, and the model is not
    asked. (An earlier verifier scored case-only pairs 0.45-0.7, as its training pairs always
    differ; the current one scores active/passive pairs 0.17-0.71, passives being rare in
    its Quora questions.) Symbols that change the question ("C++", "3.8", "-") are kept."""
    if _canon(cached) == _canon(new):
        return True
    key = _voice_key(cached)
    return key is not None and key == _voice_key(new)


_WORDS = re.compile(r"[A-Za-z]+")


_CONTRACTIONS = {"whats", "thats", "dont", "doesnt", "didnt", "cant", "wont", "isnt", "arent",
                 "im", "ive", "youre", "theyre", "hows", "wheres", "whos", "lets", "shouldnt"}


def known_words(tokenizer: Any) -> frozenset[str]:
    """The whole words of the tokenizer's vocabulary (~22k English words and names), and
    contractions typed without their apostrophe."""
    return frozenset(w for w in tokenizer.get_vocab() if w.isalpha() and w.islower()) | _CONTRACTIONS


def _close(typed: str, word: str) -> bool:
    """One slip apart (a letter dropped, added, changed, or two swapped), or two for words of
    8 letters or more."""
    limit = 2 if min(len(typed), len(word)) >= 8 else 1
    return abs(len(typed) - len(word)) <= limit and edits(typed, word) <= limit


def repair_typos(cached: str, new: str, known: frozenset[str]) -> tuple[str, str]:
    """Each side's misspelt words replaced by the word of the other side they are a slip
    away from ("vitmain" -> "vitamin", "asutraalia" -> "australia"). Only a word that is no
    known word becomes a known one: a real word ("lit", "Iraq" for "Iran") is a different
    question as far as this goes, and two unknown ones ("gigabytes" / "megabytes", names)
    stay apart, and so do words that differ in their first letter ("bake" / "cake": not every
    word is in the vocabulary); the checks and the model decide those."""
    def fix(text: str, other: str) -> str:
        theirs = {w.lower() for w in _WORDS.findall(other) if len(w) >= 4} & known
        if not theirs:
            return text

        def sub(m: re.Match[str]) -> str:
            typed = m.group(0).lower()
            if len(typed) < 3 or typed in known or typed in theirs:
                return m.group(0)
            for word in theirs:  # people rarely mistype a word's first letter
                if word[0] == typed[0] and _close(typed, word):
                    return word
            return m.group(0)
        return _WORDS.sub(sub, text)
    return fix(cached, new), fix(new, cached)


FOCUS_CONTEXT = (12, 6, 3, 0)
"""Words kept either side of the part of a long pair that differs: as many as still fit."""


def focus(cached: str, new: str, context: int = FOCUS_CONTEXT[0]) -> tuple[str, str]:
    """The part of two prompts that differs, with `context` words either side: the words
    both share at their start and at their end are cut ("..." marks a cut). Used for a pair
    too long for the model to read whole, so that a difference in the tail of two long
    prompts ("<the same 300-token code> Why does it crash?" / "... How do I make it
    faster?") is what the model reads, not their identical head."""
    a, b = cached.split(), new.split()
    head, tail = common_ends(a, b)
    start, cut = max(0, head - context), max(0, tail - context)

    def window(words: list[str]) -> str:
        inner = " ".join(words[start:len(words) - cut])
        return ("... " if start else "") + inner + (" ..." if cut else "")
    return window(a), window(b)


def _to_ask(pairs: list[tuple[str, str]], verifier: Verifier
            ) -> tuple[np.ndarray, list[int], list[str]]:
    """Scores with 1.0 for the same question and 0.0 for a pair the model cannot read whole
    even after `focus` (a miss: what it cannot see it cannot vouch for), and the positions
    and keys of the pairs the model must score, misspellings repaired against the other
    side first."""
    out = np.ones(len(pairs), dtype=np.float32)
    ask, keys = [], []
    for i, (cached, new) in enumerate(pairs):
        a, b = repair_typos(cached, new, verifier.known)
        if same_question(a, b):
            continue
        if not verifier.fits(a, b):
            for context in FOCUS_CONTEXT:
                fa, fb = focus(a, b, context)
                if verifier.fits(fa, fb):
                    a, b = fa, fb
                    break
            else:
                out[i] = 0.0
                verifier.too_long += 1
                continue
        ask.append(i)
        keys.append(pair_key(a, b))
    return out, ask, keys


def pair_key(cached: str, new: str) -> str:
    """One string for a (cached prompt, new prompt) pair, for the batcher's queue and LRU.
    Length-prefixed, so no character of either prompt can make two pairs collide."""
    return f"{len(cached)}:{cached}{new}"


def split_key(key: str) -> tuple[str, str]:
    length, _, rest = key.partition(":")
    n = int(length)
    return rest[:n], rest[n:]


class VerifierError(Exception):
    """The verifier could not be loaded or failed to run."""


class Verifier:
    """Synchronous scorer: probability that one answer serves both prompts, per pair.

    Also an embeddings Encoder (pre / core / post on pair keys, one value per row), so the
    encoder's micro-batcher can drive it."""

    dim = 1
    max_seq_len = MAX_LEN

    def __init__(self, session: Any, tokenizer: Any, *, max_len: int = MAX_LEN) -> None:
        self.session = session
        self.tokenizer = tokenizer
        tokenizer.enable_truncation(max_len)  # `fits` reads its overflow
        self.known = known_words(tokenizer)
        self.too_long = 0
        """Pairs turned down unread: longer than max_len even where they differ."""
        self.max_len = max_len
        self.inputs = {i.name for i in session.get_inputs()}
        self.provider = session.get_providers()[0]
        self.chunk = 256 if self.provider == "CUDAExecutionProvider" else CHUNK

    @classmethod
    def open(cls, folder: Path | None = None, *, device: str = "cpu", threads: int = 0) -> Verifier:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from semcache.embeddings.encoder import cuda_usable

        folder = BUNDLED if folder is None else Path(folder)
        cuda = device in ("cuda", "auto") and cuda_usable()
        if device == "cuda" and not cuda:
            raise VerifierError("device=cuda but onnxruntime sees no usable CUDA provider")
        try:
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            tokenizer.no_padding()  # the file pads to 128; runs pad to the longest pair
            opts = ort.SessionOptions()
            # Idle intra-op threads must not spin: they would take the cores from the
            # encoder and the event loop between verifier runs (~2 ms per hit measured).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if threads or cuda:
                opts.intra_op_num_threads = threads or 1  # on CUDA the GPU does the work
            if not cuda:
                model: Any = str(folder / "model_int8.onnx")
                providers: list[Any] = ["CPUExecutionProvider"]
            else:
                model = _gpu_model(folder)
                providers = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
            session = ort.InferenceSession(model, opts, providers=providers)
        except Exception as e:  # onnxruntime and tokenizers raise plain exceptions
            raise VerifierError(f"could not load the verifier from {folder}: {e}") from e
        return cls(session, tokenizer)

    def fits(self, cached: str, new: str) -> bool:
        """Whether the model reads the pair whole (no token cut off). A token covers at
        least one character, so a pair that short needs no tokenising."""
        if len(cached) + len(new) <= self.max_len - 3:  # [CLS] and two [SEP]
            return True
        return not self.tokenizer.encode(cached, new).overflowing

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """Scores in [0, 1] for (cached prompt, new prompt) pairs, in order."""
        out, ask, keys = _to_ask(pairs, self)
        if ask:
            out[ask] = self.core(self.pre(keys))[:, 0]
        return out

    # The Encoder interface (embeddings/encoder.py) -------------------------------------
    def pre(self, keys: list[str]) -> Batch:
        """Tokenise the pairs, sort them by length and cut them into chunks padded to their
        own longest pair (a pair's score does not depend on its chunk)."""
        encs = self.tokenizer.encode_batch([split_key(k) for k in keys])
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
        chunks = []
        for start in range(0, len(order), self.chunk):
            rows = order[start:start + self.chunk]
            width = max(len(encs[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), np.int64)
            mask = np.zeros_like(ids)
            types = np.zeros_like(ids)
            for row, i in enumerate(rows):
                enc = encs[i]
                n = len(enc.ids)
                ids[row, :n], mask[row, :n], types[row, :n] = enc.ids, enc.attention_mask, enc.type_ids
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            chunks.append({k: v for k, v in feed.items() if k in self.inputs})
        truncated = sum(1 for e in encs if e.overflowing)
        return Batch(inputs=(np.array(order, dtype=np.int64), chunks), size=len(keys),
                     truncated=truncated)

    def core(self, batch: Batch) -> np.ndarray:
        order, chunks = batch.inputs
        out = np.zeros((batch.size, 1), dtype=np.float32)
        out[order, 0] = np.concatenate([self.session.run(["score"], feed)[0] for feed in chunks])
        return out

    def post(self, raw: np.ndarray) -> np.ndarray:
        return raw

    def describe(self) -> dict[str, Any]:
        return {"model": "verifier", "provider": self.provider, "max_seq_len": self.max_len,
                "too_long": self.too_long}

    def close(self) -> None:
        self.session = None


def _gpu_model(folder: Path) -> Any:
    """A float graph for CUDA: the training command's fp32 file, or the int8 one dequantised."""
    if (folder / "model_fp32.onnx").is_file():
        return str(folder / "model_fp32.onnx")
    import onnx

    from semcache.embeddings.rowquant import float_graph

    return float_graph(onnx.load(str(folder / "model_int8.onnx"))).SerializeToString()


class VerifierService:
    """The async face used by the proxy: pairs from concurrent lookups are scored in one
    model run on the batcher's model thread; the loop never blocks."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.calls = 0
        """Lookups that asked the verifier (a metric: how often it runs)."""
        self._batcher = EmbeddingService.from_encoder(verifier, BATCHING)

    @classmethod
    async def open(cls, folder: Path | None = None, *, device: str = "cpu") -> VerifierService:
        return cls(await asyncio.to_thread(Verifier.open, folder, device=device))

    @property
    def stats(self) -> Any:
        """Batches, pairs, queue depth (embeddings.service.EmbeddingStats)."""
        return self._batcher.stats

    async def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        self.calls += 1
        out, ask, keys = _to_ask(pairs, self.verifier)
        if ask:
            out[ask] = (await self._batcher.embed_many(keys))[:, 0]
        return out

    def close(self) -> None:
        """Stop the batcher (pairs still queued fail, which the proxy takes as a miss)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop left: nothing is queued either
            return
        loop.create_task(self._batcher.close())


def load_scorer(settings: Any) -> Callable[[list[tuple[str, str]]], np.ndarray]:
    """The CPU scorer `semcache eval` uses (the proxy's default on a CPU-only host)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = getattr(settings.cache, "verifier_path", "")
    return Verifier.open(Path(path) if path else None, device="cpu").score
