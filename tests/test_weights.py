"""NCAWeights validation and .npz round trip; the published-model loader; the embedded model."""

import numpy as np
import pytest
from helpers import DISTILL_JSON, needs_distill

import fastca
from fastca.weights import NCAWeights


def test_round_trip(tmp_path, random_weights):
    w = random_weights.replace(fire_rate=0.3, noise_std=0.0, name="x")
    w.save(tmp_path / "w.npz")
    back = NCAWeights.load(tmp_path / "w.npz")
    for k, v in w.arrays().items():
        np.testing.assert_array_equal(getattr(back, k), v)
    assert (back.fire_rate, back.noise_std, back.alive_threshold, back.name) == (0.3, 0.0, 0.1, "x")
    with np.load(tmp_path / "w.npz") as z:
        assert z["w1"].shape == (3, 3, 20, 80) and int(z["format_version"]) == 1
        assert str(z["model_kind"]) == "self-classifying-mnist"


@pytest.mark.parametrize(
    "change, exc, fragment",
    [
        (dict(w1=np.zeros((3, 3, 20, 81))), ValueError, "w1 must have shape (3, 3, 20, 80)"),
        (dict(b3=np.full(19, np.nan)), ValueError, "b3 contains NaN"),
        (dict(w2=np.zeros((80, 80), bool)), TypeError, "w2 must be a float array"),
        (dict(fire_rate=2.0), ValueError, "fire_rate must be in [0, 1]"),
        (dict(noise_std=-1.0), ValueError, "noise_std must be"),
    ],
)
def test_validation(random_weights, change, exc, fragment):
    with pytest.raises(exc) as info:
        random_weights.replace(**change)
    assert fragment in str(info.value)


def test_arrays_are_float32_readonly(random_weights):
    assert random_weights.w1.dtype == np.float32 and not random_weights.w1.flags.writeable
    assert random_weights.n_params == fastca.spec.N_PARAMS == 22499


def test_truncated_and_foreign_files(tmp_path, random_weights):
    random_weights.save(tmp_path / "w.npz")
    raw = (tmp_path / "w.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a readable fastca weights"):
        NCAWeights.load(tmp_path / "cut.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="missing format_version"):
        NCAWeights.load(tmp_path / "other.npz")
    data = dict(np.load(tmp_path / "w.npz"))
    data["model_kind"] = np.str_("growing")
    np.savez(tmp_path / "kind.npz", **data)
    with pytest.raises(ValueError, match="model kind 'growing'"):
        NCAWeights.load(tmp_path / "kind.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError):
        NCAWeights.load(tmp_path / "text.npz")


def test_pretrained_loads_offline():
    for name in fastca.PRETRAINED:
        w = fastca.pretrained(name)
        assert w.n_params == 22499 and w.noise_std == 0.02 and w.fire_rate == 0.5
    assert fastca.pretrained().name == "fastca-mnist"
    assert fastca.pretrained("distill-2020").name == "distill-2020-published"
    with pytest.raises(ValueError, match="unknown pretrained model 'nope'; embedded: fastca-mnist, distill-2020"):
        fastca.pretrained("nope")


def test_model_card_names_the_embedded_weights():
    """The model card's sha256 is the embedded default model's file (so card and weights travel together)."""
    import hashlib
    from importlib import resources

    assets = resources.files("fastca").joinpath("assets")
    card = assets.joinpath("MODEL_CARD.md").read_text(encoding="utf-8")
    digest = hashlib.sha256(assets.joinpath(fastca.PRETRAINED["fastca-mnist"]).read_bytes()).hexdigest()
    assert digest in card


def test_embedded_default_model_classifies_the_embedded_digits():
    images, labels = fastca.data.sample_digits()
    r = fastca.simulate(fastca.pretrained(), images, 200, labels=labels, backend="numba-cpu", seed=1)
    assert r.accuracy[-1] > 90 and r.agreement[-1] > 75  # 256 digits; 10k-digit numbers in MODEL_CARD.md


@needs_distill
def test_load_distill_model_matches_embedded():
    w = fastca.load_distill_model(DISTILL_JSON)
    assert w.w1.shape == (3, 3, 20, 80) and w.w3.shape == (80, 19)
    assert np.float32(w.alive_threshold) == np.float32(0.1)
    emb = fastca.pretrained("distill-2020")
    for k, v in w.arrays().items():
        np.testing.assert_array_equal(getattr(emb, k), v)


def test_load_distill_model_rejects_other_json(tmp_path):
    (tmp_path / "m.json").write_text('{"modelTopology": {"node": []}}')
    with pytest.raises(ValueError, match="missing weights"):
        fastca.load_distill_model(tmp_path / "m.json")
    (tmp_path / "bad.json").write_text("not json")
    with pytest.raises(ValueError, match="not a TF.js graph-model JSON"):
        fastca.load_distill_model(tmp_path / "bad.json")
