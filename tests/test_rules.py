"""The rules of spec.py at their edges: the fire rule at u == fire_rate, the alive rule at
exactly 0.1, and the metrics counted by hand on a state whose labels are known."""

import numpy as np
import pytest
from helpers import random_state

import fastca
from benchmarks import registry
from fastca import metrics, spec

HOST_BACKENDS = registry.host_backends()


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_a_cell_whose_draw_equals_the_fire_rate_fires(random_weights, backend):
    state = random_state((1, 16, 16), seed=2, alive_fraction=1.0)
    u = fastca.rng.uniform(7, 3, (1, 16, 16))
    rate = float(u[0, 5, 9])  # exactly representable: the rule is u <= fire_rate
    out = fastca.simulate(random_weights, state, 1, backend=backend, seed=7, start_step=3, fire_rate=rate,
                          input="state").state
    updated = np.any(out != state, -1)
    np.testing.assert_array_equal(updated, u <= np.float32(rate))
    assert updated[0, 5, 9]


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_alive_rule_at_the_threshold(random_weights, backend):
    state = random_state((1, 4, 4), seed=1, alive_fraction=1.0)
    thr = np.float32(spec.ALIVE_THRESHOLD)
    state[0, 1, 1, 0] = thr  # exactly 0.1: dead
    state[0, 2, 2, 0] = np.nextafter(thr, np.float32(1))  # one step above: alive
    out = fastca.simulate(random_weights, state, 1, backend=backend, fire_rate=1.0, input="state").state
    assert np.all(out[0, 1, 1] == state[0, 1, 1]) and np.any(out[0, 2, 2] != state[0, 2, 2])


def test_metrics_counted_by_hand():
    state = np.zeros((2, 1, 4, spec.CHANNELS), np.float32)
    state[:, 0, :, 0] = [[0.5, 0.5, 0.05, 0.5], [0.5, 0.0, 0.5, 0.5]]  # one dead cell per sample
    state[0, 0, :, spec.CLASS_START + 3] = 1.0  # sample 0: every cell says 3 (the dead one too)
    state[1, 0, 0, spec.CLASS_START + 7] = 1.0  # sample 1: 7, (dead), 2, undecided
    state[1, 0, 1, spec.CLASS_START + 7] = 1.0
    state[1, 0, 2, spec.CLASS_START + 2] = 1.0
    state[1, 0, 3, spec.CLASS_START:] = -1.0
    targets = np.array([[[3, 3, 3, -1]], [[7, 7, 7, 7]]], np.int16)
    c = metrics.counts(state, targets)
    # alive, correct, per-label 0..9, targeted
    np.testing.assert_array_equal(c[0], [3, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 2])
    np.testing.assert_array_equal(c[1], [3, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 3])
    acc, agr = metrics.from_counts(c)
    assert acc == pytest.approx(100 * 3 / 5) and agr == 50.0
    np.testing.assert_array_equal(metrics.label_map(state), [[[3, 3, -1, 3]], [[7, -1, 2, 0]]])
