"""Test helpers: the tolerance table, seeded test states, and paths to ../shared."""

import os
from pathlib import Path

import numpy as np
import pytest

import fastca

# One table for every numeric comparison between backends (float32 storage and
# accumulation; sums of up to 180 products of O(1) values, then 80, then 80).
TOLERANCES = {
    "one_step": dict(rtol=1e-5, atol=1e-5),  # torch vs numba-cpu after one step
    "rollout_label_agreement": 99.9,  # % of alive cells with equal labels after 50 steps
    "distill_accuracy_gap": 0.5,  # accuracy points between backends, same seed and masks
}

SHARED = Path(os.environ.get("FASTCA_SHARED", Path(__file__).resolve().parents[2] / "shared"))
MNIST_DIR = Path(os.environ.get("FASTCA_MNIST_DIR", SHARED / "data" / "mnist"))
DISTILL_JSON = SHARED / "reference" / "distill_selforg_mnist_model.json"

needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists(), reason="MNIST files (../shared) not available"
)
needs_distill = pytest.mark.skipif(not DISTILL_JSON.exists(), reason="published Distill model (../shared) not available")


def random_state(shape, seed=0, alive_fraction=0.6):
    """A (B, H, W, 20) float32 state with gray values far from the alive threshold.

    Gray is 0 (dead) or in [0.3, 1] (alive); hidden and class channels are N(0, 0.5)
    on alive cells and 0 on dead cells, as a running automaton keeps them.
    """
    rng = np.random.default_rng(seed)
    b, h, w = shape
    alive = rng.random((b, h, w)) < alive_fraction
    state = np.zeros((b, h, w, fastca.spec.CHANNELS), np.float32)
    state[..., 0] = np.where(alive, rng.uniform(0.3, 1.0, (b, h, w)), 0.0)
    state[..., 1:] = rng.normal(0, 0.5, (b, h, w, fastca.spec.MUTABLE)) * alive[..., None]
    return state


def assert_close(actual, expected, tol, what=""):
    """np.testing-style closeness check that reports the worst element."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    err = np.abs(actual - expected) - tol["rtol"] * np.abs(expected)
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err[worst] <= tol["atol"], (
        f"{what}: worst element {worst}: {actual[worst]!r} vs {expected[worst]!r} "
        f"(|diff| {abs(actual[worst] - expected[worst]):.3g}, tol {tol})"
    )
