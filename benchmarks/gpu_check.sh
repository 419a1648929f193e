#!/usr/bin/env bash
# GPU check for a lent GPU machine (numba, numba-cuda, cupy and torch preinstalled there), one call:
#   bash benchmarks/gpu_check.sh           CUDA tests on the GPU, then the timing table and the big world
#   bash benchmarks/gpu_check.sh --smoke   the benchmark path end to end under the simulator, no GPU
# Results go to $OUT (when set): cuda_tests.log, gpu_results.json.
# FASTCA_GPU_SIZES / FASTCA_GPU_STEPS / FASTCA_GPU_BIG choose the worlds (default
# 1024,4096,8192,16384; 20 steps; a 32768^2 float16 world for 100 steps); FASTCA_GPU_LAYOUTS the
# numba-cuda layouts (first one also runs the big world); FASTCA_GPU_EXPANDABLE the torch rerun side.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh
if [ "${1:-}" = "--smoke" ]; then
    NUMBA_ENABLE_CUDASIM=1 $PY -m benchmarks.gpu_bench --smoke --layouts 64
    exit $?
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
out=${OUT:-/tmp}
FASTCA_CUDA_TESTS=1 timeout "${FASTCA_TEST_TIMEOUT:-300}" $PY -m pytest -q -p no:cacheprovider -rs tests/cuda \
    2>&1 | tee "$out/cuda_tests.log"
tests_rc=${PIPESTATUS[0]}
[ "$tests_rc" = 0 ] || echo "CUDA TESTS FAILED (rc=$tests_rc, see $out/cuda_tests.log)"
$PY -m benchmarks.gpu_bench --sizes "${FASTCA_GPU_SIZES:-1024,4096,8192,16384}" --steps "${FASTCA_GPU_STEPS:-20}" \
    --layouts "${FASTCA_GPU_LAYOUTS:-128,64}" \
    --big "${FASTCA_GPU_BIG:-32768}" --budget "${FASTCA_GPU_BUDGET:-1e9}" --breakdown "${FASTCA_GPU_BREAKDOWN:-8192}"
bench_rc=$?
[ "$bench_rc" = 0 ] || echo "BENCHMARK FAILED (rc=$bench_rc)"
# torch-cuda needs ~13x the state; at 8192^2 the default caching allocator runs out of an 80 GB card,
# so time it again (with numba-cuda in the same process) with expandable segments. 0 skips this.
if [ "${FASTCA_GPU_EXPANDABLE:-8192}" != 0 ]; then
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True $PY -m benchmarks.gpu_bench \
        --sizes "${FASTCA_GPU_EXPANDABLE:-8192}" --steps "${FASTCA_GPU_STEPS:-20}" --layouts "${FASTCA_GPU_LAYOUTS:-128}" \
        --no-compile --out "$out/expandable" || echo "EXPANDABLE-SEGMENTS RERUN FAILED"
fi
exit $(( tests_rc != 0 || bench_rc != 0 ))
