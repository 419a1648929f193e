"""One set of run options (fastca.RunOptions) for every entry point that runs an automaton."""

import dataclasses
import inspect

import numpy as np
import pytest

import fastca
from fastca import distributed, run_options, world
from fastca.run_options import RunOptions

ENTRY_POINTS = {
    "simulate": fastca.simulate,
    "Simulation": fastca.Simulation.__init__,
    "run_world": world.run_world,
    "distributed.simulate": distributed.simulate,
    "zarr_run": distributed.zarr_run,
}
#: the documented exceptions to RunOptions' defaults
OTHER_DEFAULTS = {("zarr_run", "storage"): "float16"}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_takes_every_run_option_with_its_default(entry):
    params = inspect.signature(ENTRY_POINTS[entry]).parameters
    for field in dataclasses.fields(RunOptions):
        assert field.name in params, f"{entry} lacks run option {field.name}"
        p = params[field.name]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{entry}: {field.name} must be keyword-only"
        assert p.default == OTHER_DEFAULTS.get((entry, field.name), field.default), (entry, field.name)


def test_names_and_kwargs_round_trip():
    opts = RunOptions(backend="numba-cpu", seed=7, fire_rate=0.25, noise=False, storage="float16", threads=1,
                      on_nonfinite="warn")
    assert tuple(opts.kwargs()) == run_options.NAMES
    assert RunOptions(**opts.kwargs()) == opts
    assert opts.replace(seed=8).seed == 8 and opts.seed == 7


@pytest.mark.parametrize("bad, error", [
    (dict(seed=-1), fastca.InputError), (dict(seed=1.5), fastca.InputTypeError),
    (dict(fire_rate=1.5), fastca.InputError), (dict(fire_rate="half"), fastca.InputTypeError),
    (dict(noise=-0.1), fastca.InputError), (dict(noise="some"), fastca.InputTypeError),
    (dict(storage="float64"), fastca.InputError), (dict(threads=0), fastca.InputError),
    (dict(threads=True), fastca.InputError), (dict(on_nonfinite="ignore"), fastca.InputError),
    (dict(backend=3), fastca.InputTypeError),
])
def test_bad_options_are_refused_when_made_and_by_every_entry_point(bad, error):
    with pytest.raises(error):
        RunOptions(**bad)
    net = fastca.NCA.random(fastca.model.GROWING, 0)
    state = np.zeros((1, 8, 8, 16), np.float32)
    with pytest.raises(error):
        fastca.simulate(net, state, 1, **bad)
    da = pytest.importorskip("dask.array")
    with pytest.raises(error):  # checked before any task runs
        distributed.simulate(net, da.from_array(state, chunks=(1, 8, 8, 16)), 1, **bad)


def test_one_object_runs_simulate_and_the_distributed_rounds_alike():
    da = pytest.importorskip("dask.array")
    net = fastca.pretrained("growing-gecko")
    state = fastca.seeds.plant_seeds(net.description, 40, 40, [(20, 20)])
    opts = RunOptions(backend="numba-cpu", seed=5, fire_rate=0.75, storage="float16")
    one = fastca.simulate(net, state, 6, input="state", **opts.kwargs()).state
    chunked = distributed.simulate(net, da.from_array(state, chunks=(1, 20, 20, 16)), 6, halo=4,
                                   input="state", **opts.kwargs()).compute()
    assert one.dtype == np.float16
    np.testing.assert_array_equal(chunked, one)
    other = fastca.simulate(net, state, 6, input="state", **opts.replace(fire_rate=0.5).kwargs()).state
    assert not np.array_equal(other, one)  # the fire rate reached the kernel


def test_run_world_honours_storage_fire_rate_and_noise():
    digit = np.zeros((1, 28, 28), np.uint8)
    digit[0, 6:22, 12:16] = 255
    w = world.World.from_digits(digit, np.array([1]), 28, 56)
    net = fastca.pretrained()
    opts = RunOptions(backend="numba-cpu", seed=2, fire_rate=0.25, noise=0.01, storage="float16")
    run = world.run_world(net, w, 4, frame_every=4, frame_fn=np.array, **opts.kwargs())
    direct = fastca.simulate(net, w.gray, 4, **opts.kwargs())
    assert direct.state.dtype == np.float16 and run.frames[-1].dtype == np.float16
    np.testing.assert_array_equal(run.frames[-1], direct.state)
    plain = fastca.simulate(net, w.gray, 4, backend="numba-cpu", seed=2)
    assert not np.array_equal(plain.state, run.frames[-1].astype(np.float32))


def test_zarr_run_takes_raise_only(tmp_path):
    da = pytest.importorskip("dask.array")
    net = fastca.pretrained("growing-gecko")
    state = da.from_array(fastca.seeds.plant_seeds(net.description, 16, 16, [(8, 8)]), chunks=(1, 16, 16, 16))
    with pytest.raises(fastca.InputError, match="raise"):
        distributed.zarr_run(net, tmp_path / "unused.zarr", 1, state=state, on_nonfinite="warn")
    assert not (tmp_path / "unused.zarr").exists()  # refused before the store is made
