"""Runs tests/cuda in a separate pytest process under the CUDA simulator (and on a real GPU
when one is usable), so NUMBA_ENABLE_CUDASIM never leaks into this process."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastca

CUDA_TESTS = Path(__file__).parent / "cuda"
needs_numba_cuda = pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None, reason="numba-cuda not installed")


def run_cuda_tests(env_extra):
    env = {**os.environ, **env_extra}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CUDA_TESTS)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200, cwd=CUDA_TESTS.parent.parent)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert " passed" in p.stdout and " failed" not in p.stdout
    return p.stdout


@needs_numba_cuda
def test_cuda_kernel_under_simulator():
    out = run_cuda_tests({"NUMBA_ENABLE_CUDASIM": "1"})
    assert "skipped" not in out.splitlines()[-1]


@needs_numba_cuda
@pytest.mark.skipif("numba-cuda" not in fastca.available_backends(), reason="no usable GPU")
def test_cuda_kernel_on_gpu():
    run_cuda_tests({"FASTCA_CUDA_TESTS": "1"})


def test_cuda_backend_errors_say_what_is_missing(monkeypatch):
    usable, reason, _ = fastca.backends.get("numba-cuda").probe()
    if usable:
        pytest.skip("a GPU is usable here")
    with pytest.raises(RuntimeError, match="numba-cuda' is not available: (the numba-cuda package|no usable CUDA GPU)"):
        fastca.simulate(fastca.pretrained(), [[0]], 1, backend="numba-cuda")
    assert fastca.backends.resolve("auto").name == "numba-cpu"


@needs_numba_cuda
def test_gpu_check_script_smoke_under_simulator():
    """benchmarks/gpu_check.sh --smoke runs the CUDA benchmark path end to end without a GPU."""
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh"), "--smoke"], capture_output=True,
                       text=True, timeout=900, cwd=root, env={**os.environ, "PYTHON": sys.executable})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    table = p.stdout.strip().splitlines()
    assert table[-2].split()[:2] == ["side", "backend"] and table[-1].split()[:2] == ["16", "numba-cuda"]
    assert "ERROR" not in p.stdout
