#!/usr/bin/env bash
# GPU check for a lent GPU machine (numba, numba-cuda, cupy and torch preinstalled there):
#   bash benchmarks/gpu_check.sh           CUDA equivalence tests on the GPU, then the timing table
#   bash benchmarks/gpu_check.sh --smoke   the same CUDA path end to end under the simulator, no GPU
# Full results go to $OUT (when set) as gpu_results.json / .csv and cuda_tests.log.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if ! python -c "import fastca.kernels" 2>/dev/null; then
    # offline: no build isolation (setuptools from the machine), no dependency resolution
    python -m pip install -q --no-deps --no-build-isolation -e .
fi
if [ "${1:-}" = "--smoke" ]; then
    export NUMBA_ENABLE_CUDASIM=1
    python -m benchmarks.gpu_bench --smoke
    exit 0
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
log=${OUT:-/tmp}/cuda_tests.log
FASTCA_CUDA_TESTS=1 python -m pytest -q -p no:cacheprovider tests/cuda 2>&1 | tee "$log"
python -m benchmarks.gpu_bench --sizes "${FASTCA_GPU_SIZES:-1024,4096,8192,16384}" --steps "${FASTCA_GPU_STEPS:-20}"
