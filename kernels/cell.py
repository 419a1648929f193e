"""Per-cell maths of one automaton step, written once as ``numba.njit`` helpers.

Updated cells are processed in blocks of up to BLOCK cells: the MLP runs as three
register-tiled dense layers over the block (:mod:`.dense`, near the FMA peak; a loop
over cells reloads the weights for each cell), the first one reading each cell's 3x3
neighbourhood where it lies, the noise of the whole block is drawn with vector
instructions, and the updates are added back. Layouts:

- a grid row is ``(W, 20)`` float32, channels last;
- a perception vector is (180,) float32, index ``(i*3 + j)*20 + c`` for kernel row
  ``i``, kernel column ``j``, channel ``c``; ``w1r`` is the HWIO kernel reshaped to
  (180, 80) in the same order;
- dense weights are (in, out), C-contiguous; the last layer is padded with zero
  columns to ``OUT_PAD`` outputs (whole vectors, see :func:`kernel_weights`);
- block buffers have ``ROWS`` rows (BLOCK plus the spare rows the dense tiles need);
- block noise is two (PAIRS, ROWS) arrays: ``Z0[p, i]`` is channel 2p of cell i, ``Z1[p, i]``
  channel 2p+1 (two arrays, so the compiler can see the stores never overlap and vectorises).
"""

import numba
import numpy as np

from fastca import rng, spec

from . import dense
from .storage import load, store

C = spec.CHANNELS
OUT = spec.MUTABLE
PAIRS = (OUT + 1) // 2
BLOCK = 64  #: cells per block: the block buffers stay in L1/L2
ROWS = BLOCK + dense.MR_MAX  #: rows of a block buffer
OUT_PAD = dense.padded(OUT)  #: outputs of the last layer as computed (zero-padded weights)

layer1 = dense.dense_rows((3 * C, 3 * C, 3 * C), spec.HIDDEN, True)  # the 3x3 neighbourhood: 3 runs of 60
layer2 = dense.dense(spec.HIDDEN, spec.HIDDEN, True)
layer3 = dense.dense(spec.HIDDEN, OUT_PAD, False)

# No fast-math, not even FMA contraction: the noise (inlined from fastca.rng) must round
# exactly as it does for the torch backend. The "numpy" error model drops the division-by-
# zero check of the noise's logarithm (its divisor is >= 1.7), which would stop vectorisation.
jit = numba.njit(cache=True, inline="always", error_model="numpy")


def aligned_zeros(shape, dtype=np.float32, align=64):
    """C-contiguous zeros whose first element is on an ``align``-byte boundary.

    The dense layers load weight rows and block-buffer rows (320 bytes each) as whole
    vectors: on a cache-line boundary none of those loads spans two lines (13% faster MLP,
    measured on an AVX-512 Xeon).
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def kernel_weights(w):
    """The weights as the kernel takes them: (w1r (180, 80), b1, w2, b2, w3 (80, OUT_PAD), b3 (OUT_PAD,)).

    ``w``: a :class:`fastca.weights.Weights`-like object with float32 w1 (3, 3, 20, 80),
    b1, w2, b2, w3 (80, 19), b3. The last layer gets zero columns up to OUT_PAD. Every array
    starts on a cache line (:func:`aligned_zeros`).
    """
    out = []
    for a, shape in ((w.w1.reshape(spec.PERCEPTION_IN, spec.HIDDEN), (spec.PERCEPTION_IN, spec.HIDDEN)),
                     (w.b1, (spec.HIDDEN,)), (w.w2, (spec.HIDDEN, spec.HIDDEN)), (w.b2, (spec.HIDDEN,)),
                     (w.w3, (spec.HIDDEN, OUT_PAD)), (w.b3, (OUT_PAD,))):
        z = aligned_zeros(shape)
        z[..., :np.shape(a)[-1]] = a  # the last layer: zero columns past OUT
        out.append(z)
    return tuple(out)


@jit
def mlp_block(table, w1r, b1, w2, b2, w3, b3, H1, H2, D, n):
    """D[:n] = relu(relu(P @ w1r + b1) @ w2 + b2) @ w3 + b3 for the first n cells of the block.

    P, the (n, 180) perception inputs, is never built: ``table`` (ROWS, 3) int64 holds for
    each cell the addresses of the three runs of 60 floats (rows above, at and below the
    cell, columns x-1..x+1, channels last) that make up its row of P, and the first layer
    reads them in place. H1, H2: (ROWS, 80); D: (ROWS, OUT_PAD), float32, C-contiguous;
    weights as :func:`kernel_weights` gives them. Rows up to n rounded up to a tile are
    computed too (their table entries must be readable addresses) and ignored. Each cell's
    result depends only on its own inputs (see :mod:`.dense`).
    """
    layer1(table.ctypes.data, w1r.ctypes.data, b1.ctypes.data, H1.ctypes.data, n)
    layer2(H1.ctypes.data, w2.ctypes.data, b2.ctypes.data, H2.ctypes.data, n)
    layer3(H2.ctypes.data, w3.ctypes.data, b3.ctypes.data, D.ctypes.data, n)


@jit
def noise_block(keys, n, Z0, Z1, U, Q, A):
    """Z0[p, i], Z1[p, i] = the standard normal pair ``p`` of block cell i < n (key ``keys[i]``).

    Per pair, one loop draws the random fields of all the cells (64-bit integer work) into
    U, Q, A ((ROWS,) float32 each), and a second turns them into normals (float32
    only, so twice as many lanes per vector): the same bits as :func:`fastca.rng.normal_pair`
    cell by cell (no reassociation, no contraction).
    """
    for pair in range(PAIRS):
        for i in range(n):
            U[i], Q[i], A[i] = rng.noise_fields(keys[i], pair)
        for i in range(n):
            z0, z1 = rng.normal_from_fields(U[i], Q[i], A[i])
            Z0[pair, i] = z0
            Z1[pair, i] = z1


@jit
def add_update(cell, D, Z0, Z1, i, noise_std):
    """The residual add of block cell i: cell[1:] += D[i, :19] + noise_std * noise (if noise_std > 0).

    cell: (20,) stored state (float32, or float16 bits: the sum is taken in float32 and
    rounded once); D: mlp_block's output (bias included); Z0, Z1: noise_block's draws.
    Returns False when a written value is not finite (NaN or inf).
    """
    if noise_std > 0:
        for o in range(OUT):
            z = Z0[o // 2, i] if o % 2 == 0 else Z1[o // 2, i]
            cell[1 + o] = store(load(cell[1 + o]) + (D[i, o] + z * noise_std), cell[1 + o])
    else:
        for o in range(OUT):
            cell[1 + o] = store(load(cell[1 + o]) + D[i, o], cell[1 + o])
    total = np.float32(0.0)
    for o in range(OUT):
        total += load(cell[1 + o]) * np.float32(0.0)  # NaN if any value is NaN or inf
    return total == 0
