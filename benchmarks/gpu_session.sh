#!/usr/bin/env bash
# Everything a short GPU lease is for, in one call: the GPU check (CUDA tests + timing table),
# then training until the deadline (the checkpoint comes back and continues anywhere).
#   FASTCA_MNIST_DIR=.mnist bash benchmarks/gpu_session.sh [SECONDS]   (default 540: be done by then)
set -uo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
budget=${1:-540}
out=${OUT:-gpu-session}
mkdir -p "$out"
export OUT=$out FASTCA_EVAL=0
FASTCA_TEST_TIMEOUT=90 timeout "${FASTCA_CHECK_SECONDS:-240}" bash benchmarks/gpu_check.sh > "$out/gpu_check.log" 2>&1
echo "gpu check rc=$? after $(( $(date +%s) - t0 )) s"
tail -n 25 "$out/gpu_check.log"
export FASTCA_TIME_LIMIT=$(( budget - ($(date +%s) - t0) - 30 ))
echo "training for at most $FASTCA_TIME_LIMIT s"
bash benchmarks/train_gpu.sh "${FASTCA_ITERATIONS:-100000}" > "$out/train.log" 2>&1
echo "train rc=$? after $(( $(date +%s) - t0 )) s"
tr '\r' '\n' < "$out/train.log" | grep -v '^\s*$' | tail -n 8
ls -la "$out" "$out/train" 2>/dev/null
