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


def tricky_state(shape, seed=0):
    """A (B, H, W, 20) float32 state that exposes wrong alive tests and dead-cell reads.

    Like :func:`random_state`, but dead cells hold non-zero channels (their neighbours
    must still read them), some gray values lie in (0, 0.1], and some cells sit exactly at
    float32(0.1) (dead) or one float32 step above it (alive).
    """
    rng = np.random.default_rng(seed)
    state = random_state(shape, seed)
    dead = state[..., 0] == 0
    state[..., 1:] += (rng.normal(0, 0.5, state[..., 1:].shape) * dead[..., None]).astype(np.float32)
    pick = rng.random(shape)
    thr = np.float32(fastca.spec.ALIVE_THRESHOLD)
    state[..., 0] = np.where(dead & (pick < 0.3), rng.uniform(0.01, 0.1, shape), state[..., 0])
    state[..., 0] = np.where(pick > 0.9, thr, state[..., 0])
    state[..., 0] = np.where((pick > 0.8) & (pick <= 0.9), np.nextafter(thr, np.float32(1)), state[..., 0])
    return state


def oracle_step(weights, state, seed, step, fire_rate=fastca.spec.FIRE_RATE, noise_std=fastca.spec.NOISE_STD,
                alive_threshold=fastca.spec.ALIVE_THRESHOLD):
    """One step in float64 with NumPy, written from the equations in ``fastca/spec.py``.

    An oracle independent of the torch module: perception as nine shifted products with
    zero padding, the MLP, the shared generator's fire mask and noise (float32 draws),
    and the residual add on alive, firing cells. state: (B, H, W, 20); returns float64.
    """
    s = np.asarray(state, np.float64)
    n_b, n_h, n_w, n_c = s.shape
    pad = np.zeros((n_b, n_h + 2, n_w + 2, n_c))
    pad[:, 1:-1, 1:-1] = s
    w = {k: np.asarray(getattr(weights, k), np.float64) for k in ("w1", "b1", "w2", "b2", "w3", "b3")}
    p = np.broadcast_to(w["b1"], (n_b, n_h, n_w, w["b1"].size)).copy()
    for i in range(3):
        for j in range(3):
            p += pad[:, i : i + n_h, j : j + n_w] @ w["w1"][i, j]
    h = np.maximum(np.maximum(p, 0) @ w["w2"] + w["b2"], 0)
    ds = h @ w["w3"] + w["b3"]
    alive = np.asarray(state[..., 0], np.float32) > np.float32(alive_threshold)
    mask = fastca.rng.fire_mask(seed, step, alive, fire_rate)
    b, y, x = np.nonzero(mask)
    out = s.copy()
    noise = fastca.rng.noise_at(seed, step, b, y, x, noise_std, ds.shape[-1]) if noise_std > 0 else 0.0
    out[b, y, x, 1:] += ds[b, y, x] + noise
    return out
