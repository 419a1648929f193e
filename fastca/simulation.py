"""``Simulation``: the resident form of a run, whose state stays where its backend keeps it."""

import contextlib
import numbers
import sys

import numpy as np

from . import _checks, backends, metrics
from ._state import gray_channel
from .backends.base import Params
from .weights import NCAWeights


MAX_STEP = 2**62  #: step indices stay below this (they are hashed as 64-bit integers)


class Simulation:
    """One automaton run whose state stays on its backend (host memory or a GPU) between calls.

    Parameters
    ----------
    model : NCAWeights or NCA
        The self-classifying MNIST weights, or any model description with its weights
        (:class:`fastca.NCA`; its state has the description's C channels).
    x : array
        A gray image (H, W) or batch (B, H, W), uint8 or float in [0, 1] (into the static
        alive channel: MNIST's gray channel 0); or a full state (H, W, C) / (B, H, W, C)
        (C = 20 for MNIST; models without a static alive channel take states only). Backends with device input (numba-cuda) also take
        device arrays (Numba, CuPy, torch CUDA), copied on the device.
    backend : str
        A registered backend name or "auto" (see :func:`fastca.backends.resolve`).
    seed : int
        Seed of the shared counter-based generator.
    storage : {"float32", "float16"}
        State storage type, where the backend supports it (compute is always float32).
    origin : (int, int, int)
        Global (sample, row, column) of ``x``'s first cell: the random keys of a piece
        cut from a larger grid are those of the whole grid.
    fire_rate, noise : optional
        Override the model's fire rate and noise std (``noise=False`` disables noise).
    start_step : int
        Index of the next step (random keys), e.g. to continue another run.
    input : {"auto", "gray", "state"}
    threads : int, optional
        Numba (and torch) threads while this simulation runs.
    options : dict, optional
        Backend-specific tuning (e.g. ``{"seg_rows": 32}`` on numba-cuda); results do not
        depend on them.
    on_nonfinite : {"raise", "warn"}
        What to do when a cell's state becomes NaN or inf (the kernels flag it as they
        write; weights that make the state grow without bound do this): raise
        FloatingPointError naming the step (on a device backend, the run's steps) and the
        sample, or warn once and go on. Non-finite cells are never counted as a class.

    Every option is checked against the backend's capabilities before anything runs.
    """

    def __init__(self, model, x, *, backend="auto", seed=0, storage="float32", origin=(0, 0, 0), fire_rate=None,
                 noise=None, start_step=0, input="auto", threads=None, options=None, on_nonfinite="raise"):
        from .nca import NCA

        if not isinstance(model, (NCAWeights, NCA)):
            raise TypeError("model must be NCAWeights (see fastca.pretrained()) or an NCA (any model description), "
                            f"got {type(model).__name__}")
        self.description = model.description
        seed = _checks.check_seed(seed)
        fire_rate = _checks.check_probability("fire_rate", model.fire_rate if fire_rate is None else fire_rate)
        dtype = _checks.check_storage(storage)
        noise_std = _checks.check_noise(noise, model.noise_std, dtype)
        self.t = _checks.check_steps(start_step)
        if self.t >= MAX_STEP:
            raise ValueError(f"start_step must be below {MAX_STEP}, got {start_step}")
        origin = _check_origin(origin)
        self.threads = _check_threads(threads)
        if on_nonfinite not in ("raise", "warn"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'warn', got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self._warned = False
        self.info = backends.resolve(backend)
        if storage not in self.info.storages:
            raise ValueError(f"storage={storage!r} is not supported by backend {self.info.name!r} "
                             f"(it supports {', '.join(self.info.storages)})")
        runner_cls = self.info.load()
        from .backends.numba_cuda import is_device_array

        if not self.info.device_input and is_device_array(x):
            raise TypeError(f"backend {self.info.name!r} takes host arrays; got a device array "
                            "(use a backend with device input, or copy it to the host)")
        state, self.lead, self.batched = runner_cls.to_state(x, input, dtype, self.description)
        self.shape = tuple(state.shape)  # (B, H, W, C)
        self.model = model
        self.params = Params(seed, fire_rate, noise_std, float(model.alive_threshold), origin, self.threads)
        with self._threads():
            self._runner = runner_cls(model, state, self.params, **(options or {}))

    @property
    def backend(self):
        """Name of the backend running this simulation."""
        return self.info.name

    def run(self, steps, *, callback=None, progress=None, targets=None):
        """Advance ``steps`` steps (the step counter carries over between calls).

        callback(step, state): after every step, with a read-only (B, H, W, 20) host view or
            copy (on a device backend a copy per step: slow; prefer ``targets`` for metrics).
            To change the world between steps, use :meth:`mutate` or :meth:`edit`.
        progress: show a progress bar (default: only for runs over 2e8 cell-steps, and only
            when stderr is a terminal).
        targets: optional target map from :meth:`targets` (or labels as in
            :func:`fastca.simulate`): per-step counts are kept on the backend and returned
            as a (steps, B, 13) int64 array (layout: ``spec.N_COUNTS``).
        """
        steps = _checks.check_steps(steps)
        if self.t + steps >= MAX_STEP:
            raise ValueError(f"step index {self.t} + {steps} steps would pass {MAX_STEP} (the random keys' range)")
        handle = None
        if targets is not None:
            handle = self._handle(targets)
            buf = self._runner.new_counts(steps)
        n_b, n_h, n_w, _ = self.shape
        if progress is None:
            progress = n_b * n_h * n_w * steps > 2e8 and sys.stderr.isatty()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc=f"fastca[{self.backend}]", unit="step")
        first = self.t
        every_step = self._runner.cheap_nonfinite_check
        try:
            with self._threads():
                for i in range(steps):
                    self._runner.step(self.t)
                    self.t += 1
                    if every_step:
                        self._check_finite(self.t, self.t)
                    if handle is not None:
                        self._runner.count(handle.data, buf, i)
                    if callback is not None:
                        callback(self.t, _read_only(self._runner.read()))
                    if bar is not None:
                        bar.update(1)
            if steps and not every_step:
                self._check_finite(first + 1, self.t)
        finally:
            if bar is not None:
                bar.close()
        return None if handle is None else self._runner.counts_host(buf)

    def _check_finite(self, lo, hi):
        sample = self._runner.nonfinite()
        if sample is None:
            return
        when = f"step {hi}" if lo == hi else f"steps {lo}..{hi}"
        cause = "the model makes it" if self.params.noise_std <= 1 else \
            f"the model, or the noise (std {self.params.noise_std:g}), makes it"
        msg = (f"the state became non-finite (NaN or inf) at {when}, in sample {sample}: {cause} "
               "grow without bound (such cells are counted as no class)")
        if self.on_nonfinite == "raise":
            raise FloatingPointError(msg + "; pass on_nonfinite='warn' to go on")
        if not self._warned:
            import warnings

            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            self._warned = True

    def targets(self, labels):
        """Prepare per-sample or per-cell target labels (as in :func:`fastca.simulate`) once, on the backend."""
        metrics.require_readout(self.description)
        n_b, n_h, n_w, _ = self.shape
        classes = self.description.readout.classes
        prepared = self._runner.prepare_targets(metrics.prepare_targets(labels, n_b, n_h, n_w, self.batched, classes))
        return _Targets(prepared, self.backend, self.shape[:3])

    def _handle(self, targets):
        """A target handle this simulation's kernels can index: made for its backend and its (B, H, W)
        (a handle from another simulation of another shape or batch would be read out of bounds)."""
        if not isinstance(targets, _Targets):
            return self.targets(targets)
        data = targets.data
        fits = (targets.backend == self.backend and targets.shape == self.shape[:3]
                and tuple(getattr(data, "shape", ())) == self.shape[:3] and getattr(data, "dtype", None) == np.int16)
        if not fits:
            raise ValueError(f"targets were prepared for a {targets.backend} simulation of (B, H, W) {targets.shape}; "
                             f"this one is {self.backend} {self.shape[:3]}: prepare them with this simulation's "
                             ".targets(labels), or pass the labels")
        return targets

    def counts(self, targets):
        """Per-sample counts (B, 13) int64 of the current state (layout ``spec.N_COUNTS``)."""
        handle = self._handle(targets)
        buf = self._runner.new_counts(1)
        self._runner.count(handle.data, buf, 0)
        return self._runner.counts_host(buf)[0]

    def metrics(self, targets):
        """(per-cell accuracy %, total agreement %) of the current state."""
        return metrics.from_counts(self.counts(targets))

    def state(self, output="host", copy=True):
        """The state, the input's leading shape + (20,): NumPy ("host"; ``copy=False`` may return
        the live array of a host backend: writes to it are seen by the next step) or the backend's
        device array ("device")."""
        self._check_output(output)
        if output == "device":
            return self._runner.state.reshape(self.lead + (self.shape[-1],))
        state = self._runner.read()
        if self._runner.host_view:  # a host backend's live array: copy unless asked not to
            if copy:
                state = state.copy()
            else:
                self._runner.state_written()  # the caller may write it
        return state.reshape(self.lead + (self.shape[-1],))

    def view(self):
        """The state as a read-only NumPy view (a copy on a device backend), the input's leading
        shape + (20,): for reading it often (frames, probes) without copying a host backend's array."""
        return _read_only(self._runner.read()).reshape(self.lead + (self.shape[-1],))

    def labels(self, output="host"):
        """int8 label map (the input's leading shape), -1 on dead cells (a model with a readout only)."""
        self._check_output(output)
        metrics.require_readout(self.description)
        return self._runner.output(self._runner.labels(), output).reshape(self.lead)

    def mutate(self, new_gray):
        """Replace the digit(s) under the state (the article's mutation), in place on the backend.

        new_gray: the input's leading shape ((H, W) or (B, H, W)), uint8 or float in [0, 1].
        Channel 0 becomes the new gray; channels 1..19 are kept where the new gray is alive.
        """
        gray_channel(self.description)  # a model whose aliveness is a static gray channel only
        g = _checks.gray_to_float(new_gray)
        if g.shape != self.lead:
            raise ValueError(f"new_gray must have shape {self.lead} to match the state, got {g.shape}")
        self._runner.write_gray(0, 0, 0, g.reshape(self.shape[:3]))

    def edit(self, kind, *, sample=0, center=None, radius=6.0, points=None, width=2.0, value=255, gray=None, at=(0, 0)):
        """Edit the world in place, between steps (what drawing and scripted events need).

        - ``edit("erase", center=(y, x), radius=r)``: cells within the disk become dead (gray 0);
        - ``edit("stroke", points=[(y0, x0), (y1, x1), ...], width=w, value=255)``: draw a
          polyline (gray = max(gray, value)); new cells start with zero hidden state;
        - ``edit("set", gray=window, at=(y, x))``: set the gray of a window (uint8 or [0, 1]).

        ``sample`` picks the batch entry. Only the affected window travels to the backend.
        """
        n_b, n_h, n_w, _ = self.shape
        gch = gray_channel(self.description)  # a model whose aliveness is a static gray channel only
        if not (isinstance(sample, numbers.Integral) and 0 <= sample < n_b):
            raise ValueError(f"sample must be an int in 0..{n_b - 1}, got {sample!r}")
        if kind == "set":
            g = _checks.gray_to_float(gray)
            if g.ndim != 2:
                raise ValueError(f"gray must be a 2-d window, got shape {g.shape}")
            y0, x0 = (int(v) for v in at)
            if not (0 <= y0 and 0 <= x0 and y0 + g.shape[0] <= n_h and x0 + g.shape[1] <= n_w):
                raise ValueError(f"window of shape {g.shape} at {(y0, x0)} is outside the {n_h}x{n_w} grid")
            self._runner.write_gray(sample, y0, x0, g[None])
            return
        if kind == "erase":
            if center is None:
                raise ValueError("erase needs center=(y, x)")
            cy, cx = (float(v) for v in center)
            r = float(radius)
            if not (np.isfinite(r) and r >= 0):
                raise ValueError(f"radius must be finite and >= 0, got {radius!r}")
            box = _box(cy - r, cy + r, cx - r, cx + r, n_h, n_w)
            if box is None:
                return
            y0, y1, x0, x1 = box
            window = self._runner.read_window(sample, y0, x0, 1, y1 - y0, x1 - x0)[0, ..., gch]
            yy, xx = np.ogrid[y0:y1, x0:x1]
            window[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 0
            self._runner.write_gray(sample, y0, x0, window[None])
            return
        if kind == "stroke":
            pts = np.asarray(points, np.float64).reshape(-1, 2) if points is not None else np.zeros((0, 2))
            if len(pts) == 0 or not np.all(np.isfinite(pts)):
                raise ValueError("stroke needs points=[(y, x), ...] (finite)")
            half = float(width) / 2
            if not (np.isfinite(half) and half >= 0):
                raise ValueError(f"width must be finite and >= 0, got {width!r}")
            level = _checks.gray_to_float(np.asarray([[value]], np.uint8 if isinstance(value, numbers.Integral) else np.float32))[0, 0]
            box = _box(pts[:, 0].min() - half, pts[:, 0].max() + half, pts[:, 1].min() - half, pts[:, 1].max() + half,
                       n_h, n_w)
            if box is None:
                return
            y0, y1, x0, x1 = box
            window = self._runner.read_window(sample, y0, x0, 1, y1 - y0, x1 - x0)[0, ..., gch]
            on = stroke_mask(y1 - y0, x1 - x0, pts - [y0, x0], 2 * half)
            window = np.where(on, np.maximum(window, level), window).astype(np.float32)
            self._runner.write_gray(sample, y0, x0, window[None])
            return
        raise ValueError(f"edit kind must be 'erase', 'stroke' or 'set', got {kind!r}")

    def _check_output(self, output):
        if output not in self.info.outputs:
            raise ValueError(f"output must be one of {self.info.outputs} for backend {self.backend!r}, got {output!r}")

    @contextlib.contextmanager
    def _threads(self):
        """Numba's thread count while this simulation computes (a backend with threads of its
        own applies ``params.threads`` itself)."""
        if self.threads is None:
            yield
            return
        import numba

        old = numba.get_num_threads()
        numba.set_num_threads(self.threads)
        try:
            yield
        finally:
            numba.set_num_threads(old)


class _Targets:
    """A target map prepared on a simulation's backend (see :meth:`Simulation.targets`): the
    backend's (B, H, W) int16 array, the backend's name and the (B, H, W) it was made for."""

    def __init__(self, data, backend, shape):
        self.data = data
        self.backend = backend
        self.shape = tuple(shape)


def stroke_mask(h, w, points, width):
    """(h, w) bool map of a polyline through ``points`` ((n, 2) row, column) of the given width.

    Each segment is tested only on the cells of its own box widened by half the width (no
    cell outside it is within reach), so a stroke costs the area its segments cover, not
    points x the area of the whole stroke.
    """
    canvas = np.zeros((h, w), bool)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) == 1:
        pts = np.vstack([pts, pts])
    r = width / 2
    for (y0, x0), (y1, x1) in zip(pts[:-1], pts[1:]):
        box = _box(min(y0, y1) - r, max(y0, y1) + r, min(x0, x1) - r, max(x0, x1) + r, h, w)
        if box is None:
            continue
        ya, yb, xa, xb = box
        yy, xx = np.mgrid[ya:yb, xa:xb].astype(np.float64)
        dy, dx = y1 - y0, x1 - x0
        t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-9), 0, 1)
        canvas[ya:yb, xa:xb] |= (yy - (y0 + t * dy)) ** 2 + (xx - (x0 + t * dx)) ** 2 <= r ** 2
    return canvas


def _box(ylo, yhi, xlo, xhi, n_h, n_w):
    """Integer window [y0, y1) x [x0, x1) covering the given float bounds, clipped to the grid; None if empty."""
    y0, y1 = max(0, int(np.floor(ylo))), min(n_h, int(np.floor(yhi)) + 1)
    x0, x1 = max(0, int(np.floor(xlo))), min(n_w, int(np.floor(xhi)) + 1)
    return None if y0 >= y1 or x0 >= x1 else (y0, y1, x0, x1)


def _check_origin(origin):
    try:
        vals = tuple(origin)
    except TypeError:
        vals = ()
    if len(vals) != 3 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v < 2**62
                                 for v in vals):
        raise ValueError(f"origin must be three ints >= 0 (sample, row, column), got {origin!r}")
    return tuple(int(v) for v in vals)


def _check_threads(n):
    if n is None:
        return None
    import numba

    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads must be an int in 1..{numba.config.NUMBA_NUM_THREADS}, got {n!r}")
    return int(n)


def _read_only(array):
    """A read-only view of a NumPy array (the runner's live state stays the runner's to write)."""
    view = array.view()
    view.flags.writeable = False
    return view
