"""Numba CPU kernel vs the torch reference: one step over a shape matrix, and rollouts."""

import numpy as np
import pytest
from helpers import TOLERANCES, assert_close, random_state

import fastca

SHAPES = [(1, 1), (1, 7), (3, 3), (28, 28), (31, 45)]


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("hw", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
@pytest.mark.parametrize("noise", [0.0, 0.02])
def test_one_step_matches_torch(random_weights, batch, hw, noise):
    state = random_state((batch, *hw), seed=batch * 100 + hw[0] * 7 + hw[1])
    kwargs = dict(seed=7, start_step=3, noise=noise, input="state")
    ref = fastca.simulate(random_weights, state, 1, backend="torch", **kwargs).state
    out = fastca.simulate(random_weights, state, 1, backend="numba-cpu", **kwargs).state
    assert_close(out, ref, TOLERANCES["one_step"], f"numba-cpu vs torch {batch}x{hw}")
    changed = np.any(ref != state, axis=-1)
    if state[..., 0].max() > 0.1 and batch * hw[0] * hw[1] > 9:
        assert changed.any(), "the step changed nothing: the comparison would be vacuous"


def test_fire_masks_identical(random_weights):
    """The cells each backend updates are exactly the shared generator's mask."""
    state = random_state((2, 31, 45), seed=3)
    for backend in ("torch", "numba-cpu"):
        out = fastca.simulate(random_weights, state, 1, backend=backend, seed=11, start_step=5, input="state").state
        updated = np.any(out != state, axis=-1)
        expected = fastca.rng.fire_mask(11, 5, state[..., 0] > np.float32(0.1), 0.5)
        np.testing.assert_array_equal(updated, expected, err_msg=backend)


def test_rollout_labels_agree(model, digits):
    images, labels = digits
    images, labels = images[:32], labels[:32]
    res = {b: fastca.simulate(model, images, 50, backend=b, seed=5, labels=labels) for b in ("torch", "numba-cpu")}
    alive = res["torch"].alive
    np.testing.assert_array_equal(alive, res["numba-cpu"].alive)
    same = (res["torch"].labels == res["numba-cpu"].labels)[alive].mean() * 100
    assert same >= TOLERANCES["rollout_label_agreement"], f"only {same:.3f}% of alive cell labels agree"
    assert abs(res["torch"].accuracy[-1] - res["numba-cpu"].accuracy[-1]) < 0.5


def test_noise_is_bit_identical_to_torch(random_weights):
    """With a zero output layer the update is the noise alone: the CPU kernel's noise equals
    the shared generator's (used by torch) bit for bit."""
    w = random_weights.replace(w3=np.zeros((80, 19)), b3=np.zeros(19))
    state = random_state((2, 31, 45), seed=3)
    kw = dict(seed=5, start_step=9, noise=0.02, input="state")
    ref = fastca.simulate(w, state, 1, backend="torch", **kw).state
    out = fastca.simulate(w, state, 1, backend="numba-cpu", **kw).state
    assert np.any(ref != state)
    np.testing.assert_array_equal(out, ref)
