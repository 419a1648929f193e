"""Every description of the registry (benchmarks/registry.py: fastca.model.KNOWN and any registered since)
on the torch backend, and its file.

The torch runner (fastca.backends.torch_ref.Torch) is driven directly, as a Simulation
would drive it: ``Torch(nca, state, Params(...))`` then ``step(t)``. Its output is compared
with the float64 oracle (fastca.model.step_float64) fed the shared generator's raw fire
draws and standard normals for every cell (the oracle applies the alive rule itself, so the
runner's own choice of which cells update and where it draws noise is checked too). Then
the alive rules and boundaries are checked by their invariants, and NCA files by round
trips and refused inputs.
"""

import dataclasses

import numpy as np
import pytest
import torch
from helpers import assert_close

import fastca
from benchmarks import registry
from fastca import model, rng
from fastca.backends.base import Params
from fastca.backends.torch_ref import Torch
from fastca.nca import NCA, load_model
from fastca.torch_model import DescribedNCA, described_randomness

#: every registered description (benchmarks/registry.py), and one whose residual leaves channels on
#: both sides (no known one does) with its static alive channel last
MIDDLE = model.ModelSpec(name="odd-middle", channels=7, perception=model.Conv3x3(9),
                         layers=(model.Dense(3, activation="none"),), residual=(2, 5), noise_std=0.01,
                         alive=model.Alive("static", 6, 0.1))
ALL = registry.descriptions() + (MIDDLE,)
IDS = [d.name for d in ALL]
SHAPE = (2, 12, 14)  # (B, H, W)
ONE_STEP = dict(rtol=1e-5, atol=1e-5)  # float32 runner vs float64 oracle after one step
ROLLOUT = dict(rtol=1e-4, atol=1e-4)  # ... after up to 5 steps (float32 error compounds)


def _params(d, case):
    """The run's Params: the description's own constants at origin 0, or other constants at another origin."""
    if case == "defaults":
        return Params(seed=7, fire_rate=d.fire_rate, noise_std=d.noise_std, alive_threshold=d.alive.threshold)
    return Params(seed=11, fire_rate=0.3, noise_std=0.03, alive_threshold=1.5 * d.alive.threshold, origin=(2, 5, 7))


def _run_spec(d, p):
    """The description the run computes: the description with the run's fire rate, noise and threshold."""
    return dataclasses.replace(d, fire_rate=p.fire_rate, noise_std=p.noise_std,
                               alive=dataclasses.replace(d.alive, threshold=p.alive_threshold))


def _state(d, seed, shape=SHAPE):
    """A random (B, H, W, C) float32 state with alive and dead cells under the description's rule.

    Every channel is N(0, 0.5) (dead cells too: their neighbours read them). The alive
    channel is 0, well below the threshold (up to 0.3 x threshold) or well above it
    (2.5 x threshold up to 1), never near it, so float32 and float64 agree on who is alive.
    Under "maxpool" few cells are alive, so many cells have no alive neighbour and die, and
    one nonzero cell in the middle of a dead 5x5 block is planted (an isolated cell).
    """
    r = np.random.default_rng(seed)
    s = r.normal(0, 0.5, shape + (d.channels,)).astype(np.float32)
    if d.alive.rule == "none":
        return s
    thr = d.alive.threshold
    pick = r.random(shape)
    p_alive = 0.1 if d.alive.rule == "maxpool" else 0.5
    ch = np.where(pick < p_alive, r.uniform(2.5 * thr, 1.0, shape),
                  np.where(pick < p_alive + 0.2, r.uniform(0.0, 0.3 * thr, shape), 0.0))
    s[..., d.alive.channel] = ch
    if d.alive.rule == "maxpool":
        s[0, 3:8, 4:9, d.alive.channel] = 0.0
        s[0, 5, 6, d.alive.channel] = 0.2 * thr  # nonzero, below the threshold, no alive neighbour
    return s


def _draws(p, t, d, shape=SHAPE):
    """The shared generator's raw fire draws (u <= fire rate, every cell) and standard normals (every cell)."""
    fire = rng.uniform(p.seed, t, shape, p.origin) <= np.float32(p.fire_rate)
    noise = rng.normal_grid(p.seed, t, shape, d.n_updated, p.origin)
    return fire, noise


def _runner(d, state, p, seed=3, scale=0.2):
    nca = NCA.random(d, seed=seed, scale=scale)
    return nca, Torch(nca, state.copy(), p)


# -- (a) one step against the float64 oracle ----------------------------------------------------

@pytest.mark.parametrize("case", ["defaults", "overrides"])
@pytest.mark.parametrize("d", ALL, ids=IDS)
def test_one_step_matches_the_oracle(d, case):
    p = _params(d, case)
    s = _state(d, seed=4)
    nca, runner = _runner(d, s, p)
    t = 3
    runner.step(t)
    out = runner.read()
    fire, noise = _draws(p, t, d)
    spec = _run_spec(d, p)
    ref = model.step_float64(spec, nca.arrays(), s, fire, noise)
    assert out.shape == s.shape and out.dtype == np.float32
    assert_close(out, ref, ONE_STEP, f"{d.name} {case}: torch runner vs float64 oracle")
    # not vacuous: cells changed, and the noise (when on) and the rule's zeroing are visible
    assert np.abs(ref - s).max() > 1e-2
    if p.noise_std > 0:
        quiet = model.step_float64(spec, nca.arrays(), s, fire, None)
        assert np.abs(quiet - ref).max() > 100 * ONE_STEP["atol"], "the noise is too small to be checked"
    if d.alive.rule == "maxpool":
        assert np.any((ref == 0).all(-1) & (s != 0).any(-1)), "no cell died: the maxpool rule is not exercised"


@pytest.mark.parametrize("case", ["defaults", "overrides"])
@pytest.mark.parametrize("d", ALL, ids=IDS)
def test_randomness_is_the_shared_generators(d, case):
    """The runner's mask is u <= fire rate (and-ed with alive only under "static"); noise is z at those cells."""
    p = _params(d, case)
    s = _state(d, seed=5)
    t = 9
    mask, noise = described_randomness(d, p.seed, t, s, p.fire_rate, p.noise_std, p.alive_threshold, p.origin)
    fire, z = _draws(p, t, d)
    expected = fire & model.alive_mask(_run_spec(d, p), s) if d.alive.rule == "static" else fire
    np.testing.assert_array_equal(mask.numpy(), expected)
    if p.noise_std == 0:
        assert noise is None
    else:
        assert noise.shape == SHAPE + (d.n_updated,) and noise.dtype == torch.float32
        np.testing.assert_array_equal(noise.numpy()[expected], z[expected])
        assert not noise.numpy()[~expected].any()


@pytest.mark.parametrize("d", ALL, ids=IDS)
def test_noise_is_added_as_ds_plus_std_z_in_float32(d):
    """forward adds float32(std) * z to the update, in float32, bit for bit."""
    spec = dataclasses.replace(d, noise_std=0.03, alive=dataclasses.replace(d.alive, rule="none"))
    net = DescribedNCA(spec, d.random_weights(seed=1, scale=0.2))
    s = _state(d, seed=6)
    z = rng.normal_grid(1, 2, SHAPE, d.n_updated)
    with torch.no_grad():
        out = net(torch.from_numpy(s), torch.ones(SHAPE, dtype=torch.bool), torch.from_numpy(z)).numpy()
        ds = net.delta(torch.from_numpy(s)).numpy()
    r0, r1 = d.residual
    np.testing.assert_array_equal(out[..., r0:r1], s[..., r0:r1] + (ds + np.float32(0.03) * z))


def test_mnist_description_runs_the_mnist_path_bit_for_bit():
    """An NCA of the MNIST description and the same NCAWeights give the same bits (both run TorchNCA)."""
    from fastca.torch_model import TorchNCA

    w = fastca.NCAWeights.random(seed=2, scale=0.1)
    nca = NCA(model.MNIST, w.arrays())
    s = _state(model.MNIST, seed=7)
    p = _params(model.MNIST, "overrides")
    a, b = Torch(w, s.copy(), p), Torch(nca, s.copy(), p)
    assert isinstance(a.model, TorchNCA) and isinstance(b.model, TorchNCA)
    for t in range(3):
        a.step(t)
        b.step(t)
    np.testing.assert_array_equal(a.read(), b.read())
    other = Torch(NCA(dataclasses.replace(model.MNIST, boundary="wrap"), w.arrays()), s.copy(), p)
    assert isinstance(other.model, DescribedNCA), "a different description must not run the MNIST module"


def test_wrong_channel_count_is_refused():
    with pytest.raises(ValueError, match=r"\(B, H, W, 16\)"):
        Torch(NCA.random(model.GROWING), np.zeros((1, 4, 4, 20), np.float32), _params(model.GROWING, "defaults"))


# -- (b) rollouts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["defaults", "overrides"])
@pytest.mark.parametrize("d", ALL, ids=IDS)
def test_rollout_matches_the_oracle(d, case):
    p = _params(d, case)
    s = _state(d, seed=8)
    nca, runner = _runner(d, s, p, scale=0.1)
    spec = _run_spec(d, p)
    ref = s.astype(np.float64)
    for t in range(5, 10):
        runner.step(t)
        fire, noise = _draws(p, t, d)
        ref = model.step_float64(spec, nca.arrays(), ref, fire, noise)
        assert_close(runner.read(), ref, ROLLOUT, f"{d.name} {case}: step {t}")
    assert np.abs(ref - s).max() > 1e-2


# -- (c) boundaries and alive rules ---------------------------------------------------------------

@pytest.mark.parametrize("d", ALL, ids=IDS)
def test_boundary(d):
    """Mass only on row 0 and column 0: with "wrap" the last row and column change, with "zero" they do not.

    Compared with the empty state (alive channel 1 everywhere, every other channel 0) under
    the same random numbers (every cell fires, no noise), so the cells whose neighbourhood
    holds no mass are equal in both runs. The mass is random (a uniform edge would vanish
    under a derivative filter such as sobel_y); small weights keep every cell alive.
    """
    p = Params(seed=1, fire_rate=1.0, noise_std=0.0, alive_threshold=d.alive.threshold)
    empty = np.zeros((1, 8, 9, d.channels), np.float32)
    if d.alive.rule != "none":
        empty[..., d.alive.channel] = 1.0  # everything alive: only the neighbourhoods differ
    edge = np.zeros(empty.shape[:3], bool)
    edge[:, 0, :] = edge[:, :, 0] = True
    others = np.ones(d.channels, bool)
    if d.alive.rule != "none":
        others[d.alive.channel] = False
    noise = np.random.default_rng(0).normal(0, 1, empty.shape).astype(np.float32)
    mass = np.where(edge[..., None] & others, noise, empty)
    for boundary in ("zero", "wrap"):
        b = dataclasses.replace(d, boundary=boundary)
        nca = NCA.random(b, seed=4, scale=0.05)
        runs = [Torch(nca, x.copy(), p) for x in (empty, mass)]
        for r in runs:
            r.step(0)
        z, m = (r.read() for r in runs)
        h, w = z.shape[1:3]
        np.testing.assert_allclose(m[:, 2:h - 2, 2:w - 2], z[:, 2:h - 2, 2:w - 2], rtol=0, atol=1e-6,
                                   err_msg="cells far from the mass changed")
        last_row = np.abs(m[:, h - 1, 2:w - 2] - z[:, h - 1, 2:w - 2]).max()
        last_col = np.abs(m[:, 2:h - 2, w - 1] - z[:, 2:h - 2, w - 1]).max()
        if boundary == "wrap":
            assert last_row > 1e-4 and last_col > 1e-4, f"wrap: the opposite edges did not see the mass " \
                                                         f"(row {last_row}, column {last_col})"
        else:
            assert last_row <= 1e-6 and last_col <= 1e-6, "zero boundary: the opposite edges saw the mass"
        if d.alive.rule == "maxpool":
            # the max-pool wraps too: alive only on row 0 and column 0 makes the last row and
            # column alive (so updated and kept) with "wrap", and leaves them dead (zero) with "zero"
            lone = np.zeros_like(empty)
            lone[..., d.alive.channel] = edge
            r = Torch(nca, lone, p)
            r.step(0)
            far = r.read()[:, h - 1, 2:w - 2], r.read()[:, 2:h - 2, w - 1]
            assert all(x.any() == (boundary == "wrap") for x in far), f"{boundary}: max-pool across the edge"


@pytest.mark.parametrize("d", ALL, ids=IDS)
def test_alive_rule_invariants(d):
    p = _params(d, "overrides")
    s = _state(d, seed=9)
    nca, runner = _runner(d, s, p)
    t = 2
    runner.step(t)
    out = runner.read()
    spec = _run_spec(d, p)
    fire, _ = _draws(p, t, d)
    pre = model.alive_mask(spec, s)
    r0, r1 = d.residual
    outside = np.r_[0:r0, r1:d.channels]
    if d.alive.rule == "maxpool":
        # "after" is the updated state before the rule zeroes anything (zeroing a cell can
        # lower its neighbours' max-pool), so compute it with the rule switched off
        free = DescribedNCA(dataclasses.replace(spec, alive=dataclasses.replace(spec.alive, rule="none")),
                            nca.arrays())
        mask, noise = described_randomness(free.description, p.seed, t, s, p.fire_rate, p.noise_std,
                                           p.alive_threshold, p.origin)
        with torch.no_grad():
            updated = free(torch.from_numpy(s), mask, noise).numpy()
        post = model.alive_mask(spec, updated)
        kept = pre & post
        np.testing.assert_array_equal(out, updated * kept[..., None])  # the rule only zeroes cells
        assert not out[~kept].any(), "a cell not alive before and after the step was not zeroed"
        assert np.any(~kept & (s != 0).any(-1)), "no nonzero cell died: vacuous"
        assert np.any(pre & ~post & fire), "no firing alive cell died through the post-update rule: vacuous"
        assert not out[0, 5, 6].any(), "the isolated cell survived"
        np.testing.assert_array_equal(out[kept & ~fire], s[kept & ~fire])  # surviving cells that did not fire
        np.testing.assert_array_equal(out[kept][:, outside], s[kept][:, outside])
    else:
        updated = fire & pre
        np.testing.assert_array_equal(out[~updated], s[~updated])  # dead or resting cells keep every channel
        np.testing.assert_array_equal(out[..., outside], s[..., outside])
        assert np.all((out[updated] != s[updated]).any(-1)), "an updated cell did not change"
        if d.alive.rule == "static":
            np.testing.assert_array_equal(out[..., d.alive.channel], s[..., d.alive.channel])
            assert np.any(fire & ~pre), "no dead cell fired: the static rule is not exercised"


# -- (d) files -------------------------------------------------------------------------------------

@pytest.mark.parametrize("d", ALL, ids=IDS)
def test_file_round_trip(d, tmp_path):
    nca = NCA.random(d, seed=5, scale=0.3, name="my model")
    path = tmp_path / "m.npz"
    nca.save(path)
    for back in (NCA.load(path), load_model(path)):
        assert isinstance(back, NCA)
        assert back.description == d and back.name == "my model"
        assert back.description.to_json() == d.to_json()
        assert list(back.arrays()) == list(d.weight_shapes())
        for k, a in nca.arrays().items():
            assert back.arrays()[k].dtype == np.float32
            np.testing.assert_array_equal(back.arrays()[k], a)
            assert back.arrays()[k].tobytes() == a.tobytes()


@pytest.mark.parametrize("d", ALL, ids=IDS)
def test_from_torch_round_trip(d):
    nca = NCA.random(d, seed=6, scale=0.3)
    net = DescribedNCA(d, nca.arrays())
    with torch.no_grad():  # a "trained" module: the export must read its current values
        for v in net.params.values():
            v.mul_(2.0)
    expected = {k: 2 * a for k, a in nca.arrays().items()}
    for back in (NCA.from_torch(net), NCA.from_torch(net.state_dict(), description=d),
                 NCA.from_torch({k: v for k, v in net.params.items()}, description=d)):
        assert back.description == d
        assert back.arrays().keys() == expected.keys()
        for k, a in expected.items():
            assert back.arrays()[k].tobytes() == a.tobytes(), k
    again = DescribedNCA(d, NCA.from_torch(net).arrays())
    for k, v in net.params.items():
        assert torch.equal(again.params[k], v)
    with pytest.raises(ValueError, match="description="):
        NCA.from_torch(net.state_dict())


def test_mnist_files_load_as_weights(tmp_path):
    w = fastca.NCAWeights.random(seed=3)
    w.save(tmp_path / "w.npz")
    back = load_model(tmp_path / "w.npz")
    assert isinstance(back, fastca.NCAWeights) and back.description == model.MNIST
    NCA(model.MNIST, w.arrays()).save(tmp_path / "n.npz")
    back = load_model(tmp_path / "n.npz")
    assert isinstance(back, NCA) and back.description == model.MNIST


def test_layers_over_one_mib_load(tmp_path):
    """A 1024 x 1024 layer (4 MiB) is a valid description's array: the MNIST format's 1 MiB cap must not apply."""
    d = model.ModelSpec(name="wide", channels=8, perception=model.Depthwise(("identity",)),
                        layers=(model.Dense(1024), model.Dense(1024), model.Dense(8, activation="none")),
                        residual=(0, 8))
    nca = NCA.random(d, seed=1)
    nca.save(tmp_path / "wide.npz")
    assert NCA.load(tmp_path / "wide.npz").arrays()["w2"].tobytes() == nca.arrays()["w2"].tobytes()


def _members(nca):
    """The members NCA.save writes, as a dict for np.savez (to write altered files)."""
    return dict(nca.arrays(), format_version=np.int64(2), model_kind=np.str_("described"),
                description=np.str_(nca.description.to_json()), name=np.str_(nca.name))


def _corrupt_description(m, nca):
    m["description"] = np.str_(nca.description.to_json()[:-7])


def _invalid_description(m, nca):
    m["description"] = np.str_(nca.description.to_json().replace('"channels": ', '"channels": -'))


def _wrong_shape(m, nca):
    k = next(iter(nca.arrays()))
    m[k] = np.concatenate([m[k], m[k]], axis=-1)


def _nan_weight(m, nca):
    k = list(nca.arrays())[-1]
    a = np.array(m[k])
    a.flat[a.size // 2] = np.nan
    m[k] = a


def _missing_array(m, nca):
    del m[list(nca.arrays())[-1]]


REFUSED = {
    "corrupt description": (_corrupt_description, "not a valid model description"),
    "invalid description": (_invalid_description, "channels must be in"),
    "wrong shape": (_wrong_shape, "has shape"),
    "NaN weight": (_nan_weight, "NaN"),
    "missing array": (_missing_array, "missing"),
    "truncated": (None, "not a readable fastca model file"),
}


@pytest.mark.parametrize("case", list(REFUSED))
@pytest.mark.parametrize("d", ALL, ids=IDS)
def test_bad_files_are_refused(d, case, tmp_path):
    nca = NCA.random(d, seed=7)
    path = tmp_path / "bad.npz"
    change, match = REFUSED[case]
    if change is None:
        nca.save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        m = _members(nca)
        change(m, nca)
        with open(path, "wb") as f:
            np.savez(f, **m)
    for load in (NCA.load, load_model):
        with pytest.raises(ValueError) as info:
            load(path)
        msg = str(info.value)
        assert "\n" not in msg and msg.startswith(str(path)), msg
        assert match in msg, msg
