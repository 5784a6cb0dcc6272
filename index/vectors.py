"""The in-memory vector index, partitioned by scope.

Isolation is structural: every scope has its own index, and a query searches only the one of
its scope, so it can never return another scope's entry, and its cost does not grow with the
number of other scopes (or tenants).

Per scope (index/scope.py):
- exact flat search (one matrix-vector product per block of the scope's vectors) while the
  scope is small. Measured on the 2-core CI machine, numpy's gemv over 10k vectors took
  0.46 ms and `faiss.knn` 1.06 ms for one query, so the flat path uses numpy.
- a FAISS HNSW graph once the scope holds `hnsw_min_entries` vectors; HNSW cannot delete,
  so deletions are tombstones (filtered inside the search) and the graph is rebuilt once a
  quarter of it is dead.
- on a GPU, once a scope holds `gpu_min_entries` vectors (index/gpu.py): where the
  installed FAISS has GPU support, an exact `GpuIndexFlatIP` (fp16 storage: 1M vectors are
  768 MB and one pass reads them in well under a millisecond), and from
  `gpu_ivf_min_entries` an IVF index on the GPU with nprobe set to meet `gpu_ivf_recall`,
  built on the builder's thread and swapped in like an HNSW graph; without FAISS GPU, an
  exact matrix product through torch. Smaller scopes stay on the CPU, where a search takes
  microseconds and a GPU round trip would cost more.

No index work that grows with the data runs on the caller's thread: adding and removing an
entry is O(1), and graph builds, rebuilds after deletions and compaction run on the index
builder's thread (index/builder.py) on a copy that is swapped in when ready, while searches
go on against the old index.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .builder import IndexBuilder
from .gpu import (
    BACKENDS,
    IVF_STORAGE,
    FaissSearch,
    TorchSearch,
    faiss_gpu_available,
    pick_backend,
    torch_cuda_available,
)
from .scope import ScopeIndex

__all__ = ["FaissSearch", "GpuSearch", "IndexSettings", "ScopeIndex", "TorchSearch", "VectorIndex"]

GpuSearch = TorchSearch
"""The torch backend under its former name (benchmarks import it)."""

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
    hnsw_storage: str = "fp32"
    """The vectors inside an HNSW graph: `fp32`, or `fp16` / `int8` (FAISS scalar quantizer:
    768 / 384 bytes a 384-d vector instead of 1536). The scope keeps its own fp32 rows
    either way (rebuilds, flat search of the tail), and a graph's candidates are re-scored
    exactly against them, so similarities (what thresholds compare) stay exact; recall@1 of
    each storage at 1M vectors: loadtest/results/index_memory_*.json."""
    gpu_min_entries: int = 20_000
    """On a GPU, a scope is searched there from this size (and never becomes HNSW); smaller
    ones take a CPU flat search of microseconds. A GPU search is a copy each way and a
    synchronisation on the device the encoder uses: measured on an H100 with 10 proxy
    processes, searching 500-entry scopes on the GPU took 27% of each event loop's time."""
    gpu_backend: str = "auto"
    """What searches scopes on the GPU: `auto` (FAISS GPU where the installed FAISS has GPU
    support, else the torch matrix product), `faiss` or `torch`."""
    gpu_flat_fp16: bool = True
    """FAISS GPU flat indexes store fp16 vectors (half the memory and read time; exact
    search on fp16 vectors, as the torch product does)."""
    gpu_ivf_min_entries: int = 2_000_000
    """With FAISS GPU, a scope of at least this many vectors is searched through an IVF
    index (built off the event loop; exact flat search meanwhile)."""
    gpu_ivf_storage: str = "fp16"
    """Vectors in the IVF lists: `fp32` (IVFFlat), `fp16` or `int8` (scalar quantizer)."""
    gpu_ivf_nlist: int = 0
    """IVF lists; 0: 4 * sqrt(vectors)."""
    gpu_ivf_recall: float = 0.95
    """The IVF index searches the fewest lists (a power of two) that give this recall@1
    against exact search, measured when it is built."""
    offload_min_entries: int = 4096
    """Scopes at least this large are searched in a worker thread, off the event loop;
    smaller ones take microseconds and are searched inline (a thread hop costs more)."""
    build_threads: int = 0
    """FAISS threads of a graph build, on the index builder's threads; 0: all cores but one
    (at least one), so that a build never takes every core from the event loop."""
    build_nice: int = 0
    """Linux nice value of the thread that runs a build's FAISS calls (and of the OpenMP
    threads it starts). 0 by default, measured on a shared 2-core machine
    (loadtest/results/stalls_cpu-2core.json, "switch"): at nice 19 on every core a
    20k-vector build took 10-13 s instead of 4-6 s, and the probe's p99 while it ran was 2.2x
    its idle p99 (median of 3 rounds) instead of 1.5x: a starved low-priority thread holds
    the GIL for the moments between FAISS calls, and the event loop waits on it. Raise it on
    a machine whose spare CPU is reliably idle."""

    def __post_init__(self) -> None:
        if self.gpu_backend not in BACKENDS:
            raise ValueError(f"index.gpu_backend: one of {list(BACKENDS)}, got {self.gpu_backend!r}")
        if self.hnsw_storage not in IVF_STORAGE:
            raise ValueError(f"index.hnsw_storage: one of {list(IVF_STORAGE)}, got {self.hnsw_storage!r}")
        if self.gpu_ivf_storage not in IVF_STORAGE:
            raise ValueError(f"index.gpu_ivf_storage: one of {list(IVF_STORAGE)}, "
                             f"got {self.gpu_ivf_storage!r}")
        if not 0.0 < self.gpu_ivf_recall <= 1.0:
            raise ValueError(f"index.gpu_ivf_recall: must be in (0, 1], got {self.gpu_ivf_recall!r}")
        if self.gpu_ivf_min_entries <= 0 or self.gpu_ivf_nlist < 0:
            raise ValueError("index.gpu_ivf_min_entries must be > 0 and gpu_ivf_nlist >= 0")


class VectorIndex:
    """All scopes' indexes; the only object the rest of semcache talks to.

    Adds, removes and small searches are meant for the event loop (each is O(1), or a flat
    search of a small scope); searches of large scopes for a worker thread. Work that grows
    with a scope runs on the index builder's thread."""

    def __init__(self, dim: int, settings: IndexSettings | None = None) -> None:
        self.dim = dim
        self.settings = settings or IndexSettings()
        self._scopes: dict[str, ScopeIndex] = {}
        self._scope_of: dict[str, str] = {}
        self._gpu = open_gpu_backend(self.settings)
        threads = self.settings.build_threads or max(1, (os.cpu_count() or 2) - 1)
        self.builder = IndexBuilder(threads=threads, nice=self.settings.build_nice)

    def __len__(self) -> int:
        return len(self._scope_of)

    def __contains__(self, entry_id: str) -> bool:
        return entry_id in self._scope_of

    def _scope_index(self, scope: str) -> ScopeIndex:
        index = self._scopes.get(scope)
        if index is None:
            index = self._scopes[scope] = ScopeIndex(self.dim, self.settings, self._gpu,
                                                     self.builder)
        return index

    def add(self, scope: str, entry_id: str, vector: np.ndarray) -> None:
        if vector.shape != (self.dim,):
            raise ValueError(f"vector of shape {vector.shape}, expected ({self.dim},)")
        previous = self._scope_of.get(entry_id)
        if previous is not None and previous != scope:
            self.remove(entry_id)
        self._scope_index(scope).add(entry_id, vector.astype(np.float32, copy=False))
        self._scope_of[entry_id] = scope

    def load(self, scope: str, ids: list[str], vectors: np.ndarray) -> None:
        """Add many entries of one scope at once (one array of shape (len(ids), dim))."""
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors of shape {vectors.shape}, expected ({len(ids)}, {self.dim})")
        for entry_id in ids:
            previous = self._scope_of.get(entry_id)
            if previous is not None and previous != scope:
                self.remove(entry_id)
        self._scope_index(scope).load(ids, vectors)
        self._scope_of.update(dict.fromkeys(ids, scope))

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

    def search_rows(self, scope: str) -> int:
        """How many vectors a flat search of the scope reads (tombstoned ones included);
        a scope with a graph counts as its size. What decides whether a search may run inline."""
        index = self._scopes.get(scope)
        if index is None:
            return 0
        return max(index.rows, index.settings.offload_min_entries) \
            if index.kind in ("hnsw", "gpu-ivf") else index.rows

    def search(self, scope: str, vector: np.ndarray, k: int = 4) -> list[tuple[str, float]]:
        index = self._scopes.get(scope)
        return [] if index is None else index.search(vector, k)

    def ids(self) -> list[str]:
        return list(self._scope_of)

    # the builder ------------------------------------------------------------------------

    def start_builder(self) -> None:
        """Start the builder's thread ahead of its first job (the proxy, at start-up)."""
        self.builder.start()

    def pause_builds(self) -> None:
        self.builder.pause()

    def resume_builds(self) -> None:
        self.builder.resume()

    def wait_for_builds(self, timeout_s: float) -> bool:
        """Block until no scope has maintenance queued or running (tests, benchmarks)."""
        return self.builder.wait_idle(timeout_s)

    def close(self, timeout_s: float = 0.0) -> bool:
        """Stop the builder (a running build is dropped at its next chunk); True if its
        thread ended within `timeout_s`. Until `builder.busy` is false a FAISS call may still
        be running (the process must not exit under it)."""
        return self.builder.stop(timeout_s)

    def stats(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        building = 0
        for index in list(self._scopes.values()):
            kinds[index.kind] = kinds.get(index.kind, 0) + len(index)
            building += index.building
        return {
            "entries": len(self._scope_of),
            "scopes": len(self._scopes),
            "by_kind": kinds,
            "bytes": sum(index.nbytes() for index in list(self._scopes.values())),
            "gpu_backend": self._gpu.name if self._gpu is not None else None,
            "builder": {"scopes_waiting": building, "jobs_done": self.builder.jobs_done,
                        "jobs_failed": self.builder.jobs_failed,
                        "busy_s": round(self.builder.busy_s, 3),
                        "thread_alive": self.builder.alive},
        }


def open_gpu_backend(settings: IndexSettings) -> FaissSearch | TorchSearch | None:
    """The backend of this index's GPU searches (index/gpu.py: `pick_backend`), or None.
    FAISS backends share the process's one GPU resources object (and its lock)."""
    if settings.device == "cpu":
        return None
    choice = pick_backend(settings.device, settings.gpu_backend,
                          faiss_gpu=faiss_gpu_available(), torch_cuda=torch_cuda_available())
    if choice == "torch":
        return TorchSearch()
    return FaissSearch(settings) if choice == "faiss" else None
