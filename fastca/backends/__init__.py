"""Backends: one module each, registered in :mod:`.base` (protocol, registry, "auto").

Importing this package registers the built-in backends; none of them imports its heavy
dependencies (torch, numba.cuda, the kernels) until it is used. The backends are the one
place that loads :mod:`fastca.kernels`: the modules outside them reach the compiled host
helpers they need (metrics, worlds, the generator over grids) through :mod:`.host`.
"""

from typing import Literal

from . import numba_cpu, numba_cuda, torch_ref  # noqa: F401  (each registers itself)
from .base import BackendInfo, Params, available_backends, get, names, register, resolve
from .numba_cuda import is_device_array

#: The names ``backend=`` takes: "auto" and the built-in backends (a test keeps it equal to the registry).
BackendName = Literal["auto", "numba-cpu", "numba-cuda", "torch"]

__all__ = ["BackendInfo", "BackendName", "Params", "available_backends", "get", "is_device_array", "names",
           "register", "resolve"]
