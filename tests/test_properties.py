"""Invariants of the step on every backend: what must never change, determinism, threads."""

import numpy as np
import pytest
from helpers import random_state

import fastca
from benchmarks import registry

BACKENDS = registry.host_backends()


@pytest.mark.parametrize("backend", BACKENDS)
def test_dead_resting_and_gray_never_change(random_weights, backend):
    state = random_state((2, 23, 29), seed=4)
    out = fastca.simulate(random_weights, state, 1, backend=backend, seed=3, input="state").state
    alive = state[..., 0] > np.float32(0.1)
    fired = fastca.rng.fire_mask(3, 0, alive, 0.5)
    np.testing.assert_array_equal(out[..., 0], state[..., 0])
    np.testing.assert_array_equal(out[~fired], state[~fired])  # dead and resting cells
    assert np.all(np.any(out[fired] != state[fired], axis=-1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_steps_keep_dead_cells_and_gray(model, digits, backend):
    images = digits[0][:4]
    res = fastca.simulate(model, images, 20, backend=backend, seed=1)
    gray = images.astype(np.float32) / 255
    np.testing.assert_array_equal(res.state[..., 0], gray)
    dead = gray <= np.float32(0.1)
    assert np.all(res.state[dead][:, 1:] == 0)
    assert np.any(res.state[~dead][:, 1:] != 0)


def test_zero_output_layer_is_identity(random_weights):
    w = random_weights.replace(w3=np.zeros((80, 19)), b3=np.zeros(19))
    state = random_state((1, 16, 16), seed=2)
    for backend in BACKENDS:
        out = fastca.simulate(w, state, 3, backend=backend, noise=0, input="state").state
        np.testing.assert_array_equal(out, state)


def test_fire_rate_zero_and_one(random_weights):
    state = random_state((1, 12, 12), seed=8)
    alive = state[..., 0] > np.float32(0.1)
    out0 = fastca.simulate(random_weights, state, 2, fire_rate=0.0, input="state").state
    np.testing.assert_array_equal(out0, state)
    out1 = fastca.simulate(random_weights, state, 1, fire_rate=1.0, input="state").state
    assert np.all(np.any(out1[alive] != state[alive], axis=-1))


def test_same_seed_identical_across_threads(model, digits):
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads")
    images, labels = digits[0][:6], digits[1][:6]
    one = fastca.simulate(model, images, 30, seed=9, threads=1, labels=labels)
    two = fastca.simulate(model, images, 30, seed=9, threads=2, labels=labels)
    np.testing.assert_array_equal(one.state, two.state)
    np.testing.assert_array_equal(one.accuracy, two.accuracy)
    other = fastca.simulate(model, images, 30, seed=10, threads=2)
    assert np.any(other.state != two.state)


def test_run_split_in_two_equals_one_run(model, digits):
    """start_step continues the random stream: 10 + 10 steps == 20 steps."""
    images = digits[0][:3]
    whole = fastca.simulate(model, images, 20, seed=4).state
    half = fastca.simulate(model, images, 10, seed=4).state
    rest = fastca.simulate(model, half, 10, seed=4, start_step=10).state
    np.testing.assert_array_equal(whole, rest)


def test_mutate_semantics():
    state = random_state((2, 8, 8), seed=1)
    new = np.zeros((2, 8, 8), np.uint8)
    new[:, 2:6, 2:6] = 200
    out = fastca.mutate(state, new)
    np.testing.assert_array_equal(out[..., 0], new / np.float32(255))
    inside = new > 25.5
    np.testing.assert_array_equal(out[inside][:, 1:], state[inside][:, 1:])
    assert np.all(out[~inside][:, 1:] == 0)
    assert out is not state and np.all(state[..., 0] == random_state((2, 8, 8), seed=1)[..., 0])
