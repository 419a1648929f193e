"""Every description of the registry (benchmarks/registry.py: fastca.model.KNOWN and any registered
since) on every host backend of fastca's registry, through the public API.

``fastca.Simulation`` runs each description on each host backend ("numba-cpu": a kernel
generated per description; "torch": the reference); one step is compared with the float64
oracle (:func:`fastca.model.step_float64`) fed the shared generator's fire draws and normals,
every backend with torch over a few steps, and numba-cpu with itself under options that must
not change a bit (band rows, threads, a piece of a grid run at its origin).
Then float16 storage, the alive rules and boundaries, the refusals, a description with
a readout (labels, counts, accuracy) and the generated kernel modules.

Compiling a description's kernel takes 15-30 s the first time (cached on disk after),
so the set of distinct descriptions is kept small: the registry's, the odd-middle description of
tests/test_descriptions_torch.py, one with a readout and one with unusual sizes.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_close

import fastca
from benchmarks import registry
from fastca import model, rng
from fastca.model import Alive, Conv3x3, Dense, Depthwise, ModelSpec, Readout
from fastca.nca import NCA

#: as in tests/test_descriptions_torch.py (same description, so the same compiled kernel): a residual
#: with channels on both sides and the static alive channel last
MIDDLE = ModelSpec(name="odd-middle", channels=7, perception=Conv3x3(9), layers=(Dense(3, activation="none"),),
                   residual=(2, 5), noise_std=0.01, alive=Alive("static", 6, 0.1))
#: a description with a readout (no known one but MNIST has one): 8 channels, classes 5..7
READOUT = ModelSpec(name="readout-8", channels=8, perception=Depthwise(("identity", "laplacian")),
                    layers=(Dense(12), Dense(7, activation="none")), residual=(1, 8), noise_std=0.0,
                    alive=Alive("static", 0, 0.1), readout=Readout(5, 3))
#: a description of sizes no kernel was written for (3 channels, 5 unbiased linear features, 9, 2)
FRESH = ModelSpec(name="fresh-3-5-9-2", channels=3, perception=Conv3x3(5, bias=False, activation="none"),
                  layers=(Dense(9), Dense(2, activation="none")), residual=(1, 3), fire_rate=0.6,
                  alive=Alive("static", 0, 0.1))

ALL = registry.descriptions() + (MIDDLE,)
IDS = [d.name for d in ALL]
CHECKED = ALL + (READOUT, FRESH)  # every description the oracle test runs
HOSTS = registry.host_backends()
BY_NAME = {d.name: d for d in CHECKED}
ZERO = [d for d in ALL if d.boundary == "zero"]  # a piece of a grid runs as the whole only without wrap-around

ONE_STEP = dict(rtol=1e-5, atol=1e-5)  # float32 backend vs float64 oracle after one step
ROLLOUT = dict(rtol=1e-4, atol=1e-4)  # numba-cpu vs torch after 5 steps
HALF = dict(rtol=2e-3, atol=2e-3)  # float16 storage vs float32 after one step


@pytest.fixture(scope="module")
def ncas():
    """Random weights (std 0.2: visible updates after one step) for every description, by name."""
    return {d.name: NCA.random(d, seed=3, scale=0.2) for d in CHECKED}


@pytest.fixture(scope="module")
def calm():
    """Smaller weights (std 0.1) for multi-step runs, where the state must stay bounded."""
    return {d.name: NCA.random(d, seed=4, scale=0.1) for d in ALL}


def _state(d, seed, shape):
    """A random (B, H, W, C) float32 state with alive and dead cells under the description's rule.

    Every channel is N(0, 0.5), dead cells too (their neighbours read them). The alive
    channel (static, maxpool) is well above the threshold (2.5 x threshold up to 1), well
    below it (up to 0.3 x threshold) or 0, never near it, so float32 and float64 agree on
    who is alive. Under "maxpool" few cells are alive (most cells have no alive
    neighbour and die), alive cells are planted along the four edges of the grid (their
    max-pool crosses the edge) and, when the grid is large enough, a nonzero cell below the
    threshold in the middle of a dead 5x5 block of sample 0 (an isolated cell: it must die).
    """
    r = np.random.default_rng(seed)
    s = r.normal(0, 0.5, shape + (d.channels,)).astype(np.float32)
    if d.alive.rule == "none":
        return s
    thr, c = d.alive.threshold, d.alive.channel
    pick = r.random(shape)
    p_alive = 0.1 if d.alive.rule == "maxpool" else 0.5
    s[..., c] = np.where(pick < p_alive, r.uniform(2.5 * thr, 1.0, shape),
                         np.where(pick < p_alive + 0.2, r.uniform(0.0, 0.3 * thr, shape), 0.0))
    if d.alive.rule == "maxpool":
        s[:, 0, ::4, c] = 0.9
        s[:, -1, 1::5, c] = 0.9
        s[:, ::3, 0, c] = 0.9
        s[:, 2::4, -1, c] = 0.9
        if shape[1] >= 9 and shape[2] >= 9:
            s[0, 3:8, 4:9, c] = 0.0
            s[0, 5, 6, c] = 0.2 * thr  # nonzero, below the threshold, no alive neighbour
    return s


def _spec(d, fire_rate=None, noise=None):
    """The description a run computes: its own, with the run's fire rate and noise std."""
    return dataclasses.replace(d, fire_rate=d.fire_rate if fire_rate is None else fire_rate,
                               noise_std=d.noise_std if noise is None else float(noise))


def _draws(spec, seed, t, shape, origin):
    """The shared generator's fire mask (u <= fire rate, every cell) and normals (None without noise)."""
    fire = rng.uniform(seed, t, shape, origin) <= np.float32(spec.fire_rate)
    noise = rng.normal_grid(seed, t, shape, spec.n_updated, origin) if spec.noise_std > 0 else None
    return fire, noise


def _oracle(nca, s, seed, t, origin, fire_rate=None, noise=None):
    """(one float64 oracle step of ``s`` at step index t, the fire mask)."""
    spec = _spec(nca.description, fire_rate, noise)
    fire, z = _draws(spec, seed, t, s.shape[:3], origin)
    return model.step_float64(spec, nca.arrays(), s, fire, z), fire


def _run(nca, s, steps, backend="numba-cpu", **kw):
    """The state after ``steps`` steps of a Simulation of ``s`` (a copy)."""
    sim = fastca.Simulation(nca, s, backend=backend, input="state", **kw)
    sim.run(steps)
    return sim.state()


# -- 1. one step against the float64 oracle -------------------------------------------------------

CASES = {
    "small": dict(shape=(2, 9, 11), origin=(1, 2, 3)),
    "one-cell": dict(shape=(1, 1, 1), origin=(0, 5, 7)),
    # 4-row bands: a sample is split into many bands and one band spans both samples (37 = 9 * 4 + 1)
    "bands": dict(shape=(2, 37, 33), origin=(2, 0, 9), options={"band_rows": 4}),
    "noise": dict(shape=(3, 4, 7), origin=(0, 1, 1), noise=0.03),  # noise forced on
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", HOSTS)
@pytest.mark.parametrize("d", CHECKED, ids=[d.name for d in CHECKED])
def test_one_step_matches_the_oracle(d, backend, case, ncas):
    c = CASES[case]
    nca = ncas[d.name]
    shape, origin, noise = c["shape"], c["origin"], c.get("noise")
    s = _state(d, seed=40 + list(CASES).index(case), shape=shape)
    seed, t = 17, 3
    options = c.get("options") if backend == "numba-cpu" else None  # band rows are a numba-cpu option
    out = _run(nca, s, 1, backend, seed=seed, origin=origin, start_step=t, noise=noise, options=options)
    ref, fire = _oracle(nca, s, seed, t, origin, noise=noise)
    assert out.shape == s.shape and out.dtype == np.float32
    assert_close(out, ref, ONE_STEP, f"{d.name} {backend} {case}: one step vs the float64 oracle")
    if np.prod(shape) < 50:
        return
    # not vacuous: cells changed, the noise (when on) is visible, and the max-pool rule zeroed cells
    assert np.abs(ref - s).max() > 1e-2
    spec = _spec(d, noise=noise)
    if spec.noise_std > 0:
        quiet = model.step_float64(spec, nca.arrays(), s, fire, None)
        assert np.abs(quiet - ref).max() > 100 * ONE_STEP["atol"], "the noise is too small to be checked"
    if d.alive.rule == "maxpool":
        assert np.any((ref == 0).all(-1) & (s != 0).any(-1)), "no cell died: the maxpool rule is not exercised"
    if d.alive.rule != "none":
        pre = model.alive_mask(spec, s)
        assert pre.any() and not pre.all(), "the alive channel must mix alive and dead cells"


# -- 2. every host backend against torch over a few steps -------------------------------------------

@pytest.mark.parametrize("backend", registry.checked_backends())
@pytest.mark.parametrize("d", ALL, ids=IDS)
def test_backend_matches_torch_over_5_steps(d, backend, calm):
    nca = calm[d.name]
    s = _state(d, seed=50, shape=(2, 12, 14))
    kw = dict(seed=21, origin=(1, 3, 4), start_step=2)
    a = _run(nca, s, 5, backend, **kw)
    b = _run(nca, s, 5, registry.ORACLE, **kw)
    assert_close(a, b, ROLLOUT, f"{d.name}: {backend} vs {registry.ORACLE} after 5 steps")
    assert np.abs(b - s).max() > 1e-2
    if d.alive.rule == "maxpool":
        np.testing.assert_array_equal(model.alive_mask(d, a), model.alive_mask(d, b), err_msg="alive masks differ")
        np.testing.assert_array_equal((a == 0).all(-1), (b == 0).all(-1), err_msg="zeroed cells differ")
        assert model.alive_mask(d, a).any(), "everything died: the comparison is vacuous"


# -- 3. options and chunks that must not change a bit (numba-cpu) ------------------------------------

@pytest.mark.parametrize("d", ALL, ids=IDS)
def test_band_rows_do_not_change_bits(d, ncas):
    nca = ncas[d.name]
    s = _state(d, seed=60, shape=(3, 21, 13))
    kw = dict(seed=8, origin=(0, 2, 1), start_step=4)
    default = _run(nca, s, 3, **kw)
    np.testing.assert_array_equal(_run(nca, s, 3, options={"band_rows": 3}, **kw), default)
    np.testing.assert_array_equal(_run(nca, s, 3, options={"band_rows": 1}, **kw), default)
    assert np.abs(default - s).max() > 1e-2


@pytest.mark.parametrize("d", ALL, ids=IDS)
def test_threads_do_not_change_bits(d, ncas):
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here")
    nca = ncas[d.name]
    s = _state(d, seed=61, shape=(2, 19, 16))
    kw = dict(seed=9, origin=(3, 0, 5), start_step=1, options={"band_rows": 3})
    one = _run(nca, s, 3, threads=1, **kw)
    np.testing.assert_array_equal(_run(nca, s, 3, threads=2, **kw), one)
    assert np.abs(one - s).max() > 1e-2


@pytest.mark.parametrize("d", ZERO, ids=[d.name for d in ZERO])
def test_a_piece_run_at_its_origin_matches_the_whole_grid(d, calm):
    """A piece cut with a margin of m cells and run k steps at its origin equals the whole grid inside.

    A cell's new value depends on its 3x3 neighbourhood, so wrong values from the piece's
    edge move in one cell per step (m = k); under the max-pool rule a cell's survival
    depends on its neighbours' updated values, so two cells per step (m = 2 k).
    """
    nca = calm[d.name]
    k = 3
    m = k * (2 if d.alive.rule == "maxpool" else 1)
    s = _state(d, seed=62, shape=(2, 26, 28))
    o = (3, 4, 5)
    kw = dict(seed=13, start_step=1, fire_rate=0.5)  # (odd-one-layer fires everywhere: a rate that draws)
    whole = _run(nca, s, k, origin=o, **kw)
    y0, y1, x0, x1 = 8, 18, 9, 20
    piece = s[1:2, y0 - m:y1 + m, x0 - m:x1 + m]
    at = (o[0] + 1, o[1] + y0 - m, o[2] + x0 - m)
    out = _run(nca, piece, k, origin=at, **kw)
    np.testing.assert_array_equal(out[0, m:-m, m:-m], whole[1, y0:y1, x0:x1])
    assert np.abs(whole[1, y0:y1, x0:x1] - s[1, y0:y1, x0:x1]).max() > 1e-2
    # not vacuous: the origin matters (the piece at origin 0 draws other random numbers)
    wrong = _run(nca, piece, k, origin=(0, 0, 0), **kw)
    assert not np.array_equal(wrong[0, m:-m, m:-m], whole[1, y0:y1, x0:x1])


# -- 4. float16 storage ----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", registry.host_backends("float16"))
@pytest.mark.parametrize("d", CHECKED, ids=[d.name for d in CHECKED])
def test_float16_storage_is_the_float32_step_rounded(d, backend, ncas):
    """One step in float16 storage: within float16 rounding of the float32 step, and in fact that step rounded."""
    nca = ncas[d.name]
    s = _state(d, seed=70, shape=(2, 9, 11)).astype(np.float16).astype(np.float32)  # the same start in both
    kw = dict(seed=5, origin=(0, 3, 2), start_step=6, backend=backend)
    half = _run(nca, s, 1, storage="float16", **kw)
    full = _run(nca, s, 1, **kw)
    assert half.dtype == np.float16 and half.shape == s.shape
    np.testing.assert_allclose(half.astype(np.float32), full, **HALF)
    # more: the kernel loads float16 exactly, computes in float32 and rounds each sum once when it stores
    np.testing.assert_array_equal(half.view(np.uint16), full.astype(np.float16).view(np.uint16))
    assert np.abs(full - s).max() > 1e-2


# -- 5. the alive rules and the boundaries, through the public API (numba-cpu) -----------------------

@pytest.mark.parametrize("d", [d for d in ALL if d.alive.rule == "maxpool"],
                         ids=[d.name for d in ALL if d.alive.rule == "maxpool"])
def test_maxpool_zeroes_dead_cells_and_keeps_alive_ones(d, ncas):
    nca = ncas[d.name]
    s = _state(d, seed=80, shape=(2, 12, 14))
    seed, t, origin = 2, 5, (1, 1, 2)
    out = _run(nca, s, 1, seed=seed, origin=origin, start_step=t)
    # the updated state before the rule zeroes anything: every firing cell updated (the rule switched off)
    free = dataclasses.replace(d, alive=dataclasses.replace(d.alive, rule="none"))
    fire, _ = _draws(d, seed, t, s.shape[:3], origin)
    updated = model.step_float64(free, nca.arrays(), s, fire, None)
    pre, post = model.alive_mask(d, s), model.alive_mask(d, updated)
    kept = pre & post
    assert not out[~kept].any(), "a cell not alive before and after the step was not zeroed"
    assert_close(out[kept], updated[kept], ONE_STEP, "kept cells")
    np.testing.assert_array_equal(out[kept & ~fire], s[kept & ~fire])  # kept cells that did not fire: as they were
    assert not out[0, 5, 6].any(), "the isolated cell survived"
    # not vacuous: nonzero cells died, alive firing cells died through the rule after the update, cells were kept
    assert np.any(~kept & (s != 0).any(-1))
    assert np.any(pre & ~post & fire), "no firing alive cell died through the post-update rule"
    assert kept.sum() > 10
    assert kept[:, [0, -1], :].any() or kept[:, :, [0, -1]].any(), "no cell by the grid's edge was kept"



@pytest.mark.parametrize("d", ALL, ids=IDS)
def test_wrap_reaches_the_opposite_edges(d):
    """Mass only on row 0 and column 0: with "wrap" the last row and column change, with "zero" they do not.

    Compared with the empty state (alive channel 1 everywhere, every other channel 0)
    under the same random numbers (every cell fires, no noise), so cells whose
    neighbourhood holds no mass are equal in both runs. Small weights keep everything alive.
    """
    nca = NCA.random(d, seed=4, scale=0.05)
    empty = np.zeros((1, 8, 9, d.channels), np.float32)
    if d.alive.rule != "none":
        empty[..., d.alive.channel] = 1.0
    edge = np.zeros(empty.shape[:3], bool)
    edge[:, 0, :] = edge[:, :, 0] = True
    others = np.ones(d.channels, bool)
    if d.alive.rule != "none":
        others[d.alive.channel] = False
    noise = np.random.default_rng(0).normal(0, 1, empty.shape).astype(np.float32)
    mass = np.where(edge[..., None] & others, noise, empty)
    kw = dict(seed=1, fire_rate=1.0, noise=False)
    z, m = _run(nca, empty, 1, **kw), _run(nca, mass, 1, **kw)
    h, w = z.shape[1:3]
    np.testing.assert_allclose(m[:, 2:h - 2, 2:w - 2], z[:, 2:h - 2, 2:w - 2], rtol=0, atol=1e-6,
                               err_msg="cells far from the mass changed")
    last_row = np.abs(m[:, h - 1, 2:w - 2] - z[:, h - 1, 2:w - 2]).max()
    last_col = np.abs(m[:, 2:h - 2, w - 1] - z[:, 2:h - 2, w - 1]).max()
    if d.boundary == "wrap":
        assert last_row > 1e-4 and last_col > 1e-4, f"wrap: the opposite edges did not see the mass " \
                                                     f"(row {last_row}, column {last_col})"
    else:
        assert last_row == 0 and last_col == 0, "zero boundary: the opposite edges saw the mass"
    if d.alive.rule == "maxpool":
        # the max-pool wraps too: alive only on row 0 and column 0 keeps the last row and column
        # alive with "wrap", and kills them with "zero"
        lone = np.zeros_like(empty)
        lone[..., d.alive.channel] = edge
        far = _run(nca, lone, 1, **kw)
        assert far[:, h - 1, 2:w - 2].any() == (d.boundary == "wrap")
        assert far[:, 2:h - 2, w - 1].any() == (d.boundary == "wrap")


@pytest.mark.parametrize("d", [d for d in CHECKED if d.alive.rule == "static"],
                         ids=[d.name for d in CHECKED if d.alive.rule == "static"])
def test_static_rule_updates_only_alive_firing_cells_and_never_the_alive_channel(d, ncas):
    nca = ncas[d.name]
    s = _state(d, seed=90, shape=(2, 10, 12))
    seed, origin = 6, (0, 4, 4)
    sim = fastca.Simulation(nca, s, backend="numba-cpu", input="state", seed=seed, origin=origin)
    sim.run(1)
    one = sim.state()
    fire, _ = _draws(d, seed, 0, s.shape[:3], origin)
    pre = model.alive_mask(d, s)
    updated = fire & pre
    changed = (one != s).any(-1)
    np.testing.assert_array_equal(changed, updated)  # dead or resting cells keep every bit; updated cells change
    assert np.any(fire & ~pre), "no dead cell fired: the rule is not exercised"
    sim.run(3)
    four = sim.state()
    r0, r1 = d.residual
    outside = np.r_[0:r0, r1:d.channels]
    np.testing.assert_array_equal(four[..., d.alive.channel], s[..., d.alive.channel])
    np.testing.assert_array_equal(four[..., outside], s[..., outside])
    np.testing.assert_array_equal(four[~pre], s[~pre])


@pytest.mark.parametrize("d", [d for d in ALL if d.alive.rule == "none"],
                         ids=[d.name for d in ALL if d.alive.rule == "none"])
def test_no_alive_rule_updates_every_firing_cell(d, ncas):
    nca = ncas[d.name]
    s = _state(d, seed=100, shape=(2, 10, 12))
    s[0, 3:5, 3:5] = 0.0  # all-zero cells: "dead" to any threshold, they update all the same
    s[1, :, :, 0] = -1.0  # a low first channel: no channel decides anything
    seed, origin = 7, (1, 0, 3)
    out = _run(nca, s, 1, seed=seed, origin=origin, fire_rate=0.5)
    fire, _ = _draws(_spec(d, fire_rate=0.5), seed, 0, s.shape[:3], origin)
    np.testing.assert_array_equal((out != s).any(-1), fire)
    assert fire[0, 3:5, 3:5].any() and not fire.all()
    ref, _ = _oracle(nca, s, seed, 0, origin, fire_rate=0.5)
    assert_close(out, ref, ONE_STEP, d.name)


# -- 6. refusals, labels and accuracy --------------------------------------------------------------

@pytest.mark.parametrize("backend", HOSTS)
@pytest.mark.parametrize("d", [d for d in ALL if d.alive.rule != "static"],
                         ids=[d.name for d in ALL if d.alive.rule != "static"])
def test_gray_input_is_refused_without_a_static_alive_channel(d, backend, ncas):
    nca = ncas[d.name]
    for gray, kind in ((np.full((6, 7), 200, np.uint8), "auto"), (np.zeros((2, 6, 7), np.float32), "gray")):
        with pytest.raises(ValueError, match="takes a full state") as info:
            fastca.Simulation(nca, gray, backend=backend, input=kind)
        assert f"(H, W, {d.channels})" in str(info.value) and d.name in str(info.value)
        with pytest.raises(ValueError, match="takes a full state"):
            fastca.simulate(nca, gray, 1, backend=backend, input=kind)


@pytest.mark.parametrize("backend", HOSTS)
def test_a_state_with_the_wrong_channel_count_is_refused(backend, ncas):
    nca = ncas[model.GROWING.name]
    for x in (np.zeros((1, 4, 5, 20), np.float32), np.zeros((4, 5, 15), np.float32)):
        with pytest.raises(ValueError, match=r"\(B, H, W, 16\)"):
            fastca.Simulation(nca, x, backend=backend, input="state")
    with pytest.raises(ValueError, match=r"\(B, H, W, 20\)"):
        fastca.Simulation(ncas[model.MNIST.name], np.zeros((1, 4, 5, 16), np.float32), backend=backend, input="state")


@pytest.mark.parametrize("backend", HOSTS)
def test_labels_and_targets_are_refused_without_a_readout(backend, ncas):
    d = model.GROWING
    s = _state(d, seed=110, shape=(1, 6, 7))
    sim = fastca.Simulation(ncas[d.name], s, backend=backend, input="state")
    for call in (sim.labels, lambda: sim.targets(0), lambda: sim.run(1, targets=0), lambda: sim.metrics(0),
                 lambda: fastca.simulate(ncas[d.name], s, 1, backend=backend, labels=0, input="state")):
        with pytest.raises(ValueError, match="has no readout") as info:
            call()
        assert d.name in str(info.value)
    assert sim.t == 0, "a refused run must not step"


def _numpy_counts(d, state, targets):
    """Per-sample (alive, correct, cells per decided class..., targeted), written from the semantics."""
    r = d.readout
    alive = state[..., d.alive.channel] > np.float32(d.alive.threshold)
    cls = state[..., r.start:r.start + r.classes]
    label = cls.argmax(-1)
    decided = np.where(cls.max(-1) >= 0, label, -1)
    rows = []
    for b in range(state.shape[0]):
        a, t = alive[b], targets[b]
        rows.append([a.sum(), (a & (t >= 0) & (label[b] == t)).sum()]
                    + [(a & (decided[b] == k)).sum() for k in range(r.classes)] + [(a & (t >= 0)).sum()])
    return np.array(rows, np.int64), np.where(alive, label, -1)


@pytest.mark.parametrize("backend", HOSTS)
def test_a_readout_gives_labels_counts_and_accuracy(backend, ncas):
    d = READOUT
    nca = ncas[d.name]
    s = _state(d, seed=120, shape=(3, 9, 11))
    s[2, ..., 0] = 0.0  # a sample with no alive cell: no agreement to count there
    seed, origin, t = 4, (0, 2, 2), 1
    targets = np.random.default_rng(5).integers(-1, 3, s.shape[:3])
    sim = fastca.Simulation(nca, s, backend=backend, input="state", seed=seed, origin=origin, start_step=t)
    sim.run(1)
    ref, _ = _oracle(nca, s, seed, t, origin)
    ref = ref.astype(np.float32)
    expected, labels = _numpy_counts(d, ref, targets)
    np.testing.assert_array_equal(sim.labels(), labels)
    assert sim.labels().dtype == np.int8
    np.testing.assert_array_equal(sim.counts(targets), expected)
    np.testing.assert_array_equal(sim.counts(sim.targets(targets)), expected)
    accuracy, agreement = sim.metrics(targets)
    assert accuracy == pytest.approx(100 * expected[:, 1].sum() / expected[:, -1].sum())
    has = expected[:, 0] > 0
    agree = expected[:, 2:-1].max(-1) == expected[:, 0]
    assert agreement == pytest.approx(100 * agree[has].mean())
    # per-sample labels broadcast to every cell
    per_sample = np.array([0, 2, 1])
    np.testing.assert_array_equal(sim.counts(per_sample), _numpy_counts(d, ref, np.broadcast_to(
        per_sample[:, None, None], s.shape[:3]))[0])
    # not vacuous: alive and dead cells, right and wrong labels, several classes
    assert 0 < expected[:, 1].sum() < expected[:, -1].sum() and (expected[:2, 2:-1] > 0).sum() >= 4
    # simulate records the accuracy after every step from the same counts
    res = fastca.simulate(nca, s, 2, backend=backend, seed=seed, origin=origin, start_step=t, labels=targets,
                          input="state")
    assert res.accuracy.shape == (2,)
    assert res.accuracy[0] == pytest.approx(accuracy)
    np.testing.assert_array_equal(res.labels, _numpy_counts(d, res.state, targets)[1])
    with pytest.raises(ValueError, match="classes 0..2"):
        sim.targets(np.full(s.shape[:3], 3))


# -- 7. generated kernels ----------------------------------------------------------------------------

def test_generated_kernels_are_one_module_per_description():
    from fastca import _numba_setup
    from fastca.kernels import cpu_shape, generate

    a = cpu_shape.kernel(MIDDLE)
    assert cpu_shape.kernel(ModelSpec.from_json(MIDDLE.to_json())) is a  # equal descriptions: the same module
    assert (a.C, a.R0, a.OUT, a.ALIVE, a.ALIVE_CH, a.WRAP, a.DEPTHWISE) == (7, 2, 3, 1, 6, False, False)
    # one width differs (40 features: more vectors than 9 on any vector width; a width within the same
    # whole vectors computes the same padded shapes, and may share the module)
    other = dataclasses.replace(MIDDLE, perception=Conv3x3(40))
    wider = cpu_shape.kernel(other)
    assert wider is not a and wider.__file__ != a.__file__
    assert wider.step_inplace is not a.step_inplace
    assert cpu_shape.layout(other)[1] != cpu_shape.layout(MIDDLE)[1]
    path = Path(a.__file__)
    assert path.parent == generate.folder() and path.is_file()
    assert Path(_numba_setup.cache_dir) in path.parents, "the generated file is not under the cache folder"
    assert "C = 7" in path.read_text()


def test_a_new_description_needs_no_kernel_edit(ncas):
    """A description of sizes no kernel was written for gets its own generated kernel, which matches the oracle."""
    from fastca.kernels import cpu_shape

    k = cpu_shape.kernel(FRESH)
    assert (k.C, k.R0, k.OUT, k.FEATURES) == (3, 1, 2, 1)
    assert [x.out for x in cpu_shape.layout(FRESH)[0]] == [5, 9, 2]
    nca = ncas[FRESH.name]
    s = _state(FRESH, seed=130, shape=(2, 13, 10))
    ref = s.astype(np.float64)
    sim = fastca.Simulation(nca, s, backend="numba-cpu", input="state", seed=3, origin=(1, 1, 1))
    for t in range(3):
        sim.run(1)
        ref, _ = _oracle(nca, ref, 3, t, (1, 1, 1))
        assert_close(sim.state(), ref, ROLLOUT, f"step {t}")
    assert np.abs(ref - s).max() > 1e-2
