"""The per-scope vector index on its own: flat and HNSW kinds, removal, isolation."""

from __future__ import annotations

import numpy as np
import pytest

from semcache.index.vectors import IndexSettings, VectorIndex


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("hnsw_min", [10**9, 50], ids=["flat", "hnsw"])
def test_search_add_replace_remove(hnsw_min: int) -> None:
    rng = np.random.default_rng(1)
    vectors = unit(rng, 200)
    index = VectorIndex(384, IndexSettings(device="cpu", hnsw_min_entries=hnsw_min))
    for i, v in enumerate(vectors):
        index.add("scope-a", f"e{i}", v)
    assert index.wait_for_builds(30)  # graphs are built on the builder's thread
    assert index.stats()["by_kind"] == {"flat" if hnsw_min > 200 else "hnsw": 200}
    for i in (0, 57, 199):
        (best, sim), *_ = index.search("scope-a", vectors[i], 4)
        assert best == f"e{i}" and sim == pytest.approx(1.0, abs=1e-5)
    # removing entries (tombstones in HNSW, past a quarter of the graph: a rebuild)
    for i in range(0, 120):
        assert index.remove(f"e{i}")
    assert not index.remove("e0") and len(index) == 80
    found = {e for e, _ in index.search("scope-a", vectors[5], 4)}
    assert "e5" not in found and len(found) == 4
    (best, _), *_ = index.search("scope-a", vectors[150], 1)
    assert best == "e150"
    # the same id written again with a new vector replaces the old one
    index.add("scope-a", "e150", vectors[3])
    (best, sim), *_ = index.search("scope-a", vectors[3], 1)
    assert best == "e150" and sim == pytest.approx(1.0, abs=1e-5)
    assert len(index) == 80


def test_scopes_are_isolated() -> None:
    rng = np.random.default_rng(2)
    v = unit(rng, 3)
    index = VectorIndex(384, IndexSettings(device="cpu"))
    index.add("tenant-a", "a1", v[0])
    index.add("tenant-b", "b1", v[1])
    assert [e for e, _ in index.search("tenant-a", v[1], 4)] == ["a1"]
    assert index.search("tenant-c", v[0], 4) == []
    index.add("tenant-b", "a1", v[2])  # an id moving scope leaves the old one
    assert index.search("tenant-a", v[0], 4) == []
    assert index.stats()["scopes"] == 1
    with pytest.raises(ValueError):
        index.add("tenant-a", "bad", np.zeros(10, dtype=np.float32))


class RecordingDevice:
    """Stands in for GpuSearch (same two calls, numpy arithmetic): records what reached it."""

    def __init__(self) -> None:
        self.searches = 0

    def upload(self, vectors: np.ndarray) -> np.ndarray:
        return vectors.copy()

    def search(self, matrix: np.ndarray, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        self.searches += 1
        sims = matrix @ vector
        top = np.argsort(-sims)[:k]
        return list(zip(top.tolist(), sims[top].tolist(), strict=True))


def test_small_scopes_stay_off_the_gpu() -> None:
    """Below gpu_min_entries a scope is searched on the CPU; from it on, on the device."""
    from semcache.index.vectors import ScopeIndex

    rng = np.random.default_rng(3)
    vectors = unit(rng, 40)
    device = RecordingDevice()
    scope = ScopeIndex(384, IndexSettings(gpu_min_entries=30, hnsw_min_entries=10), device)  # type: ignore[arg-type]
    for i in range(29):
        scope.add(f"e{i}", vectors[i])
    (best, _), *_ = scope.search(vectors[7], 2)
    assert best == "e7" and device.searches == 0 and scope.kind == "flat"
    for i in range(29, 40):
        scope.add(f"e{i}", vectors[i])
    (best, _), *_ = scope.search(vectors[33], 2)
    # A scope that has a device never builds an HNSW graph (hnsw_min_entries=10 ignored).
    assert best == "e33" and device.searches == 1 and scope.kind == "gpu-flat"
    for i in range(15):
        scope.remove(f"e{i}")
    (best, _), *_ = scope.search(vectors[20], 2)
    assert best == "e20" and device.searches == 1 and scope.kind == "flat"


@pytest.mark.parametrize("storage", ["fp16", "int8"])
def test_compact_hnsw_storage_keeps_exact_similarities(storage: str) -> None:
    """`hnsw_storage` fp16/int8: the graph holds scalar-quantized codes (a quarter or half
    of fp32), finds the same nearest entries, and the similarities it reports are the exact
    fp32 ones (re-scored against the scope's rows), since thresholds compare them."""
    import faiss

    rng = np.random.default_rng(11)
    vectors = unit(rng, 600)
    index = VectorIndex(384, IndexSettings(device="cpu", hnsw_min_entries=500,
                                           hnsw_storage=storage))
    try:
        index.load("s", [f"e{i}" for i in range(600)], vectors)
        assert index.wait_for_builds(30)
        scope = index._scopes["s"]
        assert isinstance(scope._graph, faiss.IndexHNSWSQ) and scope.kind == "hnsw"
        assert faiss.downcast_index(scope._graph.storage).code_size == 384 * (2 if storage == "fp16" else 1)
        for i in (3, 250, 599):
            query = vectors[i] + 0.02 * unit(rng, 1)[0]
            found = index.search("s", query, 3)
            assert found[0][0] == f"e{i}"
            for entry_id, sim in found:
                exact = float(vectors[int(entry_id[1:])] @ query)
                assert sim == pytest.approx(exact, abs=1e-6)
        fp32 = VectorIndex(384, IndexSettings(device="cpu", hnsw_min_entries=500))
        fp32.load("s", [f"e{i}" for i in range(600)], vectors)
        assert fp32.wait_for_builds(30)
        assert index.stats()["bytes"] < fp32.stats()["bytes"]
        fp32.close(5)
    finally:
        index.close(5)
