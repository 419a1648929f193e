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

import contextlib
import dataclasses
import functools
import hashlib
import json
import numbers
import operator
import os
import socket
import threading
import time
import zlib

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
    halo = _check_halo(halo)
    for axis, name in ((1, "rows"), (2, "columns")):
        sizes = state.chunks[axis]
        if len(sizes) > 1 and min(sizes) < halo:
            raise ValueError(f"chunks of {min(sizes)} {name} are smaller than the halo ({halo}): use chunks of at least "
                             f"{halo} {name} (or a smaller halo)")
    return halo


def _is_int(value):
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_halo(halo):
    """``halo`` as an int >= 1 (NumPy integers accepted), or raise."""
    if not _is_int(halo) or halo < 1:
        raise ValueError(f"halo must be an int >= 1, got {halo!r}")
    return operator.index(halo)


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
    fn = _Round(model, operator.index(steps), operator.index(start_step), operator.index(seed), storage, state.chunks,
                fire_rate, noise, threads, backend)
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
    seed = _checks.check_seed(seed)
    state, lead = as_state(x, input, storage)
    halo = check_chunks(state, halo)
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


DIGIT_SOURCES = ("mnist-test", "embedded-sample")  #: where the digits of an MNIST world come from


def mnist_digits(source="auto"):
    """(images, labels, provenance) of a digit pool: ``"mnist-test"`` (the MNIST test set from
    ``$FASTCA_MNIST_DIR``), ``"embedded-sample"`` (the package's sample), or ``"auto"`` (the first that
    is there). provenance: {"digits": the source, "digits_sha256": :func:`fastca.data.digits_hash`}, to record with a
    store (``zarr_run(world=...)``) so that a resumed run uses the same digits."""
    if source == "auto":
        try:
            images, labels = data.load_mnist("test")
            source = "mnist-test"
        except FileNotFoundError:
            images, labels = data.sample_digits()
            source = "embedded-sample"
    elif source == "mnist-test":
        images, labels = data.load_mnist("test")
    elif source == "embedded-sample":
        images, labels = data.sample_digits()
    else:
        raise ValueError(f"digit source must be 'auto' or one of {DIGIT_SOURCES}, got {source!r}")
    return images, labels, {"digits": source, "digits_sha256": data.digits_hash(images, labels)}


def mnist_world(height, width, chunks, *, images=None, labels=None, seed=0):
    """A (height, width) uint8 dask array of tiled MNIST digits, built chunk by chunk (the whole world
    never exists in memory), and its (rows, cols) tile index (NumPy). Same layout as
    :func:`fastca.data.mnist_world` with ``seed`` (random test digits, one per 28x28 tile).
    ``images=None``: the digits of :func:`mnist_digits` ("auto")."""
    da = _dask()
    if images is None:
        images, labels, _ = mnist_digits("auto")
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

RECORD_FORMAT = 2  #: version of the record that a complete array carries in its attributes
LOCK_NAME = "fastca.lock"  #: the lock file of a store (pid, host and start time of the run that holds it)
_HELD = {}  # real path of a store -> thread id of the run of this process that holds its lock
_HELD_GUARD = threading.Lock()


class StoreLocked(ValueError):
    """The store is in use by another run (or its lock was left by a run that died)."""


def _model_hash(model):
    h = hashlib.sha256()
    for v in model.arrays().values():
        h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()[:16]


def _tiles_hash(tiles):
    """What a round's metrics depend on: the tile grid and each tile's label (None without tiles)."""
    if tiles is None:
        return None
    lab = np.asarray(tiles.labels)[np.asarray(tiles.index)].astype("<i8")
    return hashlib.sha256(repr(lab.shape).encode() + lab.tobytes()).hexdigest()[:16]


# the lock: one run per store ---------------------------------------------------------------------------


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _lock_owner(text):
    """The lock file's {pid, host, started}, or None when it cannot be read as one."""
    try:
        owner = json.loads(text)
    except ValueError:
        return None
    if not (isinstance(owner, dict) and _is_int(owner.get("pid")) and 1 <= owner["pid"] < 2**31
            and isinstance(owner.get("host"), str)):
        return None
    return owner


def _owner_state(owner):
    """"alive", "dead" (this host, the process is gone) or "unknown" (another host, or an unreadable lock)."""
    if owner is None or owner["host"] != socket.gethostname():
        return "unknown"
    if owner["pid"] == os.getpid():  # this process, but no run of it holds the lock (else it would not ask)
        return "dead"
    return "alive" if _pid_alive(owner["pid"]) else "dead"


def _lock_message(store, path, owner, state):
    if owner is None:
        return (f"{store} is locked ({path} cannot be read as a lock): if no run uses this store, pass --break-lock "
                f"(break_lock=True) to break the lock")
    who = f"pid {owner['pid']} on {owner['host']}, since {owner.get('started', '?')}"
    if state == "alive":
        return (f"{store} is in use by another run ({who}; lock file {path}): wait for it to end (if that "
                f"process is not a fastca run, its pid was reused after the run died: delete {path})")
    if state == "dead":
        return (f"{store} is locked by a run that is no longer running ({who}): pass --break-lock (break_lock=True) "
                f"to break the lock")
    return (f"{store} is in use by a run on another host ({who}; lock file {path}): if that run is dead, pass "
            f"--break-lock (break_lock=True) to break the lock")


def _create_exclusive(path, text):
    """Create ``path`` holding ``text`` unless it exists (atomically: a hard link of a complete file, or
    O_CREAT | O_EXCL where links are not supported). True when created."""
    tmp = f"{path}.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _break(path, seen):
    """Remove the lock file if it still holds ``seen`` (breakers of one host take turns)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        fcntl = None
    fd = os.open(path + ".break", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            with open(path) as f:
                now = f.read()
        except FileNotFoundError:
            return
        if now == seen:
            os.remove(path)
    finally:
        os.close(fd)


def _acquire(store, key, break_lock):
    """Take the store's lock file or raise :class:`StoreLocked` naming its owner; returns the text written."""
    path = os.path.join(store, LOCK_NAME)
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S %z")})
    for _ in range(5):
        if _create_exclusive(path, text):
            return text
        try:
            with open(path) as f:
                seen = f.read()
        except FileNotFoundError:  # released meanwhile: try again
            continue
        owner = _lock_owner(seen)
        state = _owner_state(owner)
        if state == "alive" or not break_lock:
            raise StoreLocked(_lock_message(store, path, owner, state))
        _break(path, seen)
    raise StoreLocked(f"{store}: could not take the lock {path}: other runs keep taking it")


def _release(store, text):
    path = os.path.join(store, LOCK_NAME)
    try:
        with open(path) as f:
            if f.read() != text:  # broken and taken by another run: theirs now
                return
        os.remove(path)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def store_lock(store, break_lock=False):
    """Hold the lock of the Zarr folder ``store`` (created if missing) for the ``with`` block: a lock file
    ``fastca.lock`` with this run's pid, host and start time, created atomically, removed on exit (also
    on an exception). Another run of the store raises :class:`StoreLocked` (a ValueError) naming the
    owner. A lock left by a run that died is reported as such and broken only with ``break_lock=True``
    (also for a lock of another host, whose process cannot be checked; never for a live process of this
    host). The lock is reentrant within one thread (``zarr_run`` inside a ``store_lock`` block)."""
    os.makedirs(store, exist_ok=True)
    key = os.path.realpath(store)
    me = threading.get_ident()
    with _HELD_GUARD:
        holder = _HELD.get(key)
        if holder is not None and holder != me:
            raise StoreLocked(f"{store} is in use by another run of this process (pid {os.getpid()})")
        outer = holder is None
        if outer:
            text = _acquire(store, key, break_lock)
            _HELD[key] = me
    try:
        yield
    finally:
        if outer:
            with _HELD_GUARD:
                _HELD.pop(key, None)
                _release(store, text)


# the record of a complete array: what it holds and what was written -----------------------------------


def _grid(shape, chunks):
    """(chunk coordinates, origin) of every chunk of a (B, H, W, 20) array, in row-major order."""
    counts = [-(-shape[i] // chunks[i]) for i in range(3)]
    for ib in range(counts[0]):
        for iy in range(counts[1]):
            for ix in range(counts[2]):
                yield (ib, iy, ix, 0), (ib * chunks[0], iy * chunks[1], ix * chunks[2])


def _n_chunks(shape, chunks):
    return int(np.prod([-(-shape[i] // chunks[i]) for i in range(3)]))


def _chunk_file(array_path, arr, coords):
    """Key and file of one chunk of the array at ``array_path``."""
    key = arr.metadata.encode_chunk_key(coords)
    return key, os.path.join(array_path, *key.split("/"))


def _damaged(array_path, key, problem):
    return ValueError(f"{array_path}: chunk {key} {problem}; the store is damaged (restore it, or start a new store)")


def _check_chunk(array_path, key, file, size, crc=None):
    """Raise unless the chunk file exists with the recorded size (and checksum, when ``crc`` is given)."""
    try:
        if crc is None:
            got = os.stat(file).st_size
        else:
            with open(file, "rb") as f:
                raw = f.read()
            got = len(raw)
    except FileNotFoundError:
        raise _damaged(array_path, key, f"is missing (the round that wrote it recorded {size} bytes)") from None
    if got != size:
        raise _damaged(array_path, key, f"is {got} bytes, {size} were written (truncated or overwritten)")
    if crc is not None and zlib.crc32(raw) != crc:
        raise _damaged(array_path, key, f"does not match its checksum (crc32 {zlib.crc32(raw)}, {crc} were written)")


def _verify_chunks(array_path, record):
    """Every chunk of a complete array exists with its recorded size: before a round reads it (a
    missing chunk would read as the fill value)."""
    import zarr

    arr = zarr.open_array(array_path, mode="r")
    for i, (coords, _) in enumerate(_grid(record["shape"], record["chunks"])):
        key, file = _chunk_file(array_path, arr, coords)
        _check_chunk(array_path, key, file, record["chunk_bytes"][i])


def _put_chunk(arr, array_path, coords, origin, block):
    """Write one chunk-aligned block; returns the (bytes, crc32) of the chunk file written."""
    b0, y0, x0 = origin
    arr[b0 : b0 + block.shape[0], y0 : y0 + block.shape[1], x0 : x0 + block.shape[2], :] = block
    key, file = _chunk_file(array_path, arr, coords)
    try:
        with open(file, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise _damaged(array_path, key, "was not written") from None
    return len(raw), zlib.crc32(raw)


def _open_new(path, shape, chunks, dtype):
    """A new array that counts as incomplete until sealed; a chunk never written reads as NaN, never as
    data, and every chunk is written, also one of fill values."""
    import zarr

    arr = zarr.open_array(path, mode="w", shape=shape, chunks=chunks, dtype=dtype, fill_value=np.nan,
                          config={"write_empty_chunks": True})
    arr.attrs.update({"complete": False})
    return arr


def _digest(attrs):
    text = json.dumps({k: v for k, v in attrs.items() if k != "digest"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _seal(arr, record, written):
    """Mark the array complete: its record (settings, world, step) and the chunks written."""
    attrs = {**record, "format": RECORD_FORMAT, "shape": list(arr.shape), "chunks": list(arr.chunks),
             "chunk_bytes": [int(b) for b, _ in written], "chunk_crc32": [int(c) for _, c in written],
             "complete": True}
    attrs["digest"] = _digest(attrs)
    arr.attrs.update(attrs)
    return attrs


def _int_list(value, n):
    return isinstance(value, list) and len(value) == n and all(_is_int(v) and v >= 0 for v in value)


def _check_record(path, attrs, arr):
    """Raise unless the attributes of the complete array at ``path`` are a consistent record of it."""
    from .kernels.storage import STORAGE

    def bad(problem):
        return ValueError(f"{path}: {problem}; the store's metadata is damaged or was edited (restore it, or start "
                          f"a new store)")

    if attrs.get("format") != RECORD_FORMAT:
        raise ValueError(f"{path}: written by another version of fastca (record format {attrs.get('format')!r}, "
                         f"this one reads {RECORD_FORMAT}): start a new store")
    for k in ("step", "previous_step", "halo", "seed"):
        if not _is_int(attrs.get(k)) or attrs[k] < 0:
            raise bad(f"attribute {k!r} is {attrs.get(k)!r}, not an int >= 0")
    for k in ("storage", "model"):
        if not isinstance(attrs.get(k), str):
            raise bad(f"attribute {k!r} is {attrs.get(k)!r}, not a string")
    if attrs["step"] != attrs["previous_step"] + attrs["halo"]:
        raise bad(f"step {attrs['step']} is not previous_step {attrs['previous_step']} + halo {attrs['halo']}")
    shape, chunks = attrs.get("shape"), attrs.get("chunks")
    if not (_int_list(shape, 4) and _int_list(chunks, 4) and min(chunks) >= 1):
        raise bad(f"attributes shape {shape!r} and chunks {chunks!r} are not 4 ints each")
    if list(arr.shape) != shape or list(arr.chunks) != chunks:
        raise bad(f"the array is {tuple(arr.shape)} in chunks {tuple(arr.chunks)}, its record says {tuple(shape)} "
                  f"in chunks {tuple(chunks)}")
    if shape[3] != spec.CHANNELS or chunks[3] != spec.CHANNELS or min(shape) < 1:
        raise bad(f"shape {tuple(shape)} and chunks {tuple(chunks)} are not a state's (B, H, W, {spec.CHANNELS})")
    if attrs["storage"] not in STORAGE or np.dtype(STORAGE[attrs["storage"]]) != arr.dtype:
        raise bad(f"the array is {arr.dtype}, its record says storage {attrs['storage']!r}")
    n = _n_chunks(shape, chunks)
    for k in ("chunk_bytes", "chunk_crc32"):
        if not _int_list(attrs.get(k), n):
            raise bad(f"attribute {k!r} does not list the array's {n} chunks")
    world = attrs.get("world")
    if world is not None and not isinstance(world, dict):
        raise bad(f"attribute 'world' is {world!r}, not a dict")
    if world is not None and (world.get("height", shape[1]), world.get("width", shape[2])) != tuple(shape[1:3]):
        raise bad(f"the world is recorded as {world.get('height')}x{world.get('width')}, the array holds "
                  f"{shape[1]}x{shape[2]}")
    if attrs.get("tiles") is not None and not isinstance(attrs["tiles"], str):
        raise bad(f"attribute 'tiles' is {attrs['tiles']!r}, not a string")
    if attrs.get("digest") != _digest(attrs):
        raise bad("the attributes do not match their checksum")


def _read_record(path):
    """The checked record of the complete array at ``path``; None when there is none or it is being written."""
    import zarr

    if not os.path.isdir(path):
        return None
    try:
        arr = zarr.open_array(path, mode="r")
        attrs = dict(arr.attrs)
    except Exception:  # created or killed mid-write: never complete
        return None
    if attrs.get("complete") is not True:
        return None
    _check_record(path, attrs, arr)
    return attrs


def _latest_record(store):
    """(name, record) of the stored array with the highest complete step, or None."""
    best = None
    for name in ("a", "b"):
        record = _read_record(os.path.join(store, name))
        if record is not None and (best is None or record["step"] > best[1]["step"]):
            best = (name, record)
    return best


def _latest(store):
    """(name, step) of the stored array with the highest complete step, or None."""
    done = _latest_record(store)
    return None if done is None else (done[0], done[1]["step"])


def stored_record(store):
    """The checked record of the stored run's latest complete state (a dict: step, seed, storage, model
    hash, shape, chunks, world, ...), or None when the folder holds none. Raises ValueError on damaged
    metadata."""
    done = _latest_record(store)
    return None if done is None else done[1]


def stored_shape(store):
    """Shape (B, H, W, 20) of the stored run's state, or None when the folder holds no complete one."""
    record = stored_record(store)
    return None if record is None else tuple(record["shape"])


def describe(store):
    """The stored run's record without its chunk list (JSON text), for the CLI and humans."""
    record = stored_record(store)
    if record is None:
        return "{}"
    keep = ("step", "seed", "storage", "model", "shape", "chunks", "world")
    return json.dumps({k: record.get(k) for k in keep})


# the run ---------------------------------------------------------------------------------------------------


def zarr_run(model, store, steps, *, gray=None, chunks=None, halo=16, seed=0, storage="float16", threads=None,
             backend="auto", progress=print, scheduler=None, tiles=None, on_round=None, world=None, break_lock=False):
    """Advance the state kept in the Zarr folder ``store`` to step ``steps``, out of core; returns
    (the final state as a dask array on disk, step reached).

    The folder holds two state arrays, ``a`` and ``b`` (B, H, W, 20): each round reads the one
    with the last complete step and writes the other, then records in its attributes the step,
    the seed, the storage and the model's hash (a run with other settings is refused; the halo
    may change between calls: it does not change the bits), the world's provenance (``world``, a
    JSON dict such as :func:`mnist_digits`' provenance, and a hash of ``tiles``' labels), the size
    and CRC-32 of every chunk file written, and a checksum of the record. So memory holds a few
    chunks at a time, not the world, and a run killed at any moment resumes from the last complete
    round with the same final bits. A new store needs ``gray`` (a (H, W) or (B, H, W) dask array,
    e.g. :func:`mnist_world`, in regular chunks); its chunks set the state's. Each task reads its
    chunk widened by the halo straight from the store and writes its interior back, so a task holds
    one widened chunk (not its neighbours' chunks).

    Trust: the run holds the store's lock (:func:`store_lock`; ``break_lock`` breaks one left by a
    dead run). Before anything is written, the record is checked (types, ranges, shape and chunks
    against the array, its checksum), a resumed run's settings, ``world`` and ``tiles`` must equal
    the recorded ones (``gray``, when given, must have the stored shape), and every chunk the round
    reads must exist with its recorded size; each task checks its own chunk's CRC-32 before it
    reads. Any mismatch is a ValueError naming the store (a missing chunk never reads as data:
    the fill value is NaN).

    ``tiles`` (:class:`MnistTiles`, for an MNIST world) adds metrics to every round, reduced from
    the tasks' per-chunk counts (no extra pass over the store): per-cell accuracy and the percent
    of digits whose alive cells all give one label (digits that straddle chunks counted whole).
    ``on_round(step, info)`` gets {"seconds", and with tiles "accuracy", "digit_agreement"}.
    """
    if not isinstance(model, NCAWeights):
        raise TypeError(f"model must be NCAWeights, got {type(model).__name__}")
    steps = _checks.check_steps(steps)
    halo = _check_halo(halo)
    seed = _checks.check_seed(seed)
    _checks.check_storage(storage)
    if tiles is not None and not isinstance(tiles, MnistTiles):
        raise TypeError(f"tiles must be MnistTiles or None, got {type(tiles).__name__}")
    if world is not None:
        if not isinstance(world, dict):
            raise TypeError(f"world must be a JSON dict or None, got {type(world).__name__}")
        world = json.loads(json.dumps(world))  # as the record will hold it (tuples become lists)
    with store_lock(store, break_lock):
        return _zarr_run_locked(model, store, steps, gray, halo, seed, storage, threads, backend, progress,
                                scheduler, tiles, on_round, world)


def _zarr_run_locked(model, store, steps, gray, halo, seed, storage, threads, backend, progress, scheduler, tiles,
                     on_round, world):
    da = _dask()
    import dask
    import zarr

    # what the bits depend on (the halo does not: any round length gives the same bits)
    settings = {"seed": seed, "storage": storage, "model": _model_hash(model)}
    done = _latest_record(store)
    if done is None:
        if gray is None:
            raise ValueError(f"{store}: no complete state here; pass gray= to start a new run")
        state, _ = as_state(gray, "gray", storage)
        check_chunks(state, halo)
        _check_tiles(tiles, state.shape)
        if world is not None and (world.get("height", state.shape[1]), world.get("width", state.shape[2])) != \
                tuple(state.shape[1:3]):
            raise ValueError(f"world says {world.get('height')}x{world.get('width')}, gray is "
                             f"{state.shape[1]}x{state.shape[2]}")
        t0 = time.perf_counter()
        record = {**settings, "world": world, "tiles": _tiles_hash(tiles), "step": 0, "previous_step": 0, "halo": 0}
        record = _write(state, store, "a", record, scheduler)
        if progress:
            progress(f"initial state {state.shape} written: {time.perf_counter() - t0:.1f} s")
        done = ("a", record)
    name, record = done
    saved = {k: record[k] for k in settings}
    if saved != settings:
        raise ValueError(f"{store}: the stored run has settings {saved}, not {settings}")
    shape = tuple(record["shape"])
    if gray is not None and tuple(gray.shape) not in (shape[:3], shape[1:3] if shape[0] == 1 else None):
        raise ValueError(f"{store}: gray is {tuple(gray.shape)}, the stored world {shape[:3]}: a resumed run keeps "
                         f"its world (leave gray out, or start a new store)")
    if world is not None and world != record["world"]:
        raise ValueError(f"{store}: the stored world is {record['world']}, not {world}: resume with the world it was "
                         f"made from, or start a new store")
    if tiles is not None:
        _check_tiles(tiles, shape)
        if record["tiles"] != _tiles_hash(tiles):
            raise ValueError(f"{store}: these tiles (the digits' labels, hash {_tiles_hash(tiles)}) are not the ones "
                             f"the store was made with ({record['tiles']}): the targets would come from other digits")
    chunk_rows, chunk_cols = record["chunks"][1:3]
    if min(halo, steps - record["step"]) > min(chunk_rows, chunk_cols):
        raise ValueError(f"halo {halo} is larger than the store's chunks ({chunk_rows}x{chunk_cols})")
    t = record["step"]
    if t >= steps:  # no round left: the state returned
        _verify_chunks(os.path.join(store, name), record)
    while t < steps:
        k = min(halo, steps - t)
        src_path = os.path.join(store, name)
        _verify_chunks(src_path, record)  # before the round writes anything: every chunk it reads is there
        t0 = time.perf_counter()
        dst_name = "b" if name == "a" else "a"
        src = zarr.open_array(src_path, mode="r")
        dst = _open_new(os.path.join(store, dst_name), src.shape, src.chunks, src.dtype)
        round_ = _ZarrRound(model, src_path, os.path.join(store, dst_name), k, t, seed, storage, threads, backend,
                            tiles)
        tasks = [dask.delayed(round_, pure=True)(coords, origin, (record["chunk_bytes"][i], record["chunk_crc32"][i]))
                 for i, (coords, origin) in enumerate(_grid(shape, record["chunks"]))]
        results = dask.compute(*tasks, scheduler=scheduler)
        record = _seal(dst, {**{key: record[key] for key in (*settings, "world", "tiles")}, "step": t + k,
                             "previous_step": t, "halo": k}, [r[0] for r in results])
        name = dst_name
        t += k
        info = {"seconds": time.perf_counter() - t0}
        msg = f"round to step {t}/{steps}: {info['seconds']:.1f} s"
        if tiles is not None:
            info.update(_reduce_round([r[1] for r in results], tiles))
            msg += f"; accuracy {info['accuracy']:.2f}%, digits agreeing {info['digit_agreement']:.2f}%"
        if progress:
            progress(msg)
        if on_round is not None:
            on_round(t, info)
    return da.from_zarr(os.path.join(store, name)), t


def _check_tiles(tiles, shape):
    """``tiles`` must describe the world of a (1, H, W, ...) state: one 28x28 tile grid over it."""
    if tiles is None:
        return
    if shape[0] != 1:
        raise ValueError(f"tiles describe one MNIST world; the store holds {shape[0]} samples")
    grid = (-(-shape[1] // data.DIGIT), -(-shape[2] // data.DIGIT))
    if np.shape(tiles.index) != grid:
        raise ValueError(f"tiles cover {np.shape(tiles.index)} digits, the {shape[1]}x{shape[2]} world {grid}")


@dataclasses.dataclass(frozen=True)
class _ZarrRound:
    """One chunk of one out-of-core round: check the chunk's file, read the chunk widened by k cells
    from the source store, run k steps with its global origin, write its interior to the destination
    store. Writing the same chunk twice writes the same bits, so a recomputed task is harmless."""

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

    def __call__(self, coords, origin, written):
        import zarr

        src = zarr.open_array(self.src, mode="r")
        dst = zarr.open_array(self.dst, mode="r+", config={"write_empty_chunks": True})
        key, file = _chunk_file(self.src, src, coords)
        _check_chunk(self.src, key, file, *written)  # this chunk, as its round wrote it (every chunk has one task)
        nb, nh, nw = src.shape[:3]
        k = self.steps
        b0, y0, x0 = origin
        b1, y1, x1 = min(nb, b0 + src.chunks[0]), min(nh, y0 + src.chunks[1]), min(nw, x0 + src.chunks[2])
        wy0, wy1, wx0, wx1 = max(0, y0 - k), min(nh, y1 + k), max(0, x0 - k), min(nw, x1 + k)
        try:
            block = src[b0:b1, wy0:wy1, wx0:wx1, :]
        except Exception as exc:  # a chunk (maybe a neighbour's) that does not decode: name it
            raise _bad_chunk(self.src, src, (b0, b1, wy0, wy1, wx0, wx1), exc) from None
        if not np.isfinite(block).all():  # e.g. a neighbour's chunk deleted during the round reads as NaN
            raise _bad_chunk(self.src, src, (b0, b1, wy0, wy1, wx0, wx1))
        sim = Simulation(self.model, block, backend=self.backend, seed=self.seed, storage=self.storage,
                         origin=(b0, wy0, wx0), start_step=self.start_step, input="state", threads=self.threads)
        sim.run(k, progress=False)
        out = sim.state(copy=False)
        interior = np.ascontiguousarray(out[:, y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0])
        del sim, out, block
        written = _put_chunk(dst, self.dst, coords, origin, interior)
        if self.tiles is None:
            return written, None
        return written, (metrics.counts(interior, self.tiles.targets(y0, y1, x0, x1)),
                         self.tiles.votes(interior, y0, x0))


def _bad_chunk(array_path, arr, window, exc=None):
    """The error for a window that could not be read (``exc``) or that holds NaN or inf: names the first
    of its chunks at fault."""
    b0, b1, y0, y1, x0, x1 = window
    cb, cy, cx = arr.chunks[:3]
    for ib in range(b0 // cb, -(-b1 // cb)):
        for iy in range(y0 // cy, -(-y1 // cy)):
            for ix in range(x0 // cx, -(-x1 // cx)):
                key, _ = _chunk_file(array_path, arr, (ib, iy, ix, 0))
                try:
                    values = arr[ib * cb : (ib + 1) * cb, iy * cy : (iy + 1) * cy, ix * cx : (ix + 1) * cx, :]
                except Exception as e:  # noqa: BLE001 - any decoding error names the chunk
                    return _damaged(array_path, key, f"cannot be decoded ({type(e).__name__}: {e})")
                if exc is None and not np.isfinite(values).all():
                    return ValueError(f"{array_path}: chunk {key} holds NaN or inf (a chunk file that is not there "
                                      f"reads as NaN; or the run diverged): the state cannot be advanced")
    what = f"cannot be read ({type(exc).__name__}: {exc})" if exc is not None else "hold NaN or inf"
    return ValueError(f"{array_path}: rows {y0}:{y1}, columns {x0}:{x1} {what}; the store is damaged")


def _reduce_round(results, tiles):
    """Per-chunk (counts, tile votes) of one round -> accuracy and per-digit agreement of the world."""
    total = sum(r[0] for r in results)
    votes = np.zeros(tiles.index.shape + (11,), np.int64)
    for _, ((r0, r1, c0, c1), v) in results:
        votes[r0:r1, c0:c1] += v
    accuracy, _ = metrics.from_counts(total[0])
    return {"accuracy": accuracy, "digit_agreement": float(digit_agreement(votes.reshape(-1, 11)))}


def _initial_chunk(path, coords, origin, block):
    import zarr

    return _put_chunk(zarr.open_array(path, mode="r+", config={"write_empty_chunks": True}), path, coords, origin,
                      np.ascontiguousarray(block))


def _write(state, store, name, record, scheduler):
    """Write ``state`` as array ``name``, one task per chunk; it counts as complete only once sealed
    with ``record`` and the chunks written. Returns the record."""
    import dask

    sizes = [c[0] for c in state.chunks]
    for axis, c in enumerate(state.chunks[:3]):
        if any(n != c[0] for n in c[:-1]) or c[-1] > c[0]:
            raise ValueError(f"a store needs regular chunks (all of one size but the last): axis {axis} has {c}")
    path = os.path.join(store, name)
    target = _open_new(path, state.shape, tuple(sizes), state.dtype)
    blocks = state.to_delayed()
    tasks = [dask.delayed(_initial_chunk, pure=True)(path, coords, origin, blocks[coords])
             for coords, origin in _grid(state.shape, sizes)]
    written = dask.compute(*tasks, scheduler=scheduler)
    return _seal(target, record, written)
