"""Numba CPU kernel template: one fused, in-place step of a 3x3 neural CA over a batch of grids.

This module is a template (see :mod:`.generate`): its sizes live in the generated block
below, which :mod:`.cpu_shape` renders for each model description, so every description
runs its own compiled copy. As shipped, the block holds the self-classifying MNIST model.

The state ``(B, H, W, C)`` (C-contiguous; float32, or float16 as uint16 bits, see
:mod:`.storage`) is updated in place, so a step needs no second copy of the grid. The
kernel sees it as ``B*H`` rows (sample after sample) split into bands of consecutive
rows that run in parallel; a band may span samples (small digits share a band, so
blocks stay full), and a row's neighbours outside its own sample are zero padding (or,
with ``WRAP``, the other side of the sample: its first and last rows are saved before
any write, and the padding columns of every loaded row copy its last and first column).
Before any cell is written, the row just above and just below every band is saved
as float32 (``halo``); inside a band, rows go top to bottom and each row is read
into a per-thread ring of ``RING`` float32 rows (``ring``, padded with a column
each side) before any of its cells can be written, so every cell reads step t and
writes step t+1, and each stored element is converted once per step.

Only the cells the runner's index lists (:func:`alive_index`: per row, runs of the cells
that may update, and runs of the columns any of them reads) are scanned, and only the
stored values they read are loaded. Under the static alive rule that index is built once
(the alive channel is never written); with no alive rule it lists every cell; under the
max-pool rule it is rebuilt before every step (:func:`maxpool_pre`) and the cells that
are not alive before and after the step are zeroed after it (:func:`maxpool_keep`,
:func:`zero_dead`). A row's firing cells are found from its runs in branch-free passes
(fire draws, then their columns), and queued into a block of up to ``BLOCK`` cells as
three addresses each: the runs of 3C floats above, at and below the cell in the ring.
The MLP reads its inputs there (:func:`mlp_block`, register-tiled dense layers from
:mod:`.dense`; a cell's result depends on that cell alone), the block's noise is drawn,
and the updates are added back: a cell gets the same bits whatever block, band or chunk
of a grid it falls in. Blocks may span rows: writing row y late is safe because its old
values stay in the ring, and a block is flushed early if the ring is about to reuse a
row that one of its cells reads. Random keys use global coordinates (``origin`` + the
cell's position). Nothing is allocated inside the kernel.

Layouts: a grid row is ``(W, C)`` float32, channels last; weights are one packed,
cache-line aligned float32 array (:func:`.cpu_shape.pack_weights`: each layer's (in, out)
matrix with its output width padded to whole vectors, then its bias); block buffers have
``ROWS`` rows (BLOCK plus the spare rows the dense tiles need); block noise is two (PAIRS,
ROWS) arrays: ``Z0[p, i]`` is updated channel 2p of cell i, ``Z1[p, i]`` channel 2p+1 (two
arrays, so the compiler can see the stores never overlap and vectorises).
"""

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from fastca import rng
from fastca.kernels import dense
from fastca.kernels.storage import load, load_row, prefetch, store

# No fast-math, not even FMA contraction: the noise (inlined from fastca.rng) must round
# exactly as it does for the torch backend. The "numpy" error model drops the division-by-
# zero check of the noise's logarithm (its divisor is >= 1.7), which would stop vectorisation.
jit = numba.njit(cache=True, inline="always", error_model="numpy")


@intrinsic
def f32_at(typingctx, addr, k):
    """The float32 at address ``addr`` + 4 ``k`` (the ring runs the block table points to)."""
    sig = types.float32(types.intp, types.intp)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.FloatType().as_pointer())
        return builder.load(builder.gep(ptr, [args[1]]))

    return sig, codegen


# <generated>
C = 20  # channels per cell
R0 = 1  # first channel the residual updates
OUT = 19  # channels it updates (the last layer's width)
OUT_PAD = dense.padded(OUT)  # the last layer's width as computed (zero-padded weights)
ALIVE = 1  # alive rule: 0 none (every cell updates), 1 static, 2 max-pool
ALIVE_CH = 0  # the channel the alive rule reads
WRAP = False  # boundary: the other side of the sample (torus) instead of zero padding
DEPTHWISE = False  # perception: fixed depthwise filters into P (else the first layer reads the ring)
FEATURES = 1  # columns of P (depthwise features per cell; 1 when unused)
MAXW = 80  # widest hidden layer as computed (columns of HA and HB)
WEIGHTS = 57600 + 80 + 6400 + 80 + 80 * OUT_PAD + OUT_PAD  # floats in the packed weights

layer0 = dense.dense_rows((3 * C, 3 * C, 3 * C), 80, True)  # the 3x3 neighbourhood: 3 runs of 3C
layer1 = dense.dense(80, 80, True)
layer2 = dense.dense(80, OUT_PAD, False)


@jit
def perceive(table, P, n):
    """P[i] = the depthwise perception of block cell i < n (unused: a learned perception)."""


@jit
def mlp_block(table, wts, P, HA, HB, D, n):
    """D[:n] = the MLP of the first n block cells (bias included); see the module docstring."""
    w = wts.ctypes.data
    layer0(table.ctypes.data, w, w + 4 * 57600, HA.ctypes.data, n)
    layer1(HA.ctypes.data, w + 4 * 57680, w + 4 * 64080, HB.ctypes.data, n)
    layer2(HB.ctypes.data, w + 4 * 64160, w + 4 * (64160 + 80 * OUT_PAD), D.ctypes.data, n)
# </generated>

PAIRS = (OUT + 1) // 2
BLOCK = 64  #: cells per block: the block buffers stay in L1/L2
ROWS = BLOCK + dense.MR_MAX  #: rows of a block buffer
RING = 6  #: ring rows per thread: a block is flushed before it is full only when it spans RING - 1 rows


def aligned_zeros(shape, dtype=np.float32, align=64):
    """C-contiguous zeros whose first element is on an ``align``-byte boundary.

    The dense layers load weight rows and block-buffer rows as whole vectors: on a
    cache-line boundary none of those loads spans two lines (13% faster MLP, measured on
    an AVX-512 Xeon).
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


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
    """The residual add of block cell i: cell[R0:R0+OUT] += D[i, :OUT] + noise_std * noise (if noise_std > 0).

    cell: (C,) stored state (float32, or float16 bits: the sum is taken in float32 and
    rounded once); D: mlp_block's output (bias included); Z0, Z1: noise_block's draws.
    Returns False when a written value is not finite (NaN or inf).
    """
    # One pass: add, store, and test the stored value (v - v is NaN for NaN and inf, 0 otherwise; an or
    # of booleans vectorises, where a float sum would run as a chain of dependent adds)
    bad = False
    for o in range(OUT):
        d = D[i, o]
        if noise_std > 0:
            d += (Z0[o // 2, i] if o % 2 == 0 else Z1[o // 2, i]) * noise_std
        stored = store(load(cell[R0 + o]) + d, cell[R0 + o])
        cell[R0 + o] = stored
        v = load(stored)
        bad |= (v - v) != 0
    return not bad


# Not inlined: its code (the MLP, the noise) is compiled once, not once per call site (a third of the compile time).
@numba.njit(cache=True, error_model="numpy")
def _flush(rows, n, block, wts, zero_addr, noise_std, nonfinite, k, height, hot, alive_thr):
    """MLP and noise of the n queued cells and their updates; a non-finite result flags band k's sample.
    Under the max-pool rule, hot's bit of (r, x) = the updated cell's channel ALIVE_CH > alive_thr.

    block: _block_buffers' views; wts: the packed weights.
    """
    P, HA, HB, D, Z0, Z1, U, Q, A, table, ys, xs, cols, keys, row_keys, fires = block
    for i in range(n, ROWS):  # rows past n are computed with the last tile: give them readable inputs
        for s in range(3):
            table[i, s] = zero_addr
    if DEPTHWISE:
        perceive(table, P, n)
    mlp_block(table, wts, P, HA, HB, D, n)
    if noise_std > 0:
        noise_block(keys, n, Z0, Z1, U, Q, A)
    for i in range(n):
        if not add_update(rows[ys[i], xs[i]], D, Z0, Z1, i, noise_std):
            nonfinite[k] = 1 + ys[i] // height
        if ALIVE == 2:  # the rule after the step reads this: no second pass over the state for it
            y, x = ys[i], xs[i]
            bit = ONE << np.uint64(x % 64)
            above = bit if load(rows[y, x, ALIVE_CH]) > alive_thr else np.uint64(0)
            hot[y, x // 64] = (hot[y, x // 64] & ~bit) | above


@numba.njit(cache=True, parallel=True, error_model="numpy")
def step_inplace(rows, height, wts, seed, step, fire_rate, noise_std, origin,
                 bands, nonfinite, halo, ring, edges, floats, ints, keys_all, ptr, runs, hot, alive_thr):
    """Advance the state by one step in place.

    rows: the state as (B*H, W, C) rows (a view of the C-contiguous (B, H, W, C) state),
    float32 or uint16 holding float16 bits; height: H; wts: the packed weights
    (:func:`.cpu_shape.pack_weights`). seed: uint64; step: int64 (the key of this step's
    random numbers); fire_rate, noise_std: float32; origin: (3,) int64 global (sample, row,
    column) of the state's first cell. bands: (K, 2) int64 flat row ranges [r0, r1).
    nonfinite: (K,) int64, set to 1 + the sample of a cell that became non-finite in band k
    (0: none). Scratch, T >= the number of Numba threads: halo (K, 2, W+2, C) and ring (T,
    RING + 1, W+2, C) float32 (padded rows; ring slot RING is a row of zeros); edges (B, 2,
    W+2, C) float32, each sample's first and last row (``WRAP`` only; else any shape);
    per-thread block buffers floats (T, F) float32, ints (T, I) int64 and keys_all (T, KEYS)
    uint64, cut into named arrays by :func:`_block_buffers` (few arguments: a parallel launch
    allocates per argument). ptr, runs: :func:`alive_index` of the state (it must be
    current: cells it leaves out are neither updated nor read). hot: (N, NW) uint64, the max-pool
    rule's bit mask of cells whose channel ALIVE_CH > alive_thr (float32), updated for every cell
    written (other rules: any array, unused).
    """
    n_rows = rows.shape[0]
    width = rows.shape[1]
    # Pass 1: save the rows that border each band (and, wrapping, each sample) before any band writes.
    for k in numba.prange(bands.shape[0]):
        r0, r1 = bands[k, 0], bands[k, 1]
        _zero_pads(halo[k, 0])
        _zero_pads(halo[k, 1])
        if r0 > 0:
            _load_read(rows, r0 - 1, halo[k, 0], ptr, runs)
        if r1 < n_rows:
            _load_read(rows, r1, halo[k, 1], ptr, runs)
        if WRAP:  # each sample's first and last rows, for the rows that wrap around to them
            for b in range((r0 + height - 1) // height, (r1 + height - 1) // height):
                _load_read(rows, b * height, edges[b, 0], ptr, runs)
                _load_read(rows, b * height + height - 1, edges[b, 1], ptr, runs)
    # Pass 2: update each band top to bottom.
    for k in numba.prange(bands.shape[0]):
        tid = numba.get_thread_id()
        r0, r1 = bands[k, 0], bands[k, 1]
        block = _block_buffers(floats[tid], ints[tid], keys_all[tid], width)
        table, ys, xs, cols, keys, row_keys, fires = block[9:]
        zero = ring[tid, RING]
        zero[:, :] = 0.0
        zero_addr = zero.ctypes.data
        for s in range(RING):
            _zero_pads(ring[tid, s])
        n = 0
        for r in range(r0, r1):
            i = r - r0
            b = r // height
            y = r - b * height
            old = ring[tid, i % RING]  # row r at step t, read when row r-1 was processed
            if i == 0:
                _load_read(rows, r, old, ptr, runs)
            up = halo[k, 0] if i == 0 else ring[tid, (i - 1) % RING]
            if r + 1 < r1:  # read row r+1 before any block flush below can write row r+1
                if n > 0 and ys[0] + RING <= r + 2:  # the slot to refill holds a row a queued cell reads
                    _flush(rows, n, block, wts, zero_addr, noise_std, nonfinite, k, height, hot, alive_thr)
                    n = 0
                down = ring[tid, (i + 1) % RING]
                _load_read(rows, r + 1, down, ptr, runs)
                if r + 2 < r1:  # the next row's loads then find it in cache, fetched while this row's MLP runs
                    _prefetch_read(rows, r + 2, ptr, runs)
            else:
                down = halo[k, 1]
            # Padded column x of a row starts the run x-1, x, x+1 of the grid; rows outside the sample are
            # zeros, or (wrapping) the sample's saved last / first row.
            if y > 0:
                up_addr = up.ctypes.data
            elif WRAP:
                up_addr = edges[b, 1].ctypes.data
            else:
                up_addr = zero_addr
            if y + 1 < height:
                down_addr = down.ctypes.data
            elif WRAP:
                down_addr = edges[b, 0].ctypes.data
            else:
                down_addr = zero_addr
            old_addr = old.ctypes.data
            rkey = rng.row_key(seed, step, origin[0] + b, origin[1] + y)
            # The columns of the row's listed cells (from the index), then of those that fire, in
            # order; branch-free (a cell is written at the end of the list, which grows only if it fires).
            m = 0
            for s in range(ptr[0, r], ptr[0, r + 1]):
                for x in range(runs[s, 0], runs[s, 1]):
                    cols[m] = x
                    m += 1
            for j in range(m):  # keys and fire draws of the listed cells (vectorised: no stores that depend on them)
                key = rng.key_in_row(rkey, origin[2] + cols[j])
                row_keys[j] = key
                fires[j] = rng.fire_uniform(key) <= fire_rate
            f = 0
            for j in range(m):
                cols[f], row_keys[f] = cols[j], row_keys[j]
                f += fires[j]
            for j in range(f):
                x = cols[j]
                offset = x * (C * 4)
                table[n, 0] = up_addr + offset
                table[n, 1] = old_addr + offset
                table[n, 2] = down_addr + offset
                ys[n], xs[n], keys[n] = r, x, row_keys[j]
                n += 1
                if n == BLOCK:
                    _flush(rows, n, block, wts, zero_addr, noise_std, nonfinite, k, height, hot, alive_thr)
                    n = 0
        if n > 0:
            _flush(rows, n, block, wts, zero_addr, noise_std, nonfinite, k, height, hot, alive_thr)


@numba.njit(cache=True)  # not inlined: called from six places
def _load_read(rows, r, dst, ptr, runs):
    """Load into the padded (W+2, C) float32 row ``dst`` the columns of stored row r that are read
    (its runs ``ptr[1]`` in :func:`alive_index`); the other columns keep whatever they held.
    Wrapping, the padding columns then copy the last and the first column (read runs are whole rows)."""
    for s in range(ptr[1, r], ptr[1, r + 1]):
        a, b = runs[s, 0], runs[s, 1]
        load_row(rows[r, a:b], dst[a + 1:b + 1])
    if WRAP:
        last = dst.shape[0] - 1
        for c in range(C):
            dst[0, c] = dst[last - 1, c]
            dst[last, c] = dst[1, c]


@numba.njit(cache=True)
def _prefetch_read(rows, r, ptr, runs):
    """Prefetch the stored columns of row r that :func:`_load_read` will load (its runs ``ptr[1]``).

    Each run is a short stretch of memory (MNIST world: about 10 cells) that the hardware
    prefetchers do not see coming, so a load waits for memory once per run; asked for one
    row ahead, the lines arrive while the MLP works (on a Zen 4 compiling AVX2 code, a
    step that only loads rows took 5.1 ms instead of 8.0, benchmarks/RESULTS.md).
    """
    for s in range(ptr[1, r], ptr[1, r + 1]):
        a, b = runs[s, 0], runs[s, 1]
        start = rows[r, a:b].ctypes.data
        stop = start + (b - a) * C * rows.itemsize
        for addr in range(start - start % 64, stop, 64):
            prefetch(addr)


@numba.njit(cache=True, inline="always")
def _zero_pads(row):
    """Zero the padding columns 0 and W+1 of a padded (W+2, C) row."""
    for c in range(row.shape[1]):
        row[0, c] = 0.0
        row[row.shape[0] - 1, c] = 0.0


# -- the index of the cells that may update -------------------------------------------------------
# Masks are (N, NW) uint64 bit sets over the state's flat rows: bit x % 64 of word x // 64 is column x
# (NW = ceil(W / 64); the bits past column W - 1 stay 0). A 3x3 dilation inside each sample is two passes
# (columns x-1..x+1 of a row by shifts, then rows y-1..y+1 of the sample) over 64 cells a word.

ONE = np.uint64(1)
FULL = np.uint64(0xFFFFFFFFFFFFFFFF)


@intrinsic
def _ctz(typingctx, word):
    """The index of the lowest set bit of a non-zero uint64."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return sig, codegen


def mask_words(width):
    """Words of a mask row of ``width`` columns."""
    return -(-width // 64)


def masks(count, n_rows, width):
    """``count`` zeroed (N, NW) uint64 masks of ``n_rows`` rows of ``width`` columns, as one array."""
    return np.zeros((count, n_rows, mask_words(width)), np.uint64)


@numba.njit(cache=True, inline="always")
def _last_word(width):
    """The bits of a row's last word that are columns (< width)."""
    tail = width - 64 * ((width + 63) // 64 - 1)
    return FULL if tail == 64 else (ONE << np.uint64(tail)) - ONE


@numba.njit(cache=True)  # serial: called outside the kernel lock (a parallel launch there could race another)
def mark_all(mask, width):
    """Set every column of every row of ``mask``."""
    last = _last_word(width)
    for r in range(mask.shape[0]):
        for k in range(mask.shape[1] - 1):
            mask[r, k] = FULL
        mask[r, mask.shape[1] - 1] = last


@numba.njit(cache=True, parallel=True)
def _alive_mask(rows, alive_thr, mask):
    """mask = the static rule on the stored rows (every cell under no alive rule)."""
    width = rows.shape[1]
    for r in numba.prange(rows.shape[0]):
        for k in range(mask.shape[1]):
            word = np.uint64(0)
            for j in range(min(64, width - 64 * k)):
                if ALIVE == 0 or load(rows[r, 64 * k + j, ALIVE_CH]) > alive_thr:
                    word |= ONE << np.uint64(j)
            mask[r, k] = word


@numba.njit(cache=True, parallel=True)
def _above(rows, alive_thr, hot, live):
    """hot = the cells whose channel ALIVE_CH > thr (the max-pool rule before its pooling), read only where
    ``live`` is set: the other cells are all zero (each load brings in the cell's whole cache line, so
    skipping the dead majority of a world is most of this pass's time). With thr < 0 a zero cell is hot:
    pass a mask of ones."""
    for r in numba.prange(rows.shape[0]):
        for k in range(hot.shape[1]):
            todo = live[r, k]
            word = np.uint64(0)
            while todo != 0:
                j = _ctz(todo)
                if load(rows[r, 64 * k + np.int64(j), ALIVE_CH]) > alive_thr:
                    word |= ONE << j
                todo &= todo - ONE
            hot[r, k] = word


@numba.njit(cache=True, inline="always")
def _rows_or(mask, r, k, height, radius):
    """Word k of the rows within ``radius`` of flat row r inside its sample, or-ed (rows outside the
    sample: none, or the other end with WRAP)."""
    y = r % height
    first = r - y
    word = np.uint64(0)
    for d in range(-radius, radius + 1):
        yy = y + d
        if WRAP:
            word |= mask[first + yy % height, k]
        elif 0 <= yy < height:
            word |= mask[first + yy, k]
    return word


@numba.njit(cache=True, inline="always")
def _box(mask, r, k, height, width, radius):
    """Word k of row r of ``mask`` dilated by the (2 radius + 1)^2 square inside the sample (radius < 64):
    the rows' or (:func:`_rows_or`) shifted by up to ``radius`` columns, with the bits that cross from
    the neighbouring words; with WRAP, the columns within ``radius`` of a row's ends are taken one by one."""
    nw = mask.shape[1]
    w = _rows_or(mask, r, k, height, radius)
    left = _rows_or(mask, r, k - 1, height, radius) if k > 0 else np.uint64(0)
    right = _rows_or(mask, r, k + 1, height, radius) if k + 1 < nw else np.uint64(0)
    out = w
    for s in range(1, radius + 1):
        t = np.uint64(s)
        out |= (w << t) | (w >> t) | (left >> np.uint64(64 - s)) | (right << np.uint64(64 - s))
    if WRAP and (k == 0 or k == nw - 1):
        for x in range(64 * k, min(64 * k + 64, width)):
            if x < radius or x >= width - radius:
                for d in range(-radius, radius + 1):
                    xx = (x + d) % width
                    if (_rows_or(mask, r, xx // 64, height, radius) >> np.uint64(xx % 64)) & ONE:
                        out |= ONE << np.uint64(x - 64 * k)
    if k == nw - 1:
        out &= _last_word(width)
    return out


@numba.njit(cache=True, parallel=True)
def dilate(mask, height, width, out):
    """out = mask dilated by the 3x3 neighbourhood inside each sample (N, NW masks of rows of ``width``)."""
    for r in numba.prange(mask.shape[0]):
        for k in range(mask.shape[1]):
            out[r, k] = _box(mask, r, k, height, width, 1)


@numba.njit(cache=True, inline="always")
def _row_runs(mask, r, runs, o):
    """Runs [a, b) of row r's set columns, written from runs[o] when ``runs`` has rows (else only
    counted); returns their number. A run starts or ends where a bit differs from the one before it:
    the set bits of ``word ^ (word << 1 | carry)``, visited lowest first."""
    n = 0
    start = 0
    carry = np.uint64(0)  # the previous column's bit
    nw = mask.shape[1]
    for k in range(nw):
        w = mask[r, k]
        edges = w ^ ((w << ONE) | carry)
        carry = w >> np.uint64(63)
        while edges != 0:
            j = _ctz(edges)
            x = 64 * k + np.int64(j)
            if (w >> j) & ONE:
                start = x
            else:
                if runs.shape[0] > 0:
                    runs[o + n, 0] = start
                    runs[o + n, 1] = x
                n += 1
            edges &= edges - ONE
    if carry:  # a run through the last column of a row of whole words
        if runs.shape[0] > 0:
            runs[o + n, 0] = start
            runs[o + n, 1] = 64 * nw
        n += 1
    return n


@numba.njit(cache=True, parallel=True)
def index_counts(listed, read, ptr):
    """Fill ptr (2, N+1) int64 for :func:`index_fill` from the (N, NW) masks of the cells to list and of
    the values they read: offsets of each row's runs; returns the run count."""
    n_rows = listed.shape[0]
    none = np.empty((0, 2), np.int32)
    for r in numba.prange(n_rows):
        ptr[0, r + 1] = _row_runs(listed, r, none, 0)
        if WRAP:  # a row read anywhere is read whole (one run)
            any_read = np.uint64(0)
            for k in range(read.shape[1]):
                any_read |= read[r, k]
            ptr[1, r + 1] = 1 if any_read != 0 else 0
        else:
            ptr[1, r + 1] = _row_runs(read, r, none, 0)
    ptr[0, 0] = 0
    for r in range(n_rows):
        ptr[0, r + 1] += ptr[0, r]
    ptr[1, 0] = ptr[0, n_rows]  # the read runs follow the listed runs in one array
    for r in range(n_rows):
        ptr[1, r + 1] += ptr[1, r]
    return ptr[1, n_rows]


@numba.njit(cache=True, parallel=True)
def index_fill(listed, read, width, ptr, runs):
    """Write the runs that :func:`index_counts` counted into runs (at least that many rows, int32)."""
    for r in numba.prange(listed.shape[0]):
        _row_runs(listed, r, runs, ptr[0, r])
        if WRAP:
            if ptr[1, r + 1] > ptr[1, r]:
                runs[ptr[1, r], 0] = 0
                runs[ptr[1, r], 1] = width
        else:
            _row_runs(read, r, runs, ptr[1, r])


def alive_index(rows, alive_thr, height=None):
    """Where the cells that may update are, and which stored values they read.

    rows: the state as (N, W, C) rows (as :func:`step_inplace` takes it); alive_thr: float32;
    height: rows per sample (default N). Returns (ptr (2, N+1) int64, runs (R, 2) int32):
    ``runs[ptr[0, r]:ptr[0, r+1]]`` are the [start, stop) column runs of row r's alive cells
    under the static rule (every cell under no rule), ``runs[ptr[1, r]:ptr[1, r+1]]`` those of
    the columns of row r that a listed cell of its sample reads (its 3x3 neighbourhood). Valid
    as long as the alive channel does not change (steps never write it). Builds (N, NW) bit
    masks on the way, freed on return.
    """
    height = rows.shape[0] if height is None else height
    width = rows.shape[1]
    listed, read = masks(2, rows.shape[0], width)
    _alive_mask(rows, alive_thr, listed)
    dilate(listed, height, width, read)
    ptr = np.zeros((2, rows.shape[0] + 1), np.int64)
    runs = np.empty((index_counts(listed, read, ptr), 2), np.int32)
    index_fill(listed, read, width, ptr, runs)
    return ptr, runs


# -- the max-pool alive rule ----------------------------------------------------------------------
# Six (N, NW) masks (:func:`maxpool_masks`): hot, pre, act, read, keep, live. One pass computes the
# three dilations of a step's start (a parallel launch costs far more than these passes' work).

def maxpool_masks(n_rows, width):
    """The max-pool rule's masks of a state of ``n_rows`` rows of ``width`` cells, live all set."""
    m = masks(6, n_rows, width)
    mark_all(m[5], width)
    return m


@numba.njit(cache=True, parallel=True)
def _pools(hot, height, width, pre, act, read):
    """pre, act, read = hot dilated by the 3x3, 5x5 and 7x7 squares inside each sample."""
    for r in numba.prange(hot.shape[0]):
        for k in range(hot.shape[1]):
            pre[r, k] = _box(hot, r, k, height, width, 1)
            act[r, k] = _box(hot, r, k, height, width, 2)
            read[r, k] = _box(hot, r, k, height, width, 3)


@numba.njit(cache=True, parallel=True)
def _kept(hot, height, width, pre, keep):
    """keep = pre and hot dilated by the 3x3 square inside each sample."""
    for r in numba.prange(hot.shape[0]):
        for k in range(hot.shape[1]):
            keep[r, k] = pre[r, k] & _box(hot, r, k, height, width, 1)


def maxpool_pre(rows, height, alive_thr, masks, fresh):
    """Before a step under the max-pool rule, into ``masks`` (:func:`maxpool_masks`): pre = the rule on
    the state (a cell of the 3x3 neighbourhood in the sample has channel ALIVE_CH > thr); act = the cells
    within one cell of a pre cell (their updates decide the rule after the step: the cells the kernel
    lists); read = the values those read. live: the cells that may hold values (kept by the last step;
    all set when unknown, or when thr < 0 makes zero cells alive). hot: the cells whose channel
    ALIVE_CH > thr, read from the state when ``fresh`` (the first step, after an outside write, thr < 0),
    else kept current by the kernel and :func:`zero_dead`."""
    hot, pre, act, read, _, live = masks
    if fresh:
        _above(rows, alive_thr, hot, live)
    _pools(hot, height, rows.shape[1], pre, act, read)


def maxpool_keep(height, width, masks):
    """After a step under the max-pool rule: keep = pre and the rule on the new state (hot: kept
    current by the kernel for every cell it wrote)."""
    _kept(masks[0], height, width, masks[1], masks[4])


@numba.njit(cache=True, parallel=True)
def zero_dead(rows, live, act, keep, hot):
    """Zero every cell that may hold values (``live``: kept by the last step; ``act``: updated by this
    one) and is not kept; then live = keep, and hot &= keep (a zeroed cell's channel is 0, not above a
    threshold >= 0). Every other cell is zero already."""
    for r in numba.prange(rows.shape[0]):
        for k in range(live.shape[1]):
            dead = (live[r, k] | act[r, k]) & ~keep[r, k]
            while dead != 0:
                x = 64 * k + np.int64(_ctz(dead))
                for c in range(C):
                    rows[r, x, c] = store(np.float32(0.0), rows[r, x, c])
                dead &= dead - ONE
            live[r, k] = keep[r, k]
            hot[r, k] &= keep[r, k]


# -- buffers --------------------------------------------------------------------------------------

def make_bands(batch, height, rows=None):
    """Split the B*H rows into bands of consecutive rows: (K, 2) int64 of [r0, r1).

    The bands do not depend on the thread count (nor does any cell's result depend on
    its band or block), so results are bit-identical for any number of threads. Default: 64 rows
    (the saved halo rows, 2 per band, stay at about 3% of the state on large grids), or
    256 rows when samples are shorter than 64 rows (bands then span several samples, so
    a batch of 28x28 digits still fills whole blocks).
    """
    if rows is None:
        rows = 64 if height >= 64 else 256
    total = batch * height
    starts = np.arange(0, total, rows, dtype=np.int64)
    return np.stack([starts, np.minimum(starts + rows, total)], axis=1)


_P_SIZE = -(-ROWS * FEATURES // 16) * 16  # every buffer starts on a cache line
_H_SIZE = -(-ROWS * MAXW // 16) * 16


@numba.njit(cache=True, inline="always")
def _block_buffers(floats, ints, keys, width):
    """One thread's block buffers as views of its three scratch rows (see scratch_buffers).

    Returns P (ROWS, FEATURES), HA, HB (ROWS, MAXW), D (ROWS, OUT_PAD), Z0, Z1 (PAIRS, ROWS),
    U, Q, A (ROWS,) float32; table (ROWS, 3), ys, xs (BLOCK,) (flat row and column of each
    queued cell), cols (W,) int64; keys (BLOCK,) (the queued cells' random keys), row_keys
    (W,) uint64; fires (W,) int64. Separate ranges of one array: the compiler checks at run
    time that they do not overlap, and vectorises.
    """
    P = floats[:ROWS * FEATURES].reshape(ROWS, FEATURES)
    o = _P_SIZE
    HA = floats[o:o + ROWS * MAXW].reshape(ROWS, MAXW)
    HB = floats[o + _H_SIZE:o + _H_SIZE + ROWS * MAXW].reshape(ROWS, MAXW)
    o += 2 * _H_SIZE
    D = floats[o:o + ROWS * OUT_PAD].reshape(ROWS, OUT_PAD)
    o += ROWS * OUT_PAD
    Z0 = floats[o:o + PAIRS * ROWS].reshape(PAIRS, ROWS)
    o += PAIRS * ROWS
    Z1 = floats[o:o + PAIRS * ROWS].reshape(PAIRS, ROWS)
    o += PAIRS * ROWS
    U, Q, A = floats[o:o + ROWS], floats[o + ROWS:o + 2 * ROWS], floats[o + 2 * ROWS:o + 3 * ROWS]
    table = ints[:3 * ROWS].reshape(ROWS, 3)
    o = 3 * ROWS
    ys, xs, cols = ints[o:o + BLOCK], ints[o + BLOCK:o + 2 * BLOCK], ints[o + 2 * BLOCK:o + 2 * BLOCK + width]
    fires = ints[o + 2 * BLOCK + width:o + 2 * BLOCK + 2 * width]
    return (P, HA, HB, D, Z0, Z1, U, Q, A, table, ys, xs, cols, keys[:BLOCK], keys[BLOCK:BLOCK + width], fires)


def scratch_buffers(n_bands, batch, width, threads_max):
    """Allocate the kernel's scratch once per simulation: (halo, ring, edges, floats, ints, keys)."""
    floats = _P_SIZE + 2 * _H_SIZE + ROWS * OUT_PAD + 2 * PAIRS * ROWS + 3 * ROWS  # as _block_buffers cuts them
    floats = -(-floats // 16) * 16  # each thread's row starts on a cache line, like HA, HB and D in it
    ints = 3 * ROWS + 2 * BLOCK + 2 * width
    keys = BLOCK + width
    return (
        np.zeros((n_bands, 2, width + 2, C), np.float32),
        np.zeros((threads_max, RING + 1, width + 2, C), np.float32),
        np.zeros((batch if WRAP else 1, 2, width + 2, C), np.float32),
        aligned_zeros((threads_max, floats)),
        np.zeros((threads_max, ints), np.int64),
        np.zeros((threads_max, keys), np.uint64),
    )
