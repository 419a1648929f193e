"""Dask runs of any model description equal one machine's run bit for bit (issue 23)."""

import dataclasses

import numpy as np
import pytest

import fastca
from fastca import model
from fastca.nca import NCA

da = pytest.importorskip("dask.array")
dist = pytest.importorskip("fastca.distributed")


def _state(d, shape, seed=1):
    g = np.random.default_rng(seed)
    s = g.normal(0, 0.5, shape + (d.channels,)).astype(np.float32)
    if d.alive.rule == "maxpool":
        s *= (g.random(shape) < 0.4)[..., None]
    elif d.alive.rule == "static":
        s[..., d.alive.channel] = g.random(shape) * (g.random(shape) < 0.5)
    return s


@pytest.mark.parametrize("d", [model.GROWING, model.ODD[0], model.TEXTURE, model.ODD[1]], ids=lambda d: d.name)
def test_chunked_rounds_equal_one_machine(d):
    net = NCA.random(d, 2, scale=0.2)
    s = _state(d, (2, 50, 45))
    ref = fastca.simulate(net, s, 9, backend="numba-cpu", input="state", seed=4).state
    wrap = d.boundary == "wrap"
    x = da.from_array(s, chunks=(1, 50, 45, d.channels) if wrap else (1, 17, 15, d.channels))
    out = dist.simulate(net, x, 9, halo=6, seed=4, input="state", backend="numba-cpu", persist=False)
    np.testing.assert_array_equal(out.compute(scheduler="sync"), ref)
    assert not np.array_equal(ref, s)


def test_the_maxpool_rule_needs_a_halo_of_two_cells_per_step(monkeypatch):
    """A round of k steps reads 2k cells under the max-pool rule: with a reach of 1 the chunks' edges go wrong."""
    d = model.GROWING
    net = NCA.random(d, 1, scale=0.2)
    g = np.random.default_rng(1)  # sparse cells with alpha near the threshold: survival often turns on a neighbour
    s = g.normal(0, 0.3, (1, 48, 48, 16)).astype(np.float32)
    s[..., 3] = 0.1 + 0.05 * g.normal(size=(1, 48, 48))
    s *= (g.random((1, 48, 48)) < 0.25)[..., None]
    ref = fastca.simulate(net, s, 12, backend="numba-cpu", input="state", seed=4).state
    x = da.from_array(s, chunks=(1, 8, 8, d.channels))
    run = dict(halo=2, seed=4, input="state", backend="numba-cpu", persist=False)
    np.testing.assert_array_equal(dist.simulate(net, x, 12, **run).compute(scheduler="sync"), ref)
    monkeypatch.setattr(dist.rounds, "reach", lambda description: 1)  # rounds of 2 steps with a halo of 2
    assert not np.array_equal(dist.simulate(net, x, 12, **run).compute(scheduler="sync"), ref)


def test_refusals_name_the_limit():
    net = NCA.random(model.TEXTURE, 0)
    s = _state(model.TEXTURE, (1, 40, 40))
    with pytest.raises(ValueError, match="wraps around the grid: .*one chunk along H and W"):
        dist.simulate(net, da.from_array(s, chunks=(1, 20, 40, 12)), 2, halo=4, input="state")
    grow = NCA.random(model.GROWING, 0)
    with pytest.raises(ValueError, match="halo must be at least 2"):
        dist.simulate(grow, da.from_array(_state(model.GROWING, (1, 20, 20)), chunks=(1, 10, 10, 16)), 2, halo=1,
                      input="state")
    with pytest.raises(ValueError, match="takes a full state"):
        dist.simulate(grow, da.zeros((20, 20), chunks=10), 2, halo=4)


@pytest.mark.parametrize("d", [model.GROWING, model.TEXTURE, model.ODD[1]], ids=lambda d: d.name)
def test_zarr_run_equals_one_machine_and_resumes(tmp_path, d):
    """Out of core, any description: the same bits as one machine, also when the run stops and resumes."""
    net = NCA.random(d, 3, scale=0.2)
    s = _state(d, (1, 40, 36))
    ref = fastca.simulate(net, s, 7, backend="numba-cpu", input="state", seed=2, storage="float16").state
    wrap = d.boundary == "wrap"
    x = da.from_array(s, chunks=(1, 40, 36, d.channels) if wrap else (1, 16, 12, d.channels))
    store = str(tmp_path / "run")
    run = dict(halo=4, seed=2, backend="numba-cpu", progress=None, scheduler="sync")
    _, t = dist.zarr_run(net, store, 3, state=x, **run)
    assert t == 3
    out, t = dist.zarr_run(net, store, 7, **run)
    assert t == 7
    np.testing.assert_array_equal(np.asarray(out.compute(scheduler="sync")), ref)
    assert dist.stored_record(store)["shape"] == [1, 40, 36, d.channels]


def test_zarr_run_records_what_the_bits_depend_on(tmp_path):
    d = model.GROWING
    net = NCA.random(d, 3, scale=0.2)
    x = da.from_array(_state(d, (1, 24, 24)), chunks=(1, 12, 12, 16))
    store = str(tmp_path / "run")
    run = dict(halo=4, seed=2, backend="numba-cpu", progress=None, scheduler="sync")
    dist.zarr_run(net, store, 2, state=x, fire_rate=0.25, **run)
    with pytest.raises(ValueError, match="settings"):  # the model's own fire rate: other bits
        dist.zarr_run(net, store, 4, **run)
    slower = dataclasses.replace(d, fire_rate=0.25)  # the same arrays, another description: another model
    with pytest.raises(ValueError, match="settings"):
        dist.zarr_run(NCA(slower, net.arrays()), store, 4, fire_rate=0.25, **run)
    _, t = dist.zarr_run(net, store, 4, fire_rate=0.25, **run)
    assert t == 4
    ref = fastca.simulate(net, np.asarray(x), 4, backend="numba-cpu", input="state", seed=2, storage="float16",
                          fire_rate=0.25).state
    np.testing.assert_array_equal(np.asarray(dist.zarr_run(net, store, 4, fire_rate=0.25, **run)[0]), ref)
    with pytest.raises(ValueError, match="no MNIST readout"):
        dist.zarr_run(net, str(tmp_path / "other"), 2, state=x, tiles=dist.MnistTiles(np.zeros((1, 1), np.int64),
                      np.zeros(1, np.int64)), **run)
    with pytest.raises(ValueError, match="halo must be at least 2"):
        dist.zarr_run(net, str(tmp_path / "other"), 2, state=x, **{**run, "halo": 1})
    tex = NCA.random(model.TEXTURE, 0)
    with pytest.raises(ValueError, match="wraps around the grid"):
        dist.zarr_run(tex, str(tmp_path / "tex"), 2, state=da.from_array(_state(model.TEXTURE, (1, 24, 24)),
                                                                          chunks=(1, 12, 24, 12)), **run)
