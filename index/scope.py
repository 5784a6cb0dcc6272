"""The vectors of one scope: exact flat search while small, an HNSW graph once large, and
the maintenance that keeps them in shape, done off the event loop.

Three threads touch a scope: the event loop adds and removes entries (and searches small
scopes inline), the search thread searches large scopes, and the index builder builds and
rebuilds graphs. None of them makes the loop wait for work that grows with the data:
- rows are append-only (`Rows`), so a search reads the rows below the count it saw
  without holding the lock while the loop appends more;
- a removal is a tombstone (`alive[row] = 0`): O(1) on the loop, whatever its size; the
  dead rows are dropped by a rebuild once a quarter of the scope is dead;
- `lock` guards the bookkeeping and is held for O(1) work (O(k) to map a search's rows to
  entry ids), never for a matrix product or a FAISS call;
- a graph is built, or rebuilt after deletions, by the builder on a copy of the live rows,
  while searches go on against the old graph (or flat search); rows added and removed
  meanwhile are applied to the copy before it is swapped in under the lock;
- rows added after a graph was built form its tail, searched flat, and the builder adds
  them to the graph in small chunks under `graph_lock` (FAISS cannot search a graph while
  adding to it), which only worker threads wait for.

A scope without a builder (a benchmark's ScopeIndex) does its maintenance inline, in the
caller's thread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .builder import INLINE, BuildContext, IndexBuilder
from .gpu import IvfIndex
from .rows import BLOCK_ROWS, Rows, slices, take

if TYPE_CHECKING:
    from .gpu import FaissSearch, TorchSearch
    from .vectors import IndexSettings

log = logging.getLogger(__name__)

INLINE_COMPACT_ROWS = 1024
"""A graph-less scope of at most this many rows (1.5 MB) is compacted inline, under the
lock: a fraction of a millisecond, cheaper than a hand-off to the builder."""
FOLD_ROWS = 1024
"""A graph's tail (rows searched flat) is added to the graph once it holds this many: a flat
pass over 1024 rows costs tens of microseconds per search."""
FOLD_CHUNK = 32
"""Tail rows added to a graph per hold of `graph_lock`, on the builder's job thread (one
core, normal priority). Inserting a vector into a 1M-vector graph costs roughly 0.3 ms of a
core, so a search of that scope waits for about ten milliseconds at most."""
COPY_CHUNK = 4096
"""Rows copied per step when a rebuild copies the live rows: the copy holds the GIL, so it
goes in steps the event loop can run between."""
BUILD_CHUNK = 1024
"""Vectors per FAISS add during a build: the granularity of progress and of aborting (a
shutdown waits for one chunk: about 0.15 s into a 1M-vector graph on 2 cores)."""
CATCH_UP_UNDER_LOCK = 256
"""A rebuild swaps once at most this many rows added or removed during it remain to apply:
that remainder is applied under the lock, the rest before taking it."""
CATCH_UP_ROUNDS = 8
SQ_TRAIN_ROWS = 65_536
"""Rows that train an int8 graph's scalar quantizer (its per-dimension ranges)."""
RETRY_AFTER_S = 60.0
"""A scope whose maintenance failed waits this long before the next attempt."""
PROGRESS_EVERY_S = 10.0
PROGRESS_MIN_ROWS = 100_000
"""Builds of at least this many vectors log their progress."""


class _Fresh:
    """A rebuild's copy: the live rows renumbered, and where each old row went."""

    def __init__(self, dim: int, old_rows: int) -> None:
        self.rows = Rows(dim, capacity=min(max(old_rows, 16), BLOCK_ROWS))
        self.ids: list[str] = []
        self.pos: dict[str, int] = {}
        self.alive = np.zeros(max(old_rows, 16), dtype=np.uint8)
        self.dead = 0
        self.moved = np.full(old_rows, -1, dtype=np.int64)
        """old row -> new row, for rows of the snapshot."""
        self.moved_late: dict[int, int] = {}
        """The same for rows added during the rebuild."""

    def copy_live(self, blocks: list[np.ndarray], ids: list[str], alive: np.ndarray,
                  start: int, stop: int, builder: BuildContext) -> None:
        dim = self.rows.dim
        for first in range(start, stop, COPY_CHUNK):
            builder.check()
            last = min(first + COPY_CHUNK, stop)
            live = first + np.flatnonzero(alive[first:last])
            if not len(live):
                continue
            base = self.rows.extend(take(blocks, live, dim))
            new = np.arange(base, base + len(live))
            if last <= len(self.moved):
                self.moved[live] = new
            else:
                self.moved_late.update(zip(live.tolist(), new.tolist(), strict=True))
            self._grow_alive(base + len(live))
            self.alive[base : base + len(live)] = 1
            chunk_ids = [ids[r] for r in live.tolist()]
            self.ids.extend(chunk_ids)
            self.pos.update(zip(chunk_ids, range(base, base + len(live)), strict=True))

    def bury(self, old_rows: list[int]) -> None:
        """Tombstone the copies of rows that died since they were copied."""
        for old in old_rows:
            new = int(self.moved[old]) if old < len(self.moved) else self.moved_late.get(old, -1)
            if new < 0 or not self.alive[new]:
                continue
            self.alive[new] = 0
            self.dead += 1
            entry_id = self.ids[new]
            if self.pos.get(entry_id) == new:
                del self.pos[entry_id]

    def _grow_alive(self, size: int) -> None:
        if size > len(self.alive):
            grown = np.zeros(max(size, 2 * len(self.alive)), dtype=np.uint8)
            grown[: len(self.alive)] = self.alive
            self.alive = grown


def build_graph(rows: Rows, settings: IndexSettings, builder: BuildContext) -> Any:
    """An HNSW graph of every row (labels = row numbers), built in chunks."""
    import faiss  # imported only when a scope grows this large

    blocks, total = rows.snapshot(), rows.count
    graph: Any
    if settings.hnsw_storage == "fp32":
        graph = faiss.IndexHNSWFlat(rows.dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        qtype = {"fp16": faiss.ScalarQuantizer.QT_fp16,
                 "int8": faiss.ScalarQuantizer.QT_8bit}[settings.hnsw_storage]
        graph = faiss.IndexHNSWSQ(rows.dim, qtype, settings.hnsw_m,  # type: ignore[arg-type]
                                  faiss.METRIC_INNER_PRODUCT)
        if not graph.is_trained:  # int8: each dimension's range, from a sample of the rows
            step = max(1, total // SQ_TRAIN_ROWS)
            sample = take(blocks, np.arange(0, total, step)[:SQ_TRAIN_ROWS], rows.dim)
            builder.heavy(graph.train, sample)
    graph.hnsw.efConstruction = settings.hnsw_ef_construction
    graph.hnsw.efSearch = settings.hnsw_ef_search
    started = last_log = time.monotonic()
    for first, chunk in slices(blocks, 0, total, BUILD_CHUNK):
        builder.check()
        builder.heavy(graph.add, chunk)
        now = time.monotonic()
        if total >= PROGRESS_MIN_ROWS and now - last_log >= PROGRESS_EVERY_S:
            last_log = now
            log.info("building an HNSW graph: %d of %d vectors (%.0f%%) in %.0f s",
                     first + len(chunk), total, 100 * (first + len(chunk)) / total, now - started)
    return graph


class ScopeIndex:
    """The vectors of one scope."""

    def __init__(self, dim: int, settings: IndexSettings,
                 gpu: FaissSearch | TorchSearch | None = None,
                 builder: IndexBuilder | None = None) -> None:
        self.dim = dim
        self.settings = settings
        self.lock = threading.Lock()
        self.graph_lock = threading.Lock()
        self._gpu = gpu
        self._builder = builder
        self._rows = Rows(dim)
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        self._alive = np.zeros(16, dtype=np.uint8)
        self._dead = 0
        self._graph: Any = None
        self._graph_rows = 0
        self._gen = 0
        """Bumped by every swap (rebuild, compaction): row numbers of older snapshots differ."""
        self._deaths = 0
        """Tombstones ever made: the version of `alive` a cached bitmap was taken at."""
        self._journal: list[int] | None = None
        """Rows tombstoned while a rebuild copies the scope (None when none runs)."""
        self._busy = False
        """Queued with, or running on, the builder."""
        self._retry_at = 0.0
        self._bitmap: tuple[int, int, int, np.ndarray, Any] | None = None
        self._gpu_matrix: tuple[tuple[int, int], Any] | None = None
        """The GPU backend's copy of the rows for flat search: ((gen, rows), handle)."""
        self._gpu_lock = threading.Lock()
        """Held while that copy is made or extended (by whichever search thread needs it)."""
        self.builds = 0
        self.last_build_s = 0.0

    def __len__(self) -> int:
        return len(self._pos)

    @property
    def rows(self) -> int:
        """Rows a flat search reads (live and tombstoned)."""
        return self._rows.count

    @property
    def kind(self) -> str:
        if isinstance(self._graph, IvfIndex):
            return "gpu-ivf"
        if self._on_gpu(len(self._pos)):
            return "gpu-flat"
        return "hnsw" if self._graph is not None else "flat"

    @property
    def building(self) -> bool:
        return self._busy

    def _on_gpu(self, n: int) -> bool:
        return self._gpu is not None and n >= self.settings.gpu_min_entries

    def _graph_min(self) -> int | None:
        """The size from which the scope is searched through a graph or an IVF index: HNSW
        on the CPU, IVF on a GPU backend that has it, none on one that has not (exact)."""
        if self._gpu is None:
            return self.settings.hnsw_min_entries
        if getattr(self._gpu, "supports_ivf", False):
            return max(self.settings.gpu_ivf_min_entries, self.settings.gpu_min_entries)
        return None

    # mutations (the event loop) -------------------------------------------------------

    def add(self, entry_id: str, vector: np.ndarray) -> None:
        with self.lock:
            self._append(entry_id, vector)
            work = self._claim_work()
        if work:
            self._hand_off()

    def load(self, ids: list[str], vectors: np.ndarray) -> None:
        """Add many entries at once (the start-up rebuild, a benchmark): one copy of the
        rows, and one graph build at the end instead of one insert per vector."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.lock:
            first = self._rows.extend(vectors)
            self._grow_alive(self._rows.count)
            self._alive[first : self._rows.count] = 1
            self._ids.extend(ids)
            for row, entry_id in enumerate(ids, first):
                old = self._pos.get(entry_id)
                if old is not None:
                    self._kill(old)  # written again (or twice in `ids`): the last row wins
                self._pos[entry_id] = row
            work = self._claim_work()
        if work:
            self._hand_off()

    def remove(self, entry_id: str) -> bool:
        with self.lock:
            row = self._pos.pop(entry_id, None)
            if row is None:
                return False
            self._kill(row)
            # Not while the builder holds a snapshot: its row numbers must stay valid.
            if (self._graph is None and not self._busy and self._rows.count <= INLINE_COMPACT_ROWS
                    and self._dead * 4 > self._rows.count):
                self._compact_inline()
            work = self._claim_work()
        if work:
            self._hand_off()
        return True

    def _append(self, entry_id: str, vector: np.ndarray) -> None:
        old = self._pos.get(entry_id)
        if old is not None:
            self._kill(old)  # the same question written again: the new row replaces it
        row = self._rows.append(vector)
        self._grow_alive(row + 1)
        self._alive[row] = 1
        self._ids.append(entry_id)
        self._pos[entry_id] = row

    def _kill(self, row: int) -> None:
        self._alive[row] = 0
        self._dead += 1
        self._deaths += 1
        if self._journal is not None:
            self._journal.append(row)

    def _grow_alive(self, size: int) -> None:
        if size > len(self._alive):
            grown = np.zeros(max(size, 2 * len(self._alive)), dtype=np.uint8)
            grown[: len(self._alive)] = self._alive  # 1 byte a row: 1 MB at a million
            self._alive = grown  # a search holding the old array reads a stale but valid copy

    def _compact_inline(self) -> None:
        live = np.flatnonzero(self._alive[: self._rows.count])
        blocks = self._rows.snapshot()
        rows = Rows(self.dim, capacity=max(len(live), 1) * 2)
        rows.extend(take(blocks, live, self.dim))
        self._ids = [self._ids[r] for r in live.tolist()]
        self._pos = {entry_id: i for i, entry_id in enumerate(self._ids)}
        self._alive = np.ones(max(len(live) * 2, 16), dtype=np.uint8)
        self._alive[len(live):] = 0
        self._rows, self._dead, self._gen = rows, 0, self._gen + 1

    # maintenance (the builder's thread) -------------------------------------------------

    def _next_job(self) -> str | None:
        """What the scope needs done, decided under the lock in O(1)."""
        if self._retry_at and time.monotonic() < self._retry_at:
            return None
        n, live, graph_rows = self._rows.count, len(self._pos), self._graph_rows
        if self._graph is None:
            graph_min = self._graph_min()
            if graph_min is not None and live >= graph_min:
                return "build"
            if self._dead * 4 > n and n > INLINE_COMPACT_ROWS:
                return "compact"
            return None
        tail = n - graph_rows
        if self._dead * 4 > n or tail > max(graph_rows // 4, FOLD_ROWS):
            return "rebuild"  # a tail this long costs less to rebuild than to insert
        return "fold" if tail >= FOLD_ROWS else None

    def _claim_work(self) -> bool:
        if self._busy or self._next_job() is None:
            return False
        self._busy = True
        return True

    def _hand_off(self) -> None:
        if self._builder is not None:
            self._builder.submit(self)
        else:
            self.maintain(INLINE)

    def maintain(self, builder: BuildContext) -> None:
        """Do what the scope needs until it needs nothing (runs on the builder's thread)."""
        try:
            while True:
                with self.lock:
                    job = self._next_job()
                    if job is None:
                        self._busy = False
                        return
                if job == "fold":
                    self._fold(builder)
                else:
                    self._rebuild(builder)
        except BaseException:
            with self.lock:
                self._busy = False
                self._retry_at = time.monotonic() + RETRY_AFTER_S
            raise

    def _rebuild(self, builder: BuildContext) -> None:
        """Copy the live rows, build a graph of them if the scope is large enough, apply
        what changed meanwhile, and swap the copy in."""
        started = time.monotonic()
        with self.lock:
            n0, blocks = self._rows.count, self._rows.snapshot()
            ids, alive, had_graph = self._ids, self._alive, self._graph is not None
            self._journal = []
        try:
            fresh = _Fresh(self.dim, n0)
            fresh.copy_live(blocks, ids, alive, 0, n0, builder)
            # Once built, a graph is kept down to half the threshold, so that a scope
            # hovering around it does not flip between kinds.
            graph_min = self._graph_min()
            graph = None
            if graph_min is not None and len(fresh.pos) >= graph_min // (2 if had_graph else 1):
                if self._gpu is not None:
                    graph = self._gpu.build_ivf(fresh.rows, builder)  # type: ignore[union-attr]
                else:
                    graph = build_graph(fresh.rows, self.settings, builder)
            self._catch_up_and_swap(fresh, graph, n0, builder)
        finally:
            with self.lock:
                self._journal = None
        self.builds += 1
        self.last_build_s = time.monotonic() - started
        if n0 >= PROGRESS_MIN_ROWS or self.last_build_s >= 1.0:
            log.info("scope index rebuilt off the event loop: %d vectors (%s) in %.1f s",
                     len(self._pos), self.kind, self.last_build_s)

    def _catch_up_and_swap(self, fresh: _Fresh, graph: Any, done: int,
                           builder: BuildContext) -> None:
        for attempt in range(CATCH_UP_ROUNDS):
            builder.check()
            with self.lock:
                assert self._journal is not None
                n1, deaths, self._journal = self._rows.count, self._journal, []
                blocks, ids, alive = self._rows.snapshot(), self._ids, self._alive
                # Deaths first: each happened before rows [done, n1) are read, and a row
                # that died before being read is not copied at all.
                if n1 - done + len(deaths) <= CATCH_UP_UNDER_LOCK or attempt == CATCH_UP_ROUNDS - 1:
                    fresh.bury(deaths)
                    fresh.copy_live(blocks, ids, alive, done, n1, INLINE)
                    self._swap(fresh, graph)
                    return
            fresh.bury(deaths)
            fresh.copy_live(blocks, ids, alive, done, n1, builder)
            done = n1

    def _swap(self, fresh: _Fresh, graph: Any) -> None:
        self._rows, self._ids, self._pos = fresh.rows, fresh.ids, fresh.pos
        self._alive, self._dead = fresh.alive, fresh.dead
        self._graph, self._graph_rows = graph, (graph.ntotal if graph is not None else 0)
        if graph is not None:
            self._gpu_matrix = None  # an IVF index replaces the flat copy on the GPU
        self._gen += 1
        self._deaths += 1  # row numbers changed: no cached bitmap applies
        self._retry_at = 0.0

    def _fold(self, builder: BuildContext) -> None:
        """Add the graph's tail to the graph, a few rows per hold of `graph_lock`."""
        while True:
            builder.check()
            with self.lock:
                graph, start, n = self._graph, self._graph_rows, self._rows.count
                blocks = self._rows.snapshot()
            if graph is None or start >= n:
                return
            stop = min(n, start + FOLD_CHUNK)
            chunk = np.ascontiguousarray(blocks[start // BLOCK_ROWS][
                start % BLOCK_ROWS : start % BLOCK_ROWS + (stop - start)])
            stop = start + len(chunk)  # never across a block
            with self.graph_lock:  # searches of this scope wait: a few vectors at a time, at
                graph.add(chunk)  # normal priority; labels start..stop-1 (it held `start`)
            with self.lock:
                self._graph_rows = stop  # only this thread swaps, so the graph is still ours

    # search (any thread) --------------------------------------------------------------

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k nearest entries of this scope as (entry id, cosine similarity), best first."""
        if k <= 0:
            return []
        with self.lock:
            n = self._rows.count
            if n == 0 or not self._pos:
                return []
            blocks, ids, alive, gen = self._rows.snapshot(), self._ids, self._alive, self._gen
            graph, graph_rows, dead, deaths = self._graph, self._graph_rows, self._dead, self._deaths
            on_gpu = self._on_gpu(len(self._pos))
        found: list[tuple[int, float]] = []
        if on_gpu and graph is None:
            found = rescore(blocks, n, self._gpu_search(blocks, n, gen, dead, vector, k), vector)
        else:
            if graph is not None and graph_rows:
                found = self._graph_search(graph, graph_rows, alive, dead, deaths, gen, vector, k)
                if isinstance(graph, IvfIndex) or self.settings.hnsw_storage != "fp32":
                    found = rescore(blocks, n, found, vector)  # fp16 / int8 codes
            if n > graph_rows:
                found += flat_search(blocks, alive, graph_rows, n, vector, k)
            found.sort(key=lambda pair: -pair[1])
        out: list[tuple[str, float]] = []
        with self.lock:
            same = gen == self._gen
            for row, sim in found:
                if not 0 <= row < n or not alive[row]:
                    continue
                entry_id = ids[row]
                if (self._pos.get(entry_id) == row) if same else (entry_id in self._pos):
                    out.append((entry_id, sim))
                    if len(out) == k:
                        break
        return out

    def _graph_search(self, graph: Any, graph_rows: int, alive: np.ndarray, dead: int,
                      deaths: int, gen: int, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if isinstance(graph, IvfIndex):
            # No ID selector on the GPU: ask for enough more than k to pass the tombstones.
            sims, labels = graph.search(vector.reshape(1, -1), k + min(dead, 64))
            return [(row, sim) for row, sim in zip(labels[0].tolist(), sims[0].tolist(),
                                                   strict=True) if 0 <= row < graph_rows]
        params = None
        if dead:
            # Tombstoned rows are still in the graph: filter them inside the search, so a
            # scope with many deletions still returns its k nearest live entries.
            import faiss

            cached = self._bitmap
            if cached is None or cached[:3] != (gen, deaths, graph_rows):
                bits = np.packbits(alive[:graph_rows], bitorder="little")
                selector = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
                cached = self._bitmap = (gen, deaths, graph_rows, bits, selector)
            params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]  # stubs lag
                sel=cached[4], efSearch=self.settings.hnsw_ef_search)
        with self.graph_lock:
            sims, labels = graph.search(vector.reshape(1, -1), k, params=params)
        return [(row, sim) for row, sim in zip(labels[0].tolist(), sims[0].tolist(), strict=True)
                if 0 <= row < graph_rows]

    def _gpu_search(self, blocks: list[np.ndarray], n: int, gen: int, dead: int,
                    vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        assert self._gpu is not None
        with self._gpu_lock:
            cached = self._gpu_matrix
            if cached is None or cached[0] != (gen, n):
                extend = getattr(self._gpu, "extend", None)
                if (cached is not None and extend is not None and cached[0][0] == gen
                        and cached[0][1] < n):  # only rows appended since: add those
                    extend(cached[1], np.concatenate(
                        [part for _, part in slices(blocks, cached[0][1], n)]))
                    cached = ((gen, n), cached[1])
                else:
                    matrix = np.concatenate([part for _, part in slices(blocks, 0, n)])
                    cached = ((gen, n), self._gpu.upload(matrix))
                if self._gen == gen:  # not replaced by a swap meanwhile
                    self._gpu_matrix = cached
        return self._gpu.search(cached[1], vector, k + min(dead, 64))

    def nbytes(self) -> int:
        rows = self._rows.count * self.dim * 4
        graph = 0
        if isinstance(self._graph, IvfIndex):  # the lists on the GPU
            return rows + self._graph.nbytes(self.dim)
        if self._graph is not None:  # FAISS's own copy of the vectors, and level-0 links
            code = self.dim * {"fp32": 4, "fp16": 2, "int8": 1}[self.settings.hnsw_storage]
            graph = self._graph_rows * (code + self.settings.hnsw_m * 2 * 4)
        return rows + graph


def rescore(blocks: list[np.ndarray], n: int, found: list[tuple[int, float]],
            vector: np.ndarray) -> list[tuple[int, float]]:
    """Exact fp32 similarities for candidates that an index scored on compressed vectors
    (fp16, int8): thresholds compare similarities, so they must not be approximate. Best
    first; rows outside [0, n) are dropped."""
    rows = np.array(sorted({row for row, _ in found if 0 <= row < n}), dtype=np.int64)
    if not len(rows):
        return []
    sims = take(blocks, rows, len(vector)) @ vector
    order = np.argsort(-sims, kind="stable")
    return list(zip(rows[order].tolist(), sims[order].tolist(), strict=True))


def flat_search(blocks: list[np.ndarray], alive: np.ndarray, start: int, stop: int,
                vector: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best live rows of [start, stop), exactly: one matrix-vector product a block."""
    rows: list[np.ndarray] = []
    sims: list[np.ndarray] = []
    for first, part in slices(blocks, start, stop):
        s = part @ vector
        s[alive[first : first + len(part)] == 0] = -np.inf
        if len(s) > k:
            top = np.argpartition(-s, k - 1)[:k]
            rows.append(first + top)
            sims.append(s[top])
        else:
            rows.append(np.arange(first, first + len(s)))
            sims.append(s)
    all_rows, all_sims = np.concatenate(rows), np.concatenate(sims)
    if len(all_sims) > k:
        top = np.argpartition(-all_sims, k - 1)[:k]
        all_rows, all_sims = all_rows[top], all_sims[top]
    keep = np.isfinite(all_sims)
    return list(zip(all_rows[keep].tolist(), all_sims[keep].tolist(), strict=True))
