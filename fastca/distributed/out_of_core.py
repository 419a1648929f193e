"""Out of core: :func:`zarr_run` advances the state kept in a Zarr store round by round, each task
reading its chunk widened by the halo from the store and writing its interior back."""

import dataclasses
import json
import os
import time

import numpy as np

from .. import _checks, data, metrics
from ..simulation import Simulation
from ..weights import NCAWeights
from .lock import store_lock
from .reduce import digit_agreement
from .rounds import _check_halo, _check_model, _dask, as_state, check_chunks, reach
from .store import (_check_chunk, _chunk_file, _damaged, _grid, _latest_record, _model_hash, _open_new, _put_chunk,
                    _seal, _tiles_hash, _verify_chunks)
from .worlds import MnistTiles
from ..errors import InputError, InputTypeError
from ..run_options import RunOptions


def zarr_run(model, store, steps, *, gray=None, state=None, chunks=None, halo=16, seed=0, storage="float16",
             fire_rate=None, noise=None, threads=None, backend="auto", progress=print, scheduler=None, tiles=None,
             on_round=None, world=None, break_lock=False, on_nonfinite="raise"):
    """Advance the state kept in the Zarr folder ``store`` to step ``steps``, out of core; returns
    (the final state as a dask array on disk, step reached).

    ``model``: the MNIST weights (NCAWeights) or any :class:`fastca.NCA` (a wrap-around one with the
    grid in one chunk along H and W). The folder holds two state arrays, ``a`` and ``b`` (B, H, W,
    C): each round reads the one with the last complete step and writes the other, then records in
    its attributes the step, the seed, the storage, the model's hash (its description's too, for an
    NCA) and ``fire_rate``/``noise`` where they differ from the model's (a run with other settings is
    refused; the halo may change between calls: it does not change the bits), the world's provenance (``world``, a
    JSON dict such as :func:`mnist_digits`' provenance, and a hash of ``tiles``' labels), the size
    and CRC-32 of every chunk file written, and a checksum of the record. So memory holds a few
    chunks at a time, not the world, and a run killed at any moment resumes from the last complete
    round with the same final bits. A new store needs ``gray`` (a (H, W) or (B, H, W) dask array,
    e.g. :func:`mnist_world`, in regular chunks; for a model whose alive rule reads a static channel)
    or ``state`` (a (H, W, C) or (B, H, W, C) dask array, any model); its chunks set the stored
    state's. A round runs ``halo // reach`` steps (:func:`fastca.distributed.reach`: 2 cells a step
    under the max-pool rule, else 1); each task reads its chunk widened by that reach straight from
    the store and writes its interior back, so a task holds one widened chunk (not its neighbours').

    Trust: the run holds the store's lock (:func:`store_lock`; ``break_lock`` breaks one left by a
    dead run). Before anything is written, the record is checked (types, ranges, shape and chunks
    against the array, its checksum), a resumed run's settings, ``world`` and ``tiles`` must equal
    the recorded ones (``gray``, when given, must have the stored shape), and every chunk the round
    reads must exist with its recorded size; each task checks its own chunk's CRC-32 before it
    reads. Any mismatch is a ValueError naming the store (a missing chunk never reads as data:
    the fill value is NaN).

    ``tiles`` (:class:`MnistTiles`, for an MNIST world and a model with the MNIST readout) adds metrics to every round, reduced from
    the tasks' per-chunk counts (no extra pass over the store): per-cell accuracy and the percent
    of digits whose alive cells all give one label (digits that straddle chunks counted whole).
    ``on_round(step, info)`` gets {"seconds", and with tiles "accuracy", "digit_agreement"}.

    Run options as :class:`fastca.RunOptions` (``storage`` defaults to float16 here;
    ``on_nonfinite`` must be "raise").
    """
    from ..nca import NCA

    if not isinstance(model, (NCAWeights, NCA)):
        raise InputTypeError(f"model must be NCAWeights or an NCA, got {type(model).__name__}")
    steps = _checks.check_steps(steps)
    halo = _check_halo(halo)
    seed = RunOptions(backend=backend, seed=seed, fire_rate=fire_rate, noise=noise, storage=storage, threads=threads,
                      on_nonfinite=on_nonfinite).seed
    if on_nonfinite != "raise":
        raise InputError("zarr_run takes on_nonfinite='raise' only: a store never holds a non-finite value (one "
                         "reads as a missing or damaged chunk)")
    dtype = _checks.check_storage(storage)
    if gray is not None and state is not None:
        raise InputError("give gray or state for a new store, not both")
    run = _run_settings(model, fire_rate, noise, dtype)
    if halo < reach(model.description):
        raise InputError(f"halo must be at least {reach(model.description)} for model {model.description.name!r} "
                         f"(a step reaches {reach(model.description)} cells)")
    if tiles is not None and not isinstance(tiles, MnistTiles):
        raise InputTypeError(f"tiles must be MnistTiles or None, got {type(tiles).__name__}")
    if tiles is not None and not metrics.mnist_layout(model.description):
        raise InputError(f"tiles give MNIST metrics; model {model.description.name!r} has no MNIST readout")
    if world is not None:
        if not isinstance(world, dict):
            raise InputTypeError(f"world must be a JSON dict or None, got {type(world).__name__}")
        world = json.loads(json.dumps(world))  # as the record will hold it (tuples become lists)
    with store_lock(store, break_lock):
        return _zarr_run_locked(model, store, steps, gray, state, halo, seed, storage, run, threads, backend, progress,
                                scheduler, tiles, on_round, world)


def _run_settings(model, fire_rate, noise, dtype):
    """The fire rate and noise std a run uses, as a dict of those that differ from the model's own (a
    store records them: the bits depend on them; a run with the model's own records nothing, as before
    these options existed)."""
    rate = _checks.check_probability("fire_rate", model.fire_rate if fire_rate is None else fire_rate)
    std = _checks.check_noise(noise, model.noise_std, dtype)
    out = {}
    if rate != np.float32(model.fire_rate):
        out["fire_rate"] = float(rate)
    if std != np.float32(model.noise_std):
        out["noise_std"] = float(std)
    return out


def _zarr_run_locked(model, store, steps, gray, state, halo, seed, storage, run, threads, backend, progress,
                     scheduler, tiles, on_round, world):
    da = _dask()
    import dask
    import zarr

    # what the bits depend on (the halo does not: any round length gives the same bits)
    settings = {"seed": seed, "storage": storage, "model": _model_hash(model), **run}
    done = _latest_record(store)
    if done is None:
        if gray is None and state is None:
            raise InputError(f"{store}: no complete state here; pass gray= or state= to start a new run")
        state, _ = as_state(gray, "gray", storage, model.description) if state is None else \
            as_state(state, "state", storage, model.description)
        _check_model(model, state)
        check_chunks(state, halo)
        _check_tiles(tiles, state.shape)
        if world is not None and (world.get("height", state.shape[1]), world.get("width", state.shape[2])) != \
                tuple(state.shape[1:3]):
            raise InputError(f"world says {world.get('height')}x{world.get('width')}, gray is "
                             f"{state.shape[1]}x{state.shape[2]}")
        t0 = time.perf_counter()
        record = {**settings, "world": world, "tiles": _tiles_hash(tiles), "step": 0, "previous_step": 0, "halo": 0}
        record = _write(state, store, "a", record, scheduler)
        if progress:
            progress(f"initial state {state.shape} written: {time.perf_counter() - t0:.1f} s")
        done = ("a", record)
    name, record = done
    saved = {k: record[k] for k in ("seed", "storage", "model", "fire_rate", "noise_std") if k in record}
    if saved != settings:
        raise InputError(f"{store}: the stored run has settings {saved}, not {settings}")
    shape = tuple(record["shape"])
    if shape[3] != model.description.channels:
        raise InputError(f"{store}: the stored state has {shape[3]} channels, model {model.description.name!r} "
                         f"{model.description.channels}")
    if gray is not None and tuple(gray.shape) not in (shape[:3], shape[1:3] if shape[0] == 1 else None):
        raise InputError(f"{store}: gray is {tuple(gray.shape)}, the stored world {shape[:3]}: a resumed run keeps "
                         f"its world (leave gray out, or start a new store)")
    if world is not None and world != record["world"]:
        raise InputError(f"{store}: the stored world is {record['world']}, not {world}: resume with the world it was "
                         f"made from, or start a new store")
    if tiles is not None:
        _check_tiles(tiles, shape)
        if record["tiles"] != _tiles_hash(tiles):
            raise InputError(f"{store}: these tiles (the digits' labels, hash {_tiles_hash(tiles)}) are not the ones "
                             f"the store was made with ({record['tiles']}): the targets would come from other digits")
    if state is not None and tuple(state.shape) not in (shape, shape[1:]):
        raise InputError(f"{store}: state is {tuple(state.shape)}, the stored one {shape}: a resumed run keeps its "
                         f"state (leave state out, or start a new store)")
    if model.description.boundary == "wrap" and (record["chunks"][1] < shape[1] or record["chunks"][2] < shape[2]):
        raise InputError(f"model {model.description.name!r} wraps around the grid: the store must hold it in one "
                         "chunk along H and W")
    chunk_rows, chunk_cols = record["chunks"][1:3]
    if min(halo, reach(model.description) * (steps - record["step"])) > min(chunk_rows, chunk_cols):
        raise InputError(f"halo {halo} is larger than the store's chunks ({chunk_rows}x{chunk_cols})")
    t = record["step"]
    if t >= steps:  # no round left: the state returned
        _verify_chunks(os.path.join(store, name), record)
    while t < steps:
        k = min(halo // reach(model.description), steps - t)  # steps per round: their reach fits the halo
        src_path = os.path.join(store, name)
        _verify_chunks(src_path, record)  # before the round writes anything: every chunk it reads is there
        t0 = time.perf_counter()
        dst_name = "b" if name == "a" else "a"
        src = zarr.open_array(src_path, mode="r")
        dst = _open_new(os.path.join(store, dst_name), src.shape, src.chunks, src.dtype)
        round_ = _ZarrRound(model, src_path, os.path.join(store, dst_name), k, t, seed, storage, threads, backend,
                            tiles, run.get("fire_rate"), run.get("noise_std"))
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
        raise InputError(f"tiles describe one MNIST world; the store holds {shape[0]} samples")
    grid = (-(-shape[1] // data.DIGIT), -(-shape[2] // data.DIGIT))
    if np.shape(tiles.index) != grid:
        raise InputError(f"tiles cover {np.shape(tiles.index)} digits, the {shape[1]}x{shape[2]} world {grid}")


@dataclasses.dataclass(frozen=True)
class _ZarrRound:
    """One chunk of one out-of-core round: check the chunk's file, read the chunk widened by k steps'
    reach from the source store, run k steps with its global origin, write its interior to the destination
    store. Writing the same chunk twice writes the same bits, so a recomputed task is harmless."""

    model: object  # NCAWeights or NCA
    src: str
    dst: str
    steps: int
    start_step: int
    seed: int
    storage: str
    threads: int | None
    backend: str
    tiles: MnistTiles | None = None
    fire_rate: float | None = None
    noise_std: float | None = None

    def __call__(self, coords, origin, written):
        import zarr

        src = zarr.open_array(self.src, mode="r")
        dst = zarr.open_array(self.dst, mode="r+", config={"write_empty_chunks": True})
        key, file = _chunk_file(self.src, src, coords)
        _check_chunk(self.src, key, file, *written)  # this chunk, as its round wrote it (every chunk has one task)
        nb, nh, nw = src.shape[:3]
        k = reach(self.model.description) * self.steps
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
                         origin=(b0, wy0, wx0), start_step=self.start_step, input="state", threads=self.threads,
                         fire_rate=self.fire_rate, noise=self.noise_std)
        sim.run(self.steps, progress=False)
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
                    return InputError(f"{array_path}: chunk {key} holds NaN or inf (a chunk file that is not there "
                                      f"reads as NaN; or the run diverged): the state cannot be advanced")
    what = f"cannot be read ({type(exc).__name__}: {exc})" if exc is not None else "hold NaN or inf"
    return InputError(f"{array_path}: rows {y0}:{y1}, columns {x0}:{x1} {what}; the store is damaged")


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
            raise InputError(f"a store needs regular chunks (all of one size but the last): axis {axis} has {c}")
    path = os.path.join(store, name)
    target = _open_new(path, state.shape, tuple(sizes), state.dtype)
    blocks = state.to_delayed()
    tasks = [dask.delayed(_initial_chunk, pure=True)(path, coords, origin, blocks[coords])
             for coords, origin in _grid(state.shape, sizes)]
    written = dask.compute(*tasks, scheduler=scheduler)
    return _seal(target, record, written)
