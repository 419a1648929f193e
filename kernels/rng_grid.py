"""The shared generator (:mod:`fastca.rng`) over many cells at once, for the host: fire draws of a
grid and the noise of listed cells. :mod:`fastca.rng`'s array functions call these through
:mod:`fastca.backends.host`; the step kernels inline the same scalar functions."""

import numba
import numpy as np

from fastca.rng import cell_key, fire_uniform, normal_pair


@numba.njit(cache=True, parallel=True)
def uniform_grid(seed, step, origin, out):
    """out (B, H, W) float32 = fire_uniform of each cell's key; origin (3,) int64: global (sample,
    row, column) of out's first cell; seed uint64, step int64."""
    n_b, n_h, n_w = out.shape
    for row in numba.prange(n_b * n_h):
        b = np.int64(row) // n_h
        y = np.int64(row) - b * n_h
        for x in range(n_w):
            out[b, y, x] = fire_uniform(cell_key(seed, step, origin[0] + b, origin[1] + y, origin[2] + x))


@numba.njit(cache=True, parallel=True)
def noise_at(seed, step, bs, ys, xs, std, out):
    """out (n, channels) float32 = std * the normal draws of the cells (bs[i], ys[i], xs[i]) (int64,
    global coordinates): channel 2p the first of normal pair p, 2p + 1 the second."""
    for i in numba.prange(bs.shape[0]):
        key = cell_key(seed, step, bs[i], ys[i], xs[i])
        for pair in range((out.shape[1] + 1) // 2):
            z0, z1 = normal_pair(key, pair)
            out[i, 2 * pair] = z0 * std
            if 2 * pair + 1 < out.shape[1]:
                out[i, 2 * pair + 1] = z1 * std
