"""Runs beyond one machine (Dask) and beyond memory (Zarr), bit-identical to :func:`fastca.simulate`.

A grid is a dask array split into chunks. Each **round** advances every chunk by
``k = min(halo, steps left)`` steps on a copy of the chunk widened by ``k`` cells on each
side that has a neighbour (``dask.array.map_overlap``; the grid's own edges stay zero
padding), keyed by the chunk's global origin, and keeps the chunk's interior. A cell k
cells inside the widened copy depends only on cells of the whole grid, so every round gives
exactly the bits of the single-machine run with the same seed: the random keys are global
(``origin``) and the CPU kernel's products run on fixed-size blocks (a cell's bits do not
depend on its neighbours in a block). Tasks never modify their inputs, so a task recomputed
after a worker is lost gives the same bits.

Optional extra: ``pip install "fastca[distributed]"`` (dask[array], distributed, zarr).
"""

import dataclasses
import functools
import hashlib
import json
import os
import time

import numpy as np

from . import _checks, data, metrics, spec
from ._state import initial_state, is_state_input
from .simulation import Simulation
from .weights import NCAWeights


def _dask():
    try:
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - the message is the point
        raise ImportError("fastca.distributed needs dask: pip install 'fastca[distributed]'") from exc
    return da


def as_state(x, input="auto", storage="float32"):
    """A dask array ``x`` (gray (H, W) / (B, H, W), or a state (..., H, W, 20)) as a (B, H, W, 20)
    state in the storage type, channels in one chunk; plus the input's leading shape."""
    da = _dask()
    dtype = _checks.check_storage(storage)
    x = x if isinstance(x, da.Array) else da.asarray(x)
    if is_state_input(x.shape, x.dtype, input):
        if x.ndim not in (3, 4) or x.shape[-1] != spec.CHANNELS:
            raise ValueError(f"state must be (H, W, 20) or (B, H, W, 20), got shape {x.shape}")
        lead = x.shape[:-1]
        state = x if x.ndim == 4 else x[None]
        return state.astype(dtype).rechunk({3: -1}), lead
    if x.ndim not in (2, 3):
        raise ValueError(f"gray input must be (H, W) or (B, H, W), got shape {x.shape}")
    lead = x.shape
    gray = x if x.ndim == 3 else x[None]

    state = gray.map_blocks(functools.partial(initial_state, dtype=dtype), dtype=dtype, new_axis=3,
                            chunks=gray.chunks + ((spec.CHANNELS,),))
    return state, lead


def check_chunks(state, halo):
    """Refuse chunkings that a halo of ``halo`` cells cannot serve (no silent rechunking: it would
    move the chunk boundaries the caller chose)."""
    if not isinstance(halo, int) or isinstance(halo, bool) or halo < 1:
        raise ValueError(f"halo must be an int >= 1, got {halo!r}")
    for axis, name in ((1, "rows"), (2, "columns")):
        sizes = state.chunks[axis]
        if len(sizes) > 1 and min(sizes) < halo:
            raise ValueError(f"chunks of {min(sizes)} {name} are smaller than the halo ({halo}): use chunks of at least "
                             f"{halo} {name} (or a smaller halo)")


@dataclasses.dataclass(frozen=True)
class _Round:
    """What every task of one round needs (pickled to the workers)."""

    model: NCAWeights
    steps: int
    start_step: int
    seed: int
    storage: str
    chunks: tuple
    fire_rate: float | None
    noise: object
    threads: int | None
    backend: str

    def __call__(self, block, block_info=None):
        k = self.steps
        ib, iy, ix = block_info[0]["chunk-location"][:3]
        origin = (sum(self.chunks[0][:ib]), sum(self.chunks[1][:iy]) - (k if iy > 0 else 0),
                  sum(self.chunks[2][:ix]) - (k if ix > 0 else 0))
        sim = Simulation(self.model, block, backend=self.backend, seed=self.seed, storage=self.storage,
                         origin=origin, start_step=self.start_step, input="state", threads=self.threads,
                         fire_rate=self.fire_rate, noise=self.noise)
        sim.run(k, progress=False)
        return sim.state(copy=False)  # the simulation's own array: the input block is never written


def advance(state, model, steps, *, start_step=0, seed=0, storage="float32", fire_rate=None, noise=None,
            threads=None, backend="auto"):
    """One round: ``state`` (B, H, W, 20) dask array advanced by ``steps`` steps (<= every chunk's
    size along H and W that has neighbours), lazily."""
    fn = _Round(model, int(steps), int(start_step), int(seed), storage, state.chunks, fire_rate, noise, threads,
                backend)
    return state.map_overlap(fn, depth={0: 0, 1: steps, 2: steps, 3: 0}, boundary="none", trim=True,
                             dtype=state.dtype, meta=np.empty((0, 0, 0, 0), state.dtype))


def simulate(model, x, steps, *, halo=16, seed=0, start_step=0, storage="float32", threads=None, fire_rate=None,
             noise=None, input="auto", backend="auto", on_round=None, persist=True):
    """Run the automaton on a dask array; returns the (lazy or persisted) dask array of the final state.

    x: a dask array: gray (H, W) / (B, H, W), or a state (..., H, W, 20); chunks of at least
    ``halo`` cells along H and W (the channel axis is put in one chunk). Each round runs
    ``min(halo, steps left)`` steps per chunk on the chunk widened by that many cells and is
    persisted before the next (``persist=False`` builds one lazy graph instead), so the task
    graph stays small. ``on_round(step, state)`` is called after each round. The result has
    the input's leading shape + (20,) and equals ``fastca.simulate(model, x.compute(), steps,
    seed=seed, start_step=start_step, ...)`` bit for bit on the same backend (``backend`` as in
    :func:`fastca.simulate`, resolved on each worker; the Numba backends give a cell the same
    bits whatever chunk it falls in, the torch reference does not promise that).
    """
    if not isinstance(model, NCAWeights):
        raise TypeError(f"model must be NCAWeights, got {type(model).__name__}")
    steps = _checks.check_steps(steps)
    state, lead = as_state(x, input, storage)
    check_chunks(state, halo)
    t = _checks.check_steps(start_step)
    left = steps
    while left > 0:
        k = min(halo, left)
        state = advance(state, model, k, start_step=t, seed=seed, storage=storage, fire_rate=fire_rate, noise=noise,
                        threads=threads, backend=backend)
        if persist:
            state = state.persist()
        t += k
        left -= k
        if on_round is not None:
            on_round(t, state)
    return state.reshape(lead + (spec.CHANNELS,)) if len(lead) == 2 else state


# --- metrics at scale -------------------------------------------------------------------------------


def counts(state, targets, alive_threshold=spec.ALIVE_THRESHOLD):
    """Per-sample counts (B, 13) (layout ``spec.N_COUNTS``) of a (B, H, W, 20) dask state against a
    (B, H, W) target map (dask or NumPy, -1: none), reduced from per-chunk counts (a dask array)."""
    da = _dask()
    targets = targets if isinstance(targets, da.Array) else da.asarray(targets)
    targets = targets.astype(np.int16).rechunk(state.chunks[:3])[..., None]  # 4-d, aligned with the state's axes

    def block_counts(s, t):
        return metrics.counts(np.ascontiguousarray(s), np.ascontiguousarray(t[..., 0]), alive_threshold)[:, None, None, :]

    per_chunk = da.map_blocks(block_counts, state, targets, dtype=np.int64,
                              chunks=(state.chunks[0], (1,) * len(state.chunks[1]), (1,) * len(state.chunks[2]),
                                      (spec.N_COUNTS,)))
    return per_chunk.sum(axis=(1, 2))


def accuracy_agreement(state, targets, alive_threshold=spec.ALIVE_THRESHOLD):
    """(per-cell accuracy %, total agreement %) of a dask state, computed."""
    return metrics.from_counts(counts(state, targets, alive_threshold).compute())


def digit_votes(state, digit_ids, n_digits, alive_threshold=spec.ALIVE_THRESHOLD):
    """Per digit: alive cells per label (n_digits, 11; column 10 undecided), reduced over chunks, so a
    digit that straddles chunk boundaries is counted whole. digit_ids: (B, H, W) ints in
    0..n_digits-1, -1 for none (e.g. the tile index of an MNIST world)."""
    da = _dask()
    ids = digit_ids if isinstance(digit_ids, da.Array) else da.asarray(digit_ids)
    ids = ids.astype(np.int64).rechunk(state.chunks[:3])[..., None]  # 4-d, aligned with the state's axes

    def block_votes(s, i):
        _, classes = metrics.picture_maps(np.ascontiguousarray(s), alive_threshold)
        return _votes(i[..., 0], classes, n_digits).reshape(1, 1, 1, n_digits, 11)

    per_chunk = da.map_blocks(block_votes, state, ids, dtype=np.int64, new_axis=[4],
                              chunks=((1,) * len(state.chunks[0]), (1,) * len(state.chunks[1]),
                                      (1,) * len(state.chunks[2]), (n_digits,), (11,)))
    return per_chunk.sum(axis=(0, 1, 2))


def _votes(ids, classes, n):
    """(n, 11) alive cells per label (column 10: undecided) of the digits numbered ``ids`` (-1: none),
    from a class map of :func:`fastca.metrics.picture_maps` (255: dead)."""
    keep = (classes != 255) & (ids >= 0)
    return np.bincount(ids[keep] * 11 + classes[keep], minlength=n * 11).reshape(n, 11)


def digit_agreement(votes):
    """Percent of digits (with alive cells) whose cells all give one label, from :func:`digit_votes`."""
    votes = np.asarray(votes)
    cells = votes.sum(axis=1)
    has = cells > 0
    agree = (votes[:, :10].max(axis=1) == cells) & has
    return 100.0 * agree.sum() / has.sum() if has.any() else float("nan")


# --- worlds built chunk by chunk -----------------------------------------------------------------------


def mnist_world(height, width, chunks, *, images=None, labels=None, seed=0):
    """A (height, width) uint8 dask array of tiled MNIST digits, built chunk by chunk (the whole world
    never exists in memory), and its (rows, cols) tile index (NumPy). Same layout as
    :func:`fastca.data.mnist_world` with ``seed`` (random test digits, one per 28x28 tile)."""
    da = _dask()
    if images is None:
        try:
            images, labels = data.load_mnist("test")
        except FileNotFoundError:
            images, labels = data.sample_digits()
    rows, cols = -(-height // data.DIGIT), -(-width // data.DIGIT)
    index = data.tile_index(len(images), rows, cols, seed)

    def block(block_info=None):
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        r0, r1, c0, c1 = y0 // 28, -(-y1 // 28), x0 // 28, -(-x1 // 28)
        pic = data.tile_picture(images, index[r0:r1, c0:c1])
        return np.ascontiguousarray(pic[y0 - r0 * 28 : y1 - r0 * 28, x0 - c0 * 28 : x1 - c0 * 28])

    gray = da.map_blocks(block, dtype=np.uint8, chunks=da.core.normalize_chunks(chunks, (height, width)))
    return gray, index, np.asarray(labels)


def tile_ids(height, width, chunks):
    """(1, height, width) int64 dask array: the index of each cell's 28x28 tile (row-major), chunked."""
    da = _dask()
    cols = -(-width // data.DIGIT)

    def block(block_info=None):
        (y0, y1), (x0, x1) = block_info[None]["array-location"][1:]
        yy, xx = np.mgrid[y0:y1, x0:x1]
        return ((yy // 28) * cols + xx // 28)[None]

    return da.map_blocks(block, dtype=np.int64, chunks=((1,),) + da.core.normalize_chunks(chunks, (height, width)))


@dataclasses.dataclass(frozen=True)
class MnistTiles:
    """The digit layout of an MNIST world (B = 1): ``index`` (rows, cols) of the image in each 28x28
    tile and the images' ``labels``, as :func:`mnist_world` returns them. Gives a window's per-cell
    targets and tile numbers, so out-of-core rounds can count accuracy and per-digit votes."""

    index: np.ndarray
    labels: np.ndarray

    def targets(self, y0, y1, x0, x1):
        """(1, y1-y0, x1-x0) int16 per-cell digit labels of a window."""
        lab = self.labels[self.index].astype(np.int16)
        return np.ascontiguousarray(lab[np.arange(y0, y1) // data.DIGIT][:, np.arange(x0, x1) // data.DIGIT])[None]

    def votes(self, state, y0, x0):
        """Alive cells per label (column 10: undecided) for each tile that the window of ``state``
        (1, h, w, 20) at (y0, x0) touches: ((r0, r1, c0, c1) tile range, votes (r1-r0, c1-c0, 11) int64)."""
        _, h, w, _ = state.shape
        r0, r1, c0, c1 = y0 // data.DIGIT, -(-(y0 + h) // data.DIGIT), x0 // data.DIGIT, -(-(x0 + w) // data.DIGIT)
        _, classes = metrics.picture_maps(state)
        rows = (np.arange(y0, y0 + h) // data.DIGIT - r0)[:, None]
        cols = (np.arange(x0, x0 + w) // data.DIGIT - c0)[None, :]
        votes = _votes(rows * (c1 - c0) + cols, classes[0], (r1 - r0) * (c1 - c0))
        return (r0, r1, c0, c1), votes.reshape(r1 - r0, c1 - c0, 11)


# --- out of core: the state in Zarr ----------------------------------------------------------------------


def _model_hash(model):
    h = hashlib.sha256()
    for v in model.arrays().values():
        h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()[:16]


def zarr_run(model, store, steps, *, gray=None, chunks=None, halo=16, seed=0, storage="float16", threads=None,
             backend="auto", progress=print, scheduler=None, tiles=None, on_round=None):
    """Advance the state kept in the Zarr folder ``store`` to step ``steps``, out of core; returns
    (the final state as a dask array on disk, step reached).

    The folder holds two state arrays, ``a`` and ``b`` (B, H, W, 20): each round reads the one
    with the last complete step and writes the other, then records in its attributes the step,
    the seed, the storage and the model's hash (a run with other settings is refused; the halo
    may change between calls: it does not change the bits).
    So memory holds a few chunks at a time, not the world, and a run killed at any moment
    resumes from the last complete round with the same final bits. A new store needs ``gray``
    (a (H, W) or (B, H, W) dask array, e.g. :func:`mnist_world`); its chunks set the state's.
    Each task reads its chunk widened by the halo straight from the store and writes its
    interior back, so a task holds one widened chunk (not its neighbours' chunks).

    ``tiles`` (:class:`MnistTiles`, for an MNIST world) adds metrics to every round, reduced from
    the tasks' per-chunk counts (no extra pass over the store): per-cell accuracy and the percent
    of digits whose alive cells all give one label (digits that straddle chunks counted whole).
    ``on_round(step, info)`` gets {"seconds", and with tiles "accuracy", "digit_agreement"}.
    """
    da = _dask()
    import dask
    import zarr

    os.makedirs(store, exist_ok=True)
    # what the bits depend on (the halo does not: any round length gives the same bits)
    settings = {"seed": int(seed), "storage": storage, "model": _model_hash(model)}
    done = _latest(store)
    if done is None:
        if gray is None:
            raise ValueError(f"{store}: no complete state here; pass gray= to start a new run")
        state, _ = as_state(gray, "gray", storage)
        check_chunks(state, halo)
        t0 = time.perf_counter()
        _write(state, store, "a", {**settings, "step": 0}, scheduler)
        if progress:
            progress(f"initial state {state.shape} written: {time.perf_counter() - t0:.1f} s")
        done = ("a", 0)
    name, t = done
    arr = zarr.open_array(os.path.join(store, name), mode="r")
    saved = {k: arr.attrs.get(k) for k in settings}
    if saved != settings:
        raise ValueError(f"{store}: the stored run has settings {saved}, not {settings}")
    while t < steps:
        k = min(halo, steps - t)
        src = zarr.open_array(os.path.join(store, name), mode="r")
        chunk_rows, chunk_cols = src.chunks[1], src.chunks[2]
        if tiles is not None and src.shape[0] != 1:
            raise ValueError(f"tiles describe one MNIST world; the store holds {src.shape[0]} samples")
        if k > min(chunk_rows, chunk_cols):
            raise ValueError(f"halo {halo} is larger than the store's chunks ({chunk_rows}x{chunk_cols})")
        t0 = time.perf_counter()
        dst_name = "b" if name == "a" else "a"
        dst = zarr.open_array(os.path.join(store, dst_name), mode="w", shape=src.shape, chunks=src.chunks,
                              dtype=src.dtype, fill_value=0)
        dst.attrs.update({"complete": False})
        round_ = _ZarrRound(model, os.path.join(store, name), os.path.join(store, dst_name), k, t, int(seed), storage,
                            threads, backend, tiles)
        tasks = [dask.delayed(round_, pure=True)(b0, y0, x0)
                 for b0 in range(0, src.shape[0], src.chunks[0])
                 for y0 in range(0, src.shape[1], chunk_rows)
                 for x0 in range(0, src.shape[2], chunk_cols)]
        results = dask.compute(*tasks, scheduler=scheduler)
        dst.attrs.update({**settings, "step": t + k, "halo": k, "complete": True})
        name = dst_name
        t += k
        info = {"seconds": time.perf_counter() - t0}
        msg = f"round to step {t}/{steps}: {info['seconds']:.1f} s"
        if tiles is not None:
            info.update(_reduce_round(results, tiles))
            msg += f"; accuracy {info['accuracy']:.2f}%, digits agreeing {info['digit_agreement']:.2f}%"
        if progress:
            progress(msg)
        if on_round is not None:
            on_round(t, info)
    return da.from_zarr(os.path.join(store, name)), t


@dataclasses.dataclass(frozen=True)
class _ZarrRound:
    """One chunk of one out-of-core round: read the chunk widened by k cells from the source
    store, run k steps with its global origin, write its interior to the destination store.
    Writing the same chunk twice writes the same bits, so a recomputed task is harmless."""

    model: NCAWeights
    src: str
    dst: str
    steps: int
    start_step: int
    seed: int
    storage: str
    threads: int | None
    backend: str
    tiles: MnistTiles | None = None

    def __call__(self, b0, y0, x0):
        import zarr

        src = zarr.open_array(self.src, mode="r")
        dst = zarr.open_array(self.dst, mode="r+")
        nb, nh, nw = src.shape[:3]
        k = self.steps
        b1, y1, x1 = min(nb, b0 + src.chunks[0]), min(nh, y0 + src.chunks[1]), min(nw, x0 + src.chunks[2])
        wy0, wy1, wx0, wx1 = max(0, y0 - k), min(nh, y1 + k), max(0, x0 - k), min(nw, x1 + k)
        block = src[b0:b1, wy0:wy1, wx0:wx1, :]
        sim = Simulation(self.model, block, backend=self.backend, seed=self.seed, storage=self.storage,
                         origin=(b0, wy0, wx0), start_step=self.start_step, input="state", threads=self.threads)
        sim.run(k, progress=False)
        out = sim.state(copy=False)
        interior = np.ascontiguousarray(out[:, y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0])
        del sim, out, block
        dst[b0:b1, y0:y1, x0:x1, :] = interior
        if self.tiles is None:
            return None
        return metrics.counts(interior, self.tiles.targets(y0, y1, x0, x1)), self.tiles.votes(interior, y0, x0)


def _reduce_round(results, tiles):
    """Per-chunk (counts, tile votes) of one round -> accuracy and per-digit agreement of the world."""
    total = sum(r[0] for r in results)
    votes = np.zeros(tiles.index.shape + (11,), np.int64)
    for _, ((r0, r1, c0, c1), v) in results:
        votes[r0:r1, c0:c1] += v
    accuracy, _ = metrics.from_counts(total[0])
    return {"accuracy": accuracy, "digit_agreement": float(digit_agreement(votes.reshape(-1, 11)))}


def _write(state, store, name, attrs, scheduler):
    """Write ``state`` as array ``name``; it counts as complete only once its attributes say so."""
    import zarr

    path = os.path.join(store, name)
    target = zarr.open_array(path, mode="w", shape=state.shape, chunks=tuple(c[0] for c in state.chunks),
                             dtype=state.dtype, fill_value=0)
    target.attrs.update({"complete": False})
    state.store(target, lock=False, scheduler=scheduler)
    target.attrs.update({**attrs, "complete": True, "chunks": [list(c) for c in state.chunks[:3]]})


def _latest(store):
    """(name, step) of the stored array with the highest complete step, or None."""
    import zarr

    best = None
    for name in ("a", "b"):
        path = os.path.join(store, name)
        if not os.path.isdir(path):
            continue
        try:
            attrs = dict(zarr.open_array(path, mode="r").attrs)
        except Exception:
            continue
        if attrs.get("complete") and (best is None or attrs["step"] > best[1]):
            best = (name, int(attrs["step"]))
    return best


def stored_shape(store):
    """Shape (B, H, W, 20) of the stored run's state, or None when the folder holds no complete one."""
    done = _latest(store)
    if done is None:
        return None
    import zarr

    return tuple(zarr.open_array(os.path.join(store, done[0]), mode="r").shape)


def describe(store):
    """The stored run's attributes (JSON text), for the CLI and humans."""
    done = _latest(store)
    if done is None:
        return "{}"
    import zarr

    return json.dumps(dict(zarr.open_array(os.path.join(store, done[0]), mode="r").attrs))
