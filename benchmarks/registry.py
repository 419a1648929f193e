"""Benchmark workloads shared by the pytest-benchmark module and the command-line comparison.

A setup function builds everything outside the timed region (world, model, JIT
warm-up) and returns a zero-argument callable that runs the timed work.
"""

import numpy as np

import fastca

STEPS = 20


def mnist_world(size, seed=0):
    """A size x size world of tiled MNIST test digits (full test set if $FASTCA_MNIST_DIR is set,
    else the embedded sample) and its per-cell target map."""
    try:
        images, labels = fastca.data.load_mnist("test")
    except FileNotFoundError:
        images, labels = fastca.data.sample_digits()
    gray, targets, _ = fastca.data.mnist_world(images, labels, size, size, seed=seed)
    return gray, targets


def world_of_kind(kind, size, seed=0):
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


def setup_simulate(backend, size, steps=STEPS, seed=0, threads=None):
    """Zero-argument callable running ``steps`` steps of the pretrained model on a size^2 world."""
    model = fastca.pretrained()
    gray, _ = mnist_world(size)
    fastca.simulate(model, gray[:32, :32], 1, backend=backend, seed=seed)  # JIT compile / load cache

    def run():
        return fastca.simulate(model, gray, steps, backend=backend, seed=seed, threads=threads, progress=False)

    return run


def updated_cells(size, steps=STEPS, seed=0):
    """(alive fraction, exact number of cell updates over ``steps`` steps) of the size^2 world.

    Uses the shared generator, so it is the count every backend performs on the alive
    and firing cells (the basis of FLOP/s figures: spec.FLOP_PER_CELL per update).
    """
    gray, _ = mnist_world(size)
    alive = fastca.data.alive_mask(gray)[None]
    model = fastca.pretrained()
    updates = sum(int(fastca.rng.fire_mask(seed, t, alive, model.fire_rate).sum()) for t in range(steps))
    return float(alive.mean()), updates


def described_model(name_or_path, seed=0):
    """An :class:`fastca.nca.NCA`: a description of :data:`fastca.model.KNOWN` by name with random
    weights (speed does not depend on their values), or a model file."""
    from fastca import model
    from fastca.nca import NCA, load_model

    known = {d.name: d for d in model.KNOWN}
    if name_or_path in known:
        return NCA.random(known[name_or_path], seed, scale=0.05)
    loaded = load_model(name_or_path)
    return loaded if isinstance(loaded, NCA) else NCA(loaded.description, loaded.arrays(), loaded.name)


def described_world(description, size, seed=0, tile=64, radius=20):
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


def _gray_state(description, gray):
    from fastca._state import initial_state

    return initial_state(gray[None], np.float32, description)
