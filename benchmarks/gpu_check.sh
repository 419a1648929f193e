#!/usr/bin/env bash
# GPU check for a lent GPU machine (numba, numba-cuda, cupy and torch preinstalled there):
#   bash benchmarks/gpu_check.sh           CUDA equivalence tests on the GPU, then the timing table
#   bash benchmarks/gpu_check.sh --smoke   the same CUDA path end to end under the simulator, no GPU
# Full results go to $OUT (when set) as gpu_results.json / .csv and cuda_tests.log.
# FASTCA_GPU_SIZES / FASTCA_GPU_STEPS choose the worlds (default 1024,4096,8192,16384 and 20).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh
if [ "${1:-}" = "--smoke" ]; then
    export NUMBA_ENABLE_CUDASIM=1
    $PY -m benchmarks.gpu_bench --smoke
    exit 0
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
log=${OUT:-/tmp}/cuda_tests.log
FASTCA_CUDA_TESTS=1 timeout "${FASTCA_TEST_TIMEOUT:-300}" $PY -m pytest -q -p no:cacheprovider tests/cuda 2>&1 \
    | tee "$log" || echo "CUDA tests FAILED (see $log)"
$PY -m benchmarks.gpu_bench --sizes "${FASTCA_GPU_SIZES:-1024,4096,8192,16384}" --steps "${FASTCA_GPU_STEPS:-20}"
