"""Compiled host code for the modules outside the backends.

The backends are the one place that imports :mod:`fastca.kernels` (tests/test_engine.py checks
both directions); the other modules reach the compiled code they need through this module:

- :mod:`fastca.metrics`: :func:`counts`, :func:`label_map`, :func:`picture_maps` of MNIST-layout
  states ``(B, H, W, 20)`` float32 or float16 (checked by the caller);
- :mod:`fastca.world`: :func:`components`, :func:`stroke_rows`;
- :mod:`fastca.rng`: :func:`uniform_grid`, :func:`noise_at` (the generator over many cells);
- :mod:`fastca._checks` and the distributed store: :func:`storage_types`;
  :mod:`fastca._compat`: :func:`numba_cuda`; :mod:`fastca.simulation`: :func:`max_threads`,
  :func:`numba_threads`.

Each function imports its kernel module when it is first called, so importing fastca loads
no kernel. Parallel kernels run under :data:`fastca._numba_setup.KERNEL_LOCK`: Numba's
workqueue layer (the fallback where TBB does not load) runs one parallel region at a time, so
calls from several Python threads take turns.
"""

import contextlib

import numpy as np

from .. import spec
from .._numba_setup import KERNEL_LOCK


def storage_types() -> dict:
    """Public storage name -> NumPy dtype of the state: {"float32": float32, "float16": float16}."""
    from ..kernels.storage import STORAGE

    return STORAGE


def numba_cuda():
    """``numba.cuda``, imported through the kernels' shim (:mod:`fastca.kernels._numba_cuda`)."""
    from ..kernels._numba_cuda import numba_cuda as load

    return load()


def max_threads() -> int:
    """The most threads Numba's parallel kernels may use (``NUMBA_NUM_THREADS``)."""
    import numba

    return numba.config.NUMBA_NUM_THREADS


@contextlib.contextmanager
def numba_threads(n: int):
    """Numba's parallel kernels use ``n`` threads (1..:func:`max_threads`) inside the block."""
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(old)


# -- metrics of MNIST-layout states (kernels/metrics.py) -----------------------------------------

def _row_scratch(state):
    """Per-thread float32 rows (T, W, 20) for reading a float16 state (a one-cell dummy for float32)."""
    if state.dtype == np.float32:
        return np.zeros((1, 1, spec.CHANNELS), np.float32)
    return np.zeros((max_threads(), state.shape[2], spec.CHANNELS), np.float32)


def picture_maps(state: np.ndarray, alive_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(gray uint8 (B, H, W), class uint8 (B, H, W)) of a (B, H, W, 20) float32/float16 state (see
    :func:`fastca.metrics.picture_maps`). One parallel pass."""
    from ..kernels import metrics
    from ..kernels.storage import kernel_view

    gray = np.empty(state.shape[:-1], np.uint8)
    classes = np.empty(state.shape[:-1], np.uint8)
    with KERNEL_LOCK:
        metrics.picture_maps(kernel_view(state), np.float32(alive_threshold), gray, classes, _row_scratch(state))
    return gray, classes


def label_map(state: np.ndarray, alive_threshold: float) -> np.ndarray:
    """int8 (B, H, W) labels of a (B, H, W, 20) float32/float16 state, spec.DEAD on dead cells."""
    from ..kernels import metrics
    from ..kernels.storage import kernel_view

    out = np.empty(state.shape[:-1], np.int8)
    with KERNEL_LOCK:
        metrics.label_map(kernel_view(state), np.float32(alive_threshold), out, _row_scratch(state))
    return out


def counts(state: np.ndarray, targets: np.ndarray, alive_threshold: float, ptr: np.ndarray,
           runs: np.ndarray) -> np.ndarray:
    """Per-sample counts (B, 13) int64 (layout: spec.N_COUNTS) of a (B, H, W, 20) float32/float16
    state against a (B, H, W) integer target map; ptr, runs: the state's alive index, or
    ptr (2, 0) and runs (0, 2) (every cell is tested)."""
    from ..kernels import metrics
    from ..kernels.storage import kernel_view

    # One block of counts per thread, each row padded to 16 and a spare row at the end, so no two
    # threads ever write the same cache line (false sharing made two threads slower than one).
    partial = np.zeros((max_threads(), state.shape[0] + 1, 16), np.int64)
    with KERNEL_LOCK:
        metrics.count(kernel_view(state), np.float32(alive_threshold), targets, partial, _row_scratch(state),
                      ptr, runs)
    return partial[:, :-1, :spec.N_COUNTS].sum(axis=0)


# -- worlds (kernels/world.py): single-threaded kernels, no lock ----------------------------------

def components(alive: np.ndarray, out: np.ndarray) -> int:
    """Writes the 8-connected components of ``alive`` (H, W) bool, C-contiguous, into ``out`` (H, W)
    int32 zeros (0 = none); returns their count."""
    from ..kernels import world

    return world.components(alive, out)


def stroke_rows(gray, h, w, pts, half, r2, row0, lo, hi, paint) -> int:
    """The cells near a polyline, row by row: see :func:`fastca.kernels.world.stroke_rows`."""
    from ..kernels import world

    return world.stroke_rows(gray, h, w, pts, half, r2, row0, lo, hi, paint)


# -- the generator over many cells (kernels/rng_grid.py) -----------------------------------------

def uniform_grid(seed: np.uint64, step: np.int64, origin: np.ndarray, out: np.ndarray) -> None:
    """out (B, H, W) float32 = the fire draws of every cell; origin: (3,) int64 global coordinates of
    the first cell."""
    from ..kernels import rng_grid

    with KERNEL_LOCK:
        rng_grid.uniform_grid(seed, step, origin, out)


def noise_at(seed: np.uint64, step: np.int64, b: np.ndarray, y: np.ndarray, x: np.ndarray, std: np.float32,
             out: np.ndarray) -> None:
    """out (n, channels) float32 = ``std`` x the normal draws of the n cells (b[i], y[i], x[i]) (int64)."""
    from ..kernels import rng_grid

    with KERNEL_LOCK:
        rng_grid.noise_at(seed, step, b, y, x, std, out)
