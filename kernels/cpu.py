"""Numba CPU kernel: one fused, in-place automaton step over a batch of grids.

The state ``(B, H, W, 20)`` (C-contiguous; float32, or float16 as uint16 bits, see
:mod:`.storage`) is updated in place, so a step needs no second copy of the grid.
Rows are split into bands (one sample, rows ``y0..y1-1``) that run in parallel.
Before any cell is written, the row just above and just below every band is saved
as float32 (``halo``); inside a band, rows go top to bottom and each row is read
into a small per-thread ring of three float32 rows (``ring``) before any of its
cells can be written, so every cell reads step t and writes step t+1, and each
stored element is converted once per step.

Only cells that are alive and fire are computed: their perception inputs are
gathered into a block of up to ``BLOCK`` cells (blocks may span rows of a band:
a deferred write to row y is safe because row y's old values stay in the ring
while row y+1 is read), the MLP runs on the block, and the updates are added
back. Nothing is allocated inside the kernel.
"""

import numba
import numpy as np

from fastca import rng, spec

from .cell import BLOCK, add_update, gather, mlp_block
from .storage import load_row

@numba.njit(cache=True, inline="always")
def _flush(state, b, n, P, w1r, b1, w2, b2, w3, b3, H1, H2, D, ys, xs, keys, noise_std):
    mlp_block(P, w1r, b1, w2, b2, w3, b3, H1, H2, D, n)
    for i in range(n):
        add_update(state[b, ys[i], xs[i]], D[i], b3, keys[i], noise_std)


@numba.njit(cache=True, parallel=True)
def step_inplace(state, w1r, b1, w2, b2, w3, b3, seed, step, fire_rate, noise_std, alive_thr,
                 bands, halo, ring, P_all, H1_all, H2_all, D_all, where):
    """Advance ``state`` by one step in place.

    state: (B, H, W, 20) float32, or uint16 holding float16 bits. w1r: (180, 80); b1: (80,); w2: (80, 80); b2: (80,);
    w3: (80, 19); b3: (19,), all float32 C-contiguous.
    seed: uint64; step: int64 (the key of this step's random numbers); fire_rate,
    noise_std, alive_thr: float32.
    bands: (K, 3) int64 rows (sample, y0, y1). Scratch, T >= the number of Numba
    threads: halo (K, 2, W, 20) and ring (T, 3, W, 20) float32; block buffers
    P_all (T, BLOCK, 180), H1_all and H2_all (T, BLOCK, 80), D_all (T, BLOCK, 19)
    float32 (separate C-contiguous arrays, so the block loops vectorise); where
    (T, 3, BLOCK) uint64 (row, column and random key of each block cell).
    """
    height = state.shape[1]
    width = state.shape[2]
    # Pass 1: save the rows that border each band before any band writes.
    for k in numba.prange(bands.shape[0]):
        b, y0, y1 = bands[k, 0], bands[k, 1], bands[k, 2]
        if y0 > 0:
            load_row(state[b, y0 - 1], halo[k, 0])
        if y1 < height:
            load_row(state[b, y1], halo[k, 1])
    # Pass 2: update each band top to bottom.
    for k in numba.prange(bands.shape[0]):
        tid = numba.get_thread_id()
        b, y0, y1 = bands[k, 0], bands[k, 1], bands[k, 2]
        P, H1, H2, D = P_all[tid], H1_all[tid], H2_all[tid], D_all[tid]
        ys, xs, keys = where[tid, 0], where[tid, 1], where[tid, 2]
        n = 0
        for y in range(y0, y1):
            i = y - y0
            old = ring[tid, i % 3]  # row y at step t, read when row y-1 was processed
            if i == 0:
                load_row(state[b, y], old)
            up = halo[k, 0] if i == 0 else ring[tid, (i + 2) % 3]
            if y + 1 < y1:  # read row y+1 before any block flush below can write row y+1
                down = ring[tid, (i + 1) % 3]
                load_row(state[b, y + 1], down)
            else:
                down = halo[k, 1]
            rkey = rng.row_key(seed, step, b, y)
            for x in range(width):
                if old[x, 0] > alive_thr:
                    key = rng.key_in_row(rkey, x)
                    if rng.fire_uniform(key) <= fire_rate:
                        gather(up, old, down, y > 0, y + 1 < height, x, P[n])
                        ys[n], xs[n], keys[n] = y, x, key
                        n += 1
                        if n == BLOCK:
                            _flush(state, b, n, P, w1r, b1, w2, b2, w3, b3, H1, H2, D, ys, xs, keys, noise_std)
                            n = 0
        if n > 0:
            _flush(state, b, n, P, w1r, b1, w2, b2, w3, b3, H1, H2, D, ys, xs, keys, noise_std)


def make_bands(batch, height, rows=64):
    """Split every sample's rows into bands of ``rows`` rows: (K, 3) int64 of (sample, y0, y1).

    The bands, and so the blocks of cells given to BLAS, do not depend on the thread
    count, so results are bit-identical for any number of threads. 64 rows keep the
    saved halo rows (2 per band) at about 3% of the state on large grids.
    """
    bands = [(b, y0, min(y0 + rows, height)) for b in range(batch) for y0 in range(0, height, rows)]
    return np.array(bands, dtype=np.int64).reshape(-1, 3)


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
