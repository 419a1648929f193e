"""Dask rounds with halos: a grid as a dask state, one round (:func:`advance`) and a whole run
(:func:`simulate`), bit-identical to :func:`fastca.simulate` (see :mod:`fastca.distributed`)."""

import dataclasses
import functools
import numbers
import operator

import numpy as np

from .. import _checks, spec
from .._state import gray_channel, initial_state, is_state_input
from ..simulation import Simulation
from ..weights import NCAWeights
from ..errors import InputError, InputTypeError
from ..run_options import RunOptions


def _dask():
    try:
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - the message is the point
        raise ImportError("fastca.distributed needs dask: pip install 'fastca[distributed]'") from exc
    return da


def as_state(x, input="auto", storage="float32", description=None):
    """A dask array ``x`` (gray (H, W) / (B, H, W), or a state (..., H, W, C)) as a (B, H, W, C)
    state in the storage type, channels in one chunk; plus the input's leading shape. C: the
    description's channels (default: the MNIST model's 20)."""
    da = _dask()
    dtype = _checks.check_storage(storage)
    channels = spec.CHANNELS if description is None else description.channels
    x = x if isinstance(x, da.Array) else da.asarray(x)
    if is_state_input(x.shape, x.dtype, input, channels):
        if x.ndim not in (3, 4) or x.shape[-1] != channels:
            raise InputError(f"state must be (H, W, {channels}) or (B, H, W, {channels}), got shape {x.shape}")
        lead = x.shape[:-1]
        state = x if x.ndim == 4 else x[None]
        return state.astype(dtype).rechunk({3: -1}), lead
    if x.ndim not in (2, 3):
        raise InputError(f"gray input must be (H, W) or (B, H, W), got shape {x.shape}")
    lead = x.shape
    gray = x if x.ndim == 3 else x[None]

    gray_channel(description)  # a model whose aliveness is not a static channel takes states only
    state = gray.map_blocks(functools.partial(initial_state, dtype=dtype, description=description), dtype=dtype,
                            new_axis=3, chunks=gray.chunks + ((channels,),))
    return state, lead


def check_chunks(state, halo):
    """Refuse chunkings that a halo of ``halo`` cells cannot serve (no silent rechunking: it would
    move the chunk boundaries the caller chose)."""
    halo = _check_halo(halo)
    for axis, name in ((1, "rows"), (2, "columns")):
        sizes = state.chunks[axis]
        if len(sizes) > 1 and min(sizes) < halo:
            raise InputError(f"chunks of {min(sizes)} {name} are smaller than the halo ({halo}): use chunks of at least "
                             f"{halo} {name} (or a smaller halo)")
    return halo


def _is_int(value):
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_halo(halo):
    """``halo`` as an int >= 1 (NumPy integers accepted), or raise."""
    if not _is_int(halo) or halo < 1:
        raise InputError(f"halo must be an int >= 1, got {halo!r}")
    return operator.index(halo)


@dataclasses.dataclass(frozen=True)
class _Round:
    """What every task of one round needs (pickled to the workers)."""

    model: object  # NCAWeights or NCA
    steps: int
    start_step: int
    seed: int
    storage: str
    chunks: tuple
    fire_rate: float | None
    noise: object
    threads: int | None
    backend: str
    on_nonfinite: str = "raise"

    def __call__(self, block, block_info=None):
        d = reach(self.model.description) * self.steps
        ib, iy, ix = block_info[0]["chunk-location"][:3]
        origin = (sum(self.chunks[0][:ib]), sum(self.chunks[1][:iy]) - (d if iy > 0 else 0),
                  sum(self.chunks[2][:ix]) - (d if ix > 0 else 0))
        sim = Simulation(self.model, block, backend=self.backend, seed=self.seed, storage=self.storage,
                         origin=origin, start_step=self.start_step, input="state", threads=self.threads,
                         fire_rate=self.fire_rate, noise=self.noise, on_nonfinite=self.on_nonfinite)
        sim.run(self.steps, progress=False)
        return sim.state(copy=False)  # the simulation's own array: the input block is never written


def reach(description):
    """Cells a step's result reaches: 1 (the 3x3 perception), 2 under the max-pool rule (a cell's
    survival reads its neighbours' new values, which read theirs)."""
    return 2 if description.alive.rule == "maxpool" else 1


def _check_model(model, state):
    """The model a distributed run takes: NCAWeights or an NCA; a wrap-around model only with the grid
    in one chunk along H and W (a piece of a torus has no global coordinates for its halo)."""
    from ..nca import NCA

    if not isinstance(model, (NCAWeights, NCA)):
        raise InputTypeError(f"model must be NCAWeights or an NCA, got {type(model).__name__}")
    if model.description.boundary == "wrap" and (len(state.chunks[1]) > 1 or len(state.chunks[2]) > 1):
        raise InputError(f"model {model.description.name!r} wraps around the grid: a distributed run needs the grid "
                         "in one chunk along H and W (chunk along the batch instead)")


def advance(state, model, steps, *, start_step=0, seed=0, storage="float32", fire_rate=None, noise=None,
            threads=None, backend="auto", on_nonfinite="raise"):
    """One round: ``state`` (B, H, W, C) dask array advanced by ``steps`` steps, lazily; chunks along H
    and W that have neighbours must hold at least ``steps`` x :func:`reach` cells (the halo)."""
    fn = _Round(model, operator.index(steps), operator.index(start_step), operator.index(seed), storage, state.chunks,
                fire_rate, noise, threads, backend, on_nonfinite)
    d = reach(model.description) * steps
    return state.map_overlap(fn, depth={0: 0, 1: d, 2: d, 3: 0}, boundary="none", trim=True,
                             dtype=state.dtype, meta=np.empty((0, 0, 0, 0), state.dtype))


def simulate(model, x, steps, *, halo=16, seed=0, start_step=0, storage="float32", threads=None, fire_rate=None,
             noise=None, input="auto", backend="auto", on_round=None, persist=True, on_nonfinite="raise"):
    """Run the automaton on a dask array; returns the (lazy or persisted) dask array of the final state.

    model: NCAWeights, or any :class:`fastca.NCA` (a wrap-around one with the grid in one chunk
    along H and W). x: a dask array: gray (H, W) / (B, H, W), or a state (..., H, W, C); chunks of
    at least ``halo`` cells along H and W (the channel axis is put in one chunk). Each round runs
    ``min(halo // reach, steps left)`` steps per chunk on the chunk widened by their reach
    (:func:`reach`: 1 cell per step, 2 under the max-pool rule) and is
    persisted before the next (``persist=False`` builds one lazy graph instead), so the task
    graph stays small. ``on_round(step, state)`` is called after each round. The result has
    the input's leading shape + (C,) and equals ``fastca.simulate(model, x.compute(), steps,
    seed=seed, start_step=start_step, ...)`` bit for bit on the same backend (``backend`` as in
    :func:`fastca.simulate`, resolved on each worker; the Numba backends give a cell the same
    bits whatever chunk it falls in, the torch reference does not promise that). Run options as
    :class:`fastca.RunOptions` (checked here, before any task runs; ``on_nonfinite`` applies in each task).
    """
    from ..nca import NCA

    if not isinstance(model, (NCAWeights, NCA)):
        raise InputTypeError(f"model must be NCAWeights or an NCA, got {type(model).__name__}")
    steps = _checks.check_steps(steps)
    seed = RunOptions(backend=backend, seed=seed, fire_rate=fire_rate, noise=noise, storage=storage, threads=threads,
                      on_nonfinite=on_nonfinite).seed
    state, lead = as_state(x, input, storage, model.description)
    _check_model(model, state)
    halo = check_chunks(state, halo)
    r = reach(model.description)
    if halo < r:
        raise InputError(f"halo must be at least {r} for model {model.description.name!r} (a step reaches {r} cells)")
    t = _checks.check_steps(start_step)
    left = steps
    while left > 0:
        k = min(halo // r, left)  # steps per round: their reach fits the halo
        state = advance(state, model, k, start_step=t, seed=seed, storage=storage, fire_rate=fire_rate, noise=noise,
                        threads=threads, backend=backend, on_nonfinite=on_nonfinite)
        if persist:
            state = state.persist()
        t += k
        left -= k
        if on_round is not None:
            on_round(t, state)
    return state.reshape(lead + (state.shape[-1],)) if len(lead) == 2 else state
