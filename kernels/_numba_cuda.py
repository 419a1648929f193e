"""Import shim for ``numba.cuda``, shared by the CUDA kernels and the backend."""


def numba_cuda():
    """Return ``numba.cuda``.

    Some numba-cuda releases register an overload for ``np.row_stack`` when their array
    module is imported; NumPy 2.4 and later no longer have it, so the import fails
    (seen on an H200 machine with NumPy 2.5). Alias it to ``np.vstack`` (what it was)
    before importing.
    """
    import numpy as np

    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
    from numba import cuda

    return cuda
