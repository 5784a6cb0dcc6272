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
- on a GPU (`device = "cuda"` and torch sees one), once a scope holds `gpu_min_entries`
  vectors: an exact flat search as a matrix product on the GPU (torch, fp16 vectors): 1M
  vectors are 768 MB and one pass reads them in well under a millisecond. Smaller scopes stay
  on the CPU, where a search takes microseconds and a GPU round trip would cost more.

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
from .scope import ScopeIndex

__all__ = ["GpuSearch", "IndexSettings", "ScopeIndex", "VectorIndex"]

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
    """All scopes' indexes; the only object the rest of semcache talks to.

    Adds, removes and small searches are meant for the event loop (each is O(1), or a flat
    search of a small scope); searches of large scopes for a worker thread. Work that grows
    with a scope runs on the index builder's thread."""

    def __init__(self, dim: int, settings: IndexSettings | None = None) -> None:
        self.dim = dim
        self.settings = settings or IndexSettings()
        self._scopes: dict[str, ScopeIndex] = {}
        self._scope_of: dict[str, str] = {}
        use_gpu = self.settings.device == "cuda" or (
            self.settings.device == "auto" and GpuSearch.available()
        )
        self._gpu = GpuSearch() if use_gpu else None
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
        return max(index.rows, index.settings.offload_min_entries) if index.kind == "hnsw" \
            else index.rows

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
            "builder": {"scopes_waiting": building, "jobs_done": self.builder.jobs_done,
                        "jobs_failed": self.builder.jobs_failed,
                        "busy_s": round(self.builder.busy_s, 3),
                        "thread_alive": self.builder.alive},
        }
