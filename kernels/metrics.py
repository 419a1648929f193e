"""Compiled metrics of MNIST-layout states: per-sample counts, label maps and picture maps.

The compiled half of :mod:`fastca.metrics`, which checks the arrays and calls these kernels through
:mod:`fastca.backends.host`. A state is ``(B, H, W, 20)``, channels last: float32, or float16 as its
uint16 bits (:mod:`.storage`; each row is widened into float32 scratch before it is read). The
alive and label rules are :func:`fastca.spec.is_alive` and :func:`fastca.spec.label_of`, compiled.
"""

import numba
import numpy as np

from fastca import spec
from fastca.kernels.storage import as_f32_row

cell_labels = numba.njit(cache=True, inline="always")(spec.label_of)  # the label rule, compiled
_alive = numba.njit(cache=True, inline="always")(spec.is_alive)

COUNT_ROWS = 16  #: rows per parallel task of :func:`count`


@numba.njit(cache=True, inline="always")
def _count_row(row, alive_thr, target_row, counts):
    """Adds one (W, 20) float32 row's cells to ``counts`` (13,), the layout of spec.N_COUNTS."""
    for x in range(row.shape[0]):
        if _alive(row[x, 0], alive_thr):
            _count_cell(row[x], target_row[x], counts)


@numba.njit(cache=True, inline="always")
def _label_row(row, alive_thr, out_row):
    for x in range(row.shape[0]):
        out_row[x] = cell_labels(row[x])[0] if _alive(row[x, 0], alive_thr) else spec.DEAD


@numba.njit(cache=True, inline="always")
def _count_cell(cell, target, counts):
    """Adds one alive cell ((20,) float32 channels) with its target (-1: none) to ``counts`` (13,)."""
    label, label11 = cell_labels(cell)
    counts[0] += 1
    if target >= 0:
        counts[spec.COUNT_TARGETED] += 1
        if label == target:
            counts[1] += 1
    if label11 < spec.N_CLASSES:
        counts[2 + label11] += 1


@numba.njit(cache=True, parallel=True)
def count(state, alive_thr, targets, partial, rows, ptr, runs):
    """Per-thread per-sample counts ``partial`` (T, >= B, >= 13), zeroed by the caller, in the
    layout of spec.N_COUNTS; their sum over T is the state's counts.

    targets: (B, H, W) integers (-1: no target). rows: (T, W, 20) float32 scratch for a float16
    state (unused for float32). ptr, runs: an alive index of the state as
    :func:`fastca.kernels.cpu.alive_index` gives it (then only the cells it lists are read),
    or ptr of shape (2, 0) (every cell's gray is tested). Rows are shared out in groups of
    COUNT_ROWS, so one large sample uses every thread. The CUDA backend's count_kernel fills
    the same layout; :func:`fastca.metrics.from_counts` reduces both.
    """
    n_b, n_h = state.shape[0], state.shape[1]
    n_rows = n_b * n_h
    for task in numba.prange((n_rows + COUNT_ROWS - 1) // COUNT_ROWS):
        tid = numba.get_thread_id()
        buf = rows[tid % rows.shape[0]]
        for r in range(task * COUNT_ROWS, min(n_rows, (task + 1) * COUNT_ROWS)):
            b = r // n_h
            y = r - b * n_h
            if ptr.shape[1] == 0:
                row = as_f32_row(state[b, y], buf)
                _count_row(row, alive_thr, targets[b, y], partial[tid, b])
                continue
            for s in range(ptr[0, r], ptr[0, r + 1]):
                x0, x1 = runs[s, 0], runs[s, 1]
                run = as_f32_row(state[b, y, x0:x1], buf[:x1 - x0])
                for x in range(x0, x1):
                    _count_cell(run[x - x0], targets[b, y, x], partial[tid, b])


@numba.njit(cache=True, parallel=True)
def label_map(state, alive_thr, out, rows):
    """out (B, H, W) int8 = each alive cell's label, spec.DEAD on dead cells; rows: as for :func:`count`."""
    n_b, n_h = state.shape[0], state.shape[1]
    for r in numba.prange(n_b * n_h):
        b = np.int64(r) // n_h
        y = np.int64(r) - b * n_h
        row = as_f32_row(state[b, y], rows[numba.get_thread_id() % rows.shape[0]])
        _label_row(row, alive_thr, out[b, y])


@numba.njit(cache=True, parallel=True)
def picture_maps(state, alive_thr, gray_out, class_out, rows):
    """gray_out (B, H, W) uint8 = gray as 0..255; class_out (B, H, W) uint8 = label or undecided
    (spec.N_CLASSES) of alive cells, 255 on dead ones; rows: as for :func:`count`."""
    n_b, n_h = state.shape[0], state.shape[1]
    for r in numba.prange(n_b * n_h):
        b = np.int64(r) // n_h
        y = np.int64(r) - b * n_h
        row = as_f32_row(state[b, y], rows[numba.get_thread_id() % rows.shape[0]])
        for x in range(row.shape[0]):
            g = row[x, 0]
            gray_out[b, y, x] = np.uint8(min(max(np.round(g * np.float32(spec.GRAY_LEVELS)), 0.0), 255.0))
            class_out[b, y, x] = cell_labels(row[x])[1] if _alive(g, alive_thr) else 255
