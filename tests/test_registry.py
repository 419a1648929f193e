"""benchmarks/registry.py is the one table: an entry added there reaches every equivalence test and benchmark.

A twin of every built-in host backend (fastca's backend registry) and of every known
description (the benchmarks' registry) is registered under monkeypatch; the test modules
and the pytest-benchmark module are then imported afresh, and each of their parametrizations
that runs an original must run its twin too, with no test file edited. Then every workload
x host backend of the real table, and the twins, are set up and run (tiny worlds, 1 step).
"""

import dataclasses
import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import fastca
from benchmarks import registry
from fastca.backends import base

ROOT = Path(__file__).resolve().parents[1]
#: the modules that parametrize over the registry: description and backend equivalence, benchmarks
DESCRIPTION_MODULES = ["tests/test_descriptions.py", "tests/test_descriptions_torch.py",
                       "benchmarks/bench_simulate.py"]
BACKEND_MODULES = ["tests/test_descriptions.py", "tests/test_oracle.py", "tests/test_properties.py",
                   "tests/test_rules.py", "benchmarks/bench_simulate.py"]


def _twin_name(name):
    return f"{name}-twin"


@pytest.fixture
def twins(monkeypatch):
    """Register a twin of every usable host backend and every registered description; return the originals."""
    hosts = registry.host_backends()
    for name in hosts:
        info = base.get(name)
        monkeypatch.setitem(base._REGISTRY, _twin_name(name), dataclasses.replace(info, name=_twin_name(name)))
    known = registry.descriptions()
    for d in known:
        twin = dataclasses.replace(d, name=_twin_name(d.name))
        monkeypatch.setitem(registry.WORKLOADS, twin.name, registry.described(twin))
    return hosts, [d.name for d in known]


def _parametrizations(path):
    """(test name, the names each parametrize mark runs) of the module at ``path``, imported afresh."""
    spec = importlib.util.spec_from_file_location(f"_fresh_{Path(path).stem}", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, fn in vars(module).items():
        if not name.startswith("test_"):
            continue
        for mark in getattr(fn, "pytestmark", []):
            if mark.name == "parametrize":
                yield name, {_name(v) for value in mark.args[1] for v in _flat(value)}


def _flat(value):
    return value if isinstance(value, tuple) else (value,)


def _name(v):
    """A parameter as the name it is registered under (a description's name, a backend's)."""
    return getattr(v, "name", v) if not isinstance(v, str) else v


def _assert_twins_follow(paths, originals):
    """Wherever an original is a parameter, its twin is one too; and some original is (not vacuous)."""
    for path in paths:
        seen = False
        for test, names in _parametrizations(path):
            for original in originals:
                if original in names:
                    seen = True
                    assert _twin_name(original) in names, f"{path}::{test} runs {original} but not its twin"
        assert seen, f"{path}: no parametrization runs any of {originals}"


def test_a_registered_description_joins_every_equivalence_test_and_benchmark(twins):
    _, known = twins
    assert [d.name for d in registry.descriptions()] == known + [_twin_name(n) for n in known]
    _assert_twins_follow(DESCRIPTION_MODULES, known)


def test_a_registered_backend_joins_every_equivalence_test_and_benchmark(twins):
    hosts, _ = twins
    assert set(registry.host_backends()) == set(hosts) | {_twin_name(b) for b in hosts}
    _assert_twins_follow(BACKEND_MODULES, hosts)


def test_backends_come_from_fastcas_registry_fastest_first():
    assert registry.backends("all") == fastca.available_backends()
    host, device = registry.backends("host"), registry.backends("device")
    assert sorted(host + device) == sorted(fastca.available_backends())
    assert all(not base.get(b).device_input for b in host) and all(base.get(b).device_input for b in device)
    assert registry.ORACLE in host and registry.ORACLE not in registry.checked_backends()
    assert all("float16" in base.get(b).storages for b in registry.host_backends("float16"))
    with pytest.raises(ValueError, match="kind must be one of"):
        registry.backends("gpu")


def test_the_table_holds_every_known_description_and_the_pretrained_world():
    from fastca import model

    assert registry.descriptions() == model.KNOWN
    assert registry.workloads() == [d.name for d in model.KNOWN] + [registry.MNIST_PRETRAINED,
                                                                   registry.GROWING_PRETRAINED]
    with pytest.raises(ValueError, match="is taken"):
        registry.register(registry.described(model.GROWING))


@pytest.mark.parametrize("backend", registry.host_backends())
@pytest.mark.parametrize("workload", registry.workloads())
def test_every_workload_runs_on_every_host_backend(workload, backend):
    run = registry.setup(workload, backend, 24, steps=1)
    result = run()
    w = registry.WORKLOADS[workload]
    assert result.steps == 1 and result.backend == backend
    assert result.state.shape[-1] == w.description.channels
    again = run()  # each call runs from the same world: the calls agree
    np.testing.assert_array_equal(again.state, result.state)


def test_the_twins_are_set_up_and_run(twins):
    """A registered backend and a registered description are benchmarked with no other change."""
    hosts, known = twins
    twin_backend = _twin_name(registry.ORACLE)
    assert registry.setup(known[0], twin_backend, 16, steps=1)().backend == twin_backend
    twin_description = _twin_name(known[1])
    result = registry.setup(twin_description, registry.ORACLE, 16, steps=1)()
    assert result.state.shape == (1, 16, 16, registry.WORKLOADS[twin_description].description.channels)


def test_updated_cells_counts_the_firing_alive_cells():
    """The MNIST world's count is the shared generator's fire mask on the gray's alive cells."""
    gray = registry.mnist_world(56)[0]
    alive = fastca.data.alive_mask(gray)[None]
    expected = sum(int(fastca.rng.fire_mask(3, t, alive, 0.5).sum()) for t in range(2))
    assert registry.updated_cells(registry.MNIST_PRETRAINED, 56, 2, seed=3) == (float(alive.mean()), expected)
    frac, updates = registry.updated_cells("growing", 64, 2)
    assert 0 < frac < 1 and updates > 0


@pytest.mark.parametrize("script", ["compare", "cpu_bench", "description_bench", "gpu_bench", "scaling"])
def test_study_scripts_import_and_parse_their_command_lines(script, capsys):
    """The scripts that read the table import here, GPU or not, and their options parse (``--help``)."""
    module = importlib.import_module(f"benchmarks.{script}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0 and "usage" in capsys.readouterr().out
