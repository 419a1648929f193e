"""NCAWeights validation and .npz round trip; the published-model loader; the embedded model."""

import os

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


# --- malformed files: each a one-line ValueError naming the file (issue 22, items 10, 12 and 15) ---------


def _npz_with(tmp_path, weights, file="bad.npz", raw=None, **members):
    """A weights file whose members are ``weights``' saved ones with ``members`` replaced (None: dropped),
    plus ``raw`` {member: .npy bytes} written as they are."""
    weights.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as z:
        data = {k: z[k] for k in z.files}
    for k, v in members.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    np.savez(tmp_path / file, **data)
    if raw:
        import zipfile

        with zipfile.ZipFile(tmp_path / file, "a") as z:
            for k, blob in raw.items():
                z.writestr(k + ".npy", blob)
    return tmp_path / file


def _npy_header_only(shape, descr="<f4", data=b"\0" * 16):
    """.npy bytes whose header declares ``shape`` but which hold only ``data``."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def _assert_one_line_naming(info, path, fragment):
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and fragment in msg, msg


@pytest.mark.parametrize(
    "members, fragment",
    [
        (dict(fire_rate=np.array([0.5, 0.5])), "'fire_rate' has shape (2,)"),
        (dict(fire_rate=np.array([0.5])), "'fire_rate' has shape (1,)"),
        (dict(fire_rate=np.str_("0.5")), "'fire_rate' has dtype"),
        (dict(fire_rate=np.bool_(True)), "'fire_rate' has dtype"),
        (dict(fire_rate=np.float64(2.0)), "fire_rate must be in [0, 1]"),
        (dict(noise_std=np.float64(np.nan)), "noise_std must be finite"),
        (dict(format_version=np.str_("abc")), "'format_version' has dtype"),
        (dict(format_version=np.float64(1.0)), "'format_version' has dtype"),
        (dict(format_version=np.int64(0)), "format version 0"),
        (dict(model_kind=np.array(["self-classifying-mnist"] * 2)), "'model_kind' has shape (2,)"),
        (dict(name=np.int64(3)), "'name' has dtype"),
        (dict(w1=np.zeros((3, 3, 20, 81), np.float32)), "'w1' has shape (3, 3, 20, 81)"),
        (dict(b3=np.full(19, np.inf, np.float32)), "b3 contains NaN or inf"),
        (dict(w2=np.zeros((80, 80), object)), "not a readable"),
    ],
)
def test_malformed_members_name_the_file(tmp_path, random_weights, members, fragment):
    path = _npz_with(tmp_path, random_weights, **members)
    with pytest.raises(ValueError) as info:
        NCAWeights.load(path)
    _assert_one_line_naming(info, path, fragment)


def test_declared_sizes_are_checked_before_reading(tmp_path, random_weights):
    """An .npy header declaring 10^12 elements (MemoryError before) or a short member: checked from the header."""
    path = _npz_with(tmp_path, random_weights, w1=None, raw={"w1": _npy_header_only((10**12,))})
    with pytest.raises(ValueError) as info:
        NCAWeights.load(path)
    _assert_one_line_naming(info, path, "'w1' has shape (1000000000000,)")
    path = _npz_with(tmp_path, random_weights, file="short.npz", w1=None, raw={"w1": _npy_header_only((3, 3, 20, 80))})
    with pytest.raises(ValueError) as info:
        NCAWeights.load(path)
    _assert_one_line_naming(info, path, "'w1' is truncated")


def test_load_refuses_a_pipe_or_a_folder(tmp_path):
    """A pipe without a writer would block on open; a folder is no weights file either."""
    paths = [tmp_path]
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.npz")
        paths.append(tmp_path / "pipe.npz")
    for path in paths:
        for load in (NCAWeights.load, fastca.load_distill_model):
            with pytest.raises(ValueError) as info:
                load(path)
            _assert_one_line_naming(info, path, "not a regular file")
    with open(tmp_path / "huge.npz", "wb") as f:  # sparse: no disk used
        f.truncate(1 << 30)
    with pytest.raises(ValueError, match="huge.npz: 1073741824 bytes, more than"):
        NCAWeights.load(tmp_path / "huge.npz")
    with pytest.raises(FileNotFoundError):
        NCAWeights.load(tmp_path / "missing.npz")


def test_load_refuses_a_device():
    """/dev/zero used to hang both loaders (they read it forever): run them in a child process with a
    memory and time limit, so a regression fails this test instead of filling the machine's memory."""
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    import subprocess
    import sys

    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); import fastca\n"
            "for load in (fastca.NCAWeights.load, fastca.load_distill_model):\n"
            "    try:\n        load('/dev/zero')\n    except ValueError as exc:\n        print(exc)\n")
    root = os.path.dirname(os.path.dirname(fastca.__file__))
    p = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {root!r})\n" + code],
                       capture_output=True, text=True, timeout=120)
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and len(lines) == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert all(line.startswith("/dev/zero: not a regular file") for line in lines), lines


def test_scalar_fields_are_type_checked(random_weights):
    with pytest.raises(TypeError, match="fire_rate must be a real number, got str"):
        random_weights.replace(fire_rate="0.5")
    with pytest.raises(TypeError, match="alive_threshold must be a real number, got bool"):
        random_weights.replace(alive_threshold=True)
    with pytest.raises(TypeError, match="name must be a str"):
        random_weights.replace(name=3)
    with pytest.raises(ValueError, match="noise_std 1e.* is too large"):
        random_weights.replace(noise_std=1e38)  # finite, but its noise draws overflow float32
    assert random_weights.replace(fire_rate=np.float32(0.25), noise_std=np.array(0.5)).noise_std == 0.5


# --- the published-model loader: types of every value read, and the same file rules ------------------


def _distill_graph(weights, threshold=(0.1,)):
    """A TF.js graph-model dict holding ``weights`` as the published file does (sizes as strings)."""
    import base64

    from fastca.distill import _NODES

    nodes = [{"name": "x", "op": "Placeholder"}]
    for node, key in _NODES.items():
        arr = getattr(weights, key)
        dims = arr.shape if key not in ("w2", "w3") else (1, 1) + arr.shape
        nodes.append({"name": node, "op": "Const", "attr": {"value": {"tensor": {
            "dtype": "DT_FLOAT", "tensorShape": {"dim": [{"size": str(d)} for d in dims]},
            "tensorContent": base64.b64encode(np.ascontiguousarray(arr, "<f4").tobytes()).decode()}}}})
    nodes.append({"name": "Greater/y", "op": "Const", "attr": {"value": {"tensor": {
        "dtype": "DT_FLOAT", "tensorShape": {}, "floatVal": threshold}}}})
    return {"format": "graph-model", "modelTopology": {"node": nodes}}


def _write_json(tmp_path, graph, name="m.json"):
    import json

    (tmp_path / name).write_text(json.dumps(graph))
    return tmp_path / name


def test_distill_loader_round_trip(tmp_path, random_weights):
    w = fastca.load_distill_model(_write_json(tmp_path, _distill_graph(random_weights, [0.25])))
    for k, v in random_weights.arrays().items():
        np.testing.assert_array_equal(getattr(w, k), v)
    assert w.alive_threshold == float(np.float32(0.25))


def _set_threshold_tensor(graph, **fields):
    graph["modelTopology"]["node"][-1]["attr"]["value"]["tensor"].update(fields)
    return graph


def _set_w1_tensor(graph, **fields):
    graph["modelTopology"]["node"][1]["attr"]["value"]["tensor"].update(fields)
    return graph


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda g: _set_threshold_tensor(g, floatVal="0.5"), "floatVal is a str"),  # used to give threshold 0.0
        (lambda g: _set_threshold_tensor(g, floatVal=["0.5"]), "floatVal must be a list of one number"),
        (lambda g: _set_threshold_tensor(g, floatVal=[True]), "floatVal must be a list of one number"),
        (lambda g: _set_threshold_tensor(g, floatVal=[0.1, 0.2]), "floatVal must be a list of one number"),
        (lambda g: _set_threshold_tensor(g, floatVal=[7.0]), "alive_threshold must be in [0, 1]"),
        (lambda g: _set_threshold_tensor(g, dtype="DT_INT32"), "dtype 'DT_INT32'"),
        (lambda g: _set_w1_tensor(g, tensorContent=[1, 2]), "tensorContent is a list"),
        (lambda g: _set_w1_tensor(g, tensorShape={"dim": [{"size": 3.0}] * 2}), "size is a float"),
        (lambda g: _set_w1_tensor(g, tensorShape={"dim": [{"size": "1e9"}]}), "not a non-negative integer"),
        (lambda g: _set_w1_tensor(g, tensorShape={"dim": [{"size": "100000"}] * 3}), "larger than any weight"),
        (lambda g: g["modelTopology"]["node"].append(dict(g["modelTopology"]["node"][1])) or g, "appears twice"),
        (lambda g: {"modelTopology": {"node": {"a": 1}}}, "not a list"),
    ],
)
def test_distill_loader_checks_every_value(tmp_path, random_weights, change, fragment):
    path = _write_json(tmp_path, change(_distill_graph(random_weights)))
    with pytest.raises(ValueError) as info:
        fastca.load_distill_model(path)
    _assert_one_line_naming(info, path, fragment)


def test_distill_loader_file_rules(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 200000 + "]" * 200000)  # RecursionError in the JSON parser
    with pytest.raises(ValueError) as info:
        fastca.load_distill_model(tmp_path / "deep.json")
    _assert_one_line_naming(info, tmp_path / "deep.json", "not a TF.js graph-model JSON")
    with open(tmp_path / "huge.json", "wb") as f:
        f.truncate(1 << 30)
    with pytest.raises(ValueError, match="huge.json: 1073741824 bytes, more than"):
        fastca.load_distill_model(tmp_path / "huge.json")


# --- torch.load needs a torch whose weights_only loading runs no code (issue 22, item 2) -----------------


@pytest.mark.parametrize("version, safe", [("2.5.1+cu121", False), ("2.1.0", False), ("1.13.1", False),
                                           ("", False), ("nightly", False), ("2.6.0", True), ("2.13.0+cpu", True),
                                           ("2.7.0a0+git1234", True), ("3.0", True)])
def test_require_safe_torch_load(monkeypatch, version, safe):
    import torch

    from fastca.weights import require_safe_torch_load

    monkeypatch.setattr(torch, "__version__", version)
    if safe:
        assert require_safe_torch_load() is torch
    else:
        with pytest.raises(RuntimeError, match="cannot load files safely.*torch>=2.6"):
            require_safe_torch_load()


def test_torch_pin_excludes_unsafe_versions():
    import re
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    pins = [d for d in project["dependencies"] if re.match(r"torch\b", d)]
    assert pins == ["torch>=2.6,<=2.13.0"], pins
