"""Index builds off the caller's thread: a build works on a copy while searches go on, and
nothing added or removed during it is lost when the copy is swapped in."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from semcache.index import scope as scope_module
from semcache.index.builder import IndexBuilder
from semcache.index.vectors import IndexSettings, ScopeIndex, VectorIndex

DIM = 384


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class GatedBuilder(IndexBuilder):
    """A builder whose job stops at its `gate_at`-th check until released: a build that is
    guaranteed to be in flight while the test works on the scope."""

    def __init__(self, gate_at: int) -> None:
        super().__init__(nice=0)
        self.gate_at = gate_at
        self.checks = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def check(self) -> None:
        super().check()
        self.checks += 1
        if self.checks == self.gate_at:
            self.entered.set()
            assert self.release.wait(30)


def gated_index(hnsw_min: int, gate_at: int) -> tuple[VectorIndex, GatedBuilder]:
    index = VectorIndex(DIM, IndexSettings(device="cpu", hnsw_min_entries=hnsw_min))
    builder = GatedBuilder(gate_at)
    index.builder = builder
    return index, builder


def brute_force(model: dict[str, np.ndarray], query: np.ndarray, k: int) -> list[str]:
    ids = list(model)
    sims = np.stack([model[i] for i in ids]) @ query
    return [ids[i] for i in np.argsort(-sims)[:k]]


def test_searches_during_a_build_are_exact_and_nothing_is_lost() -> None:
    rng = np.random.default_rng(4)
    vectors = unit(rng, 2600)
    index, builder = gated_index(hnsw_min=2000, gate_at=2)  # gate: rows copied, graph not built
    model: dict[str, np.ndarray] = {}
    for i in range(2000):
        index.add("s", f"e{i}", vectors[i])
        model[f"e{i}"] = vectors[i]
    assert builder.entered.wait(10), "the threshold did not start a build"
    scope = index._scopes["s"]
    assert scope.building and scope.kind == "flat"
    # While the build is held: searches answer (flat, exact) and the scope keeps changing.
    for i in (5, 700, 1999):
        assert [e for e, _ in index.search("s", vectors[i], 4)] == brute_force(model, vectors[i], 4)
    for i in range(2000, 2500):  # added during the build (after its snapshot)
        index.add("s", f"e{i}", vectors[i])
        model[f"e{i}"] = vectors[i]
    for i in list(range(0, 200)) + [2400]:  # removed: copied ones, and one added meanwhile
        assert index.remove(f"e{i}")
        del model[f"e{i}"]
    index.add("s", "e300", vectors[2599])  # rewritten with another vector
    model["e300"] = vectors[2599]
    for i in (250, 2100, 2599):
        assert [e for e, _ in index.search("s", vectors[i], 4)] == brute_force(model, vectors[i], 4)
    builder.release.set()
    assert index.wait_for_builds(60)
    assert scope.kind == "hnsw" and not scope.building and len(index) == len(model) == 2299
    for entry_id, vector in model.items():
        (best, sim), *_ = index.search("s", vector, 1)
        assert best == entry_id and sim == pytest.approx(1.0, abs=1e-5), entry_id
    returned = {e for i in range(0, 2600, 7) for e, _ in index.search("s", vectors[i], 8)}
    assert returned <= set(model)
    (best, sim), *_ = index.search("s", vectors[300], 1)  # e300's old vector is gone
    assert best != "e300" and sim < 0.5


def test_a_rebuild_after_deletions_serves_from_the_old_graph_meanwhile() -> None:
    rng = np.random.default_rng(5)
    vectors = unit(rng, 3000)
    index, builder = gated_index(hnsw_min=2000, gate_at=10**9)
    index.load("s", [f"e{i}" for i in range(3000)], vectors)
    assert index.wait_for_builds(60) and index._scopes["s"].kind == "hnsw"
    builder.checks, builder.gate_at = 0, 2  # hold the next build
    for i in range(0, 3000, 3):  # a third of the scope: past the quarter that starts a rebuild
        index.remove(f"e{i}")
    assert builder.entered.wait(10)
    scope = index._scopes["s"]
    assert scope.building and scope.kind == "hnsw"
    for i in range(1, 3000, 51):  # (all live) the old graph, with its dead rows filtered in the search
        found = [e for e, _ in index.search("s", vectors[i], 4)]
        assert found[0] == f"e{i}" and len(found) == 4
        assert not any(int(e[1:]) % 3 == 0 for e in found)
    builder.release.set()
    assert index.wait_for_builds(60)
    assert scope.rows == len(scope) == 2000 and scope.kind == "hnsw"
    for i in range(1, 3000, 3):
        assert index.search("s", vectors[i], 1)[0][0] == f"e{i}"


def test_concurrent_searches_adds_removes_and_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random adds, rewrites and removals on this thread, searches on another, builds, folds
    and rebuilds on the builder's: the index ends equal to a plain dict of what is live."""
    monkeypatch.setattr(scope_module, "FOLD_ROWS", 64)
    monkeypatch.setattr(scope_module, "FOLD_CHUNK", 8)
    monkeypatch.setattr(scope_module, "CATCH_UP_UNDER_LOCK", 16)
    monkeypatch.setattr(scope_module, "COPY_CHUNK", 128)
    rng = np.random.default_rng(6)
    pool = unit(rng, 6000)  # one vector per step: every live entry's vector is its own
    index = VectorIndex(DIM, IndexSettings(device="cpu", hnsw_min_entries=400))
    model: dict[str, np.ndarray] = {}
    stop = threading.Event()
    errors: list[BaseException] = []

    def searcher() -> None:
        own = np.random.default_rng(60)
        try:
            while not stop.is_set():
                for scope in ("a", "b"):
                    found = index.search(scope, pool[int(own.integers(0, len(pool)))], 4)
                    assert len({e for e, _ in found}) == len(found)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    thread = threading.Thread(target=searcher)
    thread.start()
    try:
        for step in range(6000):
            entry_id = f"e{int(rng.integers(0, 1500))}"
            scope = "a" if int(entry_id[1:]) % 4 else "b"
            if entry_id in model and rng.random() < 0.4:
                assert index.remove(entry_id)
                del model[entry_id]
            else:
                vector = pool[step]
                index.add(scope, entry_id, vector)
                model[entry_id] = vector
            if step % 1500 == 0:
                time.sleep(0.05)  # let builds land at different points
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert index.wait_for_builds(60)
    assert len(index) == len(model) and set(index.ids()) == set(model)
    assert index.builder.jobs_done > 0 and index.builder.jobs_failed == 0
    for entry_id, vector in model.items():
        scope = "a" if int(entry_id[1:]) % 4 else "b"
        (best, sim), *_ = index.search(scope, vector, 1)
        assert best == entry_id and sim == pytest.approx(1.0, abs=1e-5), entry_id


def test_a_standalone_scope_builds_inline() -> None:
    """Without a builder (a benchmark's ScopeIndex), load() builds the graph before returning."""
    rng = np.random.default_rng(7)
    vectors = unit(rng, 500)
    scope = ScopeIndex(DIM, IndexSettings(hnsw_min_entries=400))
    scope.load([f"e{i}" for i in range(500)], vectors)
    assert scope.kind == "hnsw" and not scope.building
    assert scope.search(vectors[42], 1)[0][0] == "e42"


def test_close_drops_a_running_build_quickly() -> None:
    rng = np.random.default_rng(8)
    index = VectorIndex(DIM, IndexSettings(device="cpu", hnsw_min_entries=20_000, build_nice=0))
    index.load("s", [f"e{i}" for i in range(40_000)], unit(rng, 40_000))
    deadline = time.monotonic() + 10
    while not index._scopes["s"].building and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # well into the graph build (several seconds for 40k on 2 cores)
    started = time.monotonic()
    assert index.close(timeout_s=10)
    assert time.monotonic() - started < 3.0  # one chunk of FAISS work at most
    assert index._scopes["s"].kind == "flat"  # the half-built graph was dropped
    assert index.search("s", unit(rng, 1)[0], 4)  # and the scope still answers
