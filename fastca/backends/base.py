"""The backend protocol, the registry and the "auto" choice.

A backend is one module in this package. It defines a runner class and registers a
:class:`BackendInfo` (name, capabilities, an availability probe and a lazy loader), so
:class:`fastca.Simulation` validates every option against the capabilities before the
first step and never needs a backend's name. A runner owns the state of one simulation,
``(B, H, W, 20)`` channels last, wherever it lives (host memory, a GPU):

``__init__(weights, state, params, **options)``
    ``state`` comes from :meth:`to_state`; ``params`` is a :class:`Params`.
``to_state(x, input_kind, dtype)`` (classmethod)
    (state in the runner's memory, leading shape of the input, batched?).
``step(t)``
    One synchronous step whose random numbers are keyed by step index ``t``.
``prepare_targets(targets)``, ``new_counts(n)``, ``count(handle, buf, i)``, ``counts_host(buf)``
    Per-sample counts (alive, correct, cells per label) of the current state into row
    ``i`` of a counts buffer ``(n, B, 13)`` (layout: ``spec.N_COUNTS``) that stays on the backend's side until read.
``read()``, ``labels()``, ``output(array, output)``
    The state as NumPy; the label map in the runner's memory; a runner array as NumPy
    ("host") or as it is ("device").
``nonfinite()``
    The sample of a cell whose state became NaN or inf since the last call, or None.
``read_window(b0, y0, x0, nb, h, w)``, ``write_gray(b0, y0, x0, gray)``
    A window of the state as float32 NumPy; replace the gray of a window (channels
    1..19 zeroed where the new gray is dead), in place.
``state_written()``
    The live state was written, or handed out writable, by someone else than the runner:
    drop anything derived from it (the numba-cpu alive index).
"""

import dataclasses
import logging
import os
from typing import Callable

import numpy as np

from .. import metrics
from .._state import host_state, mutate_host
from ..errors import InputError, InputTypeError, RunError

log = logging.getLogger("fastca")


@dataclasses.dataclass(frozen=True)
class Params:
    """What a runner needs besides the weights: the generator seed, the rule's constants, the
    global coordinates (sample, row, column) of the state's first cell, and the thread
    count asked for (None: as configured; Numba's is set by the simulation)."""

    seed: int
    fire_rate: float
    noise_std: float
    alive_threshold: float
    origin: tuple = (0, 0, 0)
    threads: int | None = None


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """A registry entry.

    load: returns the runner class (imports happen here, not at registration).
    probe: returns (usable, reason, auto_ok): whether the backend can run here, why not
        (or what it runs on), and whether "auto" may pick it.
    speed_rank: "auto" picks the usable, auto_ok backend with the highest rank (measured
        order: benchmarks/RESULTS.md).
    """

    name: str
    load: Callable
    probe: Callable
    storages: tuple = ("float32",)
    outputs: tuple = ("host",)
    device_input: bool = False
    speed_rank: int = 0
    summary: str = ""


_REGISTRY: dict[str, BackendInfo] = {}


def register(info):
    """Add a backend to the registry (a new backend module calls this once at import)."""
    if info.name in _REGISTRY or info.name == "auto":
        raise InputError(f"backend name {info.name!r} is taken")
    _REGISTRY[info.name] = info
    return info


def names():
    """Every registered backend name, usable here or not."""
    return tuple(_REGISTRY)


def get(name):
    """The BackendInfo registered under ``name``."""
    if not isinstance(name, str):
        raise InputTypeError(f"backend must be a string, got {type(name).__name__}")
    if name not in _REGISTRY:
        raise InputError(f"unknown backend {name!r}; choose one of {', '.join(('auto',) + names())}")
    return _REGISTRY[name]


def available_backends():
    """Names of the backends usable on this machine, fastest first."""
    usable = [info for info in _REGISTRY.values() if info.probe()[0]]
    return [info.name for info in sorted(usable, key=lambda i: -i.speed_rank)]


def resolve(backend):
    """Map a backend name (or "auto") to its BackendInfo; raise naming the choices or what is missing.

    "auto" is ``$FASTCA_BACKEND`` when set, else the usable backend with the highest
    speed rank that may be chosen automatically; the choice and the reason are logged on
    the "fastca" logger.
    """
    if backend == "auto":
        chosen = os.environ.get("FASTCA_BACKEND")
        if chosen is not None:
            log.info("backend auto -> %s ($FASTCA_BACKEND)", chosen)
            return resolve(chosen)
        probes = {info.name: info.probe() for info in _REGISTRY.values()}
        ranked = sorted((i for i in _REGISTRY.values() if probes[i.name][0] and probes[i.name][2]),
                        key=lambda i: -i.speed_rank)
        if not ranked:
            raise RunError("no backend can run here: " + "; ".join(f"{n}: {p[1]}" for n, p in probes.items()))
        best = ranked[0]
        skipped = [f"{n}: {p[1]}" for n, p in probes.items()
                   if n != best.name and _REGISTRY[n].speed_rank > best.speed_rank]
        why = f"the fastest usable backend here ({probes[best.name][1]})"
        if skipped:
            why += "; faster ones unavailable: " + "; ".join(skipped)
        log.info("backend auto -> %s (%s)", best.name, why)
        return best
    info = get(backend)
    usable, reason, _ = info.probe()
    if not usable:
        raise RunError(f"backend {backend!r} is not available: {reason}")
    return info


class HostRunner:
    """Shared parts of the runners whose state is a NumPy-compatible host array."""

    host_view = True  #: read() returns the live state, not a copy
    cheap_nonfinite_check = True  #: nonfinite() may be asked after every step

    def nonfinite(self):
        """The sample of a cell that became non-finite since the last call (None: none)."""
        state = self.read()
        ok = np.isfinite(state.reshape(state.shape[0], -1)).all(axis=1)
        return None if ok.all() else int(np.argmin(ok))

    def __init__(self, params, description=None):
        self.params = params
        self.description = description  #: the model description (None: the MNIST model)
        self._thr = np.float32(params.alive_threshold)

    @classmethod
    def to_state(cls, x, input_kind, dtype=np.float32, description=None):
        """A host copy of the input as a (B, H, W, C) state (see :func:`fastca._state.host_state`)."""
        return host_state(x, input_kind, dtype, description)

    def prepare_targets(self, targets):
        return targets

    def new_counts(self, n):
        return np.zeros((n, self.read().shape[0], metrics.n_counts(self.description)), np.int64)

    def count(self, handle, buf, i):
        if metrics.mnist_layout(self.description):
            buf[i] = metrics.counts(self.read(), handle, self._thr)
        else:
            buf[i] = metrics.counts_described(self.description, self.read(), handle, self._thr)

    def counts_host(self, buf):
        return buf

    def labels(self):
        if metrics.mnist_layout(self.description):
            return metrics.label_map(self.read(), self._thr)
        return metrics.label_map_described(self.description, self.read(), self._thr)

    def output(self, array, output):
        if output != "host":
            raise InputError(f"this backend computes on the host; output must be 'host', got {output!r}")
        return array

    def state_written(self):
        """The live state was written, or handed out writable, outside :meth:`step`: drop what the
        runner derived from it (default: nothing)."""

    def read_window(self, b0, y0, x0, nb, h, w):
        return self.read()[b0 : b0 + nb, y0 : y0 + h, x0 : x0 + w].astype(np.float32)

    def write_gray(self, b0, y0, x0, gray):
        window = self.read()[b0 : b0 + gray.shape[0], y0 : y0 + gray.shape[1], x0 : x0 + gray.shape[2]]
        mutate_host(window, gray, self.params.alive_threshold, self.description)
        self.state_written()
