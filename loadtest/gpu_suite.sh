#!/usr/bin/env bash
# The GPU benchmarks as run on a lent, bare GPU machine (no network; wheels staged with
# ../shared/tools/gpu-stage into /tmp/gpu-site). The package is copied to /tmp/sc as the
# `semcache` namespace, so nothing is installed. Results go to $OUT (default /tmp/out).
#
#   bash loadtest/gpu_suite.sh embed      # encoder (CUDA graphs, large batches), verifier
#   bash loadtest/gpu_suite.sh semantic   # semantic hits end to end, several replicas
#   bash loadtest/gpu_suite.sh large      # large batches by tokenising threads
#   bash loadtest/gpu_suite.sh pad        # large batches by chunking rule and rows per run
#   bash loadtest/gpu_suite.sh sync       # semantic hits for each CUDA wait mode in $SYNCS
# MPS=1 runs the semantic modes' replicas under NVIDIA MPS (bench_semantic --mps).
set -euo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONPATH=/tmp/gpu-site:/tmp/sc PYTHONUNBUFFERED=1
# Staged files (the verifier's weights and the Quora pairs travel as parts when the working
# tree must stay small).
[ -f embeddings/verifier/model_int8.onnx ] || cp /tmp/gpu-stage/model_int8.onnx embeddings/verifier/
mkdir -p /tmp/sc/semcache
for d in proxy embeddings index backend loadtest; do
  rm -rf "/tmp/sc/semcache/$d"; cp -r "$d" "/tmp/sc/semcache/$d"
done
touch /tmp/sc/semcache/__init__.py
ln -sfn "$PWD/../shared" /tmp/shared 2>/dev/null || true
pairs=/tmp/gpu-stage/qqp_dev_pairs.jsonl.gz
[ -f ../shared/data/qqp_dev_pairs.jsonl.gz ] && pairs=../shared/data/qqp_dev_pairs.jsonl.gz
python3 -c "import onnxruntime as o; o.preload_dlls(); print('onnxruntime', o.__version__, o.get_available_providers())"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
case "${1:-embed}" in
  embed)
    python3 -m semcache.loadtest.bench_embeddings --device cuda --data-dir /tmp/data \
      --sentences "$pairs" --large-batches 1024,4096,16384 --seconds 3 --out "$out"
    python3 -m semcache.loadtest.bench_verifier --device cuda --pairs "$pairs" --seconds 3 --out "$out"
    ;;
  large)
    # Large-batch throughput by tokenising threads, with and without tokenizers' own rayon
    # parallelism inside each call.
    for cfg in "3 true" "8 true" "8 false" "12 false"; do
      set -- $cfg
      TOKENIZERS_PARALLELISM=$2 python3 -m semcache.loadtest.bench_embeddings --device cuda \
        --data-dir /tmp/data --sentences "$pairs" --variants fp16 --batches 1 --concurrency 1 \
        --large-batches 4096,16384 --seconds 3 --tokenize-workers "$1" --out "$out/large_w$1_p$2"
    done
    ;;
  pad)
    python3 -m semcache.loadtest.bench_embeddings --device cuda --data-dir /tmp/data \
      --sentences "$pairs" --variants fp16 --batches 1,128 --concurrency 1,128 \
      --large-batches "${BATCHES:-4096}" --pad-rules "${RULES:-4:16384,1.5:16384,1.25:8192,1.1:4096}" \
      --chunk-rows "${ROWS:-1024,2048}" --switch-intervals-ms "${SWITCH:-}" --seconds 3 \
      --out "$out/pad"
    ;;
  sync)
    for mode in ${SYNCS:-auto blocking}; do
      SEMCACHE__EMBEDDINGS__CUDA_SYNC=$mode python3 -m semcache.loadtest.bench_semantic \
        --data-dir /tmp/data --pairs "$pairs" --replicas "${REPLICAS:-10}" --clients "${CLIENTS:-5}" \
        --levels "${LEVELS:-512}" --duration "${DURATION:-8}" ${MPS:+--mps} \
        --out "$out/semantic_${REPLICAS:-10}replicas_sync_$mode${MPS:+_mps}.json"
    done
    ;;
  semantic)
    python3 -m semcache.loadtest.bench_semantic --data-dir /tmp/data --pairs "$pairs" \
      --replicas "${REPLICAS:-8}" --clients "${CLIENTS:-4}" --levels "${LEVELS:-1,64,256}" \
      --duration "${DURATION:-8}" ${MPS:+--mps} \
      --out "$out/semantic_gpu_${REPLICAS:-8}replicas${MPS:+_mps}.json"
    ;;
esac
