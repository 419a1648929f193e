"""Numba CUDA kernels: one fused, in-place automaton step per launch (plus a halo copy).

Work split. The grid of one sample is cut into **strips** of ``TW`` columns and each strip
into **segments** of ``seg_rows`` rows; one thread block owns one (strip, segment, sample)
and walks down its segment in **sub-tiles** of ``TH`` rows.

Old values (every cell reads step t and writes step t+1, in place). Before the step,
``save_halos`` copies the rows and columns on each side of every segment and strip
boundary (``rowhalo``, ``colhalo``), so a block reads its neighbours' cells from those
copies. Inside its own segment, a block loads each sub-tile's rows (plus one row above
and below and one column left and right: the **ring**, float32, in shared memory)
before it writes any of them: updates only go to rows whose cells have all been
gathered, and the row above a sub-tile is carried over from the previous ring.

Compaction and blocked MLP. Per sub-tile, the cells that are alive and fire are
compacted (a shared-memory counter), and their 3x3x20 neighbourhoods gathered from the
ring into a **chunk** of ``M`` rows of 180 inputs. When a chunk is full (or the segment
ends) the block runs the MLP on it as three register-tiled matrix products: thread
``(cg, og)`` owns cells ``cg + NCG*r`` and outputs ``og + NOG*q`` (``r < NC``,
``q < NO``), reads its inputs from the chunk in shared memory (row stride ``S`` = 181,
odd, so the warp's rows fall in different banks) and the weights from global memory
(L1-cached; each warp reads a few consecutive weights per input), and keeps its
``NC x NO`` accumulators in registers. The hidden activations go back into the chunk;
then noise (the shared generator, :mod:`fastca.rng`) and the residual add are written
to the state. Fire masks are therefore bit-identical to numba-cpu and torch.

Memory: the state plus the halo copies, ``2 / seg_rows + 2 / TW`` of it (1.125x at
``seg_rows`` = 32), in the state's storage type (float32, or float16: loads widen to
float32 and each updated channel is rounded once, as on the CPU).
Shared memory per block: ring 6*34*20 + chunk 32*181 floats + index lists = 41.5 KB,
under the 48 KB of static shared memory that needs no opt-in.
"""

import numpy as np
from numba import float32, int32, uint64

from fastca import rng, spec
from ._numba_cuda import numba_cuda

cuda = numba_cuda()

C = spec.CHANNELS
N_COUNTS = spec.N_COUNTS
HID = spec.HIDDEN
OUT = spec.MUTABLE
PIN = spec.PERCEPTION_IN
PAIRS = (OUT + 1) // 2
TW = 32  #: strip width: columns per block
TH = 4  #: rows per sub-tile
M = 32  #: cells per MLP chunk
S = PIN + 1  #: row stride of the chunk buffer (odd: conflict-free shared-memory rows)
SUB = TH * TW  #: cells per sub-tile
# shared-array sizes must be compile-time literals: plain module globals
RING_W = TW + 2
RING_H = TH + 2
RING_SIZE = RING_H * RING_W * C
CHUNK_SIZE = M * S
SHARED_BYTES = 4 * (RING_SIZE + CHUNK_SIZE) + 12 * SUB + 16 * M + 4

#: thread layouts (cell groups NCG, output groups NOG); threads per block = NCG * NOG
LAYOUTS = {"64": (8, 8), "128": (8, 16)}
DEFAULT_LAYOUT = "128"


def _make_step(ncg, nog, half, mode=0):
    """Compile-time specialisation of the step kernel for one thread layout and storage type.

    ``mode`` exists for the benchmark's time breakdown only: 1 skips the MLP (the update
    adds stale values), 2 skips gathering and the MLP; 0 is the real kernel.
    """
    nt = ncg * nog
    nc = M // ncg  # cells per thread
    no1 = HID // nog  # hidden outputs per thread
    no3 = -(-OUT // nog)  # outputs of the last layer per thread
    per_row = TW * C // nt  # interior ring values each thread loads per row
    cast = np.float16 if half else np.float32
    # Hot loops index with unsigned integers: Numba wraps negative signed indices around
    # (`i < 0 ? i + n : i`), five integer instructions per load, which an unsigned index
    # skips. Every operand must then be unsigned (uint64 mixed with int64 gives float64).
    u = np.uint64
    U0, U1, UC, US, UHID, UOUT = u(0), u(1), u(C), u(S), u(HID), u(OUT)
    UNT, UNCG, UNOG, UNC, UNO1, UNO3, UPER = u(nt), u(ncg), u(nog), u(nc), u(no1), u(no3), u(per_row)
    UPIN, UCS = u(PIN), u(ncg * S)

    def make_loader(n_rows):
        """Device function loading ring rows r0..r0+n_rows-1: every load issued before any store."""
        n_vals = n_rows * per_row  # local-array sizes must be plain constants, not expressions

        @cuda.jit(device=True)
        def load(state, rowhalo, colhalo, ring, r0, b, seg, strip, y0, ys0, ys1, height, width, n_rb, n_cb):
            tid = cuda.threadIdx.x
            x0 = strip * TW
            n_strip = -(-width // TW)
            lim = (width - x0) * C  # interior values inside the grid
            vals = cuda.local.array(n_vals, float32)
            edge = cuda.local.array(n_rows, float32)
            utid = u(tid)
            ulim = u(max(lim, 0))
            for rr in range(u(n_rows)):
                gy = y0 - 1 + r0 + np.int64(rr)
                inside = 0 <= gy < height
                above = inside and gy < ys0  # the row above the segment: saved by save_halos
                below = inside and gy == ys1  # the row below it
                mine = inside and ys0 <= gy < ys1
                src = rowhalo if above or below else state
                base = ((b * height + gy) * width + x0) * C
                if above:
                    base = ((b * n_rb + seg - 1) * 2 * width + x0) * C
                elif below:
                    base = (((b * n_rb + seg) * 2 + 1) * width + x0) * C
                ubase = u(max(base, 0)) + utid
                for j in range(UPER):
                    v = float32(0.0)
                    if (mine or above or below) and utid + UNT * j < ulim:
                        v = float32(src[ubase + UNT * j])
                    vals[rr * UPER + j] = v
                v = float32(0.0)
                if tid < 2 * C and inside:
                    side = tid // C
                    c = tid - side * C
                    if side == 0 and strip > 0:
                        v = float32(colhalo[u((((b * n_cb + strip - 1) * 2) * height + gy) * C + c)])
                    elif side == 1 and strip + 1 < n_strip:
                        v = float32(colhalo[u((((b * n_cb + strip) * 2 + 1) * height + gy) * C + c)])
                edge[rr] = v
            for rr in range(u(n_rows)):
                row = (u(r0) + rr) * u(RING_W * C)
                for j in range(UPER):
                    ring[row + UC + utid + UNT * j] = vals[rr * UPER + j]
                if tid < 2 * C:
                    side = tid // C
                    ring[row + u(side * (TW + 1) * C + tid - side * C)] = edge[rr]

        return load

    load_two = make_loader(2)
    load_sub = make_loader(TH)

    @cuda.jit(device=True)
    def flush(state, base_b, height, width, count, chunk, slot_y, slot_x, slot_key, w1, b1, w2, b2, w3, b3,
              noise_std, bad):
        """MLP of the ``count`` gathered cells of ``chunk`` and their residual update (the whole block)."""
        tid = cuda.threadIdx.x
        cg = tid % ncg
        og = tid // ncg
        acc = cuda.local.array((nc, no1), float32)
        a = cuda.local.array(nc, float32)
        wv = cuda.local.array(no1, float32)
        an = cuda.local.array(nc, float32)
        wn = cuda.local.array(no1, float32)
        if mode == 0:
            row0 = u(cg) * US  # chunk row of this thread's first cell; cell r is UCS further on
            col0 = u(og)  # this thread's first output; output q is UNOG further on
            for layer in range(2):
                n_in = UPIN if layer == 0 else UHID
                w = w1 if layer == 0 else w2
                bias = b1 if layer == 0 else b2
                for q in range(UNO1):
                    bq = bias[col0 + UNOG * q]
                    for r in range(UNC):
                        acc[r, q] = bq
                for r in range(UNC):
                    a[r] = chunk[row0 + UCS * r]
                for q in range(UNO1):
                    wv[q] = w[col0 + UNOG * q]
                for k in range(n_in):
                    # fetch the next input's operands before this one's products (hides their latency)
                    kn = k + U1 if k + U1 < n_in else k
                    for r in range(UNC):
                        an[r] = chunk[row0 + UCS * r + kn]
                    for q in range(UNO1):
                        wn[q] = w[kn * UHID + col0 + UNOG * q]
                    for r in range(UNC):
                        for q in range(UNO1):
                            acc[r, q] += a[r] * wv[q]
                    for r in range(UNC):
                        a[r] = an[r]
                    for q in range(UNO1):
                        wv[q] = wn[q]
                cuda.syncthreads()  # every thread has read the layer's inputs
                for r in range(UNC):
                    for q in range(UNO1):
                        chunk[row0 + UCS * r + col0 + UNOG * q] = max(acc[r, q], float32(0.0))
                cuda.syncthreads()
            acc3 = cuda.local.array((nc, no3), float32)
            wv3 = cuda.local.array(no3, float32)
            for q in range(UNO3):
                for r in range(UNC):
                    acc3[r, q] = 0.0
            for k in range(UHID):
                for r in range(UNC):
                    a[r] = chunk[row0 + UCS * r + k]
                for q in range(UNO3):
                    o = col0 + UNOG * q
                    wv3[q] = w3[k * UOUT + o] if o < UOUT else float32(0.0)
                for r in range(UNC):
                    for q in range(UNO3):
                        acc3[r, q] += a[r] * wv3[q]
            cuda.syncthreads()
            for r in range(UNC):
                for q in range(UNO3):
                    o = col0 + UNOG * q
                    if o < UOUT:
                        chunk[row0 + UCS * r + o] = acc3[r, q]
            cuda.syncthreads()
        # residual add: one (cell, channel pair) per item
        for i in range(tid, count * PAIRS, nt):
            m = i // PAIRS
            pair = i - m * PAIRS
            cell = ((base_b + slot_y[m]) * width + slot_x[m]) * C
            o = 2 * pair
            d0 = chunk[m * S + o] + b3[o]
            d1 = float32(0.0)
            if o + 1 < OUT:
                d1 = chunk[m * S + o + 1] + b3[o + 1]
            if noise_std > 0:
                z0, z1 = rng.normal_pair(slot_key[m], pair)
                d0 = d0 + z0 * noise_std
                d1 = d1 + z1 * noise_std
            state[cell + 1 + o] = cast(float32(state[cell + 1 + o]) + d0)
            check = float32(state[cell + 1 + o]) * float32(0.0)  # NaN when the value is NaN or inf
            if o + 1 < OUT:
                state[cell + 2 + o] = cast(float32(state[cell + 2 + o]) + d1)
                check += float32(state[cell + 2 + o]) * float32(0.0)
            if check != 0:
                bad[0] = 1 + base_b // height  # 1 + the sample of a cell that became non-finite
        cuda.syncthreads()  # the chunk is free again

    @cuda.jit
    def step(state, rowhalo, colhalo, height, width, n_rb, n_cb, w1, b1, w2, b2, w3, b3, seed, step_idx, fire_rate,
             noise_std, alive_thr, seg_rows, b_off, strip_off, seg_off, origin_b, origin_y, origin_x, bad):
        """One in-place step of the cells of one (strip, segment, sample); run ``save_halos`` first.

        Grid (strips, segments, samples - b_off), block (NCG * NOG,). Arrays are flat views:
        state (B*H*W*20,) float32 or float16 ((B, H, W, 20) C order); rowhalo
        ((B, n_rb, 2, W, 20) flattened) and colhalo ((B, n_cb, 2, H, 20) flattened), same
        dtype. Weights: w1 (180*80,), b1 (80,), w2 (80*80,), b2 (80,), w3 (80*19,), b3 (19,),
        flat float32 in (in, out) order. seed: uint64; step_idx: int64; fire_rate, noise_std,
        alive_thr: float32; seg_rows: rows per segment; b_off, strip_off, seg_off: first sample,
        strip and segment of this launch; origin_*: global coordinates of cell (0, 0, 0) for
        the random keys; bad: (1,) int64, set to 1 + the sample of a cell that became
        non-finite (NaN or inf).
        """
        ring = cuda.shared.array(RING_SIZE, float32)
        chunk = cuda.shared.array(CHUNK_SIZE, float32)
        sub_pos = cuda.shared.array(SUB, int32)
        sub_key = cuda.shared.array(SUB, uint64)
        slot_y = cuda.shared.array(M, int32)
        slot_x = cuda.shared.array(M, int32)
        slot_key = cuda.shared.array(M, uint64)
        counter = cuda.shared.array(1, int32)

        tid = cuda.threadIdx.x
        strip = cuda.blockIdx.x + strip_off
        seg = cuda.blockIdx.y + seg_off
        b = cuda.blockIdx.z + b_off
        x0 = strip * TW
        ys0 = seg * seg_rows
        ys1 = min(ys0 + seg_rows, height)
        count = 0
        for y0 in range(ys0, ys1, TH):
            if tid == 0:
                counter[0] = 0
            # Ring rows r = 0..TH+1 hold global rows y0-1+r, columns 0..TW+1 global x0-1+col.
            if y0 == ys0:
                load_two(state, rowhalo, colhalo, ring, 0, b, seg, strip, y0, ys0, ys1, height, width, n_rb, n_cb)
            else:  # rows y0-1 (old values, maybe written since) and y0 (unwritten) from the previous ring
                for i in range(tid, 2 * RING_W * C, nt):
                    ring[i] = ring[TH * RING_W * C + i]
                cuda.syncthreads()  # rows TH, TH+1 are reloaded below
            load_sub(state, rowhalo, colhalo, ring, 2, b, seg, strip, y0, ys0, ys1, height, width, n_rb, n_cb)
            cuda.syncthreads()
            # Compact the cells of this sub-tile that are alive and fire.
            for i in range(tid, SUB, nt):
                r = 1 + i // TW
                col = 1 + i - (r - 1) * TW
                gy = y0 - 1 + r
                gx = x0 - 1 + col
                if gy < ys1 and gx < width and ring[(r * RING_W + col) * C] > alive_thr:
                    key = np.uint64(rng.cell_key(seed, step_idx, origin_b + b, origin_y + gy, origin_x + gx))
                    if rng.fire_uniform(key) <= fire_rate:
                        j = cuda.atomic.add(counter, 0, 1)
                        sub_pos[j] = r * RING_W + col
                        sub_key[j] = key
            cuda.syncthreads()
            n = counter[0] if mode != 2 else 0
            # Gather their neighbourhoods into the chunk; run the MLP whenever it is full.
            done = 0
            while done < n:
                take = min(n - done, M - count)
                for i in range(tid, take * 9, nt):  # one (cell, neighbour) per item, 20 channels each
                    j = i // 9
                    ij = i - 9 * j
                    di = ij // 3
                    src = u((sub_pos[done + j] + (di - 1) * RING_W + (ij - 3 * di - 1)) * C)
                    dst = u((count + j) * S + ij * C)
                    for c in range(UC):
                        chunk[dst + c] = ring[src + c]
                for i in range(tid, take, nt):
                    p = sub_pos[done + i]
                    slot_y[count + i] = y0 - 1 + p // RING_W
                    slot_x[count + i] = x0 - 1 + p % RING_W
                    slot_key[count + i] = sub_key[done + i]
                count += take
                done += take
                if count == M:
                    cuda.syncthreads()
                    flush(state, b * height, height, width, count, chunk, slot_y, slot_x, slot_key,
                          w1, b1, w2, b2, w3, b3, noise_std, bad)
                    count = 0
            cuda.syncthreads()  # ring, counter and lists are rewritten by the next sub-tile
        if count > 0:
            flush(state, b * height, height, width, count, chunk, slot_y, slot_x, slot_key,
                  w1, b1, w2, b2, w3, b3, noise_std, bad)

    return step


_STEP_CACHE = {}


def step_kernel(layout=DEFAULT_LAYOUT, half=False, mode=0):
    """The compiled step kernel for a thread layout (a key of LAYOUTS) and storage (float16 if ``half``)."""
    key = (layout, bool(half), mode)
    if key not in _STEP_CACHE:
        _STEP_CACHE[key] = _make_step(*LAYOUTS[layout], bool(half), mode)
    return _STEP_CACHE[key]


def threads_per_block(layout=DEFAULT_LAYOUT):
    ncg, nog = LAYOUTS[layout]
    return ncg * nog


@cuda.jit
def save_halos(state, rowhalo, colhalo, seg_rows):
    """Copy the cells on both sides of every segment and strip boundary, one cell per item.

    rowhalo[b, s, 0] = row (s+1)*seg_rows - 1 and rowhalo[b, s, 1] = row (s+1)*seg_rows
    (boundary s, between segments s and s+1); colhalo[b, l, 0] = column (l+1)*TW - 1 and
    colhalo[b, l, 1] = column (l+1)*TW (boundary l, between strips l and l+1).
    """
    n_b, height, width = state.shape[0], state.shape[1], state.shape[2]
    n_rb = -(-height // seg_rows) - 1
    n_cb = -(-width // TW) - 1
    n_rows = n_b * n_rb * 2 * width
    n_cols = n_b * n_cb * 2 * height
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n_rows + n_cols:
        if i < n_rows:  # item = ((b, boundary s, side) row, column x)
            x, side, s, b = _boundary_item(i, width, n_rb)
            y = (s + 1) * seg_rows - 1 + side
            if y < height:
                for c in range(C):
                    rowhalo[b, s, side, x, c] = state[b, y, x, c]
        else:  # item = ((b, boundary l, side) column, row y)
            y, side, ll, b = _boundary_item(i - n_rows, height, n_cb)
            x = (ll + 1) * TW - 1 + side
            if x < width:
                for c in range(C):
                    colhalo[b, ll, side, y, c] = state[b, y, x, c]
        i += stride


@cuda.jit(device=True)
def _boundary_item(i, n_pos, n_bound):
    """(position, side, boundary, sample) of flat item i over (B, n_bound, 2, n_pos)."""
    t = i // n_pos
    return i - t * n_pos, t % 2, (t // 2) % n_bound, (t // 2) // n_bound


def halo_shapes(batch, height, width, seg_rows):
    """(rowhalo shape, colhalo shape) for a (batch, height, width) grid; at least one boundary each."""
    n_rb = max(1, -(-height // seg_rows) - 1)
    n_cb = max(1, -(-width // TW) - 1)
    return (batch, n_rb, 2, width, C), (batch, n_cb, 2, height, C)


def choose_seg_rows(batch, height, width, sms):
    """Rows per segment: the largest of 128, 64, 32, 16 that still gives about 32 blocks per SM."""
    strips = -(-width // TW)
    for rows in (128, 64, 32):
        if batch * strips * -(-height // rows) >= 32 * sms:
            return rows
    return 16


_is_alive = cuda.jit(device=True)(spec.is_alive)
_label_of = cuda.jit(device=True)(spec.label_of)
_unit_gray = cuda.jit(device=True)(spec.unit_gray)


@cuda.jit(device=True)
def _cell_of(i, height, width):
    """(sample, row, column) of flat cell index i in a (B, H, W) grid."""
    return i // (width * height), (i // width) % height, i % width


@cuda.jit(device=True)
def _label(state, b, y, x):
    """spec's label rule on a float32 copy of the cell's channels (the state may be float16)."""
    cell = cuda.local.array(C, float32)
    for c in range(spec.CLASS_START, C):
        cell[c] = float32(state[b, y, x, c])
    return _label_of(cell)


@cuda.jit
def count_kernel(state, alive_thr, targets, counts):
    """Per-sample counts for the metrics, in the layout of spec.N_COUNTS, added into counts[b].

    Grid (blocks per sample, B). state: (B, H, W, 20) float32/float16; targets: (B, H, W)
    int16 (-1: no target); counts: (B, 13) int64, zeroed by the caller. Each block sums in
    shared memory first, so the global atomics do not all hit the same 13 words.
    """
    local = cuda.shared.array(N_COUNTS, int32)
    tid = cuda.threadIdx.x
    if tid < N_COUNTS:
        local[tid] = 0
    cuda.syncthreads()
    b = cuda.blockIdx.y
    height, width = state.shape[1], state.shape[2]
    i = cuda.blockIdx.x * cuda.blockDim.x + tid
    while i < height * width:
        y = i // width
        x = i - y * width
        if _is_alive(float32(state[b, y, x, 0]), alive_thr):
            label, label11 = _label(state, b, y, x)
            cuda.atomic.add(local, 0, 1)
            if targets[b, y, x] >= 0:
                cuda.atomic.add(local, spec.COUNT_TARGETED, 1)
                if label == targets[b, y, x]:
                    cuda.atomic.add(local, 1, 1)
            if label11 < spec.N_CLASSES:
                cuda.atomic.add(local, 2 + label11, 1)
        i += cuda.gridDim.x * cuda.blockDim.x
    cuda.syncthreads()
    if tid < N_COUNTS and local[tid] != 0:
        cuda.atomic.add(counts, (b, tid), local[tid])


@cuda.jit
def label_kernel(state, alive_thr, out):
    """out[b, y, x] = label of each alive cell, -1 on dead cells (int8 (B, H, W))."""
    n_b, height, width = state.shape[0], state.shape[1], state.shape[2]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n_b * height * width:
        b, y, x = _cell_of(i, height, width)
        if _is_alive(float32(state[b, y, x, 0]), alive_thr):
            out[b, y, x] = _label(state, b, y, x)[0]
        else:
            out[b, y, x] = -1
        i += stride


@cuda.jit
def init_kernel(gray, is_uint8, state):
    """state = initial state of ``gray`` (B, H, W): channel 0 = gray (uint8 through spec.unit_gray)."""
    n_b, height, width = state.shape[0], state.shape[1], state.shape[2]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n_b * height * width:
        b, y, x = _cell_of(i, height, width)
        g = gray[b, y, x]
        state[b, y, x, 0] = _unit_gray(g) if is_uint8 else float32(g)
        for c in range(1, C):
            state[b, y, x, c] = 0.0
        i += stride


@cuda.jit
def copy_window(state, b0, y0, x0, out):
    """out (nb, h, w, 20) = state[b0:b0+nb, y0:y0+h, x0:x0+w] in out's type (the window lies inside).

    Reads a window to the host (float32 out), and rounds a float32 state into float16 storage.
    """
    n_b, height, width = out.shape[0], out.shape[1], out.shape[2]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n_b * height * width:
        b, y, x = _cell_of(i, height, width)
        for c in range(C):
            out[b, y, x, c] = float32(state[b0 + b, y0 + y, x0 + x, c])
        i += stride


@cuda.jit
def write_gray(state, b0, y0, x0, gray, alive_thr):
    """Mutate a window: channel 0 = gray (nb, h, w) float32; channels 1..19 zeroed where the new gray is dead."""
    n_b, height, width = gray.shape[0], gray.shape[1], gray.shape[2]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n_b * height * width:
        b, y, x = _cell_of(i, height, width)
        g = gray[b, y, x]
        state[b0 + b, y0 + y, x0 + x, 0] = g
        if not _is_alive(float32(state[b0 + b, y0 + y, x0 + x, 0]), alive_thr):
            for c in range(1, C):
                state[b0 + b, y0 + y, x0 + x, c] = 0.0
        i += stride


@cuda.jit
def count_outside(values, lo, hi, out):
    """out[0] += the number of elements of the flat array ``values`` not in [lo, hi] (NaN counts: its
    comparisons are false). Device input is checked with it before any step, as host input is."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = 0
    while i < values.size:
        v = float32(values[i])
        if not (v >= lo and v <= hi):
            n += 1
        i += stride
    if n > 0:
        cuda.atomic.add(out, 0, n)


def launch_1d(n, threads=256):
    """(blocks, threads) for a grid-stride loop over n items, capped so launches stay small."""
    return max(1, min(-(-n // threads), 65535)), threads
