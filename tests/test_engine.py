"""The engine: resident Simulation, registry, global random keys, blocking-independent bits."""

import ast
from pathlib import Path

import numpy as np
import pytest
from helpers import random_state

import fastca
from benchmarks import registry
from fastca.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
HOST_BACKENDS = registry.host_backends()


@pytest.fixture(scope="module")
def world():
    images, labels = fastca.data.sample_digits()
    gray, targets, _ = fastca.data.mnist_world(images, labels, 200, 200, seed=3)
    return gray, targets


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_split_runs_equal_one_run(model, world, backend):
    gray = world[0][:60, :70]
    one = fastca.Simulation(model, gray, backend=backend, seed=4)
    one.run(12)
    two = fastca.Simulation(model, gray, backend=backend, seed=4)
    two.run(5)
    two.run(7)
    assert one.t == two.t == 12
    np.testing.assert_array_equal(one.state(), two.state())
    np.testing.assert_array_equal(fastca.simulate(model, gray, 12, backend=backend, seed=4).state, one.state())


def test_counts_and_metrics_match_simulate(model, world):
    gray, targets = world
    res = fastca.simulate(model, gray, 6, labels=targets, backend="numba-cpu", seed=1)
    sim = fastca.Simulation(model, gray, backend="numba-cpu", seed=1)
    per_step = sim.run(6, targets=targets)
    assert per_step.shape == (6, 1, fastca.spec.N_COUNTS)
    acc, agr = fastca.metrics.from_counts(per_step)
    np.testing.assert_array_equal(acc, res.accuracy)
    assert sim.metrics(targets) == (res.accuracy[-1], res.agreement[-1])
    assert per_step[-1, 0, 0] == res.alive.sum()


def test_target_minus_one_is_no_target(model, digits):
    """Cells without a target are neither right nor wrong (they do not lower the accuracy)."""
    images, labels = digits[0][:2], digits[1][:2]
    full = fastca.simulate(model, images, 30, labels=labels, backend="numba-cpu")
    per_cell = np.repeat(labels[:, None, None], 28, 1).repeat(28, 2).astype(np.int16)
    per_cell[1] = -1
    part = fastca.simulate(model, images, 30, labels=per_cell, backend="numba-cpu")
    only_first = fastca.simulate(model, images[:1], 30, labels=labels[:1], backend="numba-cpu")
    assert part.accuracy[-1] == pytest.approx(only_first.accuracy[-1])
    assert part.accuracy[-1] != pytest.approx(full.accuracy[-1]) or np.all(full.labels[1][full.alive[1]] == labels[1])


def test_mutate_and_edits_equal_host_operations(model, world):
    gray = world[0][:56, :56]
    sim = fastca.Simulation(model, gray, backend="numba-cpu", seed=2)
    sim.run(3)
    state = sim.state()
    new = np.roll(gray, 5, axis=1)
    sim.mutate(new)
    np.testing.assert_array_equal(sim.state(), fastca.mutate(state, new))
    # erase a disk, draw a stroke, set a window: each equals the same change made by mutate on the host
    before = sim.state()
    g = before[..., 0].copy()
    sim.edit("erase", center=(20, 30), radius=5)
    yy, xx = np.ogrid[:56, :56]
    g[(yy - 20) ** 2 + (xx - 30) ** 2 <= 25] = 0
    np.testing.assert_array_equal(sim.state(), fastca.mutate(before, g))
    before = sim.state()
    sim.edit("stroke", points=[(5, 5), (40, 12)], width=3)
    from fastca.simulation import stroke_mask

    g = np.where(stroke_mask(56, 56, [(5, 5), (40, 12)], 3), np.float32(1), before[..., 0])
    np.testing.assert_array_equal(sim.state(), fastca.mutate(before, g))
    before = sim.state()
    patch = np.full((4, 9), 200, np.uint8)
    sim.edit("set", gray=patch, at=(50, 40))
    g = before[..., 0].copy()
    g[50:54, 40:49] = np.float32(200) / np.float32(255)
    np.testing.assert_array_equal(sim.state(), fastca.mutate(before, g))
    with pytest.raises(ValueError, match="outside"):
        sim.edit("set", gray=patch, at=(54, 40))
    with pytest.raises(ValueError, match="edit kind"):
        sim.edit("paint")


@pytest.mark.parametrize("change", ["mutate", "edit", "live"])
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_steps_after_a_change_equal_a_fresh_start(model, world, backend, change):
    """Whatever the runner derived from the state (numba-cpu's alive index) follows changes to it."""
    gray = world[0][:60, :64]
    sim = fastca.Simulation(model, gray, backend=backend, seed=5)
    sim.run(3)
    if change == "mutate":  # new digits: cells born and cells dying
        sim.mutate(np.roll(gray, (7, 9), axis=(0, 1)))
    elif change == "edit":
        sim.edit("stroke", points=[(2, 2), (57, 60)], width=4)
    else:  # written through the live array: a dead band comes alive, an alive block dies
        live = sim.state(copy=False)
        live[10:14, :, 0] = 1.0
        live[30:50, 20:40, 0] = 0.0
        live[30:50, 20:40, 1:] = 0.0
    changed = sim.state()
    sim.run(4)
    fresh = fastca.Simulation(model, changed, backend=backend, seed=5, input="state", start_step=3)
    fresh.run(4)
    np.testing.assert_array_equal(sim.state(), fresh.state())


def test_alive_index_lists_alive_and_read_columns():
    from fastca.kernels import cpu

    rng = np.random.default_rng(0)
    rows = np.zeros((9, 23, 20), np.float32)
    rows[..., 0] = rng.random((9, 23)) * (rng.random((9, 23)) < 0.3)
    rows[4] = 0.0  # a dead row between alive ones
    rows[:, 0, 0] = rows[:, -1, 0] = 0.5  # alive edge columns
    ptr, runs = cpu.alive_index(rows, np.float32(0.1))

    def columns(kind, r):
        flags = np.zeros(23, bool)
        for a, b in runs[ptr[kind, r]:ptr[kind, r + 1]]:
            assert 0 <= a < b <= 23 and not flags[a:b].any()
            flags[a:b] = True
        return flags

    alive = rows[..., 0] > np.float32(0.1)
    padded = np.pad(alive, 1)
    read = np.zeros_like(alive)
    for dy in range(3):
        for dx in range(3):
            read |= padded[dy:dy + 9, dx:dx + 23]
    for r in range(9):
        np.testing.assert_array_equal(columns(0, r), alive[r])
        np.testing.assert_array_equal(columns(1, r), read[r])


def test_callback_view_is_read_only(model, world):
    seen = []

    def callback(t, state):
        seen.append(t)
        with pytest.raises(ValueError, match="read-only"):
            state[0, 0, 0, 0] = 1.0

    fastca.Simulation(model, world[0][:30, :30], backend="numba-cpu").run(2, callback=callback)
    assert seen == [1, 2]


def test_options_are_checked_before_any_work(model):
    gray = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="not supported by backend 'torch'"):
        fastca.Simulation(model, gray, backend="torch", storage="float16")
    with pytest.raises(ValueError, match="output must be one of"):
        fastca.simulate(model, gray, 10**9, backend="numba-cpu", output="device")  # fails at once, not after 1e9 steps
    with pytest.raises(ValueError, match="origin"):
        fastca.Simulation(model, gray, origin=(0, -1, 0))
    with pytest.raises(TypeError):
        fastca.Simulation(model, gray, backend="numba-cpu", options={"no_such_option": 1})
    with pytest.raises(ValueError, match="unknown backend"):
        fastca.Simulation(model, gray, backend="numba-gpu")


@pytest.mark.parametrize("storage", ["float32", "float16"])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_cut_block_with_origin_equals_whole_world(model, world, storage, k):
    """A block cut with a margin of k, run k steps with its origin, equals the whole run inside."""
    gray = world[0]
    whole = fastca.simulate(model, gray, k, seed=9, start_step=4, backend="numba-cpu", storage=storage).state
    for y0, x0, h, w in [(0, 0, 60, 70), (37, 101, 90, 99), (140, 150, 60, 50), (11, 3, 2 * k + 1, 2 * k + 1)]:
        block = gray[y0 : y0 + h, x0 : x0 + w]
        cut = fastca.simulate(model, block, k, seed=9, start_step=4, backend="numba-cpu", storage=storage,
                              origin=(0, y0, x0)).state
        # interior: k cells in from each cut edge (edges of the world itself are real edges)
        ys = slice(0 if y0 == 0 else k, h if y0 + h >= 200 else h - k)
        xs = slice(0 if x0 == 0 else k, w if x0 + w >= 200 else w - k)
        inner = cut[ys, xs]
        np.testing.assert_array_equal(inner, whole[y0 : y0 + h, x0 : x0 + w][ys, xs], err_msg=f"{(y0, x0, h, w)}")
        assert inner.size > 0


def test_cut_block_on_torch(model, world):
    gray = world[0][:80, :80]
    k = 3
    whole = fastca.simulate(model, gray, k, seed=2, backend="torch").state
    cut = fastca.simulate(model, gray[20:70, 30:80], k, seed=2, backend="torch", origin=(0, 20, 30)).state
    np.testing.assert_allclose(cut[k:-k, k:], whole[20 + k : 70 - k, 30 + k : 80], rtol=1e-6, atol=1e-6)
    # the fire masks are exactly those of the whole grid (global keys)
    changed_whole = np.any(whole != fastca.initial_state(gray), -1)[20 + k : 70 - k, 30 + k : 80]
    changed_cut = np.any(cut != fastca.initial_state(gray[20:70, 30:80]), -1)[k:-k, k:]
    np.testing.assert_array_equal(changed_cut, changed_whole)


def test_batch_rows_are_samples_with_global_keys(model, digits):
    """A batch is keyed by sample index: a sub-batch with origin=(i, 0, 0) gives the same digits."""
    images = digits[0][:6]
    full = fastca.simulate(model, images, 15, seed=1, backend="numba-cpu").state
    part = fastca.simulate(model, images[2:5], 15, seed=1, backend="numba-cpu", origin=(2, 0, 0)).state
    np.testing.assert_array_equal(part, full[2:5])


@pytest.mark.parametrize("band_rows", [1, 7, 30, 64, 300])
@pytest.mark.parametrize("threads", [1, 2])
def test_bits_do_not_depend_on_bands_or_threads(random_weights, band_rows, threads):
    """Bands change which cells share a BLAS block; the bits must not change."""
    state = random_state((3, 41, 37), seed=5)
    ref = fastca.simulate(random_weights, state, 3, backend="numba-cpu", seed=3, input="state").state
    sim = fastca.Simulation(random_weights, state, backend="numba-cpu", seed=3, input="state", threads=threads,
                            options={"band_rows": band_rows})
    sim.run(3)
    np.testing.assert_array_equal(sim.state(), ref)


def test_evaluate_does_not_depend_on_batch(model, digits):
    images, labels = digits
    a = evaluate(model, images[:60], labels[:60], half=8, batch=25, backend="numba-cpu")
    b = evaluate(model, images[:60], labels[:60], half=8, batch=60, backend="numba-cpu")
    np.testing.assert_array_equal(a.accuracy, b.accuracy)
    np.testing.assert_array_equal(a.agreement, b.agreement)


def _imports(path, lazy=False):
    """Modules a file imports (relative imports resolved against fastca): at its top level, or with
    ``lazy`` anywhere (inside functions too, and ``importlib.import_module`` of a constant name)."""
    tree = ast.parse(path.read_text())
    pkg = "fastca.kernels" if path.parent.name == "kernels" else ".".join(
        ("fastca",) + path.relative_to(ROOT / "fastca").parent.parts)
    found = set()
    for node in ast.walk(tree) if lazy else tree.body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
            found.update(n for n in names if n.startswith("fastca"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fastca"))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and node.args[0].value.startswith("fastca")
              and ast.unparse(node.func) in ("importlib.import_module", "import_module", "__import__")):
            found.add(node.args[0].value)
    return found


def test_kernels_import_only_spec_rng_errors_and_themselves():
    for path in (ROOT / "kernels").glob("*.py"):
        bad = {m for m in _imports(path) if not m.startswith(("fastca.kernels", "fastca.spec", "fastca.rng", "fastca.errors"))
               and m != "fastca"}
        assert not bad, f"{path.name} imports {bad}"


def test_only_the_backends_import_the_kernels():
    """The other direction: outside fastca/backends/, no module of fastca imports fastca.kernels, at its
    top level or inside a function; they reach compiled code through fastca.backends (its host module)."""
    checked = 0
    for path in (ROOT / "fastca").rglob("*.py"):
        if path.relative_to(ROOT / "fastca").parts[0] in ("backends", "kernels"):  # kernels: the installed layout
            continue
        bad = {m for m in _imports(path, lazy=True) if m == "fastca.kernels" or m.startswith("fastca.kernels.")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: load kernels through fastca.backends"
        checked += 1
    assert checked > 20


def test_no_import_cycle_in_the_package():
    modules = {}
    for path in list((ROOT / "fastca").rglob("*.py")) + list((ROOT / "kernels").glob("*.py")):
        if path.parent.name == "kernels":
            name = "fastca.kernels." + path.stem
        else:
            name = ".".join(("fastca",) + path.relative_to(ROOT / "fastca").with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph = {m: {d for d in _imports(p) if d in modules and d != m} for m, p in modules.items()}
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for d in graph[m]:
            if d == "fastca" or m == "fastca":
                continue  # `from . import x` in the package __init__ itself is not a cycle
            if state.get(d) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack + [m, d]))
            if d not in state:
                visit(d, stack + [m])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [])


def _backend_name_alias(tree):
    """ids of the nodes of ``BackendName = Literal[...]`` at a module's top level."""
    return {id(c) for node in tree.body if isinstance(node, ast.Assign)
            and [ast.unparse(t) for t in node.targets] == ["BackendName"] for c in ast.walk(node.value)}


def test_backend_names_appear_only_in_their_own_files():
    names = set(fastca.backends.names())
    for path in (ROOT / "fastca").rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        # the type of ``backend=`` lists every name; test_backend_name_type_is_the_registry keeps it so
        alias = _backend_name_alias(tree) if path == ROOT / "fastca" / "backends" / "__init__.py" else set()
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                    and id(node) not in alias):
                hit = names & {node.value}
                if hit and path.parent.name == "backends":
                    assert path.stem.replace("_ref", "").replace("_", "-") in hit or path.stem == "torch_ref", \
                        f"{path.name} names {hit}"
                elif hit:
                    raise AssertionError(f"{path.relative_to(ROOT)}:{node.lineno} names backend {hit}")


def test_backend_name_type_is_the_registry():
    import typing

    assert set(typing.get_args(fastca.backends.BackendName)) == {"auto", *fastca.backends.names()}
    for fn in (fastca.simulate, fastca.Simulation.__init__):
        assert typing.get_type_hints(fn)["backend"] == fastca.backends.BackendName


def test_the_mutation_and_label_rules_have_one_definition():
    """spec.mutate is the host mutation (NumPy, float32 and float16) and training's (torch), bit for bit;
    spec.class_labels is spec.label_of on every cell, NaN and inf included."""
    torch = pytest.importorskip("torch")
    from fastca._state import mutate_host

    rng = np.random.default_rng(4)
    state = rng.normal(0, 1, (2, 9, 11, 20)).astype(np.float32)
    state[0, 1, 2, 5] = np.nan
    gray = rng.uniform(0, 0.2, (2, 9, 11)).astype(np.float32)
    for dtype in (np.float32, np.float16):
        host, rule = state.astype(dtype), state.astype(dtype)
        mutate_host(host, gray, 0.1)
        fastca.spec.mutate(rule, gray, np.float32(0.1))
        assert host.tobytes() == rule.tobytes()
        if dtype == np.float32:
            tensor = torch.from_numpy(state.copy())
            fastca.spec.mutate(tensor, torch.from_numpy(gray), 0.1)
            assert tensor.numpy().tobytes() == host.tobytes()

    cells = rng.normal(0, 1, (400, 20)).astype(np.float32)
    cells[::7, 10:] = -np.abs(cells[::7, 10:])
    cells[::11, 13] = np.nan
    cells[::13, 17] = np.inf
    cells[::17, 12] = -np.inf
    cells[::19, 10:] = cells[::19, 10:11]  # ties: the first
    with np.errstate(invalid="ignore"):  # inf - inf, the rule's own finiteness test, in Python
        labels = np.array([fastca.spec.label_of(c) for c in cells]).T
    np.testing.assert_array_equal(np.stack(fastca.spec.class_labels(cells[:, 10:])), labels)
