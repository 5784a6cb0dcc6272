"""Large scopes on a GPU (index/gpu.py): which backend serves a scope of a given size, the
fallback when the installed FAISS has no GPU support, the IVF index built off the caller's
thread and swapped in, and (marked gpu) the same on FAISS's GPU indexes.

The routing tests run FAISS's CPU indexes through the same backend code
(`FaissSearch(gpu=False)`): only the device differs from the GPU path."""

from __future__ import annotations

import numpy as np
import pytest

from semcache.index.builder import IndexBuilder
from semcache.index.gpu import FaissSearch, IvfIndex, faiss_gpu_available, pick_backend, torch_cuda_available
from semcache.index.vectors import IndexSettings, ScopeIndex, VectorIndex

DIM = 384


def clustered(rng: np.random.Generator, n: int, centres: int = 40) -> np.ndarray:
    c = rng.standard_normal((centres, DIM)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    v = c[rng.integers(0, centres, n)] + rng.standard_normal((n, DIM)).astype(np.float32) * (
        0.6 / np.sqrt(DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def noisy(rng: np.random.Generator, v: np.ndarray) -> np.ndarray:
    q = v + rng.standard_normal(v.shape).astype(np.float32) * (0.25 / np.sqrt(DIM))
    return (q / np.linalg.norm(q, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(("device", "backend", "faiss_gpu", "torch_cuda", "expected"), [
    ("cpu", "auto", True, True, None),  # never a GPU
    ("auto", "auto", True, True, "faiss"),  # FAISS GPU preferred
    ("auto", "auto", False, True, "torch"),  # faiss-cpu with a CUDA torch: the fallback
    ("auto", "auto", False, False, None),  # no GPU at all
    ("auto", "faiss", False, True, "torch"),  # asked for, missing: still served on the GPU
    ("auto", "torch", True, True, "torch"),  # asked for
    ("auto", "torch", True, False, "faiss"),  # asked for, missing
    ("cuda", "auto", False, False, "torch"),  # insists: torch fails loudly
])
def test_pick_backend(device: str, backend: str, faiss_gpu: bool, torch_cuda: bool,
                      expected: str | None) -> None:
    assert pick_backend(device, backend, faiss_gpu=faiss_gpu, torch_cuda=torch_cuda) == expected


def test_this_machine_without_faiss_gpu_stays_on_the_cpu() -> None:
    """faiss-cpu (no StandardGpuResources) and no CUDA torch: no GPU backend, CPU kinds."""
    if faiss_gpu_available() or torch_cuda_available():
        pytest.skip("this machine has a GPU backend")
    index = VectorIndex(DIM, IndexSettings(device="auto", gpu_min_entries=10,
                                           hnsw_min_entries=50))
    try:
        assert index.stats()["gpu_backend"] is None
        vectors = clustered(np.random.default_rng(1), 60)
        index.load("s", [f"e{i}" for i in range(60)], vectors)
        assert index.wait_for_builds(30)
        assert index.stats()["by_kind"] == {"hnsw": 60}
    finally:
        index.close(5)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="gpu_backend"):
        IndexSettings(gpu_backend="cuvs")
    with pytest.raises(ValueError, match="gpu_ivf_storage"):
        IndexSettings(gpu_ivf_storage="pq")
    with pytest.raises(ValueError, match="gpu_ivf_recall"):
        IndexSettings(gpu_ivf_recall=1.5)


def route_by_size(backend_gpu: bool) -> None:
    """Below gpu_min_entries: CPU flat; from it: the backend's exact flat index, extended in
    place as rows arrive; from gpu_ivf_min_entries: an IVF index built by the builder while
    flat search goes on, then swapped in; tombstones never come back."""
    rng = np.random.default_rng(5)
    vectors = clustered(rng, 6000)
    settings = IndexSettings(gpu_min_entries=300, gpu_ivf_min_entries=4000, gpu_ivf_recall=0.9)
    backend = FaissSearch(settings, gpu=backend_gpu)
    builder = IndexBuilder(threads=1)
    scope = ScopeIndex(DIM, settings, backend, builder)
    try:
        for i in range(299):
            scope.add(f"e{i}", vectors[i])
        assert scope.search(vectors[5], 1)[0][0] == "e5"
        assert scope.kind == "flat" and scope._gpu_matrix is None  # never reached the backend

        scope.add("e299", vectors[299])
        assert scope.kind == "gpu-flat"
        assert scope.search(vectors[7], 1)[0][0] == "e7"
        assert scope._gpu_matrix is not None
        flat = scope._gpu_matrix[1]
        assert flat.ntotal == 300
        for i in range(300, 400):
            scope.add(f"e{i}", vectors[i])
        assert scope.search(vectors[350], 1)[0][0] == "e350"
        assert scope._gpu_matrix[1] is flat and flat.ntotal == 400  # extended, not re-sent

        builder.pause()  # the IVF build waits: searches go on through the flat index
        scope.load([f"e{i}" for i in range(400, 6000)], vectors[400:])
        assert scope.kind == "gpu-flat" and scope.building
        assert scope.search(vectors[4500], 1)[0][0] == "e4500"
        builder.resume()
        assert builder.wait_idle(120)
        assert scope.kind == "gpu-ivf" and isinstance(scope._graph, IvfIndex)
        ivf = scope._graph
        assert ivf.ntotal == 6000 and 1 <= ivf.nprobe <= ivf.nlist
        assert ivf.recall_at_1 is not None and ivf.recall_at_1 >= 0.9
        assert scope._gpu_matrix is None  # the flat copy is released

        picks = rng.choice(6000, 200, replace=False)
        found = [scope.search(noisy(rng, vectors[i]), 1) for i in picks]
        hits = sum(bool(f) and f[0][0] == f"e{i}" for f, i in zip(found, picks, strict=True))
        assert hits / len(picks) >= 0.85

        for i in range(0, 1000):
            scope.remove(f"e{i}")  # a sixth: below the rebuild threshold, tombstones
        assert scope._graph is ivf
        for i in range(0, 1000, 97):
            assert all(entry_id != f"e{i}" for entry_id, _ in scope.search(vectors[i], 4))
            # its own (dead) row is the nearest: a live neighbour still comes back
            (nearest, _), = scope.search(vectors[i], 1)
            assert int(nearest[1:]) >= 1000
        assert scope.search(vectors[1500], 1)[0][0] == "e1500"
    finally:
        builder.stop(10)


def test_scope_routing_by_size_on_faiss_cpu_indexes() -> None:
    route_by_size(backend_gpu=False)


@pytest.mark.gpu
def test_scope_routing_by_size_on_the_gpu() -> None:
    if not faiss_gpu_available():
        pytest.skip("the installed FAISS has no GPU support, or sees no GPU")
    route_by_size(backend_gpu=True)


@pytest.mark.gpu
@pytest.mark.parametrize("storage", ["fp32", "fp16", "int8"])
def test_gpu_ivf_meets_its_recall_target(storage: str) -> None:
    if not faiss_gpu_available():
        pytest.skip("the installed FAISS has no GPU support, or sees no GPU")
    from semcache.index.builder import INLINE
    from semcache.index.rows import Rows

    rng = np.random.default_rng(9)
    vectors = clustered(rng, 50_000, centres=500)
    rows = Rows(DIM)
    rows.extend(vectors)
    settings = IndexSettings(gpu_ivf_storage=storage, gpu_ivf_recall=0.95)
    ivf = FaissSearch(settings).build_ivf(rows, INLINE)
    assert ivf.recall_at_1 is not None and ivf.recall_at_1 >= 0.95
    queries = noisy(rng, vectors[:500])
    _, labels = ivf.search(queries, 1)
    truth = np.argmax(queries @ vectors.T, axis=1)
    assert float(np.mean(labels[:, 0] == truth)) >= 0.9


@pytest.mark.gpu
def test_the_proxy_index_picks_faiss_on_the_gpu() -> None:
    """VectorIndex as the proxy makes it (device "auto"): FAISS GPU where it is installed."""
    if not faiss_gpu_available():
        pytest.skip("the installed FAISS has no GPU support, or sees no GPU")
    index = VectorIndex(DIM, IndexSettings(gpu_min_entries=100))
    try:
        assert index.stats()["gpu_backend"] == "faiss"
        vectors = clustered(np.random.default_rng(4), 300)
        index.load("s", [f"e{i}" for i in range(300)], vectors)
        assert index.stats()["by_kind"] == {"gpu-flat": 300}
        (best, sim), = index.search("s", vectors[123], 1)
        assert best == "e123" and sim == pytest.approx(1.0, abs=1e-5)
    finally:
        index.close(5)
