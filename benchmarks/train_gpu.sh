#!/usr/bin/env bash
# Train the embedded-model candidate on a lent GPU machine, then evaluate it with the article's
# protocol on the full test set; everything lands in $OUT (model.npz, checkpoint.pt, eval files).
#   bash benchmarks/train_gpu.sh [ITERATIONS]        (default 100000, the article's recipe)
# The MNIST .gz files must travel with the working tree: copy ../shared/data/mnist into an
# ignored folder of the checkout (e.g. .mnist/, listed in .git/info/exclude), carry it, and set
# FASTCA_MNIST_DIR=.mnist. A run that stops early can continue with --resume from $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
: "${FASTCA_MNIST_DIR:?set FASTCA_MNIST_DIR to the folder with the MNIST .gz files}"
out=${OUT:-fastca-train}
if ! python -c "import fastca.kernels" 2>/dev/null; then
    python -m pip install -q --no-deps --no-build-isolation -e .
fi
nvidia-smi --query-gpu=name,memory.total --format=csv || true
start=$(date +%s)
python -m fastca train --device cuda --iterations "${1:-100000}" --checkpoint-every 2000 --out "$out" \
    ${FASTCA_RESUME:+--resume}
echo "training took $(( $(date +%s) - start )) s"
python -m fastca eval --model "$out/model.npz" --out "$out/eval" --seed 0
python -m fastca eval --out "$out/eval_distill" --seed 0   # the published model, same protocol and seed
