"""Import shims for third-party packages.

numba.cuda's shim lives with the kernels (they need it too, and may import only themselves);
it is reached through :mod:`fastca.backends.host`, as every kernel module is.
"""

from .backends.host import numba_cuda

__all__ = ["numba_cuda"]
