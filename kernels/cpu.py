"""Numba CPU kernel: one fused, in-place automaton step over a batch of grids.

The state ``(B, H, W, 20)`` (C-contiguous; float32, or float16 as uint16 bits, see
:mod:`.storage`) is updated in place, so a step needs no second copy of the grid. The
kernel sees it as ``B*H`` rows (sample after sample) split into bands of consecutive
rows that run in parallel; a band may span samples (small digits share a band, so
blocks stay full), and a row's neighbours outside its own sample are zero padding.
Before any cell is written, the row just above and just below every band is saved
as float32 (``halo``); inside a band, rows go top to bottom and each row is read
into a small per-thread ring of three float32 rows (``ring``) before any of its
cells can be written, so every cell reads step t and writes step t+1, and each
stored element is converted once per step.

Only cells that are alive and fire are computed: their perception inputs are
gathered into a block of up to ``BLOCK`` cells (blocks may span rows of a band:
a deferred write to row y is safe because row y's old values stay in the ring
while row y+1 is read), the MLP runs on the block, and the updates are added
back. The products always run on all ``BLOCK`` rows (unused rows are ignored), because
BLAS rounds a row differently depending on how many rows it is given: so a cell gets
the same bits whatever block, band or chunk of a grid it falls in. Random keys use
global coordinates (``origin`` + the cell's position). Nothing is allocated inside the
kernel.
"""

import numba
import numpy as np

from fastca import rng, spec

from .cell import BLOCK, add_update, gather, mlp_block
from .storage import load_row

spec_is_alive = numba.njit(cache=True, inline="always")(spec.is_alive)

@numba.njit(cache=True, inline="always")
def _flush(rows, n, P, w1r, b1, w2, b2, w3, b3, H1, H2, D, ys, xs, keys, noise_std):
    """MLP of the block and the updates; returns the flat row of a cell that became non-finite, or -1."""
    mlp_block(P, w1r, b1, w2, b2, w3, b3, H1, H2, D)
    bad = -1
    for i in range(n):
        if not add_update(rows[ys[i], xs[i]], D[i], b3, keys[i], noise_std):
            bad = np.int64(ys[i])
    return bad


@numba.njit(cache=True, parallel=True)
def step_inplace(rows, height, w1r, b1, w2, b2, w3, b3, seed, step, fire_rate, noise_std, alive_thr, origin,
                 bands, nonfinite, halo, ring, P_all, H1_all, H2_all, D_all, where):
    """Advance the state by one step in place.

    rows: the state as (B*H, W, 20) rows (a view of the C-contiguous (B, H, W, 20) state),
    float32 or uint16 holding float16 bits; height: H. w1r: (180, 80); b1: (80,); w2: (80, 80);
    b2: (80,); w3: (80, 19); b3: (19,), all float32 C-contiguous.
    seed: uint64; step: int64 (the key of this step's random numbers); fire_rate,
    noise_std, alive_thr: float32; origin: (3,) int64 global (sample, row, column) of the
    state's first cell. bands: (K, 2) int64 flat row ranges [r0, r1). nonfinite: (K,) int64,
    set to 1 + the sample of a cell that became non-finite in band k (0: none). Scratch, T >= the
    number of Numba threads: halo (K, 2, W, 20) and ring (T, 3, W, 20) float32; block
    buffers P_all (T, BLOCK, 180), H1_all and H2_all (T, BLOCK, 80), D_all (T, BLOCK, 19)
    float32 (separate C-contiguous arrays, so the block loops vectorise); where
    (T, 3, BLOCK) uint64 (flat row, column and random key of each block cell).
    """
    n_rows = rows.shape[0]
    width = rows.shape[1]
    # Pass 1: save the rows that border each band before any band writes.
    for k in numba.prange(bands.shape[0]):
        r0, r1 = bands[k, 0], bands[k, 1]
        if r0 > 0:
            load_row(rows[r0 - 1], halo[k, 0])
        if r1 < n_rows:
            load_row(rows[r1], halo[k, 1])
    # Pass 2: update each band top to bottom.
    for k in numba.prange(bands.shape[0]):
        tid = numba.get_thread_id()
        r0, r1 = bands[k, 0], bands[k, 1]
        P, H1, H2, D = P_all[tid], H1_all[tid], H2_all[tid], D_all[tid]
        ys, xs, keys = where[tid, 0], where[tid, 1], where[tid, 2]
        n = 0
        for r in range(r0, r1):
            i = r - r0
            b = r // height
            y = r - b * height
            old = ring[tid, i % 3]  # row r at step t, read when row r-1 was processed
            if i == 0:
                load_row(rows[r], old)
            up = halo[k, 0] if i == 0 else ring[tid, (i + 2) % 3]
            if r + 1 < r1:  # read row r+1 before any block flush below can write row r+1
                down = ring[tid, (i + 1) % 3]
                load_row(rows[r + 1], down)
            else:
                down = halo[k, 1]
            rkey = rng.row_key(seed, step, origin[0] + b, origin[1] + y)
            for x in range(width):
                if spec_is_alive(old[x, 0], alive_thr):
                    key = rng.key_in_row(rkey, origin[2] + x)
                    if rng.fire_uniform(key) <= fire_rate:
                        gather(up, old, down, y > 0, y + 1 < height, x, P[n])
                        ys[n], xs[n], keys[n] = r, x, key
                        n += 1
                        if n == BLOCK:
                            bad = _flush(rows, n, P, w1r, b1, w2, b2, w3, b3, H1, H2, D, ys, xs, keys, noise_std)
                            if bad >= 0:
                                nonfinite[k] = 1 + bad // height
                            n = 0
        if n > 0:
            bad = _flush(rows, n, P, w1r, b1, w2, b2, w3, b3, H1, H2, D, ys, xs, keys, noise_std)
            if bad >= 0:
                nonfinite[k] = 1 + bad // height


def make_bands(batch, height, rows=None):
    """Split the B*H rows into bands of consecutive rows: (K, 2) int64 of [r0, r1).

    The bands, and so the blocks of cells given to BLAS, do not depend on the thread
    count, so results are bit-identical for any number of threads. Default: 64 rows
    (the saved halo rows, 2 per band, stay at about 3% of the state on large grids), or
    256 rows when samples are shorter than 64 rows (bands then span several samples, so
    a batch of 28x28 digits still fills whole blocks).
    """
    if rows is None:
        rows = 64 if height >= 64 else 256
    total = batch * height
    starts = np.arange(0, total, rows, dtype=np.int64)
    return np.stack([starts, np.minimum(starts + rows, total)], axis=1)


def scratch_buffers(n_bands, width, threads_max):
    """Allocate the kernel's scratch once per simulation: (halo, ring, P, H1, H2, D, where)."""
    return (
        np.zeros((n_bands, 2, width, spec.CHANNELS), np.float32),
        np.zeros((threads_max, 3, width, spec.CHANNELS), np.float32),
        np.zeros((threads_max, BLOCK, spec.PERCEPTION_IN), np.float32),
        np.zeros((threads_max, BLOCK, spec.HIDDEN), np.float32),
        np.zeros((threads_max, BLOCK, spec.HIDDEN), np.float32),
        np.zeros((threads_max, BLOCK, spec.MUTABLE), np.float32),
        np.zeros((threads_max, 3, BLOCK), np.uint64),
    )
