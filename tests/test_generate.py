"""Kernels generated per model description (kernels/generate.py, kernels/cpu_shape.py): files, modules,
the 'compiling' message, and refusals. No kernel is compiled here."""

import dataclasses
import os

import numpy as np
import pytest

from fastca import model
from fastca.kernels import cpu_shape, dense, generate


def test_one_module_per_description_written_once():
    a = cpu_shape.kernel(model.GROWING)
    assert cpu_shape.kernel(dataclasses.replace(model.GROWING, name="other name")) is not a  # name is in the file name
    same = cpu_shape.kernel(model.GROWING)
    assert same is a
    path = a.__file__
    assert os.path.dirname(path) == str(generate.folder())
    stamp = os.stat(path).st_mtime_ns
    generate._LOADED.clear()  # a new process: the file is found, not rewritten (its time stamp keys Numba's cache)
    again = cpu_shape.kernel(model.GROWING)
    assert again.__file__ == path and os.stat(path).st_mtime_ns == stamp
    wider = dataclasses.replace(model.GROWING, layers=(model.Dense(129), model.GROWING.layers[1]))
    assert cpu_shape.kernel(wider).__file__ != path


def test_generated_constants_follow_the_description():
    for d in model.KNOWN:
        k = cpu_shape.kernel(d)
        layers, total = cpu_shape.layout(d)
        assert (k.C, k.R0, k.OUT) == (d.channels, d.residual[0], d.n_updated)
        assert k.WRAP == (d.boundary == "wrap")
        assert k.ALIVE == {"none": 0, "static": 1, "maxpool": 2}[d.alive.rule]
        assert k.WEIGHTS == total and k.OUT_PAD == layers[-1].out_pad
        assert [x.out for x in layers] == [s[-1] for n, s in d.weight_shapes().items() if n.startswith("w")]
        assert all(x.out_pad % dense.VL == 0 and x.out <= x.out_pad < x.out + dense.VL for x in layers)


def test_packed_weights_hold_every_array_once():
    rng = np.random.default_rng(0)
    for d in model.KNOWN:
        arrays = {k: rng.normal(size=s).astype(np.float32) for k, s in d.weight_shapes().items()}
        packed = cpu_shape.pack_weights(d, arrays)
        layers, total = cpu_shape.layout(d)
        assert packed.shape == (total,) and packed.ctypes.data % 64 == 0 and not packed.flags.writeable
        for x in layers:
            block = packed[x.w_off:x.w_off + x.k * x.out_pad].reshape(x.k, x.out_pad)
            w = arrays[x.name].reshape(-1, x.out)
            assert np.array_equal(np.sort(block[:w.shape[0], :x.out].ravel()), np.sort(w.ravel()))
            assert not block[:, x.out:].any() and not block[w.shape[0]:].any()  # padding is zero
            if x.bias:
                assert np.array_equal(packed[x.b_off:x.b_off + x.out], arrays[x.bias])
            assert not packed[x.b_off + x.out:x.b_off + x.out_pad].any()


def test_depthwise_rows_are_filter_major():
    d = model.GROWING
    arrays = {k: np.zeros(s, np.float32) for k, s in d.weight_shapes().items()}
    w1 = np.arange(48, dtype=np.float32)[:, None] * np.ones((1, 128), np.float32)  # row r holds r
    arrays["w1"] = w1
    packed = cpu_shape.pack_weights(d, arrays)
    x = cpu_shape.layout(d)[0][0]
    rows = packed[x.w_off:x.w_off + x.k * x.out_pad].reshape(x.k, x.out_pad)[:, 0]
    f, c = 3, 16
    for feature in range(f * c):  # P's column f*C + c holds the description's feature c*F + f
        assert rows[feature] == (feature % c) * f + feature // c


def test_compiling_message_keys_on_the_generated_module(tmp_path, monkeypatch, capsys):
    from fastca import _numba_setup
    from fastca.backends import numba_cpu

    k = cpu_shape.kernel(model.ODD[0])
    monkeypatch.setattr(_numba_setup, "cache_dir", str(tmp_path))
    monkeypatch.setattr(numba_cpu, "_ANNOUNCED", set())
    if k.step_inplace.signatures:
        pytest.skip("compiled in this process already")
    numba_cpu._announce_compilation(k)
    assert "compiling the CPU kernels" in capsys.readouterr().err
    numba_cpu._announce_compilation(k)
    assert capsys.readouterr().err == ""  # once per module and process
    monkeypatch.setattr(numba_cpu, "_ANNOUNCED", set())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / f"{os.path.basename(k.__file__)[:-3]}.other-12.py311.nbi").write_bytes(b"")
    assert not generate.is_cached(k)  # another function's index: the step still compiles
    (tmp_path / "sub" / f"{os.path.basename(k.__file__)[:-3]}.step_inplace-181.py311.nbi").write_bytes(b"")
    assert generate.is_cached(k)
    numba_cpu._announce_compilation(k)
    assert capsys.readouterr().err == ""


def test_render_replaces_only_the_block():
    text = generate.render("cpu", "C = 7")
    template = generate.template_source("cpu")
    assert text.count(generate.BEGIN) == 1 and text.count(generate.END) == 1
    assert text.split(generate.BEGIN)[0].rstrip() == template.split(generate.BEGIN)[0].rstrip()
    assert text.split(generate.END)[1] == template.split(generate.END)[1]
    assert "\nC = 7\n" in text and "\nC = 20  #" not in text
