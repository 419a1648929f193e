"""Every registered host backend against the float64 NumPy oracle (tests/helpers.oracle_step).

Fresh random weights and states each run (the seed is printed on failure), scratch buffers
poisoned with NaN before the run (a kernel that reads a value nobody wrote cannot pass),
and shapes where kernels break: heights around the CPU band (64 rows), widths around the
CUDA strip (32 columns), a batch, 1 and 2 threads, float32 and float16 storage. The CUDA
backend runs the same comparisons in tests/cuda (simulator in CI, a real GPU when lent).
"""

import numpy as np
import pytest
from helpers import TOLERANCES, assert_close, oracle_step, tricky_state

import fastca
from benchmarks import registry

FRESH = int(np.random.SeedSequence().entropy % 2**31)
BACKENDS = registry.host_backends()
SHAPES = [(1, 63, 31), (2, 64, 33), (1, 65, 32), (1, 129, 65)]


def run(backend, weights, state, steps, threads=None, storage="float32", **kw):
    sim = fastca.Simulation(weights, state, backend=backend, input="state", threads=threads, storage=storage, **kw)
    if hasattr(sim._runner, "poison"):
        sim._runner.poison()
    sim.run(steps)
    return sim.state()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_one_step_matches_float64_oracle(backend, shape):
    weights = fastca.NCAWeights.random(seed=FRESH, scale=0.1)
    state = tricky_state(shape, seed=FRESH + sum(shape))
    out = run(backend, weights, state, 1, seed=FRESH % 997, start_step=3)
    ref = oracle_step(weights, state, FRESH % 997, 3)
    assert_close(out, ref, TOLERANCES["one_step"], f"{backend} {shape} (seed {FRESH})")
    assert np.any(out != state), "nothing changed: the comparison would be vacuous"


@pytest.mark.parametrize("threads", [1, 2])
def test_three_steps_match_oracle_and_threads_agree(threads):
    weights = fastca.NCAWeights.random(seed=FRESH + 1, scale=0.1)
    state = tricky_state((2, 65, 40), seed=FRESH)
    ref = state.astype(np.float64)
    for t in range(3):
        ref = oracle_step(weights, ref.astype(np.float32), 5, t)  # the oracle from each float32 state
    out = run("numba-cpu", weights, state, 3, threads=threads, seed=5)
    assert_close(out, ref, dict(rtol=3e-5, atol=3e-5), f"3 steps, {threads} threads (seed {FRESH})")
    other = run("numba-cpu", weights, state, 3, threads=3 - threads, seed=5)
    np.testing.assert_array_equal(out, other)


@pytest.mark.parametrize("backend", registry.host_backends("float16"))
def test_float16_storage_matches_oracle(backend):
    weights = fastca.NCAWeights.random(seed=FRESH + 2, scale=0.1)
    state = tricky_state((1, 64, 33), seed=FRESH).astype(np.float16).astype(np.float32)
    out = run(backend, weights, state, 1, storage="float16", seed=2)
    ref = oracle_step(weights, state, 2, 0)
    assert out.dtype == np.float16
    # one rounding to float16 of a float32 result: within half a float16 step (2**-11 relative)
    np.testing.assert_allclose(out.astype(np.float64), ref, rtol=2**-11 + 1e-5, atol=1e-6)
