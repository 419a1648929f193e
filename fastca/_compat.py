"""Import shims for third-party packages (the numba-cuda one lives with the kernels)."""

from .kernels._numba_cuda import numba_cuda

__all__ = ["numba_cuda"]
