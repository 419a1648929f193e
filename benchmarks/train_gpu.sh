#!/usr/bin/env bash
# Train the embedded-model candidate on a lent GPU machine (dense steps in a CUDA graph), then
# evaluate it with the article's protocol on the full test set; everything lands in $OUT.
#   bash benchmarks/train_gpu.sh [ITERATIONS]        (default 100000, the article's recipe)
# Environment: FASTCA_MNIST_DIR (required; the MNIST .gz files must travel with the working tree:
# copy ../shared/data/mnist into an ignored folder such as .mnist/ and carry it),
# FASTCA_TIME_LIMIT (seconds; stop early with a checkpoint), FASTCA_RESUME=1 (continue from
# $OUT/train), FASTCA_EVAL=0 (skip the evaluation). A run that stops early continues anywhere,
# on the CPU too: fastca train --resume --device cpu --out <folder with checkpoint.pt>.
# First, a short run of the Growing recipe on the shipped gecko (no MNIST needed; FASTCA_GROWING=0 skips
# it): dense steps in its CUDA graph, 200 iterations or FASTCA_GROWING_SECONDS (default 120) into
# $OUT/growing, whose train.log has each iteration's seconds; FASTCA_TIME_LIMIT is shortened by its time.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh
if [ "${FASTCA_GROWING:-1}" != 0 ]; then
    gstart=$(date +%s)
    gout=${OUT:-fastca-train}/growing
    gecko=$($PY -c "from importlib import resources; print(resources.files('fastca') / 'assets' / 'growing_gecko_target.png')")
    ggraph=()
    run_growing() {
        $PY -m fastca train --recipe growing --target "$gecko" --device cuda --iterations 200 --checkpoint-every 100 \
            --time-limit "${FASTCA_GROWING_SECONDS:-120}" --out "$gout" --overwrite "${ggraph[@]}"
    }
    run_growing
    grc=$?
    if [ $grc -ne 0 ] && [ ! -f "$gout/checkpoint.pt" ]; then  # e.g. graph capture refused: train eagerly
        echo "growing CUDA-graph training failed (rc $grc); retrying without the graph"
        ggraph=(--no-graph)
        run_growing
        grc=$?
    fi
    echo "growing training rc=$grc, took $(( $(date +%s) - gstart )) s (per iteration: $gout/train.log)"
    if [ -n "${FASTCA_TIME_LIMIT:-}" ]; then
        FASTCA_TIME_LIMIT=$(( FASTCA_TIME_LIMIT - ($(date +%s) - gstart) ))
        [ "$FASTCA_TIME_LIMIT" -lt 30 ] && FASTCA_TIME_LIMIT=30
    fi
fi
: "${FASTCA_MNIST_DIR:?set FASTCA_MNIST_DIR to the folder with the MNIST .gz files}"
out=${OUT:-fastca-train}/train
start=$(date +%s)
graph=()
run_train() {
    $PY -m fastca train --device cuda --iterations "${1:-100000}" --checkpoint-every 5000 --out "$out" \
        --data "$FASTCA_MNIST_DIR" ${FASTCA_TIME_LIMIT:+--time-limit "$FASTCA_TIME_LIMIT"} "${graph[@]}" "${@:2}"
}
run_train "${1:-100000}" ${FASTCA_RESUME:+--resume}
rc=$?
if [ $rc -ne 0 ] && [ ! -f "$out/checkpoint.pt" ]; then  # e.g. graph capture refused: train eagerly
    echo "CUDA-graph training failed (rc $rc); retrying without the graph"
    graph=(--no-graph)
    run_train "${1:-100000}"
    rc=$?
fi
echo "training rc=$rc, took $(( $(date +%s) - start )) s"
if [ "${FASTCA_EVAL:-1}" != 0 ] && [ -f "$out/model.npz" ]; then
    $PY -m fastca eval --model "$out/model.npz" --out "$out/eval" --seed 0
    $PY -m fastca eval --out "$out/eval_distill" --seed 0   # the published model, same protocol and seed
fi
exit $rc
