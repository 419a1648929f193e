"""numba-cuda against the float64 oracle, the torch reference and the CPU kernel.

Runs under the CUDA simulator (tiny grids: every thread is a Python thread) and on a real
GPU. ``seg_rows`` is forced small in some cases so that grids of a few rows already have
several segments (blocks that share a row boundary) and widths above 32 several strips.
"""

import os

import numpy as np
import pytest
from helpers import TOLERANCES, assert_close, oracle_step, random_state, tricky_state

import fastca
from fastca._compat import numba_cuda
from fastca.kernels import cuda as kern

cuda = numba_cuda()

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
# (B, H, W, seg_rows): 1x1, 1xN, a batch, several segments and strips (W > 32), a last
# strip of one column, segments that are not a multiple of the sub-tile height.
CASES = [(1, 1, 1, None), (1, 1, 9, None), (2, 5, 7, None), (1, 9, 35, 4), (1, 7, 33, 6)]
if not SIMULATED:
    CASES += [(3, 37, 45, None), (2, 130, 70, 16), (1, 65, 129, 32), (2, 64, 96, 64)]


def run_cuda(weights, state, steps=1, seg_rows=None, layout=None, input="auto", **kwargs):
    """numba-cuda with a forced segment height / thread layout: the final host state.

    Under the simulator, blocks run one at a time in reverse order (the simulator would run
    them in index order, hiding a block that reads cells another block already wrote).
    """
    options = dict(seg_rows=seg_rows, layout=layout, block_order="reverse" if SIMULATED else "normal")
    sim = fastca.Simulation(weights, state, backend="numba-cuda", input=input, options=options, **kwargs)
    sim._runner.poison()  # halo slots a block reads without their being saved would be NaN
    sim.run(steps)
    return sim.state()


def test_shared_memory_fits_without_opt_in():
    assert kern.SHARED_BYTES <= 48 * 1024
    assert kern.M % 8 == 0 and all(kern.M % ncg == 0 and kern.spec.HIDDEN % nog == 0
                                   for ncg, nog in kern.LAYOUTS.values())


@pytest.mark.parametrize("case", CASES, ids=["x".join(map(str, c)) for c in CASES])
def test_one_step_matches_oracle_torch_and_cpu(random_weights, case):
    *shape, seg_rows = case
    state = tricky_state(tuple(shape), seed=sum(shape))
    kwargs = dict(seed=3, start_step=2, noise=0.02, input="state")
    gpu = run_cuda(random_weights, state, seg_rows=seg_rows, **kwargs)
    oracle = oracle_step(random_weights, state, 3, 2, noise_std=0.02)
    ref = fastca.simulate(random_weights, state, 1, backend="torch", **kwargs).state
    cpu = fastca.simulate(random_weights, state, 1, backend="numba-cpu", **kwargs).state
    assert_close(gpu, oracle, TOLERANCES["one_step"], f"numba-cuda vs float64 oracle {case}")
    assert_close(gpu, ref, TOLERANCES["one_step"], f"numba-cuda vs torch {case}")
    assert_close(gpu, cpu, TOLERANCES["one_step"], f"numba-cuda vs numba-cpu {case}")
    # identical fire masks: exactly the same cells changed
    np.testing.assert_array_equal(np.any(gpu != state, -1), np.any(cpu != state, -1))


def test_every_cell_fires_overflows_chunks(random_weights):
    """All cells alive and firing: each sub-tile fills several MLP chunks in a row."""
    state = random_state((1, 6, 34), seed=4, alive_fraction=1.0)
    kw = dict(seed=1, noise=0.02, input="state", fire_rate=1.0)
    gpu = run_cuda(random_weights, state, **kw)
    assert np.all(np.any(gpu != state, -1)), "every cell must have been updated"
    assert_close(gpu, oracle_step(random_weights, state, 1, 0, 1.0, 0.02), TOLERANCES["one_step"], "all fire")


def test_live_dead_live_strips_and_segments(random_weights):
    """Blocks with no alive cell sit between live ones; their borders must still be read."""
    state = random_state((1, 12, 80), seed=6, alive_fraction=0.7)
    state[:, 4:8] = 0.0  # a dead segment (seg_rows=4)
    state[:, :, 32:64] = 0.0  # a dead strip
    state[:, 4:8, 32:64, 5] = 0.7  # dead cells with non-zero channels, seen by live neighbours
    kw = dict(seed=2, noise=0.0, input="state")
    gpu = run_cuda(random_weights, state, seg_rows=4, **kw)
    assert_close(gpu, oracle_step(random_weights, state, 2, 0, noise_std=0.0), TOLERANCES["one_step"], "live|dead|live")


def test_results_do_not_depend_on_blocking(random_weights):
    """Segment height and thread layout change which block and slot a cell falls in, not its bits."""
    state = random_state((1, 11, 40), seed=8)
    runs = [run_cuda(random_weights, state, 2, seg_rows=s, layout=lay, seed=4, input="state")
            for s, lay in ((4, "64"), (16, "64"), (8, "128"))]
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])


def test_float16_storage_matches_cpu(random_weights):
    state = random_state((2, 7, 36), seed=9)
    kw = dict(seed=5, noise=0.02, input="state", storage="float16")
    gpu = run_cuda(random_weights, state, 2, seg_rows=4, **kw)
    cpu = fastca.simulate(random_weights, state, 2, backend="numba-cpu", **kw).state
    assert gpu.dtype == np.float16 and cpu.dtype == np.float16
    # float32 arithmetic may differ in the last bit (FMA), so a rounded result by one float16 step
    np.testing.assert_allclose(gpu.astype(np.float32), cpu.astype(np.float32), rtol=2e-3, atol=1e-4)
    assert np.mean(gpu == cpu) > 0.99


def test_two_steps_in_place_and_metrics(model, digits):
    images, labels = digits[0][:2, 4:20, 6:22], digits[1][:2]  # crops keep the simulator fast
    cpu = fastca.simulate(model, images, 2, backend="numba-cpu", seed=1, labels=labels)
    gpu = fastca.simulate(model, images, 2, backend="numba-cuda", seed=1, labels=labels)
    assert gpu.backend == "numba-cuda"
    assert_close(gpu.state, cpu.state, TOLERANCES["one_step"], "2-step rollout")
    np.testing.assert_array_equal(gpu.labels, cpu.labels)
    np.testing.assert_allclose(gpu.accuracy, cpu.accuracy)
    np.testing.assert_allclose(gpu.agreement, cpu.agreement)


def test_device_input_and_output(random_weights):
    state = random_state((1, 6, 9), seed=5)
    host = fastca.simulate(random_weights, state, 1, backend="numba-cuda", seed=2, input="state")
    d_state = cuda.to_device(state)
    dev = fastca.simulate(random_weights, d_state, 1, backend="numba-cuda", seed=2, output="device")
    from fastca.backends.numba_cuda import is_device_array

    assert is_device_array(dev.state) and is_device_array(dev.labels)
    np.testing.assert_array_equal(dev.state.copy_to_host(), host.state)
    np.testing.assert_array_equal(d_state.copy_to_host(), state)  # the input is not modified
    gray = (state[0, ..., 0] * 255).astype(np.uint8)
    from_gray = fastca.simulate(random_weights, cuda.to_device(gray), 0, backend="numba-cuda")
    host_gray = fastca.simulate(random_weights, gray, 0, backend="numba-cpu")
    np.testing.assert_array_equal(from_gray.state, host_gray.state)  # the same uint8 image, the same state
    with pytest.raises(ValueError, match="device state must be float32"):
        fastca.simulate(random_weights, cuda.to_device(state.astype(np.float64)), 1, backend="numba-cuda",
                        input="state")


def test_device_input_is_checked_on_the_device(random_weights):
    """Device input gets the checks host input gets: a finite state (after the cast to the storage),
    a float gray image in [0, 1]."""
    state = random_state((2, 4, 5), seed=6)
    for value in (np.nan, np.inf, -np.inf):
        bad = state.copy()
        bad[1, 3, 4, 19] = value  # the last element: a check that stops one short misses it
        with pytest.raises(ValueError, match="device state contains NaN or inf"):
            fastca.simulate(random_weights, cuda.to_device(bad), 1, backend="numba-cuda", input="state")
    big = state.copy()
    big[0, 0, 0, 5] = 1e5  # finite in float32, inf once rounded to float16 on the device
    fastca.simulate(random_weights, cuda.to_device(big), 0, backend="numba-cuda", input="state")
    with pytest.raises(ValueError, match="float16 range"):
        fastca.simulate(random_weights, cuda.to_device(big), 0, backend="numba-cuda", input="state", storage="float16")
    gray = np.full((3, 4), 0.5, np.float32)
    for value in (1.5, -0.1, np.nan):
        gray[2, 3] = value
        with pytest.raises(ValueError, match=r"device gray input must lie in \[0, 1\]"):
            fastca.simulate(random_weights, cuda.to_device(gray), 0, backend="numba-cuda")
    gray[2, 3] = 1.0
    fastca.simulate(random_weights, cuda.to_device(gray), 0, backend="numba-cuda")


def test_host_backends_refuse_device_output(random_weights):
    with pytest.raises(ValueError, match="output must be one of"):
        fastca.simulate(random_weights, np.zeros((3, 3), np.uint8), 1, backend="numba-cpu", output="device")


def test_fire_rule_and_alive_rule_at_their_edges(random_weights):
    state = random_state((1, 5, 7), seed=2, alive_fraction=1.0)
    thr = np.float32(fastca.spec.ALIVE_THRESHOLD)
    state[0, 1, 1, 0] = thr  # exactly 0.1: dead
    state[0, 2, 2, 0] = np.nextafter(thr, np.float32(1))  # one step above: alive
    u = fastca.rng.uniform(7, 3, (1, 5, 7))
    rate = float(u[0, 3, 4])
    gpu = run_cuda(random_weights, state, seed=7, start_step=3, fire_rate=rate, input="state")
    expected = (u <= np.float32(rate)) & (state[..., 0] > thr)
    np.testing.assert_array_equal(np.any(gpu != state, -1), expected)
    assert expected[0, 3, 4]
