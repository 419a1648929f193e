"""pytest-benchmark: simulate() on an MNIST world, torch vs numba-cpu.

Runs as a quick smoke test by default (128^2 world, benchmarks disabled in the
default options). The full measurement (1024^2, 20 steps)::

    FASTCA_BENCH_SIZE=1024 python -m pytest benchmarks/bench_simulate.py --benchmark-enable
"""

import os

import pytest

from benchmarks.registry import STEPS, setup_simulate

SIZE = int(os.environ.get("FASTCA_BENCH_SIZE", "128"))


@pytest.mark.parametrize("backend", ["numba-cpu", "torch"])
def test_simulate_world(benchmark, backend):
    run = setup_simulate(backend, SIZE)
    benchmark.group = f"world {SIZE}x{SIZE}, {STEPS} steps"
    benchmark.extra_info["cells"] = SIZE * SIZE
    result = benchmark.pedantic(run, rounds=1 if SIZE >= 512 else 3, iterations=1)
    assert result.state.shape == (SIZE, SIZE, 20)
    benchmark.extra_info["cell_steps_per_s"] = result.cell_steps_per_s
