"""Property tests (hypothesis): random shapes, seeds, fire rates and states."""

import numpy as np
from helpers import TOLERANCES, assert_close, random_state
from hypothesis import given, settings
from hypothesis import strategies as st

import fastca

WEIGHTS = fastca.NCAWeights.random(seed=4, scale=0.1)

shapes = st.tuples(st.integers(1, 3), st.integers(1, 20), st.integers(1, 20))


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**64 - 1), step=st.integers(0, 10**6),
       fire_rate=st.floats(0, 1), alive=st.floats(0, 1), state_seed=st.integers(0, 1000))
def test_one_step_backends_agree_and_invariants_hold(shape, seed, step, fire_rate, alive, state_seed):
    state = random_state(shape, seed=state_seed, alive_fraction=alive)
    kw = dict(seed=seed, start_step=step, fire_rate=fire_rate, input="state")
    cpu = fastca.simulate(WEIGHTS, state, 1, backend="numba-cpu", **kw).state
    ref = fastca.simulate(WEIGHTS, state, 1, backend="torch", **kw).state
    assert_close(cpu, ref, TOLERANCES["one_step"], f"{shape} seed {seed}")
    fired = fastca.rng.fire_mask(seed, step, state[..., 0] > np.float32(0.1), fire_rate)
    np.testing.assert_array_equal(cpu[~fired], state[~fired])  # dead and resting cells untouched
    np.testing.assert_array_equal(cpu[..., 0], state[..., 0])  # gray never changes


@settings(max_examples=20, deadline=None)
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 12)), seed=st.integers(0, 2**32))
def test_mutate_keeps_states_only_on_the_new_digit(shape, seed):
    rng = np.random.default_rng(seed)
    state = random_state((1, *shape), seed=seed % 1000)[0]
    new = rng.integers(0, 256, shape).astype(np.uint8)
    out = fastca.mutate(state, new)
    alive = new / np.float32(255) > np.float32(0.1)
    np.testing.assert_array_equal(out[alive][:, 1:], state[alive][:, 1:])
    assert not out[~alive][:, 1:].any()
