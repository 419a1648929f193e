"""Model descriptions (fastca.model): validation, files, and the float64 oracle against independent code.

The oracle of a description (model.step_float64) is checked against the project's other
float64 oracle of the MNIST model (helpers.oracle_step, written from spec.py) and against
the torch module built from the same description (DescribedNCA, in float64) for every
description the project knows; the MNIST description against numba-cpu.
"""

import json

import numpy as np
import pytest
import torch
from helpers import TOLERANCES, assert_close, oracle_step, tricky_state

import fastca
from fastca import model, spec
from fastca.torch_model import DescribedNCA

IDS = [d.name for d in model.KNOWN]


def test_mnist_description_is_the_spec():
    d = model.MNIST
    assert d.weight_shapes() == spec.WEIGHT_SHAPES
    assert d.flop_per_cell == spec.FLOP_PER_CELL
    assert sum(int(np.prod(s)) for s in d.weight_shapes().values()) == spec.N_PARAMS
    assert (d.channels, d.residual, d.readout.start, d.readout.classes) == (spec.CHANNELS, (1, 20), 10, 10)
    assert (d.alive.channel, d.alive.threshold, d.fire_rate, d.noise_std) == (
        spec.GRAY, spec.ALIVE_THRESHOLD, spec.FIRE_RATE, spec.NOISE_STD)


def test_growing_and_texture_shapes():
    assert model.GROWING.widths == (48, 128, 16) and model.GROWING.weight_shapes() == {
        "w1": (48, 128), "b1": (128,), "w2": (128, 16), "b2": (16,)}
    assert model.TEXTURE.widths == (48, 96, 12) and "b2" not in model.TEXTURE.weight_shapes()


@pytest.mark.parametrize("d", model.KNOWN, ids=IDS)
def test_json_round_trip(d):
    again = model.ModelSpec.from_json(d.to_json())
    assert again == d and again.digest() == d.digest()
    assert model.ModelSpec.from_json(json.dumps({**d.to_dict(), "name": "other"})).digest() == d.digest()


@pytest.mark.parametrize("change, match", [
    (lambda d: d.update(channels="20"), "channels must be an integer"),
    (lambda d: d.update(channels=True), "channels must be an integer"),
    (lambda d: d.update(fire_rate="0.5"), "fire_rate must be a number"),
    (lambda d: d.update(fire_rate=1.5), "fire_rate must be finite"),
    (lambda d: d["alive"].update(threshold="0.1"), "alive threshold must be a number"),
    (lambda d: d["alive"].update(rule="sometimes"), "alive rule must be one of"),
    (lambda d: d["layers"][-1].update(width=18), "last layer has 18 outputs"),
    (lambda d: d["layers"][0].update(width=0), "layer width must be in"),
    (lambda d: d["layers"][0].update(activation="tanh"), "layer activation must be one of"),
    (lambda d: d.update(residual=[0, 20]), "last layer has 19 outputs"),
    (lambda d: d.update(residual=[0, 19]), "static alive channel"),
    (lambda d: d.update(extra=1), "unknown fields extra"),
    (lambda d: d["perception"].update(kind="conv5x5"), "perception kind"),
    (lambda d: d.update(boundary="mirror"), "boundary must be one of"),
    (lambda d: d.update(readout={"start": 15, "classes": 10}), "exceed the 20 channels"),
    (lambda d: d.update(layers=[]), "layers must be 1 to"),
    (lambda d: d.update(channels=10**9), "channels must be in"),
])
def test_bad_descriptions_are_refused(change, match):
    d = model.MNIST.to_dict()
    change(d)
    with pytest.raises(ValueError, match=match):
        model.ModelSpec.from_dict(d, source="x.json")


def test_bad_json_names_the_source():
    with pytest.raises(ValueError, match="x.json: not a valid model description"):
        model.ModelSpec.from_json("[" * 100000, source="x.json")
    with pytest.raises(ValueError, match="x.json"):
        model.ModelSpec.from_json("{", source="x.json")


def test_weights_are_checked_against_the_description():
    d = model.GROWING
    w = d.random_weights(seed=0)
    assert all(v.dtype == np.float32 for v in d.check_weights(w).values())
    with pytest.raises(ValueError, match="missing b2"):
        d.check_weights({k: v for k, v in w.items() if k != "b2"}, "f.npz")
    with pytest.raises(ValueError, match="unknown w3"):
        d.check_weights({**w, "w3": w["w2"]}, "f.npz")
    with pytest.raises(ValueError, match=r"w2 must have shape \(128, 16\)"):
        d.check_weights({**w, "w2": w["w2"][:, :15]}, "f.npz")
    with pytest.raises(ValueError, match="NaN or inf"):
        d.check_weights({**w, "b1": np.full(128, 1e39)}, "f.npz")


def _state(d, shape, seed):
    """A random (B, H, W, C) state with dead and alive cells under the description's alive rule."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0, 0.5, shape + (d.channels,)).astype(np.float32)
    if d.alive.rule != "none":
        s[..., d.alive.channel] = np.where(rng.random(shape) < 0.4, rng.uniform(0.0, 0.3, shape), 0.0)
    return s


@pytest.mark.parametrize("d", model.KNOWN, ids=IDS)
def test_oracle_matches_the_torch_module(d):
    w = d.random_weights(seed=3, scale=0.2)
    s = _state(d, (2, 9, 11), seed=4)
    rng = np.random.default_rng(5)
    fire = rng.random((2, 9, 11)) <= d.fire_rate
    noise = rng.normal(size=(2, 9, 11, d.n_updated))
    ref = model.step_float64(d, w, s, fire, noise)
    net = DescribedNCA(d, w, dtype=torch.float64)
    out = net(torch.tensor(s, dtype=torch.float64), torch.tensor(fire), torch.tensor(noise)).detach().numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    assert np.any(ref != s), "nothing changed: the comparison would be vacuous"
    if d.alive.rule == "maxpool":
        assert np.any((ref == 0).all(-1) & (s != 0).any(-1)), "no cell died: the rule is not exercised"


def test_oracle_is_the_mnist_oracle_and_numba_cpu():
    w = fastca.NCAWeights.random(seed=7, scale=0.1)
    s = tricky_state((2, 33, 30), seed=8)
    alive = s[..., 0] > np.float32(0.1)
    fire = fastca.rng.fire_mask(11, 2, alive, spec.FIRE_RATE)
    noise = fastca.rng.normal_grid(11, 2, alive.shape, spec.MUTABLE)
    ref = model.step_float64(model.MNIST, w.arrays(), s, fire, noise)
    assert_close(ref, oracle_step(w, s, 11, 2), dict(rtol=1e-7, atol=1e-8), "description oracle vs spec oracle")
    sim = fastca.Simulation(w, s, backend="numba-cpu", input="state", seed=11, start_step=2)
    sim.run(1)
    assert_close(sim.state(), ref, TOLERANCES["one_step"], "numba-cpu vs description oracle")


def test_depthwise_order_and_wrap_by_hand():
    """Feature c*F + f is filter f on channel c; with wrap-around the left column reads the right one."""
    d = model.ModelSpec(name="probe", channels=2, perception=model.Depthwise(("identity", "sobel_x")),
                        layers=(model.Dense(2, bias=False, activation="none"),), residual=(0, 2), fire_rate=1.0,
                        boundary="wrap")
    s = np.zeros((1, 3, 4, 2), np.float32)
    s[0, 1, 3, 1] = 1.0  # channel 1 at the rightmost column
    w = np.zeros((4, 2), np.float32)
    w[3, 0] = 1.0  # feature 3 = sobel_x on channel 1 -> channel 0
    out = model.step_float64(d, {"w1": w}, s, np.ones((1, 3, 4), bool))
    # sobel_x at (1, 0) reads +2/8 from its right (1, 1) and -2/8 from its left, which wraps to (1, 3)
    assert out[0, 1, 0, 0] == -0.25 and out[0, 1, 2, 0] == 0.25
    assert out[0, 0, 0, 0] == -0.125 and out[0, 2, 0, 0] == -0.125
