"""pytest-benchmark: simulate() on every registry workload x every backend usable here (benchmarks/registry.py).

Runs as a quick smoke test by default (128^2 worlds, benchmarks disabled in the default
options). The full measurement (1024^2, 20 steps)::

    FASTCA_BENCH_SIZE=1024 python -m pytest benchmarks/bench_simulate.py --benchmark-enable
"""

import functools
import os

import numpy as np
import pytest

from benchmarks import registry

SIZE = int(os.environ.get("FASTCA_BENCH_SIZE", "128"))
CASES = [(w, b) for w in registry.workloads() for b in registry.backends("all")]


@functools.lru_cache(maxsize=None)
def reference(workload):
    """The oracle's result on the workload: what every timed backend must agree with."""
    return registry.setup(workload, registry.ORACLE, SIZE)()


@pytest.mark.parametrize("workload, backend", CASES, ids=[f"{w}-{b}" for w, b in CASES])
def test_simulate_world(benchmark, workload, backend):
    run = registry.setup(workload, backend, SIZE)
    benchmark.group = f"{workload}, world {SIZE}x{SIZE}, {registry.STEPS} steps"
    benchmark.extra_info["cells"] = SIZE * SIZE
    result = benchmark.pedantic(run, rounds=1 if SIZE >= 512 else 3, iterations=1)
    w = registry.WORKLOADS[workload]
    lead = (SIZE, SIZE) if w.input == "gray" else (1, SIZE, SIZE)  # simulate keeps the input's leading shape
    assert result.state.shape == lead + (w.description.channels,)
    benchmark.extra_info["cell_steps_per_s"] = result.cell_steps_per_s
    # a fast wrong kernel must not pass as a benchmark: the timed run agrees with the reference
    ref = reference(workload)
    if ref.labels is not None:
        np.testing.assert_array_equal(result.alive, ref.alive)
        same = (result.labels == ref.labels)[ref.alive].mean() * 100
        assert same >= 99.9, f"{backend}: only {same:.2f}% of alive cells agree with {registry.ORACLE}"
    np.testing.assert_allclose(result.state, ref.state, rtol=1e-3, atol=1e-3)
