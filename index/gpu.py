"""Searching large scopes on a GPU: FAISS GPU indexes where the installed FAISS has GPU
support, else an exact matrix product through torch.

Two backends with the same two calls for exact flat search (`upload` a scope's vectors,
`search` one query), which ScopeIndex uses for scopes of at least `gpu_min_entries`:
- `FaissSearch`: a `GpuIndexFlatIP` (fp16 storage by default, `gpu_flat_fp16`), extended
  in place as the scope grows. For scopes of at least `gpu_ivf_min_entries` it also builds
  an IVF index (`build_ivf()`, on the index builder's thread, on a copy, swapped in like an HNSW
  graph): trained on a sample, nprobe chosen as the smallest that meets `gpu_ivf_recall`
  (recall@1 against exact search, measured on noisy copies of stored vectors).
- `TorchSearch`: the fallback where FAISS has no GPU support (faiss-cpu with a CUDA torch):
  exact flat search as a matrix product (fp16 vectors, fp32 accumulation).

One `FaissSearch` (one `StandardGpuResources`) per process. FAISS GPU resources may be used
by one thread at a time, so every FAISS call on them (searches from the search thread, adds
and training from the builder's) takes the backend's lock: a search waits for one chunk of a
build at most, or for the training of an IVF index (bounded by its sample,
TRAIN_PER_LIST vectors a list, MAX_TRAIN in all).

`FaissSearch(gpu=False)` runs the same code on FAISS's CPU indexes (tests of the routing
and of the IVF path on machines without a GPU; never chosen by the proxy).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .rows import Rows, slices, take

if TYPE_CHECKING:
    from .builder import BuildContext
    from .vectors import IndexSettings

log = logging.getLogger(__name__)

BACKENDS = ("auto", "faiss", "torch")
IVF_STORAGE = {"fp32": "Flat", "fp16": "SQfp16", "int8": "SQ8"}
"""`gpu_ivf_storage` -> FAISS factory suffix (IVFFlat, IVF scalar quantizer fp16 / 8-bit)."""
IVF_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
ADD_CHUNK = 65_536
"""Vectors per FAISS add when filling a GPU index (25 MB of 384-d fp32): a search waits for
one chunk's copy and insertion at most."""
TRAIN_PER_LIST = 40
"""Training vectors per IVF list (FAISS warns below 39)."""
MAX_TRAIN = 500_000
"""At most this many vectors train an IVF index (k-means on the GPU, under the lock)."""
MAX_NPROBE = 2048
"""FAISS GPU IVF searches at most this many lists per query."""
CALIBRATION_QUERIES = 256
CALIBRATION_NOISE = 0.25
"""Norm of the noise added to a stored vector to make a calibration query (cosine ~0.97 to
its source: a paraphrase looks like that to the index)."""


def faiss_gpu_available() -> bool:
    """The installed FAISS has GPU support and sees a GPU."""
    try:
        import faiss
    except Exception:  # not installed, or its CUDA libraries do not load
        return False
    if not hasattr(faiss, "StandardGpuResources"):
        return False
    try:
        return int(faiss.get_num_gpus()) > 0
    except Exception:  # a build whose CUDA libraries do not load
        return False


def torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pick_backend(device: str, backend: str, *, faiss_gpu: bool, torch_cuda: bool) -> str | None:
    """Which GPU backend serves large scopes: "faiss", "torch", or None (CPU only).

    `device` "cpu" never uses a GPU; "auto" uses one where FAISS or torch sees it; "cuda"
    insists (torch is then the backend of last resort, and fails loudly if it has no GPU).
    `backend` "auto" prefers FAISS; "faiss" or "torch" asks for one, and falls back to the
    other (with a warning) where it is missing, so that a GPU host without it still serves."""
    if device == "cpu":
        return None
    if backend == "torch" and (torch_cuda or not faiss_gpu):
        return "torch" if torch_cuda or device == "cuda" else None
    if faiss_gpu:
        return "faiss"
    if backend == "faiss":
        log.warning("index.gpu_backend = \"faiss\" but the installed FAISS has no GPU support; "
                    "large scopes use the torch matrix product")
    if torch_cuda or device == "cuda":
        return "torch"
    return None


_RESOURCES: tuple[Any, threading.Lock] | None = None
_RESOURCES_LOCK = threading.Lock()


def shared_resources() -> tuple[Any, threading.Lock]:
    """The process's FAISS GPU resources (temporary memory, streams: about 1.5 GB of the
    GPU) and the lock every call on them takes, created at first use."""
    global _RESOURCES
    with _RESOURCES_LOCK:
        if _RESOURCES is None:
            import faiss

            _RESOURCES = (faiss.StandardGpuResources(), threading.Lock())
        return _RESOURCES


class TorchSearch:
    """Exact flat search on a CUDA device, through torch (fp16 vectors, fp32 accumulation)."""

    name = "torch"
    supports_ivf = False
    """No IVF index: every large scope is searched exactly."""

    def __init__(self, device: str = "cuda") -> None:
        import torch  # only on the GPU path

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        """fp16 on the GPU; fp32 where a benchmark runs it on the CPU (no fast fp16 there)."""

    @staticmethod
    def available() -> bool:
        return torch_cuda_available()

    def upload(self, vectors: np.ndarray) -> Any:
        return self.torch.from_numpy(vectors).to(self.device, dtype=self.dtype)

    def search(self, matrix: Any, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        torch = self.torch
        query = torch.from_numpy(vector).to(self.device, dtype=self.dtype)
        sims = (matrix @ query).float()
        top = torch.topk(sims, min(k, sims.shape[0]))
        return list(zip(top.indices.tolist(), top.values.tolist(), strict=True))


class IvfIndex:
    """A scope's IVF index: looks like its HNSW graph to ScopeIndex (`ntotal`, `add`,
    `search`; labels are row numbers), and takes the backend's lock for every call."""

    def __init__(self, backend: FaissSearch, index: Any, *, nlist: int, storage: str,
                 train_s: float, add_s: float) -> None:
        self.backend = backend
        self.index = index
        self.nlist = nlist
        self.storage = storage
        self.nprobe = 1
        self.recall_at_1: float | None = None
        """Measured by the calibration at the chosen nprobe."""
        self.train_s = train_s
        self.add_s = add_s

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        with self.backend.lock:
            self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def set_nprobe(self, nprobe: int) -> None:
        faiss = self.backend.faiss
        space = faiss.GpuParameterSpace() if self.backend.res is not None else faiss.ParameterSpace()
        with self.backend.lock:
            space.set_index_parameter(self.index, "nprobe", nprobe)
        self.nprobe = nprobe

    def search(self, queries: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """`params` is ignored: FAISS GPU indexes take no ID selector (tombstones are
        filtered by the caller, which asks for more than k)."""
        with self.backend.lock:
            return self.index.search(np.ascontiguousarray(queries, dtype=np.float32),
                                     min(k, MAX_NPROBE))  # GPU k limit is 2048 as well

    def nbytes(self, dim: int) -> int:
        return self.ntotal * (dim * IVF_BYTES[self.storage] + 8) + self.nlist * dim * 4


class FaissSearch:
    """FAISS GPU indexes for large scopes: exact flat, and IVF for very large ones."""

    name = "faiss"
    supports_ivf = True

    def __init__(self, settings: IndexSettings, *, gpu: bool = True) -> None:
        import faiss

        self.faiss = faiss
        self.settings = settings
        self.res: Any = None
        self.lock = threading.Lock()
        if gpu:
            self.res, self.lock = shared_resources()

    @staticmethod
    def available() -> bool:
        return faiss_gpu_available()

    def _to_device(self, index: Any, fp16: bool = False) -> Any:
        if self.res is None:
            return index
        options = self.faiss.GpuClonerOptions()
        options.useFloat16 = fp16
        return self.faiss.index_cpu_to_gpu(self.res, 0, index, options)

    # exact flat search --------------------------------------------------------------

    def upload(self, vectors: np.ndarray) -> Any:
        with self.lock:
            index = self._to_device(self.faiss.IndexFlatIP(vectors.shape[1]),
                                    fp16=self.settings.gpu_flat_fp16)
        self.extend(index, vectors)
        return index

    def extend(self, index: Any, vectors: np.ndarray) -> None:
        """Append rows to a flat index (labels continue from its ntotal)."""
        for first in range(0, len(vectors), ADD_CHUNK):
            chunk = np.ascontiguousarray(vectors[first : first + ADD_CHUNK], dtype=np.float32)
            with self.lock:
                index.add(chunk)

    def search(self, index: Any, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        with self.lock:
            sims, labels = index.search(vector.reshape(1, -1).astype(np.float32, copy=False),
                                        min(k, int(index.ntotal), MAX_NPROBE))
        return [(row, sim) for row, sim in zip(labels[0].tolist(), sims[0].tolist(), strict=True)
                if row >= 0]

    # IVF ------------------------------------------------------------------------------

    def nlist_for(self, n: int) -> int:
        nlist = self.settings.gpu_ivf_nlist or int(4 * math.sqrt(n))
        return max(1, min(nlist, n // TRAIN_PER_LIST or 1))

    def build_ivf(self, rows: Rows, builder: BuildContext) -> IvfIndex:
        """An IVF index of every row (labels = row numbers), with nprobe calibrated to the
        recall target. Runs on the index builder's thread; each FAISS call under the lock."""
        faiss = self.faiss
        dim, n, blocks = rows.dim, rows.count, rows.snapshot()
        nlist = self.nlist_for(n)
        storage = self.settings.gpu_ivf_storage
        rng = np.random.default_rng(n)
        sample_rows = np.sort(rng.choice(n, size=min(n, max(nlist * TRAIN_PER_LIST, 1), MAX_TRAIN),
                                         replace=False))
        sample = take(blocks, sample_rows, dim)
        builder.check()
        started = time.monotonic()
        with self.lock:
            cpu = faiss.index_factory(dim, f"IVF{nlist},{IVF_STORAGE[storage]}",
                                      faiss.METRIC_INNER_PRODUCT)
            index = self._to_device(cpu)
            builder.heavy(index.train, sample)
        train_s = time.monotonic() - started
        del sample
        started = time.monotonic()
        for first, chunk in slices(blocks, 0, n, ADD_CHUNK):
            builder.check()
            part = np.ascontiguousarray(chunk)
            with self.lock:
                builder.heavy(index.add, part)
            if n >= 1_000_000 and first % (ADD_CHUNK * 32) == 0:
                log.info("filling an IVF index: %d of %d vectors", first, n)
        built = IvfIndex(self, index, nlist=nlist, storage=storage, train_s=train_s,
                         add_s=time.monotonic() - started)
        self.calibrate(built, blocks, n, dim, builder)
        log.info("IVF index of %d vectors: %d lists (%s), nprobe %d for recall@1 %.3f "
                 "(target %.2f); trained in %.1f s, filled in %.1f s", n, nlist, storage,
                 built.nprobe, built.recall_at_1 or 0.0, self.settings.gpu_ivf_recall,
                 train_s, built.add_s)
        return built

    def exact_top1(self, blocks: list[np.ndarray], n: int, queries: np.ndarray,
                   builder: BuildContext) -> np.ndarray:
        """Row of each query's exact nearest neighbour among rows [0, n) (fp32)."""
        best = np.full(len(queries), -np.inf, dtype=np.float32)
        rows = np.full(len(queries), -1, dtype=np.int64)
        for first, chunk in slices(blocks, 0, n, ADD_CHUNK):
            builder.check()
            if self.res is not None:
                with self.lock:
                    sims, labels = self.faiss.knn_gpu(self.res, queries, np.ascontiguousarray(chunk),
                                                      1, metric=self.faiss.METRIC_INNER_PRODUCT)
                sims, labels = sims[:, 0], labels[:, 0]
            else:
                all_sims = queries @ chunk.T
                labels = all_sims.argmax(axis=1)
                sims = all_sims[np.arange(len(queries)), labels]
            better = sims > best
            best[better] = sims[better]
            rows[better] = first + labels[better]
        return rows

    def calibrate(self, built: IvfIndex, blocks: list[np.ndarray], n: int, dim: int,
                  builder: BuildContext) -> None:
        """Set nprobe to the smallest power of two whose recall@1 meets the target."""
        rng = np.random.default_rng(n + 1)
        q = min(CALIBRATION_QUERIES, n)
        sources = np.sort(rng.choice(n, size=q, replace=False))
        queries = take(blocks, sources, dim)
        queries += rng.standard_normal(queries.shape).astype(np.float32) * (
            CALIBRATION_NOISE / math.sqrt(dim))
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        truth = self.exact_top1(blocks, n, queries, builder)
        target = self.settings.gpu_ivf_recall
        nprobe, top = 1, min(built.nlist, MAX_NPROBE)
        while True:
            builder.check()
            built.set_nprobe(nprobe)
            _, labels = built.search(queries, 1)
            built.recall_at_1 = float(np.mean(labels[:, 0] == truth))
            if built.recall_at_1 >= target or nprobe >= top:
                break
            nprobe = min(nprobe * 2, top)
        if built.recall_at_1 < target:
            log.warning("IVF index of %d vectors: recall@1 %.3f at nprobe %d, below the target "
                        "%.2f (gpu_ivf_storage %s)", n, built.recall_at_1, nprobe, target,
                        built.storage)
