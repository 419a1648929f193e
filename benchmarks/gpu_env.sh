# Sourced by the GPU scripts: makes `import fastca.kernels` work on a lent machine that has
# numba, numba-cuda and torch but no internet (no dependency resolution, no build isolation).
export PYTHONUNBUFFERED=1
PY=${PYTHON:-$(command -v python3 || command -v python)}
if ! $PY -c "import fastca.kernels" 2>/dev/null; then
    if ! $PY -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null; then
        ln -sfn ../kernels fastca/kernels   # same layout as the installed package
        export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    fi
fi
