"""The options every entry point that runs an automaton takes: one object, one set of names and defaults.

:func:`fastca.simulate`, :class:`fastca.Simulation`, :func:`fastca.world.run_world`,
:func:`fastca.distributed.simulate` and :func:`fastca.distributed.zarr_run` each take the fields
of :class:`RunOptions` as keyword arguments, with the same names, meanings and defaults (one
exception: ``zarr_run`` stores float16 unless told, since its worlds do not fit in memory). So
options checked once travel to any of them::

    opts = fastca.RunOptions(backend="numba-cpu", seed=3, storage="float16")
    fastca.simulate(net, digits, 20, **opts.kwargs())
    fastca.distributed.simulate(net, world, 20, **opts.kwargs())

``tests/test_run_options.py`` holds every entry point to this (names and defaults).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Literal

from . import _checks
from .errors import InputError, InputTypeError

OnNonfinite = Literal["raise", "warn"]


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to run an automaton (not what: the model, the input and the steps are the call's).

    backend: "auto" or a name of :func:`fastca.available_backends` (resolved when a run starts).
    seed: the shared counter-based generator's seed (0..2**64-1): the same seed gives the same
        fire masks and noise on every backend.
    fire_rate: probability that a cell updates in a step; None: the model's.
    noise: residual noise std; None: the model's, False/0: none, True: the model's (or the
        MNIST recipe's when the model has none).
    storage: "float32" or "float16" (half the memory; each step computes in float32).
    threads: threads for the run (Numba and torch); None: as configured.
    on_nonfinite: a state that becomes NaN or inf raises FloatingPointError ("raise") or warns once
        ("warn").

    Checked when made (a bad value raises :class:`fastca.errors.InputError` or
    :class:`~fastca.errors.InputTypeError`); whether a backend supports a storage or a device is
    checked when the run starts.
    """

    backend: str = "auto"
    seed: int = 0
    fire_rate: float | None = None
    noise: float | bool | None = None
    storage: str = "float32"
    threads: int | None = None
    on_nonfinite: OnNonfinite = "raise"

    def __post_init__(self) -> None:
        if not isinstance(self.backend, str):
            raise InputTypeError(f"backend must be a backend name (str), got {type(self.backend).__name__}")
        object.__setattr__(self, "seed", _checks.check_seed(self.seed))
        if self.fire_rate is not None:
            object.__setattr__(self, "fire_rate", _checks.check_probability("fire_rate", self.fire_rate))
        dtype = _checks.check_storage(self.storage)
        if self.noise is not None and not isinstance(self.noise, bool):
            _checks.check_noise(self.noise, 0.0, dtype)
        object.__setattr__(self, "threads", check_threads(self.threads))
        if self.on_nonfinite not in ("raise", "warn"):
            raise InputError(f"on_nonfinite must be 'raise' or 'warn', got {self.on_nonfinite!r}")

    def kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of any entry point (``**opts.kwargs()``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> "RunOptions":
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)


#: the names of the run options, in order
NAMES = tuple(f.name for f in dataclasses.fields(RunOptions))


def check_threads(n: Any) -> int | None:
    """``n`` as a thread count in 1..the host's maximum, or None (leave as configured)."""
    if n is None:
        return None
    from .backends import host  # at call time: the backends import fastca's checks

    limit = host.max_threads()
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= int(n) <= limit:
        raise InputError(f"threads must be an int in 1..{limit}, got {n!r}")
    return int(n)
