"""Backends: one module each, registered in :mod:`.base` (protocol, registry, "auto").

Importing this package registers the built-in backends; none of them imports its heavy
dependencies (torch, numba.cuda, the kernels) until it is used.
"""

from . import numba_cpu, numba_cuda, torch_ref  # noqa: F401  (each registers itself)
from .base import BackendInfo, Params, available_backends, get, names, register, resolve

__all__ = ["BackendInfo", "Params", "available_backends", "get", "names", "register", "resolve"]
