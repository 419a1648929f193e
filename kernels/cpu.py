"""Numba CPU kernel: one fused, in-place automaton step over a batch of grids.

The state ``(B, H, W, 20)`` (C-contiguous; float32, or float16 as uint16 bits, see
:mod:`.storage`) is updated in place, so a step needs no second copy of the grid. The
kernel sees it as ``B*H`` rows (sample after sample) split into bands of consecutive
rows that run in parallel; a band may span samples (small digits share a band, so
blocks stay full), and a row's neighbours outside its own sample are zero padding.
Before any cell is written, the row just above and just below every band is saved
as float32 (``halo``); inside a band, rows go top to bottom and each row is read
into a per-thread ring of ``RING`` float32 rows (``ring``, padded with a zero column
each side) before any of its cells can be written, so every cell reads step t and
writes step t+1, and each stored element is converted once per step.

Only cells that are alive and fire are computed, and only the stored values they read
are loaded. Aliveness depends on channel 0 alone, which no step writes, so the runner
keeps an index of the alive cells (:func:`alive_index`: per row, runs of alive columns,
and runs of the columns any alive cell of the row or its two neighbours reads) and the
kernel trusts it: dead regions are neither read nor scanned. A row's firing cells are
found from its alive runs in branch-free passes (fire draws, then their columns), and queued into
a block of up to ``BLOCK`` cells as three addresses each: the runs of 60 floats above,
at and below the cell in the ring. The MLP reads its inputs there
(:func:`.cell.mlp_block`; a cell's result depends on that cell alone), the block's noise
is drawn, and the updates are added back: a cell gets the same bits whatever block,
band or chunk of a grid it falls in. Blocks may span rows: writing row y late is safe
because its old values stay in the ring, and a block is flushed early if the ring is
about to reuse a row that one of its cells reads. Random keys use global coordinates
(``origin`` + the cell's position). Nothing is allocated inside the kernel.
"""

import numba
import numpy as np

from fastca import rng, spec

from .cell import BLOCK, C, OUT_PAD, PAIRS, ROWS, add_update, aligned_zeros, mlp_block, noise_block
from .storage import load, load_row

spec_is_alive = numba.njit(cache=True, inline="always")(spec.is_alive)
RING = 6  #: ring rows per thread: a block is flushed before it is full only when it spans RING - 1 rows

@numba.njit(cache=True, inline="always", error_model="numpy")
def _flush(rows, n, block, weights, zero_addr, noise_std, nonfinite, k, height):
    """MLP and noise of the n queued cells and their updates; a non-finite result flags band k's sample.

    block: _block_buffers' views; weights: (w1r, b1, w2, b2, w3, b3) as cell.kernel_weights gives them.
    """
    H1, H2, D, Z0, Z1, U, Q, A, table, ys, xs, cols, keys, row_keys, fires = block
    w1r, b1, w2, b2, w3, b3 = weights
    for i in range(n, ROWS):  # rows past n are computed with the last tile: give them readable inputs
        for s in range(3):
            table[i, s] = zero_addr
    mlp_block(table, w1r, b1, w2, b2, w3, b3, H1, H2, D, n)
    if noise_std > 0:
        noise_block(keys, n, Z0, Z1, U, Q, A)
    for i in range(n):
        if not add_update(rows[ys[i], xs[i]], D, Z0, Z1, i, noise_std):
            nonfinite[k] = 1 + ys[i] // height


@numba.njit(cache=True, parallel=True, error_model="numpy")
def step_inplace(rows, height, w1r, b1, w2, b2, w3, b3, seed, step, fire_rate, noise_std, origin,
                 bands, nonfinite, halo, ring, floats, ints, keys_all, ptr, runs):
    """Advance the state by one step in place.

    rows: the state as (B*H, W, 20) rows (a view of the C-contiguous (B, H, W, 20) state),
    float32 or uint16 holding float16 bits; height: H. Weights as :func:`.cell.kernel_weights`
    gives them: w1r (180, 80); b1 (80,); w2 (80, 80); b2 (80,); w3 (80, OUT_PAD); b3
    (OUT_PAD,), float32 C-contiguous.
    seed: uint64; step: int64 (the key of this step's random numbers); fire_rate,
    noise_std: float32; origin: (3,) int64 global (sample, row, column) of the
    state's first cell. bands: (K, 2) int64 flat row ranges [r0, r1). nonfinite: (K,) int64,
    set to 1 + the sample of a cell that became non-finite in band k (0: none). Scratch, T >= the
    number of Numba threads: halo (K, 2, W+2, 20) and ring (T, RING + 1, W+2, 20) float32 (rows
    with a zero column each side; ring slot RING is a row of zeros); per-thread block buffers
    floats (T, F) float32, ints (T, I) int64 and keys_all (T, KEYS) uint64, cut into named
    arrays by :func:`_block_buffers` (few arguments: a parallel launch allocates per argument).
    ptr, runs: :func:`alive_index` of the state (it must be current: cells it leaves out are
    neither updated nor read).
    """
    n_rows = rows.shape[0]
    width = rows.shape[1]
    # Pass 1: save the rows that border each band before any band writes.
    for k in numba.prange(bands.shape[0]):
        r0, r1 = bands[k, 0], bands[k, 1]
        _zero_pads(halo[k, 0])
        _zero_pads(halo[k, 1])
        if r0 > 0:
            _load_read(rows, r0 - 1, halo[k, 0], ptr, runs)
        if r1 < n_rows:
            _load_read(rows, r1, halo[k, 1], ptr, runs)
    # Pass 2: update each band top to bottom.
    for k in numba.prange(bands.shape[0]):
        tid = numba.get_thread_id()
        r0, r1 = bands[k, 0], bands[k, 1]
        block = _block_buffers(floats[tid], ints[tid], keys_all[tid], width)
        table, ys, xs, cols, keys, row_keys, fires = block[8:]
        weights = (w1r, b1, w2, b2, w3, b3)
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
                    _flush(rows, n, block, weights, zero_addr, noise_std, nonfinite, k, height)
                    n = 0
                down = ring[tid, (i + 1) % RING]
                _load_read(rows, r + 1, down, ptr, runs)
            else:
                down = halo[k, 1]
            # Padded column x of a row starts the run x-1, x, x+1 of the grid; rows outside the sample are zeros.
            up_addr = up.ctypes.data if y > 0 else zero_addr
            down_addr = down.ctypes.data if y + 1 < height else zero_addr
            old_addr = old.ctypes.data
            rkey = rng.row_key(seed, step, origin[0] + b, origin[1] + y)
            # The columns of the row's alive cells (from the index), then of those that fire, in
            # order; branch-free (a cell is written at the end of the list, which grows only if it fires).
            m = 0
            for s in range(ptr[0, r], ptr[0, r + 1]):
                for x in range(runs[s, 0], runs[s, 1]):
                    cols[m] = x
                    m += 1
            for j in range(m):  # keys and fire draws of the alive cells (vectorised: no stores that depend on them)
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
                    _flush(rows, n, block, weights, zero_addr, noise_std, nonfinite, k, height)
                    n = 0
        if n > 0:
            _flush(rows, n, block, weights, zero_addr, noise_std, nonfinite, k, height)


@numba.njit(cache=True, inline="always")
def _load_read(rows, r, dst, ptr, runs):
    """Load into the padded (W+2, 20) float32 row ``dst`` the columns of stored row r that are read
    (its runs ``ptr[1]`` in :func:`alive_index`); the other columns keep whatever they held."""
    for s in range(ptr[1, r], ptr[1, r + 1]):
        a, b = runs[s, 0], runs[s, 1]
        load_row(rows[r, a:b], dst[a + 1:b + 1])


@numba.njit(cache=True, parallel=True)
def _alive_mask(rows, alive_thr, mask):
    for r in numba.prange(rows.shape[0]):
        for x in range(rows.shape[1]):
            mask[r, x] = spec_is_alive(load(rows[r, x, 0]), alive_thr)


@numba.njit(cache=True, inline="always")
def _read_flag(mask, r, x):
    """Whether an alive cell of rows r-1..r+1 reads column x of row r (a 3x3 neighbourhood)."""
    n_rows, width = mask.shape
    for q in range(max(r - 1, 0), min(r + 2, n_rows)):
        for c in range(max(x - 1, 0), min(x + 2, width)):
            if mask[q, c]:
                return True
    return False


@numba.njit(cache=True, inline="always")
def _row_runs(mask, r, kind, runs, o):
    """Runs [a, b) of row r's alive columns (kind 0) or read columns (kind 1), written from runs[o]
    when ``runs`` has rows (else only counted); returns their number."""
    width = mask.shape[1]
    n = 0
    start = -1
    for x in range(width + 1):
        flag = x < width and (mask[r, x] != 0 if kind == 0 else _read_flag(mask, r, x))
        if flag and start < 0:
            start = x
        elif not flag and start >= 0:
            if runs.shape[0] > 0:
                runs[o + n, 0] = start
                runs[o + n, 1] = x
            n += 1
            start = -1
    return n


@numba.njit(cache=True, parallel=True)
def _index_from_mask(mask):
    n_rows = mask.shape[0]
    counts = np.zeros((2, n_rows + 1), np.int64)
    none = np.empty((0, 2), np.int32)
    for r in numba.prange(n_rows):
        counts[0, r + 1] = _row_runs(mask, r, 0, none, 0)
        counts[1, r + 1] = _row_runs(mask, r, 1, none, 0)
    ptr = np.empty((2, n_rows + 1), np.int64)
    ptr[0, 0] = 0
    for r in range(n_rows):
        ptr[0, r + 1] = ptr[0, r] + counts[0, r + 1]
    ptr[1, 0] = ptr[0, n_rows]  # the read runs follow the alive runs in one array
    for r in range(n_rows):
        ptr[1, r + 1] = ptr[1, r] + counts[1, r + 1]
    runs = np.empty((ptr[1, n_rows], 2), np.int32)
    for r in numba.prange(n_rows):
        _row_runs(mask, r, 0, runs, ptr[0, r])
        _row_runs(mask, r, 1, runs, ptr[1, r])
    return ptr, runs


def alive_index(rows, alive_thr):
    """Where the alive cells of the state are, and which stored values they read.

    rows: the state as (N, W, 20) rows (as :func:`step_inplace` takes it); alive_thr: float32.
    Returns (ptr (2, N+1) int64, runs (R, 2) int32): ``runs[ptr[0, r]:ptr[0, r+1]]`` are the
    [start, stop) column runs of row r's alive cells, ``runs[ptr[1, r]:ptr[1, r+1]]`` those of
    the columns of row r that an alive cell of rows r-1..r+1 reads (its 3x3 neighbourhood;
    rows are flat, so neighbours across a sample boundary count too: harmless extra loads).
    Valid as long as channel 0 does not change (steps never write it). Builds an (N, W) uint8
    mask on the way (1/80 of a float32 state), freed on return.
    """
    mask = np.empty(rows.shape[:2], np.uint8)
    _alive_mask(rows, alive_thr, mask)
    return _index_from_mask(mask)


@numba.njit(cache=True, inline="always")
def _zero_pads(row):
    """Zero the padding columns 0 and W+1 of a padded (W+2, 20) row."""
    for c in range(row.shape[1]):
        row[0, c] = 0.0
        row[row.shape[0] - 1, c] = 0.0


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


@numba.njit(cache=True, inline="always")
def _block_buffers(floats, ints, keys, width):
    """One thread's block buffers as views of its three scratch rows (see scratch_buffers).

    Returns H1, H2 (ROWS, 80), D (ROWS, OUT_PAD), Z0, Z1 (PAIRS, ROWS), U, Q, A (ROWS,) float32;
    table (ROWS, 3), ys, xs (BLOCK,) (flat row and column of each queued cell), cols (W,)
    int64; keys (BLOCK,) (the queued cells' random keys), row_keys (W,) uint64; fires (W,) int64. Separate
    ranges of one array: the compiler checks at run time that they do not overlap, and
    vectorises.
    """
    h = ROWS * spec.HIDDEN
    H1 = floats[:h].reshape(ROWS, spec.HIDDEN)
    H2 = floats[h:2 * h].reshape(ROWS, spec.HIDDEN)
    o = 2 * h
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
    return H1, H2, D, Z0, Z1, U, Q, A, table, ys, xs, cols, keys[:BLOCK], keys[BLOCK:BLOCK + width], fires


def scratch_buffers(n_bands, width, threads_max):
    """Allocate the kernel's scratch once per simulation: (halo, ring, floats, ints, keys)."""
    floats = 2 * ROWS * spec.HIDDEN + ROWS * OUT_PAD + 2 * PAIRS * ROWS + 3 * ROWS  # as _block_buffers cuts them
    floats = -(-floats // 16) * 16  # each thread's row starts on a cache line, like H1, H2 and D in it
    ints = 3 * ROWS + 2 * BLOCK + 2 * width
    keys = BLOCK + width
    return (
        np.zeros((n_bands, 2, width + 2, spec.CHANNELS), np.float32),
        np.zeros((threads_max, RING + 1, width + 2, spec.CHANNELS), np.float32),
        aligned_zeros((threads_max, floats)),
        np.zeros((threads_max, ints), np.int64),
        np.zeros((threads_max, keys), np.uint64),
    )
