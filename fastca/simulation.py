"""``Simulation``: the resident form of a run, whose state stays where its backend keeps it."""

import contextlib
import numbers
import sys

import numpy as np

from . import _checks, backends, metrics
from ._state import gray_channel
from .backends import host
from .backends.base import Params
from .run_options import RunOptions
from .weights import NCAWeights
from .errors import InputError, InputTypeError, NonFiniteError


MAX_STEP = 2**62  #: step indices stay below this (they are hashed as 64-bit integers)
EDIT_KINDS = ("erase", "stroke", "set", "seed")  #: what :meth:`Simulation.edit` does


class Simulation:
    """One automaton run whose state stays on its backend (host memory or a GPU) between calls.

    The run options (``backend``, ``seed``, ``fire_rate``, ``noise``, ``storage``, ``threads``,
    ``on_nonfinite``) are :class:`fastca.RunOptions`' fields, with its defaults.

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

    def __init__(self, model, x, *, backend: backends.BackendName = "auto", seed=0, storage="float32",
                 origin=(0, 0, 0), fire_rate=None, noise=None, start_step=0, input="auto", threads=None,
                 options=None, on_nonfinite="raise"):
        from .nca import NCA

        if not isinstance(model, (NCAWeights, NCA)):
            raise InputTypeError("model must be NCAWeights (see fastca.pretrained()) or an NCA (any model description), "
                            f"got {type(model).__name__}")
        self.description = model.description
        run = RunOptions(backend=backend, seed=seed, fire_rate=fire_rate, noise=noise, storage=storage,
                         threads=threads, on_nonfinite=on_nonfinite)
        seed = run.seed
        fire_rate = model.fire_rate if run.fire_rate is None else run.fire_rate
        dtype = _checks.check_storage(storage)
        noise_std = _checks.check_noise(noise, model.noise_std, dtype)
        self.t = _checks.check_steps(start_step)
        if self.t >= MAX_STEP:
            raise InputError(f"start_step must be below {MAX_STEP}, got {start_step}")
        origin = _check_origin(origin)
        self.threads = run.threads
        self.on_nonfinite = on_nonfinite
        self._warned = False
        self.info = backends.resolve(backend)
        if storage not in self.info.storages:
            raise InputError(f"storage={storage!r} is not supported by backend {self.info.name!r} "
                             f"(it supports {', '.join(self.info.storages)})")
        runner_cls = self.info.load()
        if not self.info.device_input and backends.is_device_array(x):
            raise InputTypeError(f"backend {self.info.name!r} takes host arrays; got a device array "
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
            raise InputError(f"step index {self.t} + {steps} steps would pass {MAX_STEP} (the random keys' range)")
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
            raise NonFiniteError(msg + "; pass on_nonfinite='warn' to go on")
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
            raise InputError(f"targets were prepared for a {targets.backend} simulation of (B, H, W) {targets.shape}; "
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
            raise InputError(f"new_gray must have shape {self.lead} to match the state, got {g.shape}")
        self._runner.write_gray(0, 0, 0, g.reshape(self.shape[:3]))

    def edit(self, kind, *, sample=0, center=None, radius=6.0, points=None, width=2.0, value=255, gray=None, at=(0, 0)):
        """Edit the world in place, between steps (what drawing, cuts and scripted events need).

        A model whose aliveness is a static gray channel (the MNIST digits) edits that channel:

        - ``edit("erase", center=(y, x), radius=r)``: cells within the disc become dead (gray 0);
          ``edit("erase", points=[(y0, x0), ...], width=w)``: the same along a polyline;
        - ``edit("stroke", points=[(y0, x0), (y1, x1), ...], width=w, value=255)``: draw a
          polyline (gray = max(gray, value)); new cells start with zero hidden state;
        - ``edit("set", gray=window, at=(y, x))``: set the gray of a window (uint8 or [0, 1]).

        Any other model (a :class:`fastca.NCA` whose cells grow and die, e.g. the Growing NCA)
        edits its state:

        - ``edit("erase", ...)`` (a disc or a polyline, as above): every channel of those cells
          zeroed (the cut: they are dead, and may regrow from their neighbours);
        - ``edit("seed", center=(y, x))``: cell (floor y, floor x) becomes the model's seed
          (:func:`fastca.growing.seed_cell`: every channel from the alive channel on 1, the
          others 0; models with the max-pool alive rule).

        ``sample`` picks the batch entry; an erase's centre or points and a seed lie inside
        the (H, W) grid. Only the affected window travels to the backend. Each edit equals
        the same change made to :meth:`state` and a new simulation started from it.
        """
        if kind not in EDIT_KINDS:
            raise InputError(f"edit kind must be one of {', '.join(map(repr, EDIT_KINDS))}, got {kind!r}")
        n_b = self.shape[0]
        if not (isinstance(sample, numbers.Integral) and not isinstance(sample, bool) and 0 <= sample < n_b):
            raise InputError(f"sample must be an int in 0..{n_b - 1}, got {sample!r}")
        self._check_edit_applies(kind)
        if kind == "seed":
            self._plant_seed(int(sample), center)
        elif kind == "erase":
            self._erase(int(sample), center, radius, points, width)
        elif kind == "set":
            self._set_gray(int(sample), gray, at)
        else:
            self._stroke(int(sample), points, width, value)

    def _check_edit_applies(self, kind):
        """ValueError when ``kind`` does not apply to this model: gray edits need a static gray channel,
        a seed the max-pool alive rule (cells that grow from it)."""
        d = self.description
        if kind in ("stroke", "set") and d.alive.rule != "static":
            raise InputError(f"edit {kind!r} draws into a static gray channel, which model {d.name!r} (alive rule "
                             f"{d.alive.rule!r}) has not: edit its state with 'erase' (the cut) or 'seed'")
        if kind == "seed" and d.alive.rule != "maxpool":
            raise InputError(f"edit 'seed' plants a cell that grows (the max-pool alive rule); model {d.name!r} has "
                             f"the {d.alive.rule!r} rule" + (": draw with 'stroke'" if d.alive.rule == "static" else ""))

    def _set_gray(self, sample, gray, at):
        g = _checks.gray_to_float(gray)
        if g.ndim != 2:
            raise InputError(f"gray must be a 2-d window, got shape {g.shape}")
        n_h, n_w = self.shape[1:3]
        y0, x0 = (int(v) for v in at)
        if not (0 <= y0 and 0 <= x0 and y0 + g.shape[0] <= n_h and x0 + g.shape[1] <= n_w):
            raise InputError(f"window of shape {g.shape} at {(y0, x0)} is outside the {n_h}x{n_w} grid")
        self._runner.write_gray(sample, y0, x0, g[None])

    def _stroke(self, sample, points, width, value):
        n_h, n_w = self.shape[1:3]
        pts = np.asarray(points, np.float64).reshape(-1, 2) if points is not None else np.zeros((0, 2))
        if len(pts) == 0 or not np.all(np.isfinite(pts)):
            raise InputError("stroke needs points=[(y, x), ...] (finite)")
        half = _half_width(width)
        level = _checks.gray_to_float(np.asarray([[value]], np.uint8 if isinstance(value, numbers.Integral) else np.float32))[0, 0]
        box = _box(pts[:, 0].min() - half, pts[:, 0].max() + half, pts[:, 1].min() - half, pts[:, 1].max() + half,
                   n_h, n_w)
        if box is None:
            return
        y0, y1, x0, x1 = box
        gch = gray_channel(self.description)
        window = self._runner.read_window(sample, y0, x0, 1, y1 - y0, x1 - x0)[0, ..., gch]
        on = stroke_mask(y1 - y0, x1 - x0, pts - [y0, x0], 2 * half)
        window = np.where(on, np.maximum(window, level), window).astype(np.float32)
        self._runner.write_gray(sample, y0, x0, window[None])

    def _erase(self, sample, center, radius, points, width):
        """Zero a disc or a polyline: the gray (a static gray channel: the cells die) or every channel."""
        (y0, y1, x0, x1), on = self._erase_mask(center, radius, points, width)
        window = self._runner.read_window(sample, y0, x0, 1, y1 - y0, x1 - x0)[0]
        if self.description.alive.rule == "static":
            gray = window[..., gray_channel(self.description)]
            gray[on] = 0
            self._runner.write_gray(sample, y0, x0, gray[None])
        else:
            window[on] = 0
            self._write_state(sample, y0, x0, window)

    def _erase_mask(self, center, radius, points, width):
        """((y0, y1, x0, x1) window, (h, w) bool cells to erase in it) of a disc or a polyline."""
        n_h, n_w = self.shape[1:3]
        if (center is None) == (points is None):
            raise InputError("erase needs center=(y, x) (a disc of the given radius) or points=[(y, x), ...] "
                             "(a polyline of the given width), not both")
        if points is not None:
            pts = self._grid_points(points, "points")
            half = _half_width(width)
            box = _box(pts[:, 0].min() - half, pts[:, 0].max() + half, pts[:, 1].min() - half,
                       pts[:, 1].max() + half, n_h, n_w)
            assert box is not None  # the points lie in the grid
            y0, y1, x0, x1 = box
            return box, stroke_mask(y1 - y0, x1 - x0, pts - [y0, x0], 2 * half)
        cy, cx = self._grid_points([center], "center")[0]
        r = float(radius) if isinstance(radius, numbers.Real) and not isinstance(radius, bool) else np.nan
        if not (np.isfinite(r) and r >= 0):
            raise InputError(f"radius must be finite and >= 0, got {radius!r}")
        box = _box(cy - r, cy + r, cx - r, cx + r, n_h, n_w)
        assert box is not None  # the centre lies in the grid
        y0, y1, x0, x1 = box
        yy, xx = np.ogrid[y0:y1, x0:x1]
        return box, (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r

    def _plant_seed(self, sample, center):
        """The model's seed cell at (floor y, floor x): every channel written."""
        from .growing import seed_cell

        if center is None:
            raise InputError("seed needs center=(y, x)")
        cy, cx = self._grid_points([center], "center")[0]
        cell = seed_cell(self.description)
        self._write_state(sample, int(np.floor(cy)), int(np.floor(cx)), cell[None, None])

    def _grid_points(self, points, name):
        """(n, 2) float64 (row, column) of ``points``: finite, 0 <= row < H and 0 <= column < W; else ValueError."""
        n_h, n_w = self.shape[1:3]
        what = f"{name} must be (y, x) point(s) inside the {n_h}x{n_w} grid (0 <= y < {n_h}, 0 <= x < {n_w})"
        try:
            flat = [v for p in points for v in p]
        except TypeError:
            raise InputError(f"{what}, got {points!r}") from None
        ok = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in flat) and flat and len(flat) % 2 == 0
        pts = np.asarray(flat if ok else [np.nan, np.nan], np.float64).reshape(-1, 2)
        inside = np.isfinite(pts).all() and (pts >= 0).all() and (pts[:, 0] < n_h).all() and (pts[:, 1] < n_w).all()
        if not (ok and inside):
            raise InputError(f"{what}, got {points[0] if name == 'center' else points!r}")
        return pts

    def _write_state(self, sample, y0, x0, window):
        """Every channel of an (h, w, C) window of sample ``sample`` at (y0, x0), in place on the backend
        (a device backend gets the window alone, in the state's storage type)."""
        h, w = window.shape[:2]
        if self._runner.host_view:
            self._runner.read()[sample, y0 : y0 + h, x0 : x0 + w] = window
            self._runner.state_written()  # e.g. numba-cpu's alive index: rebuilt before the next step
        else:
            state = self._runner.state
            state[sample, y0 : y0 + h, x0 : x0 + w] = np.ascontiguousarray(window, state.dtype)

    def _check_output(self, output):
        if output not in self.info.outputs:
            raise InputError(f"output must be one of {self.info.outputs} for backend {self.backend!r}, got {output!r}")

    @contextlib.contextmanager
    def _threads(self):
        """Numba's thread count while this simulation computes (a backend with threads of its
        own applies ``params.threads`` itself)."""
        if self.threads is None:
            yield
            return
        with host.numba_threads(self.threads):
            yield


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


def _half_width(width):
    """Half a stroke's width: finite and >= 0, else ValueError."""
    half = float(width) / 2 if isinstance(width, numbers.Real) and not isinstance(width, bool) else np.nan
    if not (np.isfinite(half) and half >= 0):
        raise InputError(f"width must be finite and >= 0, got {width!r}")
    return half


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
        raise InputError(f"origin must be three ints >= 0 (sample, row, column), got {origin!r}")
    return tuple(int(v) for v in vals)


def _read_only(array):
    """A read-only view of a NumPy array (the runner's live state stays the runner's to write)."""
    view = array.view()
    view.flags.writeable = False
    return view
