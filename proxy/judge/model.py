"""The pair model: a cross-encoder that reads both prompts and says whether one answer
serves both.

Trained by `semcache model train-verifier` (judge/training/) and shipped in judge/weights/
(the CPU student: int8 ONNX with per-token activation scales, sigmoid inside the graph, and
its tokenizer; `model.json` there says how many tokens of a pair it reads). On a GPU it runs
on CUDA from a float graph (`model_fp32.onnx` beside the int8 one, else the int8 weights
dequantised at load: embeddings/rowquant.float_graph).

Everything that grows with a prompt runs off the event loop: `PairModelService` puts the
model behind the encoder's micro-batcher (embeddings/service.py: one tokenizer thread, one
model thread, a bounded queue, an LRU of recent pairs), and `PairModel.pre`, on the
tokenizer thread, prepares each pair (typo repair, the same question in two spellings,
the part of a long pair that differs) before tokenising it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from semcache.embeddings.encoder import Batch
from semcache.embeddings.service import EmbeddingService
from semcache.embeddings.settings import EmbeddingSettings

from .errors import JudgeError
from .text import FOCUS_CONTEXT, focus, known_words, layout_free, repair_typos, same_question

SHIPPED = Path(__file__).resolve().parent / "weights"
"""The student: all-MiniLM-L6-v2 distilled from the teacher (int8, in the repository)."""


def teacher_built(data_dir: Path) -> Path | None:
    """The teacher's folder where set-up built it (`semcache model build-teacher`)."""
    teacher = Path(data_dir) / "pair-model" / "teacher"
    if (teacher / "model.json").is_file() and (teacher / "model_int8.onnx").is_file():
        return teacher
    return None


def default_folder(data_dir: Path) -> Path:
    """The best pair model this install has: the teacher where built, else the student."""
    return teacher_built(data_dir) or SHIPPED


def route(teacher: PairModel, pairs: list[tuple[str, str]], max_chars: int
          ) -> tuple[list[tuple[str, str] | float], list[bool]]:
    """Each pair as the model will read it (prepared by the teacher: typos repaired, a long
    pair cut to where it differs), and whether the teacher reads it: on a CPU only what is
    at most `max_chars` characters once prepared, since the teacher costs about four times
    the student per pair and its cost grows with the text (judge_cost_*.json). A long
    pasted prompt whose request was reworded is short once cut, and goes to the teacher."""
    prepared = [teacher.prepare(a, b) for a, b in pairs]
    return prepared, [not isinstance(p, float) and len(p[0]) + len(p[1]) <= max_chars
                      for p in prepared]


MAX_LEN = 96
"""Tokens of a pair read when the model folder does not say (its training length)."""
LONG_LEN = 256
"""Tokens read of a pair too long for `max_len` even where it differs (a long prompt
reworded throughout), when the model folder does not say (`long_len` in model.json). The
models were trained at `max_len` and rank such pairs well read whole (docs/judge.md); a
pair longer still is turned down unread."""
CHUNK = 32
"""Pairs per model run on a CPU."""
BATCHING = EmbeddingSettings(max_batch=64, max_wait_ms=1.0, max_queue=1024, lru_size=4096)
"""How concurrent lookups' pairs are gathered into one run."""


def pair_key(cached: str, new: str) -> str:
    """One string for a (cached prompt, new prompt) pair, for the batcher's queue and LRU.
    Length-prefixed, so no character of either prompt can make two pairs collide."""
    return f"{len(cached)}:{cached}{new}"


def split_key(key: str) -> tuple[str, str]:
    length, _, rest = key.partition(":")
    n = int(length)
    return rest[:n], rest[n:]


class PairModelError(JudgeError):
    """The pair model could not be loaded or failed to run."""


class PairModel:
    """Synchronous scorer: probability that one answer serves both prompts, per pair.

    Also an embeddings Encoder (pre / core / post on pair keys, one value per row), so the
    encoder's micro-batcher can drive it."""

    dim = 1

    def __init__(self, session: Any, tokenizer: Any, *, max_len: int = MAX_LEN,
                 long_len: int = 0, name: str = "pair model") -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.known = known_words(tokenizer)
        self.too_long = 0
        """Pairs turned down unread: longer than long_len even where they differ."""
        self.max_len = max_len
        self.long_len = self.max_seq_len = max(long_len, max_len)
        self.lengths = tuple(sorted({max_len, self.long_len}))
        """What `prepare` tries in turn: the training length, then the long one."""
        tokenizer.enable_truncation(self.long_len)  # `fits` reads its overflow
        self.name = name
        self.inputs = {i.name for i in session.get_inputs()}
        self.provider = session.get_providers()[0]
        self.chunk = 256 if self.provider == "CUDAExecutionProvider" else CHUNK

    @classmethod
    def open(cls, folder: Path | None = None, *, device: str = "cpu", threads: int = 0) -> PairModel:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from semcache.embeddings.encoder import cuda_usable

        folder = SHIPPED if folder is None else Path(folder)
        cuda = device in ("cuda", "auto") and cuda_usable()
        if device == "cuda" and not cuda:
            raise PairModelError("device=cuda but onnxruntime sees no usable CUDA provider")
        try:
            info = _model_info(folder)
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            tokenizer.no_padding()  # runs pad to their longest pair
            opts = ort.SessionOptions()
            # Idle intra-op threads must not spin: they would take the cores from the
            # encoder and the event loop between model runs (~2 ms per hit measured).
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
            raise PairModelError(f"could not load the pair model from {folder}: {e}") from e
        max_len = int(info.get("max_len", MAX_LEN))
        return cls(session, tokenizer, max_len=max_len,
                   long_len=int(info.get("long_len", max(LONG_LEN, max_len))),
                   name=str(info.get("name", folder.name)))

    def fits(self, cached: str, new: str, limit: int = 0) -> bool:
        """Whether the model reads the pair whole within `limit` tokens (default: its
        training length). A token covers at least one character, so a pair that short
        needs no tokenising."""
        limit = limit or self.max_len
        if len(cached) + len(new) <= limit - 3:  # [CLS] and two [SEP]
            return True
        enc = self.tokenizer.encode(cached, new)
        return not enc.overflowing and len(enc.ids) <= limit

    def prepare(self, cached: str, new: str) -> tuple[str, str] | float:
        """What the model reads of a pair, or its score without the model: 1.0 for the
        same question, 0.0 for a pair too long to read even where it differs (a miss: what
        it cannot see it cannot vouch for). Misspellings are repaired against the other
        side first; a long pair is cut to where it differs, with as much context as fits
        the training length, and where even that is too long (a long prompt reworded
        throughout), read within `long_len` tokens the same way."""
        a, b = repair_typos(cached, new, self.known)
        if same_question(a, b):
            return 1.0
        if self.fits(a, b):
            return a, b
        a, b = layout_free(a), layout_free(b)  # long: the same material laid out otherwise
        if a == b:
            return 1.0
        for limit in self.lengths:
            if limit != self.max_len and self.fits(a, b, limit):
                return a, b
            for context in FOCUS_CONTEXT:
                fa, fb = focus(a, b, context)
                if self.fits(fa, fb, limit):
                    return fa, fb
        self.too_long += 1
        return 0.0

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """Scores in [0, 1] for (cached prompt, new prompt) pairs, in order."""
        return self.post(self.core(self.pre([pair_key(a, b) for a, b in pairs])))[:, 0]

    # The Encoder interface (embeddings/encoder.py) -------------------------------------
    def pre(self, keys: list[str]) -> Batch:
        """Prepare and tokenise the pairs, sort them by length and cut them into chunks
        padded to their own longest pair (a pair's score does not depend on its chunk)."""
        fixed = np.full(len(keys), np.nan, dtype=np.float32)
        asked: list[int] = []
        texts: list[tuple[str, str]] = []
        for i, key in enumerate(keys):
            prepared = self.prepare(*split_key(key))
            if isinstance(prepared, float):
                fixed[i] = prepared
            else:
                asked.append(i)
                texts.append(prepared)
        encs = self.tokenizer.encode_batch(texts) if texts else []
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
        positions = np.array(asked, dtype=np.int64)[np.array(order, dtype=np.int64)] if asked else (
            np.zeros(0, dtype=np.int64))
        return Batch(inputs=(fixed, positions, chunks), size=len(keys), truncated=0)

    def core(self, batch: Batch) -> np.ndarray:
        fixed, positions, chunks = batch.inputs
        out = fixed.copy().reshape(-1, 1)
        if chunks:
            out[positions, 0] = np.concatenate([self.session.run(["score"], feed)[0]
                                                for feed in chunks])
        return out

    def post(self, raw: np.ndarray) -> np.ndarray:
        return raw

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "provider": self.provider, "max_seq_len": self.max_len,
                "long_len": self.long_len, "too_long": self.too_long}

    def close(self) -> None:
        self.session = None


def _model_info(folder: Path) -> dict[str, Any]:
    """The folder's model.json (name, max_len, how it was made); {} where there is none."""
    path = folder / "model.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _gpu_model(folder: Path) -> Any:
    """A float graph for CUDA: the training command's fp32 file, or the int8 one dequantised."""
    if (folder / "model_fp32.onnx").is_file():
        return str(folder / "model_fp32.onnx")
    import onnx

    from semcache.embeddings.rowquant import float_graph

    return float_graph(onnx.load(str(folder / "model_int8.onnx"))).SerializeToString()


class PairModelService:
    """The async face used by the judge: pairs from concurrent lookups are prepared and
    scored in one model run on the batcher's threads; the loop never blocks."""

    def __init__(self, model: PairModel) -> None:
        self.model = model
        self.calls = 0
        """Lookups that asked the model (exported as a metric: how often it runs)."""
        self._batcher = EmbeddingService.from_encoder(model, BATCHING)

    @classmethod
    async def open(cls, folder: Path | None = None, *, device: str = "cpu") -> PairModelService:
        return cls(await asyncio.to_thread(PairModel.open, folder, device=device))

    @property
    def stats(self) -> Any:
        """Batches, pairs, queue depth (embeddings.service.EmbeddingStats)."""
        return self._batcher.stats

    async def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        self.calls += 1
        return (await self._batcher.embed_many([pair_key(a, b) for a, b in pairs]))[:, 0]

    async def close(self) -> None:
        """Stop the batcher (pairs still queued fail, which the judge takes as a miss)."""
        await self._batcher.close()


class RoutedService:
    """The teacher for short pairs, the student for the rest (a CPU's default where the
    teacher is built): one interface, two models, each behind its own batcher."""

    def __init__(self, teacher: PairModelService, student: PairModelService, max_chars: int) -> None:
        self.teacher, self.student, self.max_chars = teacher, student, max_chars
        self.model = teacher.model

    @property
    def calls(self) -> int:
        return self.teacher.calls + self.student.calls

    async def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        # Preparing a long pair tokenises it: a thread, never the event loop.
        prepared, to_teacher = await asyncio.to_thread(route, self.teacher.model, pairs,
                                                       self.max_chars)
        out = np.array([p if isinstance(p, float) else np.nan for p in prepared], dtype=np.float32)
        for service, wanted in ((self.teacher, True), (self.student, False)):
            rows = [i for i, p in enumerate(prepared)
                    if not isinstance(p, float) and to_teacher[i] == wanted]
            if rows:
                out[rows] = await service.score([pairs[i] for i in rows])
        return out

    async def close(self) -> None:
        await self.teacher.close()
        await self.student.close()


async def open_default(settings: Any, data_dir: Path, device: str) -> PairModelService | RoutedService:
    """The pair model a configuration asks for: `judge.model_path`, or by device the best
    this install has: the teacher on a GPU; on a CPU the teacher for pairs of at most
    `judge.teacher_max_chars` characters and the student for longer ones (the student alone
    where no teacher is built)."""
    if settings.model_path:
        return await PairModelService.open(Path(settings.model_path), device=device)
    teacher = teacher_built(data_dir)
    if teacher is None:
        return await PairModelService.open(SHIPPED, device=device)
    from semcache.embeddings.encoder import cuda_usable

    if device in ("cuda", "auto") and cuda_usable():
        return await PairModelService.open(teacher, device=device)
    return RoutedService(await PairModelService.open(teacher, device="cpu"),
                         await PairModelService.open(SHIPPED, device="cpu"),
                         settings.teacher_max_chars)


def load_scorer(judge: Any, data_dir: Path = Path(".data")
                ) -> Callable[[list[tuple[str, str]]], np.ndarray]:
    """The CPU scorer `semcache eval` uses: what the proxy loads on a CPU with `judge`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    teacher = teacher_built(data_dir)
    if judge.model_path or teacher is None:
        return PairModel.open(Path(judge.model_path) if judge.model_path else SHIPPED,
                              device="cpu").score
    big, small = PairModel.open(teacher, device="cpu"), PairModel.open(SHIPPED, device="cpu")

    def score(pairs: list[tuple[str, str]]) -> np.ndarray:
        prepared, to_teacher = route(big, pairs, judge.teacher_max_chars)
        out = np.array([p if isinstance(p, float) else np.nan for p in prepared], dtype=np.float32)
        for model, wanted in ((big, True), (small, False)):
            rows = [i for i, p in enumerate(prepared) if not isinstance(p, float) and to_teacher[i] == wanted]
            if rows:
                out[rows] = model.score([pairs[i] for i in rows])
        return out
    return score
