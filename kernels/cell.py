"""Per-cell maths of one automaton step, written once as ``numba.njit`` helpers.

Updated cells are processed in small blocks so that every weight loaded from
cache serves several cells (a straightforward loop over cells reloads the
weights for each cell and reaches only a small fraction of peak FLOP/s).
Layouts:

- a grid row is ``(W, 20)`` float32, channels last;
- a perception vector is (180,) float32, index ``(i*3 + j)*20 + c`` for kernel row
  ``i``, kernel column ``j``, channel ``c``; ``w1r`` is the HWIO kernel reshaped to
  (180, 80) in the same order;
- dense weights are (in, out); the output layer is zero-padded to ``OUT_PAD``
  columns so its inner loop is a whole number of SIMD vectors.
"""

import numba
import numpy as np

from fastca import rng, spec

C = spec.CHANNELS
OUT = spec.MUTABLE
OUT_PAD = 32  #: padded width of the output layer (19 real columns)
BLOCK = 16  #: cells per block; a multiple of CELLS
CELLS = 4  #: cells that share each weight load in dense_block
TAPS = 4  #: inputs folded into each accumulator update in dense_block

# fastmath "contract" only lets LLVM fuse a*b+c into one FMA instruction (one rounding
# instead of two); it allows no reassociation and keeps NaN/inf semantics.
jit = numba.njit(cache=True, inline="always", fastmath={"contract"})


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
def dense_block(X, W, b, Y, n, relu):
    """Y[:n] = X[:n] @ W + b (then ReLU if ``relu``) for a block of cells.

    X: (>= n, K) float32 with K a multiple of TAPS; W: (K, O); b: (O,); Y: (>= n, O);
    n a multiple of CELLS. Four cells and four inputs are handled per pass over the
    outputs, so each loaded weight feeds four cells and each accumulator load/store
    carries four products; the loop over outputs vectorises.
    """
    K = X.shape[1]
    O = W.shape[1]
    for c in range(0, n, CELLS):
        for o in range(O):
            Y[c, o] = b[o]
            Y[c + 1, o] = b[o]
            Y[c + 2, o] = b[o]
            Y[c + 3, o] = b[o]
        for k in range(0, K, TAPS):
            x00, x01, x02, x03 = X[c, k], X[c, k + 1], X[c, k + 2], X[c, k + 3]
            x10, x11, x12, x13 = X[c + 1, k], X[c + 1, k + 1], X[c + 1, k + 2], X[c + 1, k + 3]
            x20, x21, x22, x23 = X[c + 2, k], X[c + 2, k + 1], X[c + 2, k + 2], X[c + 2, k + 3]
            x30, x31, x32, x33 = X[c + 3, k], X[c + 3, k + 1], X[c + 3, k + 2], X[c + 3, k + 3]
            for o in range(O):
                w0, w1, w2, w3 = W[k, o], W[k + 1, o], W[k + 2, o], W[k + 3, o]
                Y[c, o] += x00 * w0 + x01 * w1 + x02 * w2 + x03 * w3
                Y[c + 1, o] += x10 * w0 + x11 * w1 + x12 * w2 + x13 * w3
                Y[c + 2, o] += x20 * w0 + x21 * w1 + x22 * w2 + x23 * w3
                Y[c + 3, o] += x30 * w0 + x31 * w1 + x32 * w2 + x33 * w3
        if relu:
            for o in range(O):
                Y[c, o] = max(Y[c, o], np.float32(0.0))
                Y[c + 1, o] = max(Y[c + 1, o], np.float32(0.0))
                Y[c + 2, o] = max(Y[c + 2, o], np.float32(0.0))
                Y[c + 3, o] = max(Y[c + 3, o], np.float32(0.0))


@jit
def mlp_block(P, w1r, b1, w2, b2, w3p, b3p, H1, H2, D, n):
    """D[:n, :19] = relu(relu(P @ w1r + b1) @ w2 + b2) @ w3 + b3 for n cells (n <= BLOCK).

    P: (BLOCK, 180); H1, H2: (BLOCK, 80); D: (BLOCK, OUT_PAD) scratch, float32.
    Rows n..round_up(n, CELLS) are computed on stale data and ignored.
    """
    m = (n + CELLS - 1) // CELLS * CELLS
    dense_block(P, w1r, b1, H1, m, True)
    dense_block(H1, w2, b2, H2, m, True)
    dense_block(H2, w3p, b3p, D, m, False)


@jit
def add_update(cell, d, key, noise_std):
    """The residual add of one updated cell: cell[1:] += d[:19] + noise_std * N(0, 1).

    cell: (20,) float32 state; d: the cell's row of mlp_block's output; the noise
    comes from the shared generator with the cell's ``key``.
    """
    if noise_std > 0:
        for pair in range((OUT + 1) // 2):
            z0, z1 = rng.normal_pair(key, pair)
            o = 2 * pair
            cell[1 + o] += d[o] + z0 * noise_std
            if o + 1 < OUT:
                cell[2 + o] += d[o + 1] + z1 * noise_std
    else:
        for o in range(OUT):
            cell[1 + o] += d[o]
