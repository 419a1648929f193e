"""``simulate`` and ``mutate``: the one-call way to run the automaton (a thin wrapper of
:class:`fastca.Simulation`)."""

import dataclasses
import time

import numpy as np

from . import _checks, metrics, spec
from ._state import initial_state, is_state_input, mutate_host
from .backends import BackendName
from .simulation import Simulation
from .errors import InputError

__all__ = ["SimResult", "initial_state", "is_state_input", "mutate", "simulate"]


@dataclasses.dataclass
class SimResult:
    """What :func:`simulate` returns.

    state: float32 (float16 with ``storage="float16"``), the input's leading shape + (20,)
        (e.g. (H, W, 20) or (B, H, W, 20)).
    labels: int8 per-cell labels, leading shape of ``state`` without channels; -1 on dead cells
        (None for a model without a readout).
    accuracy, agreement: float64 (steps,) percent after each step, when ``labels`` was given
        (index i is after step ``start_step + i + 1``), else None.
    """

    state: np.ndarray
    labels: np.ndarray | None  # None: the model has no readout
    accuracy: np.ndarray | None
    agreement: np.ndarray | None
    backend: str
    steps: int
    start_step: int
    seed: int
    seconds: float

    @property
    def alive(self):
        """Bool map of alive cells (a model with a readout)."""
        if self.labels is None:
            raise InputError("this model has no readout: no labels (use fastca.model.alive_mask on .state)")
        return self.labels != metrics.DEAD

    @property
    def cell_steps_per_s(self):
        """Grid cells times steps per second of wall time (all cells, alive or not)."""
        cells = int(np.prod(self.state.shape[:-1]))
        return cells * self.steps / self.seconds if self.seconds > 0 else float("inf")


def mutate(state, new_gray, alive_threshold=spec.ALIVE_THRESHOLD):
    """Replace the digit under a state, as in the article's mutation experiments.

    state: (..., H, W, 20) float. new_gray: matching (..., H, W), uint8 or float in [0, 1].
    Returns a new float32 state whose channel 0 is the new gray and whose channels
    1..19 are kept only where the new digit is alive (zero elsewhere). For a state that
    lives in a :class:`fastca.Simulation`, use :meth:`fastca.Simulation.mutate`.
    """
    flat, lead = _checks.check_state(state)
    g = _checks.gray_to_float(new_gray)
    if g.shape != lead:
        raise InputError(f"new_gray must have shape {lead} to match the state, got {g.shape}")
    out = flat.reshape(lead + (spec.CHANNELS,)).copy()
    mutate_host(out.reshape((-1,) + out.shape[-3:]), g.reshape((-1,) + g.shape[-2:]), alive_threshold)
    return out


def simulate(model, x, steps, *, backend: BackendName = "auto", seed=0, fire_rate=None, noise=None, labels=None,
             start_step=0, threads=None, progress=None, input="auto", callback=None, output="host",
             storage="float32", origin=(0, 0, 0), on_nonfinite="raise"):
    """Run an automaton for ``steps`` steps: the self-classifying MNIST model, or any described one.

    The run options (``backend``, ``seed``, ``fire_rate``, ``noise``, ``storage``, ``threads``,
    ``on_nonfinite``) are :class:`fastca.RunOptions`' fields, with its defaults: one object can be
    checked once and passed to any entry point as ``**opts.kwargs()``.

    Parameters
    ----------
    model : NCAWeights or NCA
        The MNIST weights (e.g. :func:`fastca.pretrained` or :func:`fastca.load_distill_model`),
        or any model description with its weights (:class:`fastca.NCA`: then ``x`` is a
        state with the description's channels, or a gray image for a model whose alive rule
        reads a static channel; ``labels`` need a readout).
    x : array
        A gray image (H, W) or batch (B, H, W), uint8 or float in [0, 1]; or a full
        state (H, W, 20) / (B, H, W, 20) float (e.g. a previous result's ``state``).
        A float (B, H, 20) array is read as a state; pass ``input="gray"`` to override.
        With ``backend="numba-cuda"``, device arrays (Numba, CuPy, torch CUDA: anything
        with ``__cuda_array_interface__``) are accepted and copied on the device.
    steps : int
        Number of steps (>= 0).
    backend : str
        "auto" (``$FASTCA_BACKEND`` when set, else the fastest usable backend: numba-cuda
        on a GPU, else numba-cpu; logged on the "fastca" logger and in ``.backend``) or a
        name from :func:`fastca.available_backends`.
    seed : int
        Seed of the shared counter-based generator: the same seed gives the same
        fire masks on every backend.
    fire_rate : float, optional
        Probability that an alive cell updates in a step; default ``model.fire_rate``.
    noise : None, bool or float
        Residual noise std; None uses ``model.noise_std``, False/0 disables it.
    labels : optional
        Target digits, per sample (int or (B,)) or per cell ((H, W) / (B, H, W); -1 for
        none: such cells are neither right nor wrong). When given, per-step accuracy and
        agreement are recorded (counted on the backend, read once at the end).
    start_step : int
        Index of the first step, for the random keys (continue a run with the same stream).
    threads : int, optional
        Threads for this call (Numba and torch); default: leave as configured.
    progress : bool, optional
        Show a progress bar; default: only for long runs (> 2e8 cell-steps).
    input : {"auto", "gray", "state"}
        How to read ``x``.
    callback : callable, optional
        ``callback(step, state)`` after every step, ``state`` a (B, H, W, 20) numpy view
        valid only during the call (copy it to keep it); on numba-cuda, a host copy.
    output : {"host", "device"}
        "device" (numba-cuda) returns ``state`` and ``labels`` as Numba device arrays
        (wrap them with ``cupy.asarray`` or ``torch.as_tensor`` without a copy).
    storage : {"float32", "float16"}
        "float16" (numba-cpu, numba-cuda) keeps the state as float16 (half the memory;
        every step computes in float32 and rounds the updated channels once). ``state``
        and the callback's view are then float16.
    origin : (int, int, int)
        Global (sample, row, column) of ``x``'s first cell, for the random keys: a block
        cut from a larger grid with a margin of k cells, run k steps with its origin,
        equals the whole grid's run in its interior, bit for bit.
    on_nonfinite : {"raise", "warn"}
        A state that becomes NaN or inf raises FloatingPointError naming the step and the
        sample (default), or warns once and goes on.

    Returns
    -------
    SimResult
    """
    steps = _checks.check_steps(steps)
    sim = Simulation(model, x, backend=backend, seed=seed, storage=storage, origin=origin, fire_rate=fire_rate,
                     noise=noise, start_step=start_step, input=input, threads=threads, on_nonfinite=on_nonfinite)
    sim._check_output(output)  # before the work, not after it
    targets = None if labels is None else sim.targets(labels)
    t0 = time.perf_counter()
    counts = sim.run(steps, callback=callback, progress=progress, targets=targets)
    state = sim.state(output, copy=False)  # waits for the device, so inside the timing
    label_map = None if sim.description.readout is None else sim.labels(output)
    seconds = time.perf_counter() - t0
    acc = agr = None
    if counts is not None:
        acc, agr = metrics.from_counts(counts)
        acc, agr = np.atleast_1d(np.asarray(acc, np.float64)), np.atleast_1d(np.asarray(agr, np.float64))
    return SimResult(state=state, labels=label_map, accuracy=acc, agreement=agr, backend=sim.backend, steps=steps,
                     start_step=sim.t - steps, seed=sim.params.seed, seconds=seconds)
