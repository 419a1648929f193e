"""simulate()'s input forms, result shapes and metrics, and its errors for bad input."""

import numpy as np
import pytest
from helpers import random_state

import fastca


def test_shapes_for_each_input_form(model, digits):
    img = digits[0][0]
    r = fastca.simulate(model, img, 2)
    assert r.state.shape == (28, 28, 20) and r.state.dtype == np.float32
    assert r.labels.shape == (28, 28) and r.labels.dtype == np.int8
    rb = fastca.simulate(model, digits[0][:3], 2)
    assert rb.state.shape == (3, 28, 28, 20) and rb.labels.shape == (3, 28, 28)
    rs = fastca.simulate(model, rb.state, 1)
    assert rs.state.shape == (3, 28, 28, 20)
    rf = fastca.simulate(model, img / 255.0, 0)
    np.testing.assert_array_equal(rf.state[..., 0], (img / 255.0).astype(np.float32))
    assert not rf.state[..., 1:].any() and rf.steps == 0


def test_does_not_modify_input(model, digits):
    state = fastca.initial_state(digits[0][:2])
    before = state.copy()
    fastca.simulate(model, state, 3)
    np.testing.assert_array_equal(state, before)


def test_labels_and_metrics(model, digits):
    images, labels = digits[0][:16], digits[1][:16]
    r = fastca.simulate(model, images, 40, labels=labels, seed=2)
    assert r.accuracy.shape == r.agreement.shape == (40,)
    alive = images > 25
    np.testing.assert_array_equal(r.alive, alive)
    assert np.all(r.labels[~alive] == -1)
    expected = (r.labels == labels[:, None, None])[alive].mean() * 100
    assert r.accuracy[-1] == pytest.approx(expected)
    agree = [len(np.unique(r.labels[i][alive[i]])) == 1 for i in range(16)]
    # agreement also excludes cells whose class channels are all negative
    assert r.agreement[-1] <= np.mean(agree) * 100
    assert r.accuracy[-1] > 60  # the published model classifies most cells after 40 steps
    # per-cell label maps give the same accuracy
    per_cell = np.broadcast_to(labels[:, None, None], images.shape).astype(np.int64)
    r2 = fastca.simulate(model, images, 40, labels=per_cell, seed=2)
    np.testing.assert_array_equal(r.accuracy, r2.accuracy)


def test_agreement_counts_all_negative_cells_as_disagreeing():
    state = np.zeros((2, 1, 2, 20), np.float32)
    state[..., 0] = 1.0
    state[..., 13] = 1.0  # every cell says 3
    state[1, 0, 1, 10:] = -1.0  # one alive cell with all-negative classes
    acc, agr = fastca.step_metrics(state, np.full((2, 1, 2), 3, np.int16))
    assert acc == 75.0  # its label is argmax = class 0, wrong
    assert agr == 50.0


@pytest.mark.parametrize(
    "kwargs, exc, fragment",
    [
        (dict(steps=-1), ValueError, "steps must be >= 0"),
        (dict(steps=2.5), TypeError, "steps must be an int"),
        (dict(backend="gpu-magic"), ValueError, "unknown backend 'gpu-magic'"),
        (dict(fire_rate=1.5), ValueError, "fire_rate must be in [0, 1]"),
        (dict(noise=-0.1), ValueError, "noise std"),
        (dict(seed=-3), ValueError, "seed must be in"),
        (dict(labels=np.array([11])), ValueError, "labels must be digits"),
        (dict(labels=np.zeros((2, 2), int)), ValueError, "labels must have shape"),
        (dict(threads=0), ValueError, "threads must be"),
    ],
)
def test_bad_arguments(model, kwargs, exc, fragment):
    args = dict(steps=1)
    args.update(kwargs)
    steps = args.pop("steps")
    with pytest.raises(exc, match=None) as info:
        fastca.simulate(model, np.zeros((1, 5, 5), np.uint8), steps, **args)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "x, exc, fragment",
    [
        (np.zeros(5, np.uint8), ValueError, "must be (H, W) or (B, H, W)"),
        (np.zeros((2, 2, 3, 4, 5), np.float32), ValueError, "must be"),
        (np.zeros((0, 5), np.uint8), ValueError, "zero-length axis"),
        (np.zeros((4, 4), np.int64), TypeError, "must be uint8 or float"),
        (np.full((4, 4), 2.0), ValueError, "must be in [0, 1]"),
        (np.full((4, 4), np.nan), ValueError, "NaN"),
        (np.full((1, 4, 4, 20), np.inf, np.float32), ValueError, "NaN or inf"),
        (np.zeros((1, 4, 4, 7), np.float32), ValueError, "state must be"),
    ],
)
def test_bad_input(model, x, exc, fragment):
    with pytest.raises(exc) as info:
        fastca.simulate(model, x, 1)
    assert fragment in str(info.value)


def test_bad_model():
    with pytest.raises(TypeError, match="model must be NCAWeights"):
        fastca.simulate({"w1": 0}, np.zeros((3, 3), np.uint8), 1)


def test_mutate_shape_mismatch():
    with pytest.raises(ValueError, match="new_gray must have shape"):
        fastca.mutate(random_state((1, 4, 4)), np.zeros((1, 5, 5), np.uint8))


def test_progress_bar_and_callback(model, digits, capsys):
    seen = []
    fastca.simulate(model, digits[0][0], 3, progress=True, callback=lambda t, s: seen.append((t, s.shape)))
    assert seen == [(1, (1, 28, 28, 20)), (2, (1, 28, 28, 20)), (3, (1, 28, 28, 20))]
    assert "3/3" in capsys.readouterr().err


def test_available_backends():
    assert set(fastca.available_backends()) >= {"numba-cpu", "torch"}


def _stroke_whole_canvas(h, w, points, width):
    """The stroke predicate evaluated on every cell of the canvas (what stroke_mask must equal)."""
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    canvas = np.zeros((h, w), bool)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    pts = np.vstack([pts, pts]) if len(pts) == 1 else pts
    for (y0, x0), (y1, x1) in zip(pts[:-1], pts[1:]):
        dy, dx = y1 - y0, x1 - x0
        t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-9), 0, 1)
        canvas |= (yy - (y0 + t * dy)) ** 2 + (xx - (x0 + t * dx)) ** 2 <= (width / 2) ** 2
    return canvas


def test_stroke_mask_visits_only_each_segments_box_and_equals_the_whole_canvas_predicate():
    from fastca.simulation import stroke_mask

    rng = np.random.default_rng(0)
    for _ in range(400):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        pts = rng.uniform(-6, 36, (int(rng.integers(1, 5)), 2))
        pts = np.round(pts) if rng.random() < 0.3 else pts  # integer points put cells exactly at the edge
        width = float(rng.choice([0.5, 1, 2, 3, 4.5, 8]))
        np.testing.assert_array_equal(stroke_mask(h, w, pts, width), _stroke_whole_canvas(h, w, pts, width),
                                      err_msg=f"{h}x{w} {pts.tolist()} width {width}")
