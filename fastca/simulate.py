"""``simulate`` and ``mutate``: the public way to run the automaton."""

import contextlib
import dataclasses
import sys
import time

import numpy as np

from . import _checks, backends, metrics, spec
from .weights import NCAWeights


@dataclasses.dataclass
class SimResult:
    """What :func:`simulate` returns.

    state: float32 (float16 with ``storage="float16"``), the input's leading shape + (20,)
        (e.g. (H, W, 20) or (B, H, W, 20)).
    labels: int8 per-cell labels, leading shape of ``state`` without channels; -1 on dead cells.
    accuracy, agreement: float64 (steps,) percent after each step, when ``labels`` was given
        (index i is after step ``start_step + i + 1``), else None.
    """

    state: np.ndarray
    labels: np.ndarray
    accuracy: np.ndarray | None
    agreement: np.ndarray | None
    backend: str
    steps: int
    start_step: int
    seed: int
    seconds: float

    @property
    def alive(self):
        """Bool map of alive cells."""
        return self.labels != metrics.DEAD

    @property
    def cell_steps_per_s(self):
        """Grid cells times steps per second of wall time (all cells, alive or not)."""
        cells = int(np.prod(self.state.shape[:-1]))
        return cells * self.steps / self.seconds if self.seconds > 0 else float("inf")


def initial_state(gray, dtype=np.float32):
    """The initial state of a gray image or batch: gray in channel 0, zeros elsewhere.

    gray: (H, W) or (B, H, W), uint8 or float in [0, 1]. Returns ``dtype`` (float32 or
    float16) (..., H, W, 20). Rows are converted in chunks, so no full-size float32
    copy of the gray input is made (it matters on 10^8-cell worlds).
    """
    gray = _checks.check_gray(gray)
    state = np.zeros(gray.shape + (spec.CHANNELS,), dtype)
    rows_in = gray.reshape(-1, gray.shape[-1])
    rows_out = state.reshape(-1, gray.shape[-1], spec.CHANNELS)
    for r0 in range(0, rows_in.shape[0], 1024):
        rows_out[r0 : r0 + 1024, :, spec.GRAY] = _checks.gray_to_float(rows_in[r0 : r0 + 1024])
    return state


def mutate(state, new_gray, alive_threshold=spec.ALIVE_THRESHOLD):
    """Replace the digit under a state, as in the article's mutation experiments.

    state: (..., H, W, 20) float. new_gray: matching (..., H, W), uint8 or float in [0, 1].
    Returns a new float32 state whose channel 0 is the new gray and whose channels
    1..19 are kept only where the new digit is alive (zero elsewhere).
    """
    flat, lead = _checks.check_state(state)
    g = _checks.gray_to_float(new_gray)
    if g.shape != lead:
        raise ValueError(f"new_gray must have shape {lead} to match the state, got {g.shape}")
    out = flat.reshape(lead + (spec.CHANNELS,)).copy()
    out[..., spec.GRAY] = g
    out[..., 1:] *= (g > np.float32(alive_threshold))[..., None]
    return out


@contextlib.contextmanager
def _threads(n, with_torch):
    """Temporarily set the Numba (and, if ``with_torch``, torch) thread counts (None: leave as is)."""
    if n is None:
        yield
        return
    import numba

    if not (isinstance(n, int) and 1 <= n <= numba.config.NUMBA_NUM_THREADS):
        raise ValueError(f"threads must be an int in 1..{numba.config.NUMBA_NUM_THREADS}, got {n!r}")
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    torch = None
    if with_torch or "torch" in sys.modules:  # never import torch just to set its threads
        import torch

        old_torch = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(old)
        if torch is not None:
            torch.set_num_threads(old_torch)


def is_state_input(shape, dtype, input_kind):
    """Whether an input of this shape and dtype is a full state (else a gray image or batch).

    "auto": 4 dimensions, or 3 with 20 float channels last; "state"/"gray" force the choice.
    """
    if input_kind not in ("auto", "gray", "state"):
        raise ValueError(f"input must be 'auto', 'gray' or 'state', got {input_kind!r}")
    if input_kind != "auto":
        return input_kind == "state"
    return len(shape) == 4 or (len(shape) == 3 and shape[-1] == spec.CHANNELS and np.dtype(dtype).kind == "f")


def _as_state(x, input_kind, dtype=np.float32):
    """Return (state (B, H, W, 20) ``dtype`` owned copy, leading shape, batched?)."""
    arr = np.asarray(x)
    if is_state_input(arr.shape, arr.dtype, input_kind):
        state, lead = _checks.check_state(arr, dtype)
        state = state.copy() if np.shares_memory(state, arr) else state
    else:
        state = initial_state(arr, dtype)
        lead = state.shape[:-1]
        state = state.reshape((-1,) + state.shape[-3:])
    return state, lead, len(lead) == 3


def simulate(model, x, steps, *, backend="auto", seed=0, fire_rate=None, noise=None, labels=None,
             start_step=0, threads=None, progress=None, input="auto", callback=None, output="host",
             storage="float32"):
    """Run the self-classifying MNIST automaton.

    Parameters
    ----------
    model : NCAWeights
        The weights (e.g. :func:`fastca.pretrained` or :func:`fastca.load_distill_model`).
    x : array
        A gray image (H, W) or batch (B, H, W), uint8 or float in [0, 1]; or a full
        state (H, W, 20) / (B, H, W, 20) float (e.g. a previous result's ``state``).
        A float (B, H, 20) array is read as a state; pass ``input="gray"`` to override.
        With ``backend="numba-cuda"``, device arrays (Numba, CuPy, torch CUDA: anything
        with ``__cuda_array_interface__``) are accepted and copied on the device.
    steps : int
        Number of steps (>= 0).
    backend : {"auto", "numba-cpu", "numba-cuda", "torch"}
        "auto" is ``$FASTCA_BACKEND`` when set, else numba-cuda when a GPU is usable,
        else numba-cpu (the choice is logged on the "fastca" logger and in ``.backend``).
    seed : int
        Seed of the shared counter-based generator: the same seed gives the same
        fire masks on every backend.
    fire_rate : float, optional
        Probability that an alive cell updates in a step; default ``model.fire_rate``.
    noise : None, bool or float
        Residual noise std; None uses ``model.noise_std``, False/0 disables it.
    labels : optional
        Target digits, per sample (int or (B,)) or per cell ((H, W) / (B, H, W), -1 for
        none). When given, per-step accuracy and agreement are recorded.
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
        numba-cuda only: "device" returns ``state`` and ``labels`` as Numba device arrays
        (wrap them with ``cupy.asarray`` or ``torch.as_tensor`` without a copy).
    storage : {"float32", "float16"}
        numba-cpu only: "float16" keeps the state as float16 (half the memory; every
        step computes in float32 and rounds the updated channels once). ``state`` and
        the callback's view are then float16.

    Returns
    -------
    SimResult
    """
    if not isinstance(model, NCAWeights):
        raise TypeError(f"model must be NCAWeights (see fastca.pretrained()), got {type(model).__name__}")
    steps = _checks.check_steps(steps)
    start_step = _checks.check_steps(start_step)
    seed = _checks.check_seed(seed)
    fire_rate = _checks.check_probability("fire_rate", model.fire_rate if fire_rate is None else fire_rate)
    noise_std = _checks.check_noise(noise, model.noise_std)
    runner_cls = backends.resolve(backend)
    dtype = _checks.check_storage(storage)
    if dtype != np.float32 and runner_cls.name not in ("numba-cpu", "numba-cuda"):
        raise ValueError(f"storage={storage!r} is implemented by the numba-cpu backend only, not {runner_cls.name!r}")
    if runner_cls.device:
        state, lead, batched = runner_cls.to_device_state(x, input, dtype)
    else:
        state, lead, batched = _as_state(x, input, dtype)
    n_b, n_h, n_w, _ = state.shape
    targets = None if labels is None else metrics.prepare_targets(labels, n_b, n_h, n_w, batched)
    if progress is None:
        progress = n_b * n_h * n_w * steps > 2e8
    acc = np.full(steps, np.nan) if targets is not None else None
    agr = np.full(steps, np.nan) if targets is not None else None
    with _threads(threads, runner_cls.name == "torch"):
        runner = runner_cls(model, state, seed, fire_rate, noise_std, model.alive_threshold)
        if targets is not None:
            runner.set_targets(targets)
        bar = _progress_bar(steps, runner.name) if progress else None
        t0 = time.perf_counter()
        for i in range(steps):
            runner.step(start_step + i)
            if targets is not None:
                acc[i], agr[i] = runner.metrics()
            if callback is not None:
                callback(start_step + i + 1, runner.numpy())
            if bar is not None:
                bar.update(1)
        final, label_map = runner.result(output)  # waits for the device, so inside the timing
        seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
    return SimResult(
        state=final.reshape(lead + (spec.CHANNELS,)),
        labels=label_map.reshape(lead),
        accuracy=acc,
        agreement=agr,
        backend=runner.name,
        steps=steps,
        start_step=start_step,
        seed=seed,
        seconds=seconds,
    )


def _progress_bar(total, backend):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"fastca[{backend}]", unit="step")
