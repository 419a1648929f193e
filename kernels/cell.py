"""Per-cell maths of one automaton step, written once as ``numba.njit`` helpers.

Updated cells are processed in blocks of up to BLOCK cells so that the MLP is three
small matrix products per block (a straightforward loop over cells reloads the
weights for each cell and reaches only a small fraction of peak FLOP/s).
Layouts:

- a grid row is ``(W, 20)`` float32, channels last;
- a perception vector is (180,) float32, index ``(i*3 + j)*20 + c`` for kernel row
  ``i``, kernel column ``j``, channel ``c``; ``w1r`` is the HWIO kernel reshaped to
  (180, 80) in the same order;
- dense weights are (in, out), C-contiguous.
"""

import numba
import numpy as np

from fastca import rng, spec

from .storage import load, store

C = spec.CHANNELS
OUT = spec.MUTABLE
BLOCK = 64  #: cells per block: the block buffers stay in L1/L2 (64 measured faster than 32, 128 or 256)

# No fast-math, not even FMA contraction: the noise (inlined from fastca.rng) must round
# exactly as it does for the torch backend. The heavy arithmetic is in BLAS anyway.
jit = numba.njit(cache=True, inline="always")


@jit
def gather(up, cur, down, has_up, has_down, x, p):
    """p[:] = the (180,) perception input of the cell at column x (zeros outside the grid).

    ``up``/``cur``/``down`` are the rows above, at and below the cell, (W, 20) each;
    ``has_up``/``has_down`` are False at the top/bottom edge of the grid.
    """
    width = cur.shape[0]
    for i in range(3):
        row = up if i == 0 else (cur if i == 1 else down)
        valid = has_up if i == 0 else (True if i == 1 else has_down)
        for j in range(3):
            xx = x + j - 1
            base = (i * 3 + j) * C
            if valid and 0 <= xx < width:
                for c in range(C):
                    p[base + c] = row[xx, c]
            else:
                for c in range(C):
                    p[base + c] = 0.0


@jit
def bias_relu(Y, b, n):
    """Y[:n] = relu(Y[:n] + b) in place; Y: (>= n, O), b: (O,)."""
    for i in range(n):
        for o in range(Y.shape[1]):
            Y[i, o] = max(Y[i, o] + b[o], np.float32(0.0))


@jit
def mlp_block(P, w1r, b1, w2, b2, w3, b3, H1, H2, D):
    """D = relu(relu(P @ w1r + b1) @ w2 + b2) @ w3 (b3 is added with the noise), all BLOCK rows.

    P: (BLOCK, 180); H1, H2: (BLOCK, 80); D: (BLOCK, 19), float32, C-contiguous. The three
    products are single-precision BLAS calls (sgemm through SciPy's BLAS, which Numba
    calls in place with ``out``): blocking many cells per call keeps every weight in
    cache for all of them and runs at a large fraction of the FMA peak, which a loop
    over cells does not. They always take all BLOCK rows, even when fewer cells are
    gathered: BLAS rounds a row differently depending on the row count (OpenBLAS was
    seen to for counts of 1..8 mod 16), and a cell's bits must not depend on how many
    others share its block. The caller limits BLAS to one thread per kernel thread.
    """
    np.dot(P, w1r, H1)
    bias_relu(H1, b1, BLOCK)
    np.dot(H1, w2, H2)
    bias_relu(H2, b2, BLOCK)
    np.dot(H2, w3, D)


@jit
def add_update(cell, d, b3, key, noise_std):
    """The residual add of one updated cell: cell[1:] += (d + b3) + noise_std * N(0, 1).

    cell: (20,) stored state (float32, or float16 bits: the sum is taken in float32 and
    rounded once); d: the cell's row of mlp_block's output; the noise comes from the
    shared generator with the cell's ``key``. Returns False when a written value is not
    finite (NaN or inf).
    """
    if noise_std > 0:
        for pair in range((OUT + 1) // 2):
            z0, z1 = rng.normal_pair(key, pair)
            o = 2 * pair
            cell[1 + o] = store(load(cell[1 + o]) + ((d[o] + b3[o]) + z0 * noise_std), cell[1 + o])
            if o + 1 < OUT:
                cell[2 + o] = store(load(cell[2 + o]) + ((d[o + 1] + b3[o + 1]) + z1 * noise_std), cell[2 + o])
    else:
        for o in range(OUT):
            cell[1 + o] = store(load(cell[1 + o]) + (d[o] + b3[o]), cell[1 + o])
    total = np.float32(0.0)
    for o in range(OUT):
        total += load(cell[1 + o]) * np.float32(0.0)  # NaN if any value is NaN or inf
    return total == 0
