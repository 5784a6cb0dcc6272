#!/usr/bin/env bash
# FAISS on the GPU (issue 18) on a lent GPU machine: the FAISS GPU tests, then
# bench_index --gpu (torch product, FAISS GpuIndexFlatIP fp32/fp16, GPU IVF fp16/int8/fp32 at
# 1M and 10M vectors of dim 384). About 6 minutes on one H200; everything under $OUT
# (default /tmp/out): gpu.txt, index_gpu_tests.txt, bench_index_gpu.log, index_gpu.json.
#
#   bash loadtest/gpu_index.sh            # SIZES=1000000,10000000 BUDGET=300 (seconds)
#
# Needs faiss-gpu (with its CUDA 12 wheels: nvidia-cublas-cu12, nvidia-cuda-runtime-cu12,
# nvidia-curand-cu12), torch (CUDA) and numpy importable, staged into /tmp/gpu-site (first on
# PYTHONPATH); pytest for the tests, which are skipped with a note if absent. No Redis, no
# network. The package is copied to /tmp/sc as the `semcache` namespace, so nothing is
# installed.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if ! python3 -c "import semcache.index.gpu" 2>/dev/null; then
  mkdir -p /tmp/sc/semcache
  for d in proxy embeddings index backend loadtest; do
    rm -rf "/tmp/sc/semcache/$d"; cp -r "$d" "/tmp/sc/semcache/$d"
  done
  touch /tmp/sc/semcache/__init__.py
fi
export PYTHONPATH=/tmp/gpu-site:/tmp/sc${PYTHONPATH:+:$PYTHONPATH}
# The CUDA 12 libraries of the staged wheels, for FAISS (torch cu130 loads its own .so.13).
for lib in /tmp/gpu-site/nvidia/*/lib; do
  [ -d "$lib" ] && export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
step() { echo "[$(date -u +%H:%M:%S)] $*"; }
step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 - <<'PY' 2>&1 | tee -a "$out/gpu.txt"
import numpy, torch
print("numpy", numpy.__version__, "torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.is_available())
try:
    import faiss
    print("faiss", faiss.__version__, "gpu support", hasattr(faiss, "StandardGpuResources"),
          "gpus", faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else None)
except Exception as e:
    print("faiss does not import:", type(e).__name__, e)
from semcache.index.gpu import faiss_gpu_available, pick_backend, torch_cuda_available
f, t = faiss_gpu_available(), torch_cuda_available()
print("semcache picks", pick_backend("auto", "auto", faiss_gpu=f, torch_cuda=t))
PY

# 1. The FAISS GPU tests (marked gpu) and the routing tests, on the real GPU indexes.
step "tests: tests/semantic/test_gpu_index.py"
if python3 -c "import pytest" 2>/dev/null; then
  # --noconftest: the suite's root conftest wants Redis and the encoder, which these do not.
  timeout 90 python3 -m pytest tests/semantic/test_gpu_index.py -q -p no:cacheprovider \
    --noconftest -rs 2>&1 | tee "$out/index_gpu_tests.txt"
  echo "gpu tests exit status: ${PIPESTATUS[0]}" | tee -a "$out/index_gpu_tests.txt"
else
  echo "pytest missing: GPU tests not run" | tee "$out/index_gpu_tests.txt"
fi

# 2. The benchmark: writes $out/index_gpu.json after every variant (a run cut short still
#    leaves what it measured), progress on stderr.
step "bench_index --gpu"
timeout 400 python3 -m semcache.loadtest.bench_index --gpu --sizes "${SIZES:-1000000,10000000}" \
  --budget-s "${BUDGET:-300}" --out-dir "$out" 2>&1 | tee "$out/bench_index_gpu.log"
echo "bench exit status: ${PIPESTATUS[0]}"
step "done"
ls -la "$out"
