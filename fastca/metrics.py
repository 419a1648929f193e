"""Labels, per-cell accuracy and total agreement, as in the reference notebook's evaluation."""

import numba
import numpy as np

from . import spec
from ._numba_setup import KERNEL_LOCK
from .kernels.storage import as_f32_row, kernel_view

DEAD = -1  #: label of a dead cell in label maps


cell_labels = numba.njit(cache=True, inline="always")(spec.label_of)  # the label rule, compiled
_alive = numba.njit(cache=True, inline="always")(spec.is_alive)


@numba.njit(cache=True, inline="always")
def _count_row(row, alive_thr, target_row, counts):
    """Adds one (W, 20) float32 row's cells to ``counts`` (13,), the layout of spec.N_COUNTS."""
    for x in range(row.shape[0]):
        if _alive(row[x, 0], alive_thr):
            _count_cell(row[x], target_row[x], counts)


@numba.njit(cache=True, inline="always")
def _label_row(row, alive_thr, out_row):
    for x in range(row.shape[0]):
        out_row[x] = cell_labels(row[x])[0] if _alive(row[x, 0], alive_thr) else DEAD


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


_COUNT_ROWS = 16  #: rows per parallel task of _count


@numba.njit(cache=True, parallel=True)
def _count(state, alive_thr, targets, partial, rows, ptr, runs):
    """Per-thread per-sample counts ``partial`` (T, >= B, >= 13), zeroed by the caller, in the
    layout of spec.N_COUNTS; their sum over T is the state's counts.

    state: float32, or uint16 float16 bits (rows then go through ``rows``, (T, W, 20)
    float32 scratch). ptr, runs: an alive index of the state as
    :func:`fastca.kernels.cpu.alive_index` gives it (then only the cells it lists are read),
    or ptr of shape (2, 0) (every cell's gray is tested). Rows are shared out in groups of
    _COUNT_ROWS, so one large sample uses every thread. The CUDA backend's count_kernel fills
    the same layout; :func:`from_counts` reduces both.
    """
    n_b, n_h = state.shape[0], state.shape[1]
    n_rows = n_b * n_h
    for task in numba.prange((n_rows + _COUNT_ROWS - 1) // _COUNT_ROWS):
        tid = numba.get_thread_id()
        buf = rows[tid % rows.shape[0]]
        for r in range(task * _COUNT_ROWS, min(n_rows, (task + 1) * _COUNT_ROWS)):
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
def _label_map(state, alive_thr, out, rows):
    n_b, n_h = state.shape[0], state.shape[1]
    for r in numba.prange(n_b * n_h):
        b = np.int64(r) // n_h
        y = np.int64(r) - b * n_h
        row = as_f32_row(state[b, y], rows[numba.get_thread_id() % rows.shape[0]])
        _label_row(row, alive_thr, out[b, y])


@numba.njit(cache=True, parallel=True)
def _picture_maps(state, alive_thr, gray_out, class_out, rows):
    n_b, n_h = state.shape[0], state.shape[1]
    for r in numba.prange(n_b * n_h):
        b = np.int64(r) // n_h
        y = np.int64(r) - b * n_h
        row = as_f32_row(state[b, y], rows[numba.get_thread_id() % rows.shape[0]])
        for x in range(row.shape[0]):
            g = row[x, 0]
            gray_out[b, y, x] = np.uint8(min(max(np.round(g * np.float32(spec.GRAY_LEVELS)), 0.0), 255.0))
            class_out[b, y, x] = cell_labels(row[x])[1] if _alive(g, alive_thr) else 255


def picture_maps(state, alive_threshold=spec.ALIVE_THRESHOLD):
    """(gray uint8 (B, H, W), class uint8 (B, H, W)) of a (B, H, W, 20) float32/float16 state, for
    pictures: gray as 0..255; class 0..9, 10 when undecided (all class channels negative or
    not finite), 255 on dead cells. One parallel pass."""
    _check_kernel_state(state)
    gray = np.empty(state.shape[:-1], np.uint8)
    classes = np.empty(state.shape[:-1], np.uint8)
    with KERNEL_LOCK:
        _picture_maps(kernel_view(state), np.float32(alive_threshold), gray, classes, _row_scratch(state))
    return gray, classes


def _row_scratch(state):
    """Per-thread float32 rows for reading a float16 state (a one-cell dummy for float32)."""
    if state.dtype == np.float32:
        return np.zeros((1, 1, spec.CHANNELS), np.float32)
    return np.zeros((numba.config.NUMBA_NUM_THREADS, state.shape[2], spec.CHANNELS), np.float32)


def label_map(state, alive_threshold=spec.ALIVE_THRESHOLD):
    """Per-cell labels of a (B, H, W, 20) float32 or float16 state: int8 (B, H, W), -1 on dead cells."""
    _check_kernel_state(state)
    out = np.empty(state.shape[:-1], np.int8)
    with KERNEL_LOCK:
        _label_map(kernel_view(state), np.float32(alive_threshold), out, _row_scratch(state))
    return out


def _check_kernel_state(state):
    """The kernels index a state as (B, H, W, 20) float32 or float16: refuse anything else before they run."""
    if not isinstance(state, np.ndarray):
        raise TypeError(f"state must be a NumPy array, got {type(state).__name__}")
    if state.ndim != 4 or state.shape[-1] != spec.CHANNELS:
        raise ValueError(f"state must be (B, H, W, {spec.CHANNELS}), got shape {state.shape}")
    if state.dtype not in (np.float32, np.float16):
        raise TypeError(f"state must be float32 or float16, got dtype {state.dtype}")


def _check_targets(targets, shape):
    """A target map the count kernel can index with the state's (b, y, x): integers of shape ``shape``."""
    targets = np.asarray(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"targets must be integers, got dtype {targets.dtype}")
    if targets.shape != tuple(shape):
        raise ValueError(f"targets must have the state's (B, H, W) {tuple(shape)}, got shape {targets.shape}")
    return targets


def _check_index(ptr, runs, shape):
    """An alive index (kernels.cpu.alive_index) whose entries stay inside the state and its runs."""
    n_b, n_h, n_w = shape[:3]
    if not (isinstance(ptr, np.ndarray) and ptr.dtype == np.int64 and ptr.shape == (2, n_b * n_h + 1)
            and isinstance(runs, np.ndarray) and runs.dtype == np.int32 and runs.ndim == 2 and runs.shape[1] == 2):
        raise ValueError(f"index must be (ptr (2, {n_b * n_h + 1}) int64, runs (R, 2) int32) of this state")
    if ptr.min() < 0 or ptr.max() > runs.shape[0] or (runs.size and (runs.min() < 0 or runs.max() > n_w)):
        raise ValueError("index points outside the state or its runs: it is not this state's alive index")


def prepare_targets(labels, batch, height, width, batched, classes=spec.N_CLASSES):
    """Turn ``labels`` into a (B, H, W) int16 target map (may be a broadcast view).

    labels: per sample, int or (B,), or per cell, (H, W) / (B, H, W) (-1: no target);
    classes 0..``classes``-1 (MNIST: the digits).
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < -1 or labels.max() > classes - 1):
        what = "digits 0..9" if classes == spec.N_CLASSES else f"classes 0..{classes - 1}"
        raise ValueError(f"labels must be {what} (or -1 for none), got range [{labels.min()}, {labels.max()}]")
    labels = labels.astype(np.int16)
    per_sample = (batch,) if batched else ()
    per_cell = ((batch,) if batched else ()) + (height, width)
    if labels.shape == per_sample:
        return np.broadcast_to(labels.reshape(batch, 1, 1), (batch, height, width))
    if labels.shape == per_cell:
        return np.ascontiguousarray(labels.reshape(batch, height, width))
    raise ValueError(
        f"labels must have shape {per_sample} (one per sample) or {per_cell} (one per cell), got {labels.shape}"
    )


def from_counts(counts):
    """(accuracy %, agreement %) from per-sample counts (B, 13) in the layout of :data:`fastca.spec.N_COUNTS`.

    Accuracy: correctly labelled / alive cells that have a target (NaN when there are
    none). Agreement: the share of samples with alive cells in which one label holds all
    of them (cells with all-negative or non-finite class channels hold no label); NaN when
    no sample has an alive cell.
    """
    counts = np.asarray(counts)
    # (B, 2 + classes + 1): the last column counts targeted cells (spec.COUNT_TARGETED for MNIST's 10 classes)
    n_alive, n_correct, n_targeted = counts[..., 0], counts[..., 1], counts[..., -1]
    total = n_targeted.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(total > 0, 100.0 * n_correct.sum(axis=-1) / np.maximum(total, 1), np.nan)
    has = n_alive > 0
    agree = (counts[..., 2:-1].max(axis=-1) == n_alive) & has
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = np.where(has.any(axis=-1), 100.0 * agree.sum(axis=-1) / np.maximum(has.sum(axis=-1), 1), np.nan)
    if counts.ndim == 2:
        return float(accuracy), float(agreement)
    return accuracy, agreement


def step_metrics(state, targets, alive_threshold=spec.ALIVE_THRESHOLD):
    """(per-cell accuracy %, total agreement %) of a (B, H, W, 20) float32 or float16 state.

    Accuracy: alive cells whose label is their target / alive cells, over the batch.
    Agreement: percent of samples in which every alive cell has the same label,
    taken as argmax over ``[class channels * alive, dead]`` (so an alive cell with
    all-negative class channels agrees with nobody). NaN accuracy when no cell is alive.
    """
    return from_counts(counts(state, targets, alive_threshold))


def counts(state, targets, alive_threshold=spec.ALIVE_THRESHOLD, index=None):
    """Per-sample counts (B, 13) int64 of a (B, H, W, 20) float32/float16 state against a
    (B, H, W) int16 target map (-1: no target), in the layout of :data:`fastca.spec.N_COUNTS`.

    index: optional (ptr, runs), :func:`fastca.kernels.cpu.alive_index` of the state's
    (B*H, W, 20) rows, current (it decides which cells are alive): then only alive cells are read.
    """
    # One block of counts per thread, each row padded to 16 and a spare row at the end, so no two
    # threads ever write the same cache line (false sharing made two threads slower than one).
    _check_kernel_state(state)
    targets = _check_targets(targets, state.shape[:3])
    threads = numba.config.NUMBA_NUM_THREADS
    partial = np.zeros((threads, state.shape[0] + 1, 16), np.int64)
    ptr, runs = index if index is not None else (np.zeros((2, 0), np.int64), np.zeros((0, 2), np.int32))
    if index is not None:
        _check_index(ptr, runs, state.shape)
    with KERNEL_LOCK:
        _count(kernel_view(state), np.float32(alive_threshold), targets, partial, _row_scratch(state), ptr, runs)
    return partial[:, :-1, :spec.N_COUNTS].sum(axis=0)


# -- any model description with a readout (NumPy; the MNIST layout above is compiled) -------------

def mnist_layout(description):
    """Whether ``description`` (None: the MNIST model) has the MNIST model's alive channel and readout,
    so the compiled counts above apply."""
    if description is None:
        return True
    r, a = description.readout, description.alive
    return (description.channels == spec.CHANNELS and r is not None and (r.start, r.classes) == (spec.CLASS_START,
            spec.N_CLASSES) and a.rule == "static" and a.channel == spec.GRAY)


def n_counts(description):
    """Length of a counts row for ``description``: alive, correct, one per class, targeted (MNIST: 13)."""
    if description is None or description.readout is None:
        return spec.N_COUNTS
    return 2 + description.readout.classes + 1


def require_readout(description):
    """ValueError when ``description`` has no readout (no labels: no label maps, targets or accuracy)."""
    if description is not None and description.readout is None:
        raise ValueError(f"model {description.name!r} has no readout (class channels): it has no labels, "
                         "accuracy or agreement")


def _labels_described(description, state):
    """(label, label or classes): the argmax of the readout channels (first on ties), and the same with
    ``classes`` ("undecided") where all are negative; both ``classes`` where any is not finite."""
    r = description.readout
    cls = np.asarray(state[..., r.start:r.start + r.classes], np.float32)
    label = np.argmax(cls, axis=-1)
    finite = np.isfinite(cls).all(axis=-1)
    label = np.where(finite, label, r.classes)
    decided = np.where(finite & (cls.max(axis=-1) >= 0), label, r.classes)
    return label, decided


def label_map_described(description, state, alive_threshold):
    """int8 (B, H, W) labels of a described model's (B, H, W, C) state; DEAD where the alive rule says dead."""
    from .model import alive_mask

    require_readout(description)
    d = _with_threshold(description, alive_threshold)
    label, _ = _labels_described(d, state)
    return np.where(alive_mask(d, np.asarray(state, np.float32)), label, DEAD).astype(np.int8)


def counts_described(description, state, targets, alive_threshold):
    """Per-sample counts (B, n_counts) of a described model's state against a (B, H, W) target map,
    in the layout of :data:`fastca.spec.N_COUNTS` with ``readout.classes`` label columns."""
    from .model import alive_mask

    require_readout(description)
    d = _with_threshold(description, alive_threshold)
    k = d.readout.classes
    alive = alive_mask(d, np.asarray(state, np.float32))
    label, decided = _labels_described(d, state)
    targets = np.asarray(targets)
    out = np.zeros((state.shape[0], 2 + k + 1), np.int64)
    for b in range(state.shape[0]):
        a = alive[b]
        t = targets[b][a]
        out[b, 0] = a.sum()
        out[b, 1] = ((label[b][a] == t) & (t >= 0)).sum()
        out[b, 2:2 + k] = np.bincount(decided[b][a], minlength=k + 1)[:k]
        out[b, -1] = (t >= 0).sum()
    return out


def _with_threshold(description, threshold):
    import dataclasses

    return dataclasses.replace(description, alive=dataclasses.replace(description.alive, threshold=float(threshold)))
