"""The one table the tests, the pytest-benchmark module and the study scripts read: backends x workloads.

Backends come from fastca's own backend registry (:mod:`fastca.backends`), never typed here:
a backend module that registers itself is run by every equivalence test that parametrizes
over :func:`host_backends` (or :func:`checked_backends`) and by every benchmark over
:func:`backends`. A workload is a model and the world it runs on, buildable at any size:
one per model description of :data:`fastca.model.KNOWN` (random weights: neither speed nor
equivalence depends on their values) and the pretrained MNIST model on a world of tiled
digits (:data:`MNIST_PRETRAINED`), and the shipped growing model on a world of grown geckos
(:data:`GROWING_PRETRAINED`: trained weights keep the patterns as they are, where random
weights let a grown world die within 40 steps). :func:`register` adds one; :func:`descriptions` is what
the equivalence tests run. :func:`setup` builds everything outside the timed region (world,
model, JIT warm-up) and returns a zero-argument callable that runs the timed work, e.g.::

    run = registry.setup("growing", "numba-cpu", 1024, steps=10)
    result = run()  # a fastca.SimResult; result.seconds is the step loop alone
"""

import dataclasses
from typing import Any, Callable

import numpy as np

import fastca

STEPS = 20  #: steps of a benchmark run unless told
ORACLE = "torch"  #: the reference backend every other backend is compared with
MNIST_PRETRAINED = "mnist-pretrained"  #: the workload of fastca.pretrained() on tiled MNIST digits
GROWING_PRETRAINED = "growing-gecko"  #: the shipped growing model on a world of geckos grown from seeds
GECKO_SPACING = 48  #: cells between the seeds of :func:`gecko_world` (about 31% of the world alive)
GECKO_GROWTH = 96  #: steps the geckos of :func:`gecko_world` grow before a run starts
KINDS = ("all", "host", "device")


# -- backends ---------------------------------------------------------------------------------------

def backends(kind: str = "all", storage: str | None = None) -> list[str]:
    """Backends usable here, fastest first (fastca's registry): "all", "host" (they take host
    arrays: ``not info.device_input``) or "device" (device input); only those storing
    ``storage`` when given."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    out = []
    for name in fastca.available_backends():
        info = fastca.backends.get(name)
        if kind != "all" and info.device_input != (kind == "device"):
            continue
        if storage is None or storage in info.storages:
            out.append(name)
    return out


def host_backends(storage: str | None = None) -> list[str]:
    """The backends the host equivalence tests run, fastest first (the oracle included)."""
    return backends("host", storage)


def checked_backends(storage: str | None = None) -> list[str]:
    """The host backends compared with :data:`ORACLE` (every host backend but the oracle)."""
    return [b for b in host_backends(storage) if b != ORACLE]


# -- worlds and models ------------------------------------------------------------------------------

def mnist_world(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A size x size world of tiled MNIST test digits (full test set if $FASTCA_MNIST_DIR is set,
    else the embedded sample) and its per-cell target map."""
    try:
        images, labels = fastca.data.load_mnist("test")
    except FileNotFoundError:
        images, labels = fastca.data.sample_digits()
    gray, targets, _ = fastca.data.mnist_world(images, labels, size, size, seed=seed)
    return gray, targets


def world_of_kind(kind: str, size: int, seed: int = 0) -> np.ndarray:
    """A size x size uint8 world: "dense" (a digit in every 28x28 tile), "sparse" (a digit in one
    tile of four, the others blank) or "blank" (no alive cell)."""
    gray, _ = mnist_world(size, seed)
    if kind == "dense":
        return gray
    if kind == "blank":
        return np.zeros_like(gray)
    if kind == "sparse":
        tiles = (np.arange(size)[:, None] // 28 % 2 == 0) & (np.arange(size)[None, :] // 28 % 2 == 0)
        return np.where(tiles, gray, 0).astype(np.uint8)
    raise ValueError(f"world kind must be dense, sparse or blank, got {kind!r}")


def described_model(name_or_path, seed=0):
    """An :class:`fastca.nca.NCA`: a registered description by name with random weights (speed
    does not depend on their values), or a model file."""
    from fastca.nca import NCA, load_model

    known = {d.name: d for d in descriptions()}
    if name_or_path in known:
        return NCA.random(known[name_or_path], seed, scale=0.05)
    loaded = load_model(name_or_path)
    return loaded if isinstance(loaded, NCA) else NCA(loaded.description, loaded.arrays(), loaded.name)


def described_world(description, size: int, seed: int = 0, tile: int = 64, radius: int = 20) -> np.ndarray:
    """A (1, size, size, C) float32 world for ``description``: MNIST digits in its alive channel for a
    static alive rule; one disc of live cells per ``tile``^2 tile (grown patterns: random values,
    alive channel 1) for the max-pool rule; random values everywhere without an alive rule."""
    rng = np.random.default_rng(seed)
    c = description.channels
    rule = description.alive.rule
    if rule == "static":
        gray, _ = mnist_world(size, seed)
        return _gray_state(description, gray)
    state = rng.normal(0, 0.3, (1, size, size, c)).astype(np.float32)
    if rule == "maxpool":
        yy, xx = np.mgrid[:size, :size] % tile - tile // 2
        disc = (yy ** 2 + xx ** 2) <= radius ** 2
        state *= disc[None, :, :, None]
        state[0, :, :, description.alive.channel] = disc
    return state


_GECKO_WORLDS: dict = {}


def gecko_world(size: int, seed: int = 0) -> np.ndarray:
    """A (1, size, size, 16) float32 world of grown geckos: the shipped ``growing-gecko`` model run
    :data:`GECKO_GROWTH` steps (numba-cpu, generator ``seed``) from one seed at the centre of every
    :data:`GECKO_SPACING`-cell square. Grown once per (size, seed) in a process; a copy is returned."""
    from fastca import seeds

    key = (size, seed)
    if key not in _GECKO_WORLDS:
        net = fastca.pretrained(GROWING_PRETRAINED)
        centres = np.arange(min(GECKO_SPACING // 2, size // 2), size, GECKO_SPACING)
        positions = np.stack(np.meshgrid(centres, centres, indexing="ij"), -1).reshape(-1, 2)
        world = seeds.plant_seeds(net.description, size, size, positions)
        sim = fastca.Simulation(net, world, backend="numba-cpu", input="state", seed=seed)
        sim.run(GECKO_GROWTH)
        _GECKO_WORLDS[key] = np.array(sim.view(), np.float32)
    return _GECKO_WORLDS[key].copy()


def _gray_state(description, gray):
    from fastca._state import initial_state

    return initial_state(gray[None], np.float32, description)


# -- workloads --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Workload:
    """A model and the world it runs on, at any size.

    model: () -> the model (fastca.NCAWeights or fastca.nca.NCA).
    world: (size, seed) -> the ``simulate`` input of a size x size world.
    input: how ``simulate`` reads that input ("gray" or "state").
    """

    name: str
    description: Any  # fastca.model.ModelSpec: what the model computes
    model: Callable[[], Any]
    world: Callable[[int, int], np.ndarray]
    input: str = "state"


def described(description, model: Callable[[], Any] | None = None) -> Workload:
    """The workload of a model description: random weights (or ``model()``) on :func:`described_world`."""
    from fastca.nca import NCA

    make = model or (lambda: NCA.random(description, 0, scale=0.05))
    return Workload(description.name, description, make, lambda size, seed: described_world(description, size, seed))


def _mnist_pretrained() -> Workload:
    from fastca import model

    return Workload(MNIST_PRETRAINED, model.MNIST, fastca.pretrained, lambda size, seed: mnist_world(size, seed)[0],
                    input="gray")


#: every workload by name: one per known description, then the pretrained MNIST and growing worlds
WORKLOADS: dict[str, Workload] = {}


def register(workload: Workload) -> Workload:
    """Add a workload (e.g. ``register(described(spec))``): every benchmark runs it, and its
    description joins :func:`descriptions`, so every equivalence test."""
    if workload.name in WORKLOADS:
        raise ValueError(f"workload name {workload.name!r} is taken")
    WORKLOADS[workload.name] = workload
    return workload


def workloads() -> list[str]:
    """The names of the registered workloads, in registration order."""
    return list(WORKLOADS)


def descriptions() -> tuple:
    """The model descriptions every equivalence test runs: those of the registered workloads
    (:data:`fastca.model.KNOWN` and any registered since), each once, in registration order."""
    unique = {}
    for w in WORKLOADS.values():
        unique.setdefault(w.description.name, w.description)
    return tuple(unique.values())


def lookup(name_or_path: "str | Workload") -> Workload:
    """A registered workload by name, or the workload of a model file (not registered)."""
    if isinstance(name_or_path, Workload):
        return name_or_path
    if name_or_path in WORKLOADS:
        return WORKLOADS[name_or_path]
    net = described_model(name_or_path)
    return described(net.description, lambda: net)


def _growing_pretrained() -> Workload:
    from fastca import model

    return Workload(GROWING_PRETRAINED, model.GROWING, lambda: fastca.pretrained(GROWING_PRETRAINED), gecko_world)


def _register_builtins():
    from fastca import model

    for d in model.KNOWN:
        register(described(d))
    register(_mnist_pretrained())
    register(_growing_pretrained())


_register_builtins()


# -- the timed work ---------------------------------------------------------------------------------

def _corner(x, input_kind, side=32):
    """The top-left side x side window of a world (the warm-up's input)."""
    return x[:side, :side] if input_kind == "gray" else x[:, :side, :side]


def setup(workload, backend: str, size: int, steps: int = STEPS, seed: int = 0, threads: int | None = None,
          storage: str = "float32") -> Callable[[], Any]:
    """A zero-argument callable running ``steps`` steps of ``workload`` (a registered name, a model file or
    a :class:`Workload`) on a size x size world on ``backend``; returns the fastca.SimResult.

    The world and the model (built with seed 0: every backend and run sees the same ones) and
    a one-step warm-up on a corner (JIT compilation, loading the disk cache) happen here, before
    the callable exists; each call runs :func:`fastca.simulate` from the same world, so calls agree.
    ``seed`` is the generator's; the result's ``seconds`` is the step loop alone, the call's wall
    time adds building the state.
    """
    w = lookup(workload)
    net = w.model()
    x = w.world(size, 0)
    kw = dict(backend=backend, seed=seed, threads=threads, storage=storage, input=w.input, progress=False)
    fastca.simulate(net, _corner(x, w.input), 1, **kw)

    def run():
        return fastca.simulate(net, x, steps, **kw)

    return run


def updated_cells(workload, size: int, steps: int = STEPS, seed: int = 0) -> tuple[float, int]:
    """(alive fraction at the start, exact number of useful cell updates over ``steps`` steps) of a
    workload's size^2 world: the cells that fire and are alive (max-pool rule: alive before the
    step), counted from the shared generator, so every backend performs them (the basis of
    FLOP/s figures: ``description.flop_per_cell`` per update).

    Under a static or no alive rule the alive cells never change, so the first state gives every
    step's; under the max-pool rule the states come from an untimed numba-cpu run.
    """
    from fastca.model import alive_mask

    w = lookup(workload)
    d, net, x = w.description, w.model(), w.world(size, 0)
    alive = fastca.data.alive_mask(x)[None] if w.input == "gray" else alive_mask(d, x)
    frac = float(alive.mean())
    if d.alive.rule != "maxpool":
        return frac, sum(int(fastca.rng.fire_mask(seed, t, alive, net.fire_rate).sum()) for t in range(steps))
    sim = fastca.Simulation(net, x, backend="numba-cpu", input=w.input, seed=seed)
    updates = 0
    for t in range(steps):
        updates += int(fastca.rng.fire_mask(seed, t, alive_mask(d, sim.view()), net.fire_rate).sum())
        sim.run(1)
    return frac, updates


def kernel_resources(sim: fastca.Simulation) -> dict:
    """Registers, local memory and shared memory per thread/block of a numba-cuda simulation's step
    kernel, with its launch layout.

    The one place a benchmark reads a runner's private parts: the compiled kernel's resources
    have no public accessor (timing goes through :meth:`fastca.Simulation.run`).
    """
    runner = sim._runner
    kern = runner._kernel
    out = {"layout": runner.layout, "threads": runner._threads, "seg_rows": runner.seg_rows}
    for what in ("regs_per_thread", "local_mem_per_thread", "shared_mem_per_block"):
        try:
            out[what] = int(next(iter(getattr(kern, f"get_{what}")().values())))
        except Exception as exc:  # the simulator has none of these
            out[what] = f"n/a ({type(exc).__name__})"
    return out
