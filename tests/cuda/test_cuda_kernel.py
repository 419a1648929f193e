"""numba-cuda against the torch reference and the CPU kernel (simulator: tiny grids)."""

import os

import numpy as np
import pytest
from helpers import TOLERANCES, assert_close, random_state

import fastca
from fastca._compat import numba_cuda
from fastca.kernels import cuda as kern

cuda = numba_cuda()

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
# Shapes that are not multiples of the (TY, TX) block, 1xN, and batch > 1; kept tiny in the
# simulator, which runs every thread in Python.
SHAPES = [(1, 1, 1), (1, 1, 9), (2, 5, 7), (1, 18, 11)] if SIMULATED else [(1, 1, 1), (1, 1, 9), (3, 37, 45), (2, 130, 70)]


def test_block_constants():
    assert kern.TX * kern.TY <= 1024
    shared_bytes = 4 * ((kern.TY + 2) * (kern.TX + 2) * 20 + (kern.TY + 2) * 20 + 80 * 80 + 80 * 19 + 80 + 19)
    assert shared_bytes <= 48 * 1024


@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_one_step_matches_torch_and_cpu(random_weights, shape):
    state = random_state(shape, seed=sum(shape))
    kwargs = dict(seed=3, start_step=2, noise=0.02, input="state")
    ref = fastca.simulate(random_weights, state, 1, backend="torch", **kwargs).state
    cpu = fastca.simulate(random_weights, state, 1, backend="numba-cpu", **kwargs).state
    gpu = fastca.simulate(random_weights, state, 1, backend="numba-cuda", **kwargs).state
    assert_close(gpu, ref, TOLERANCES["one_step"], f"numba-cuda vs torch {shape}")
    assert_close(gpu, cpu, TOLERANCES["one_step"], f"numba-cuda vs numba-cpu {shape}")
    # identical fire masks: exactly the same cells changed
    np.testing.assert_array_equal(np.any(gpu != state, -1), np.any(cpu != state, -1))


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
    assert fastca.backends._is_device_array(dev.state) and fastca.backends._is_device_array(dev.labels)
    np.testing.assert_array_equal(dev.state.copy_to_host(), host.state)
    np.testing.assert_array_equal(d_state.copy_to_host(), state)  # the input is not modified
    gray = (state[0, ..., 0] * 255).astype(np.uint8)
    from_gray = fastca.simulate(random_weights, cuda.to_device(gray), 0, backend="numba-cuda")
    np.testing.assert_allclose(from_gray.state[..., 0], gray / np.float32(255), rtol=1e-6)
    with pytest.raises(ValueError, match="device state must be float32"):
        fastca.simulate(random_weights, cuda.to_device(state.astype(np.float64)), 1, backend="numba-cuda",
                        input="state")


def test_host_backends_refuse_device_output(random_weights):
    with pytest.raises(ValueError, match="output must be 'host'"):
        fastca.simulate(random_weights, np.zeros((3, 3), np.uint8), 1, backend="numba-cpu", output="device")
