"""The in-memory vector index, partitioned by scope.

Isolation is structural: every scope has its own index, and a query searches only the one of
its scope, so it can never return another scope's entry, and its cost does not grow with the
number of other scopes (or tenants).

Per scope:
- exact flat search (one matrix-vector product over the scope's vectors) while the scope is
  small. Measured on the 2-core CI machine, numpy's gemv over 10k vectors took 0.46 ms and
  `faiss.knn` 1.06 ms for one query, so the flat path uses numpy.
- a FAISS HNSW graph once the scope holds `hnsw_min_entries` vectors; HNSW cannot delete,
  so deletions are tombstones and the graph is rebuilt once a quarter of it is dead.
- on a GPU (`device = "cuda"` and torch sees one), once a scope holds `gpu_min_entries`
  vectors: an exact flat search as a matrix product on the GPU (torch, fp16 vectors): 1M
  vectors are 768 MB and one pass reads them in well under a millisecond. Smaller scopes stay
  on the CPU, where a search takes microseconds and a GPU round trip would cost more.

Thread-safety: mutations and searches of one index are serialised by a lock, because the
proxy runs large searches in a worker thread while the event loop applies stream events.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class IndexSettings:
    """Settings of the vector index (the `[index]` section of config.toml)."""

    device: str = "auto"
    """`auto` (GPU when torch sees CUDA, else CPU), `cpu` or `cuda`."""
    hnsw_min_entries: int = 20_000
    """A scope switches from exact flat search to HNSW at this size. At 20k vectors a flat
    search costs about 1 ms on a CPU core, the budget of the semantic tier."""
    hnsw_m: int = 32
    """HNSW graph degree: recall against memory (M * 8 bytes of links per vector)."""
    hnsw_ef_construction: int = 80
    """HNSW build-time beam width."""
    hnsw_ef_search: int = 96
    """HNSW search beam width; recall against flat is measured by the index benchmark."""
    gpu_min_entries: int = 20_000
    """On a GPU, a scope is searched there from this size (and never becomes HNSW); smaller
    ones take a CPU flat search of microseconds. A GPU search is a copy each way and a
    synchronisation on the device the encoder uses: measured on an H100 with 10 proxy
    processes, searching 500-entry scopes on the GPU took 27% of each event loop's time."""
    offload_min_entries: int = 4096
    """Scopes at least this large are searched in a worker thread, off the event loop;
    smaller ones take microseconds and are searched inline (a thread hop costs more)."""


class ScopeIndex:
    """The vectors of one scope."""

    def __init__(self, dim: int, settings: IndexSettings, gpu: GpuSearch | None = None) -> None:
        self.dim = dim
        self.settings = settings
        self._vectors = np.empty((16, dim), dtype=np.float32)
        self._ids: list[str | None] = []
        self._pos: dict[str, int] = {}
        self._hnsw: Any = None
        self._dead = 0
        self._gpu = gpu
        self._gpu_cache: Any = None
        self._gpu_rows = -1
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pos)

    @property
    def kind(self) -> str:
        if self._on_gpu(len(self._pos)):
            return "gpu-flat"
        return "hnsw" if self._hnsw is not None else "flat"

    def _on_gpu(self, n: int) -> bool:
        return self._gpu is not None and n >= self.settings.gpu_min_entries

    def add(self, entry_id: str, vector: np.ndarray) -> None:
        with self.lock:
            old = self._pos.get(entry_id)
            if old is not None and self._hnsw is None:
                self._vectors[old] = vector  # same question rewritten: replace in place
                self._gpu_rows = -1
                return
            if old is not None:
                self._tombstone(old)
            row = len(self._ids)
            if row == len(self._vectors):
                grown = np.empty((len(self._vectors) * 2, self.dim), dtype=np.float32)
                grown[:row] = self._vectors[:row]
                self._vectors = grown
            self._vectors[row] = vector
            self._ids.append(entry_id)
            self._pos[entry_id] = row
            if self._hnsw is not None:
                self._hnsw.add(self._vectors[row : row + 1])
            elif self._gpu is None and len(self._pos) >= self.settings.hnsw_min_entries:
                self._build_hnsw()

    def load(self, ids: list[str], vectors: np.ndarray) -> None:
        """Replace the contents at once (a rebuild or a benchmark): one graph build instead of
        one insert per vector."""
        with self.lock:
            self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            self._ids = list(ids)
            self._pos = {entry_id: i for i, entry_id in enumerate(ids)}
            self._dead, self._hnsw, self._gpu_rows = 0, None, -1
            if self._gpu is None and len(self._pos) >= self.settings.hnsw_min_entries:
                self._build_hnsw()

    def remove(self, entry_id: str) -> bool:
        with self.lock:
            row = self._pos.get(entry_id)
            if row is None:
                return False
            if self._hnsw is not None:
                self._tombstone(row)
                if self._dead * 4 > len(self._ids):
                    self._compact()
                    self._build_hnsw()
                return True
            # Flat: move the last row into the hole, so rows stay dense.
            last = len(self._ids) - 1
            last_id = self._ids[last]
            if row != last and last_id is not None:
                self._vectors[row] = self._vectors[last]
                self._ids[row] = last_id
                self._pos[last_id] = row
            self._ids.pop()
            del self._pos[entry_id]
            self._gpu_rows = -1
            return True

    def _tombstone(self, row: int) -> None:
        entry_id = self._ids[row]
        if entry_id is not None:
            del self._pos[entry_id]
        self._ids[row] = None
        self._dead += 1

    def _compact(self) -> None:
        keep = [i for i, e in enumerate(self._ids) if e is not None]
        self._vectors = np.ascontiguousarray(self._vectors[keep]) if keep else np.empty(
            (16, self.dim), dtype=np.float32)
        self._ids = [self._ids[i] for i in keep]
        self._pos = {e: i for i, e in enumerate(self._ids) if e is not None}
        self._dead = 0

    def _build_hnsw(self) -> None:
        import faiss  # imported only when a scope grows this large

        s = self.settings
        index = faiss.IndexHNSWFlat(self.dim, s.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = s.hnsw_ef_construction
        index.hnsw.efSearch = s.hnsw_ef_search
        index.add(self._vectors[: len(self._ids)])
        self._hnsw = index

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k nearest entries of this scope as (entry id, cosine similarity), best first."""
        with self.lock:
            n = len(self._ids)
            if n == 0:
                return []
            pairs: Iterable[tuple[int, float]]
            if self._hnsw is not None:
                # Ask for more than k: tombstoned rows are still in the graph.
                sims, rows = self._hnsw.search(vector.reshape(1, -1), k + min(self._dead, 32))
                pairs = zip(rows[0].tolist(), sims[0].tolist(), strict=True)
            elif self._gpu is not None and self._on_gpu(n):
                if self._gpu_rows != n:
                    self._gpu_cache = self._gpu.upload(self._vectors[:n])
                    self._gpu_rows = n
                pairs = self._gpu.search(self._gpu_cache, vector, k)
            else:
                sims = self._vectors[:n] @ vector
                top = np.argpartition(-sims, k - 1)[:k] if n > k else np.arange(n)
                top = top[np.argsort(-sims[top])]
                pairs = zip(top.tolist(), sims[top].tolist(), strict=True)
            out: list[tuple[str, float]] = []
            for row, sim in pairs:
                entry_id = self._ids[row] if 0 <= row < n else None
                if entry_id is not None:
                    out.append((entry_id, float(sim)))
                if len(out) == k:
                    break
            return out

    def nbytes(self) -> int:
        graph = 0
        if self._hnsw is not None:
            graph = len(self._ids) * self.settings.hnsw_m * 2 * 4  # neighbour lists, level 0
        return int(self._vectors.nbytes) + graph


class GpuSearch:
    """Exact flat search on a CUDA device, through torch (fp16 vectors, fp32 accumulation)."""

    def __init__(self) -> None:
        import torch  # only on the GPU path

        self.torch = torch
        self.device = torch.device("cuda")

    @staticmethod
    def available() -> bool:
        try:
            import torch
        except ImportError:
            return False
        return bool(torch.cuda.is_available())

    def upload(self, vectors: np.ndarray) -> Any:
        return self.torch.from_numpy(vectors).to(self.device, dtype=self.torch.float16)

    def search(self, matrix: Any, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        torch = self.torch
        query = torch.from_numpy(vector).to(self.device, dtype=torch.float16)
        sims = (matrix @ query).float()
        top = torch.topk(sims, min(k, sims.shape[0]))
        return list(zip(top.indices.tolist(), top.values.tolist(), strict=True))


class VectorIndex:
    """All scopes' indexes; the only object the rest of semcache talks to."""

    def __init__(self, dim: int, settings: IndexSettings | None = None) -> None:
        self.dim = dim
        self.settings = settings or IndexSettings()
        self._scopes: dict[str, ScopeIndex] = {}
        self._scope_of: dict[str, str] = {}
        use_gpu = self.settings.device == "cuda" or (
            self.settings.device == "auto" and GpuSearch.available()
        )
        self._gpu = GpuSearch() if use_gpu else None

    def __len__(self) -> int:
        return len(self._scope_of)

    def __contains__(self, entry_id: str) -> bool:
        return entry_id in self._scope_of

    def add(self, scope: str, entry_id: str, vector: np.ndarray) -> None:
        if vector.shape != (self.dim,):
            raise ValueError(f"vector of shape {vector.shape}, expected ({self.dim},)")
        previous = self._scope_of.get(entry_id)
        if previous is not None and previous != scope:
            self.remove(entry_id)
        index = self._scopes.get(scope)
        if index is None:
            index = self._scopes[scope] = ScopeIndex(self.dim, self.settings, self._gpu)
        index.add(entry_id, vector.astype(np.float32, copy=False))
        self._scope_of[entry_id] = scope

    def remove(self, entry_id: str) -> bool:
        scope = self._scope_of.pop(entry_id, None)
        if scope is None:
            return False
        index = self._scopes.get(scope)
        if index is not None:
            index.remove(entry_id)
            if len(index) == 0:
                del self._scopes[scope]
        return True

    def scope_size(self, scope: str) -> int:
        index = self._scopes.get(scope)
        return 0 if index is None else len(index)

    def search(self, scope: str, vector: np.ndarray, k: int = 4) -> list[tuple[str, float]]:
        index = self._scopes.get(scope)
        return [] if index is None else index.search(vector, k)

    def ids(self) -> list[str]:
        return list(self._scope_of)

    def stats(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for index in self._scopes.values():
            kinds[index.kind] = kinds.get(index.kind, 0) + len(index)
        return {
            "entries": len(self._scope_of),
            "scopes": len(self._scopes),
            "by_kind": kinds,
            "bytes": sum(index.nbytes() for index in self._scopes.values()),
        }
