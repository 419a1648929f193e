"""float16 state storage (numba-cpu): conversions, step semantics, metrics, errors."""

import numba
import numpy as np
import pytest
from helpers import random_state

import fastca
from fastca import metrics
from fastca.kernels.storage import load, store


@numba.njit
def _to_half(x, out):
    for i in range(x.shape[0]):
        out[i] = store(x[i], out[i])


@numba.njit
def _from_half(h, out):
    for i in range(h.shape[0]):
        out[i] = load(h[i])


def test_conversions_match_numpy_bit_for_bit():
    rng = np.random.default_rng(0)
    specials = [0.0, -0.0, 1e-8, -3e-8, 6.1e-5, 5.96e-8, 2.98e-8, 65504.0, 65520.0, 1e6, -1e6, 0.1, 1 / 3]
    x = np.concatenate([rng.standard_normal(100_000) * 10, rng.uniform(-1e-4, 1e-4, 10_000), specials]).astype(np.float32)
    bits = np.zeros(x.shape, np.uint16)
    _to_half(x, bits)
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16)
    np.testing.assert_array_equal(bits, expected.view(np.uint16))  # round to nearest even, overflow to inf
    back = np.zeros(x.shape, np.float32)
    _from_half(bits, back)
    np.testing.assert_array_equal(back, expected.astype(np.float32))


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 9, 70), (3, 31, 45)])
def test_float16_step_is_float32_step_rounded(random_weights, shape):
    """Each float16 step equals a float32 step from the same (float16) values, rounded once."""
    state16 = random_state(shape, seed=sum(shape)).astype(np.float16)
    kw = dict(seed=4, noise=0.02, input="state", backend="numba-cpu")
    run16 = fastca.simulate(random_weights, state16, 3, storage="float16", start_step=5, **kw)
    ref = state16
    for t in range(5, 8):
        ref = fastca.simulate(random_weights, ref.astype(np.float32), 1, start_step=t, **kw).state.astype(np.float16)
    assert run16.state.dtype == np.float16
    np.testing.assert_array_equal(run16.state.view(np.uint16), ref.view(np.uint16))
    np.testing.assert_array_equal(run16.labels, metrics.label_map(ref.astype(np.float32)))


def test_float16_storage_close_to_float32_on_digits(model, digits):
    images, labels = digits[0][:48], digits[1][:48]
    r32 = fastca.simulate(model, images, 60, labels=labels, backend="numba-cpu")
    r16 = fastca.simulate(model, images, 60, labels=labels, backend="numba-cpu", storage="float16")
    assert r16.state.dtype == np.float16 and r16.state.nbytes * 2 == r32.state.nbytes
    assert abs(r16.accuracy[-1] - r32.accuracy[-1]) < 2.0
    alive = r32.labels >= 0
    assert np.mean(r16.labels[alive] == r32.labels[alive]) > 0.97


def test_float16_metrics_read_the_halves():
    state = random_state((2, 17, 23), seed=9)
    half = state.astype(np.float16)
    targets = np.random.default_rng(1).integers(0, 10, (2, 17, 23)).astype(np.int16)
    assert metrics.step_metrics(half, targets) == metrics.step_metrics(half.astype(np.float32), targets)
    np.testing.assert_array_equal(metrics.label_map(half), metrics.label_map(half.astype(np.float32)))


def test_storage_errors(model):
    gray = np.zeros((5, 5), np.uint8)
    with pytest.raises(ValueError, match="storage must be one of"):
        fastca.simulate(model, gray, 1, storage="bfloat16")
    with pytest.raises(ValueError, match="not supported by backend .torch."):
        fastca.simulate(model, gray, 1, storage="float16", backend="torch")
    big = np.zeros((4, 4, 20), np.float32)
    big[0, 0, 5] = 1e6
    with pytest.raises(ValueError, match="float16 range"):
        fastca.simulate(model, big, 1, storage="float16", backend="numba-cpu")
