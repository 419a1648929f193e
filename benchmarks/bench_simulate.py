"""pytest-benchmark: simulate() on an MNIST world, every backend usable here (the registry).

Runs as a quick smoke test by default (128^2 world, benchmarks disabled in the
default options). The full measurement (1024^2, 20 steps)::

    FASTCA_BENCH_SIZE=1024 python -m pytest benchmarks/bench_simulate.py --benchmark-enable
"""

import functools
import os

import numpy as np
import pytest

import fastca
from benchmarks.registry import STEPS, setup_simulate

SIZE = int(os.environ.get("FASTCA_BENCH_SIZE", "128"))
ORACLE = "torch"  #: the reference every timed backend must agree with


@functools.lru_cache(maxsize=1)
def reference():
    return setup_simulate(ORACLE, SIZE)()


@pytest.mark.parametrize("backend", fastca.available_backends())
def test_simulate_world(benchmark, backend):
    run = setup_simulate(backend, SIZE)
    benchmark.group = f"world {SIZE}x{SIZE}, {STEPS} steps"
    benchmark.extra_info["cells"] = SIZE * SIZE
    result = benchmark.pedantic(run, rounds=1 if SIZE >= 512 else 3, iterations=1)
    assert result.state.shape == (SIZE, SIZE, 20)
    benchmark.extra_info["cell_steps_per_s"] = result.cell_steps_per_s
    # a fast wrong kernel must not pass as a benchmark: the timed run agrees with the reference
    ref = reference()
    np.testing.assert_array_equal(result.alive, ref.alive)
    same = (result.labels == ref.labels)[ref.alive].mean() * 100
    assert same >= 99.9, f"{backend}: only {same:.2f}% of alive cells agree with {ORACLE}"
    np.testing.assert_allclose(result.state, ref.state, rtol=1e-3, atol=1e-3)
