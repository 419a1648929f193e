"""Labels, per-cell accuracy and total agreement, as in the reference notebook's evaluation."""

import numpy as np

from . import spec
from .errors import InputError, InputTypeError

DEAD = spec.DEAD  #: label of a dead cell in label maps

# The MNIST layout's counts, label maps and pictures are compiled (kernels/metrics.py, through
# fastca.backends.host: imported at call time, as the backends import this module); the arrays
# they index are checked here first. Any other description's are NumPy, at the end.


def picture_maps(state, alive_threshold=spec.ALIVE_THRESHOLD):
    """(gray uint8 (B, H, W), class uint8 (B, H, W)) of a (B, H, W, 20) float32/float16 state, for
    pictures: gray as 0..255; class 0..9, 10 when undecided (all class channels negative or
    not finite), 255 on dead cells. One parallel pass."""
    from .backends import host

    _check_kernel_state(state)
    return host.picture_maps(state, alive_threshold)


def label_map(state, alive_threshold=spec.ALIVE_THRESHOLD):
    """Per-cell labels of a (B, H, W, 20) float32 or float16 state: int8 (B, H, W), -1 on dead cells."""
    from .backends import host

    _check_kernel_state(state)
    return host.label_map(state, alive_threshold)


def _check_kernel_state(state):
    """The kernels index a state as (B, H, W, 20) float32 or float16: refuse anything else before they run."""
    if not isinstance(state, np.ndarray):
        raise InputTypeError(f"state must be a NumPy array, got {type(state).__name__}")
    if state.ndim != 4 or state.shape[-1] != spec.CHANNELS:
        raise InputError(f"state must be (B, H, W, {spec.CHANNELS}), got shape {state.shape}")
    if state.dtype not in (np.float32, np.float16):
        raise InputTypeError(f"state must be float32 or float16, got dtype {state.dtype}")


def _check_targets(targets, shape):
    """A target map the count kernel can index with the state's (b, y, x): integers of shape ``shape``."""
    targets = np.asarray(targets)
    if targets.dtype.kind not in "iu":
        raise InputTypeError(f"targets must be integers, got dtype {targets.dtype}")
    if targets.shape != tuple(shape):
        raise InputError(f"targets must have the state's (B, H, W) {tuple(shape)}, got shape {targets.shape}")
    return targets


def _check_index(ptr, runs, shape):
    """An alive index (kernels.cpu.alive_index) whose entries stay inside the state and its runs."""
    n_b, n_h, n_w = shape[:3]
    if not (isinstance(ptr, np.ndarray) and ptr.dtype == np.int64 and ptr.shape == (2, n_b * n_h + 1)
            and isinstance(runs, np.ndarray) and runs.dtype == np.int32 and runs.ndim == 2 and runs.shape[1] == 2):
        raise InputError(f"index must be (ptr (2, {n_b * n_h + 1}) int64, runs (R, 2) int32) of this state")
    if ptr.min() < 0 or ptr.max() > runs.shape[0] or (runs.size and (runs.min() < 0 or runs.max() > n_w)):
        raise InputError("index points outside the state or its runs: it is not this state's alive index")


def prepare_targets(labels, batch, height, width, batched, classes=spec.N_CLASSES):
    """Turn ``labels`` into a (B, H, W) int16 target map (may be a broadcast view).

    labels: per sample, int or (B,), or per cell, (H, W) / (B, H, W) (-1: no target);
    classes 0..``classes``-1 (MNIST: the digits).
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise InputTypeError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < -1 or labels.max() > classes - 1):
        what = "digits 0..9" if classes == spec.N_CLASSES else f"classes 0..{classes - 1}"
        raise InputError(f"labels must be {what} (or -1 for none), got range [{labels.min()}, {labels.max()}]")
    labels = labels.astype(np.int16)
    per_sample = (batch,) if batched else ()
    per_cell = ((batch,) if batched else ()) + (height, width)
    if labels.shape == per_sample:
        return np.broadcast_to(labels.reshape(batch, 1, 1), (batch, height, width))
    if labels.shape == per_cell:
        return np.ascontiguousarray(labels.reshape(batch, height, width))
    raise InputError(
        f"labels must have shape {per_sample} (one per sample) or {per_cell} (one per cell), got {labels.shape}"
    )


def tallies(counts):
    """(correct, targeted, agreeing, living) of per-sample counts (..., B, K) in the layout of
    :data:`fastca.spec.N_COUNTS` (K = 2 + classes + 1), each summed over the samples: alive cells
    labelled as their target, alive cells with a target, samples in which one label holds
    every alive cell (cells with all-negative or non-finite class channels hold none), and
    samples with alive cells. Integers (...); sums of them over batches are tallies too."""
    counts = np.asarray(counts)
    n_alive = counts[..., 0]
    has = n_alive > 0
    agree = (counts[..., 2:-1].max(axis=-1) == n_alive) & has
    return counts[..., 1].sum(axis=-1), counts[..., -1].sum(axis=-1), agree.sum(axis=-1), has.sum(axis=-1)


def percentages(correct, targeted, agreeing, living):
    """(accuracy %, agreement %) of :func:`tallies`: correct / targeted (NaN without targeted
    cells) and agreeing / living (NaN without living samples), float64 arrays."""
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(targeted > 0, 100.0 * correct / np.maximum(targeted, 1), np.nan)
        agreement = np.where(living > 0, 100.0 * agreeing / np.maximum(living, 1), np.nan)
    return accuracy, agreement


def from_counts(counts):
    """(accuracy %, agreement %) from per-sample counts (B, 13) in the layout of :data:`fastca.spec.N_COUNTS`
    (or (..., B, 13): arrays).

    Accuracy: correctly labelled / alive cells that have a target (NaN when there are
    none). Agreement: the share of samples with alive cells in which one label holds all
    of them (cells with all-negative or non-finite class channels hold no label); NaN when
    no sample has an alive cell.
    """
    counts = np.asarray(counts)
    accuracy, agreement = percentages(*tallies(counts))
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
    from .backends import host

    _check_kernel_state(state)
    targets = _check_targets(targets, state.shape[:3])
    ptr, runs = index if index is not None else (np.zeros((2, 0), np.int64), np.zeros((0, 2), np.int32))
    if index is not None:
        _check_index(ptr, runs, state.shape)
    return host.counts(state, targets, alive_threshold, ptr, runs)


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
        raise InputError(f"model {description.name!r} has no readout (class channels): it has no labels, "
                         "accuracy or agreement")


def _labels_described(description, state):
    """(label, label or classes): the argmax of the readout channels (first on ties), and the same with
    ``classes`` ("undecided") where all are negative; both ``classes`` where any is not finite."""
    r = description.readout
    return spec.class_labels(np.asarray(state[..., r.start:r.start + r.classes], np.float32))


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
