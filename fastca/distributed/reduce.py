"""Metrics at scale: counts, accuracy and per-digit votes of a dask state, reduced from per-chunk
results (a digit that straddles chunk boundaries is counted whole)."""

import numpy as np

from .. import metrics, spec
from .rounds import _dask


def counts(state, targets, alive_threshold=spec.ALIVE_THRESHOLD):
    """Per-sample counts (B, 13) (layout ``spec.N_COUNTS``) of a (B, H, W, 20) dask state against a
    (B, H, W) target map (dask or NumPy, -1: none), reduced from per-chunk counts (a dask array)."""
    da = _dask()
    targets = targets if isinstance(targets, da.Array) else da.asarray(targets)
    targets = targets.astype(np.int16).rechunk(state.chunks[:3])[..., None]  # 4-d, aligned with the state's axes

    def block_counts(s, t):
        return metrics.counts(np.ascontiguousarray(s), np.ascontiguousarray(t[..., 0]), alive_threshold)[:, None, None, :]

    per_chunk = da.map_blocks(block_counts, state, targets, dtype=np.int64,
                              chunks=(state.chunks[0], (1,) * len(state.chunks[1]), (1,) * len(state.chunks[2]),
                                      (spec.N_COUNTS,)))
    return per_chunk.sum(axis=(1, 2))


def accuracy_agreement(state, targets, alive_threshold=spec.ALIVE_THRESHOLD):
    """(per-cell accuracy %, total agreement %) of a dask state, computed."""
    return metrics.from_counts(counts(state, targets, alive_threshold).compute())


def digit_votes(state, digit_ids, n_digits, alive_threshold=spec.ALIVE_THRESHOLD):
    """Per digit: alive cells per label (n_digits, 11; column 10 undecided), reduced over chunks, so a
    digit that straddles chunk boundaries is counted whole. digit_ids: (B, H, W) ints in
    0..n_digits-1, -1 for none (e.g. the tile index of an MNIST world)."""
    da = _dask()
    ids = digit_ids if isinstance(digit_ids, da.Array) else da.asarray(digit_ids)
    ids = ids.astype(np.int64).rechunk(state.chunks[:3])[..., None]  # 4-d, aligned with the state's axes

    def block_votes(s, i):
        _, classes = metrics.picture_maps(np.ascontiguousarray(s), alive_threshold)
        return _votes(i[..., 0], classes, n_digits).reshape(1, 1, 1, n_digits, 11)

    per_chunk = da.map_blocks(block_votes, state, ids, dtype=np.int64, new_axis=[4],
                              chunks=((1,) * len(state.chunks[0]), (1,) * len(state.chunks[1]),
                                      (1,) * len(state.chunks[2]), (n_digits,), (11,)))
    return per_chunk.sum(axis=(0, 1, 2))


def _votes(ids, classes, n):
    """(n, 11) alive cells per label (column 10: undecided) of the digits numbered ``ids`` (-1: none),
    from a class map of :func:`fastca.metrics.picture_maps` (255: dead)."""
    keep = (classes != 255) & (ids >= 0)
    return np.bincount(ids[keep] * 11 + classes[keep], minlength=n * 11).reshape(n, 11)


def digit_agreement(votes):
    """Percent of digits (with alive cells) whose cells all give one label, from :func:`digit_votes`."""
    votes = np.asarray(votes)
    cells = votes.sum(axis=1)
    has = cells > 0
    agree = (votes[:, :10].max(axis=1) == cells) & has
    return 100.0 * agree.sum() / has.sum() if has.any() else float("nan")
