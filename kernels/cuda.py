"""Numba CUDA kernel template: one fused, in-place step of a 3x3 neural CA per launch (plus a halo copy).

This module is a template (see :mod:`.generate`): its sizes live in the generated block
below, which :mod:`.cuda_shape` renders for each model description, so every description
runs its own compiled copy with its sizes as compile-time constants. As shipped, the block
holds the self-classifying MNIST model (and :func:`.cuda_shape.render` of that description
gives the same block).

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

Boundary. ``WRAP`` False: cells outside the grid read zeros. ``WRAP`` True (a torus per
sample): the halos get one more row boundary, after the last segment (side 0: the
sample's last row, side 1: its first row), and one more column boundary, after the last
strip (its last and first column); the first segment reads its row above (-1) and the
last segment its row below (H) there, the first strip its left column (-1) and the last
strip its right column (W, placed right after the strip's last grid column) likewise.

Alive rule (``ALIVE``). 1, static: a cell may update when its channel ``ALIVE_CH`` (in
the ring) is above the threshold; that channel is never written. 0, none: every cell may
update. 2, max-pool: :func:`maxpool_pre` writes, before the step, a (B, H, W) uint8 mask,
bit 0: alive before the step (the 3x3 max of channel ``ALIVE_CH``, cells outside the
grid ignored, above the threshold), bit 1: within two cells of a cell above it (the 5x5
max): the cells within one cell of an alive one, the only ones whose update can matter
(any other cell is zeroed after the step and only feeds the rule of cells that are zeroed
too). The step updates the firing cells with bit 1; then :func:`maxpool_keep` sets the
mask to alive before and after, and :func:`zero_dead` zeroes every cell it does not keep.

Compaction and blocked MLP. Per sub-tile, the cells that may update and fire are
compacted (a shared-memory counter), and their perception written into a **chunk** of
``M`` rows of ``PIN`` inputs: a learned 3x3 perception gathers the 3x3xC neighbourhood
from the ring (9 C inputs in (kernel row, kernel column, channel) order: the rows of its
HWIO weights), a depthwise one computes its fixed filters there (:func:`perceive`,
feature ``c * F + f``). When a chunk is full (or the segment ends) the block runs the
MLP on it, one register-tiled matrix product per learned layer (``LAYERS``): thread
``(cg, og)`` owns cells ``cg + NCG*r`` and outputs ``og + NOG*q`` (``r < NC``, ``q <
NO``), reads its inputs from the chunk in shared memory (row stride ``S``, odd, so the
warp's rows fall in different banks) and the weights from global memory (one packed
float32 array, :func:`.cuda_shape.pack_weights`; L1-cached; each warp reads a few
consecutive weights per input), and keeps its ``NC x NO`` accumulators in registers.
Two consecutive layers of one width (MNIST's two hidden layers) run as one loop over
layers, one copy of the code, as the MNIST kernel was tuned. Each layer's outputs go back
into the chunk; then noise (the shared generator,
:mod:`fastca.rng`) and the residual add are written to the state. Fire masks are
therefore bit-identical to numba-cpu and torch.

Memory: the state plus the halo copies, ``2 / seg_rows + 2 / TW`` of it (1.125x at
``seg_rows`` = 32), in the state's storage type (float32, or float16: loads widen to
float32 and each updated channel is rounded once, as on the CPU).
Shared memory per block: ring (TH+2)*(TW+2)*C + chunk M*S floats + index lists, under the
48 KB of static shared memory that needs no opt-in (MNIST: 6*34*20 + 32*181 floats, 41.5 KB).
"""

import numpy as np
from numba import float32, int32, uint64

from fastca import rng, spec
from fastca.kernels._numba_cuda import numba_cuda

cuda = numba_cuda()

# <generated>
C = 20  # channels per cell
R0 = 1  # first channel the residual updates
OUT = 19  # channels it updates (the last layer's width)
ALIVE = 1  # alive rule: 0 none (every cell updates), 1 static, 2 max-pool
ALIVE_CH = 0  # the channel the alive rule reads
WRAP = False  # boundary: the other side of the sample (torus) instead of zeros
DEPTHWISE = False  # perception: fixed depthwise filters (perceive) instead of a learned 3x3 convolution
PIN = 180  # inputs of the first learned layer per cell (9 C: the 3x3 neighbourhood)
TW = 32  # strip width: columns per block
TH = 4  # rows per sub-tile
M = 32  # cells per MLP chunk
S = 181  # row stride of the chunk buffer (odd: conflict-free shared-memory rows; >= every layer's width)
#: learned layers, in order: (inputs, outputs, relu, bias offset or -1, weight offset) in the packed weights
LAYERS = ((180, 80, True, 14400, 0), (80, 80, True, 20896, 14496), (80, 19, False, -1, 20992))
OUT_BIAS = 22528  # offset of the last layer's bias, added with the residual (-1: none)
WEIGHTS = 22560  # floats in the packed weights


@cuda.jit(device=True)
def perceive(ring, src, chunk, dst):
    """Depthwise perception (unused: this model's perception is a learned convolution)."""
# </generated>

PAIRS = (OUT + 1) // 2
SUB = TH * TW  #: cells per sub-tile
# shared-array sizes must be compile-time literals: plain module globals
RING_W = TW + 2
RING_H = TH + 2
RING_SIZE = RING_H * RING_W * C
CHUNK_SIZE = M * S
SHARED_BYTES = 4 * (RING_SIZE + CHUNK_SIZE) + 12 * SUB + 16 * M + 4
GRAY_CH = ALIVE_CH  #: the channel a gray image goes into (static rule)
N_COUNTS = spec.N_COUNTS  #: the metrics' counts (MNIST layout)
MNIST_C = spec.CHANNELS  #: channels of the MNIST layout the metrics kernels read

_is_alive = cuda.jit(device=True)(spec.is_alive)  # the alive test of every rule (NVVM inlines the compare)

#: thread layouts (cell groups NCG, output groups NOG); threads per block = NCG * NOG
LAYOUTS = {"64": (8, 8), "128": (8, 16)}
DEFAULT_LAYOUT = "128"


def _runs(layers):
    """Group the learned layers but the last into runs of one or two consecutive layers with the
    same (outputs, relu, bias?): a run executes as one loop over its layers (MNIST: its two
    hidden layers, as the kernel was tuned)."""
    runs = []
    for layer in layers[:-1]:  # (inputs, outputs, relu, bias offset, weight offset)
        if (runs and len(runs[-1]) < 2 and runs[-1][0][1:3] == layer[1:3]
                and (runs[-1][0][3] >= 0) == (layer[3] >= 0)):
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return runs


def _make_step(ncg, nog, half, mode=0):
    """Compile-time specialisation of the step kernel for one thread layout and storage type.

    ``mode`` exists for the benchmark's time breakdown only: 1 skips the MLP (the update
    adds stale values), 2 skips gathering and the MLP; 0 is the real kernel.
    """
    nt = ncg * nog
    if M % ncg:
        raise ValueError(f"a chunk of {M} cells cannot be split among {ncg} cell groups")
    nc = M // ncg  # cells per thread
    per_row = -(-TW * C // nt)  # interior ring values each thread loads per row
    row_exact = TW * C == per_row * nt  # every thread's loads lie in the row (else a bound check)
    n_edge = -(-2 * C // nt)  # edge-column values each thread loads per row
    cast = np.float16 if half else np.float32
    # Hot loops index with unsigned integers: Numba wraps negative signed indices around
    # (`i < 0 ? i + n : i`), five integer instructions per load, which an unsigned index
    # skips. Every operand must then be unsigned (uint64 mixed with int64 gives float64).
    u = np.uint64
    U1, UC, US, UOUT = u(1), u(C), u(S), u(OUT)
    UNT, UNOG, UNC, UPER = u(nt), u(nog), u(nc), u(per_row)
    UCS = u(ncg * S)
    UNEDGE = u(n_edge)
    UOB = u(max(OUT_BIAS, 0))
    ROW_VALUES = TW * C

    def make_loader(n_rows):
        """Device function loading ring rows r0..r0+n_rows-1: every load issued before any store."""
        n_vals = n_rows * per_row  # local-array sizes must be plain constants, not expressions
        n_edges = n_rows * n_edge

        @cuda.jit(device=True)
        def load(state, rowhalo, colhalo, ring, r0, b, seg, strip, y0, ys0, ys1, height, width, n_rb, n_cb):
            tid = cuda.threadIdx.x
            x0 = strip * TW
            n_strip = -(-width // TW)
            lim = (width - x0) * C  # interior values inside the grid
            if WRAP or not row_exact:
                lim = min(lim, ROW_VALUES)
            vals = cuda.local.array(n_vals, float32)
            edge = cuda.local.array(n_edges, float32)
            utid = u(tid)
            ulim = u(max(lim, 0))
            for rr in range(u(n_rows)):
                gy = y0 - 1 + r0 + np.int64(rr)
                inside = 0 <= gy < height
                if WRAP:  # rows -1 and H: the sample's last and first row
                    inside = -1 <= gy <= height
                above = inside and gy < ys0  # the row above the segment: saved by save_halos
                below = inside and gy == ys1  # the row below it
                mine = inside and ys0 <= gy < ys1
                src = rowhalo if above or below else state
                base = ((b * height + gy) * width + x0) * C
                if above:
                    s_above = seg - 1
                    if WRAP and seg == 0:
                        s_above = n_rb - 1  # the wrap boundary: side 0 is the last row
                    base = ((b * n_rb + s_above) * 2 * width + x0) * C
                elif below:
                    base = (((b * n_rb + seg) * 2 + 1) * width + x0) * C
                ubase = u(max(base, 0)) + utid
                for j in range(UPER):
                    v = float32(0.0)
                    if (mine or above or below) and utid + UNT * j < ulim:
                        v = float32(src[ubase + UNT * j])
                    vals[rr * UPER + j] = v
            for k in range(u(n_edges)):  # the columns left and right of the strip: one (side, channel) per item
                rr = k // UNEDGE
                i = tid + nt * np.int64(k - rr * UNEDGE)
                gy = y0 - 1 + r0 + np.int64(rr)
                inside = 0 <= gy < height
                gyc = gy  # the row in the column halos
                if WRAP:
                    inside = -1 <= gy <= height
                    gyc = gy + height if gy < 0 else (gy - height if gy >= height else gy)
                v = float32(0.0)
                if i < 2 * C and inside:
                    side = i // C
                    c = i - side * C
                    if side == 0 and strip > 0:
                        v = float32(colhalo[u((((b * n_cb + strip - 1) * 2) * height + gyc) * C + c)])
                    elif side == 1 and strip + 1 < n_strip:
                        v = float32(colhalo[u((((b * n_cb + strip) * 2 + 1) * height + gyc) * C + c)])
                    elif WRAP:  # left of the first strip, right of the last: the wrap boundary
                        v = float32(colhalo[u((((b * n_cb + n_cb - 1) * 2 + side) * height + gyc) * C + c)])
                edge[k] = v
            rcol = TW + 1  # ring column of the right neighbour column
            if WRAP:  # the grid's column W (wrapped: column 0) right after the last grid column
                rcol = min(TW, width - x0) + 1
            # Interior values to store: the whole row (zeros past the grid's edge, which its last column
            # reads), or, wrapping, only the grid's columns (column rcol gets the wrapped edge below).
            ustop = ulim if WRAP else u(ROW_VALUES)
            for rr in range(u(n_rows)):
                row = (u(r0) + rr) * u(RING_W * C)
                for j in range(UPER):
                    if (row_exact and not WRAP) or utid + UNT * j < ustop:
                        ring[row + UC + utid + UNT * j] = vals[rr * UPER + j]
            for k in range(u(n_edges)):
                rr = k // UNEDGE
                i = tid + nt * np.int64(k - rr * UNEDGE)
                if i < 2 * C:
                    side = i // C
                    ring[(u(r0) + rr) * u(RING_W * C) + u(side * rcol * C + i - side * C)] = edge[k]

        return load

    load_two = make_loader(2)
    load_sub = make_loader(TH)

    def make_run(run):
        """Device function: the layers of one run (same outputs, relu, bias?), each read from and written
        to the chunk; prefetches the next input's operands before each input's products."""
        n_out, relu, biased = run[0][1], run[0][2], run[0][3] >= 0
        n_layers = len(run)
        no = -(-n_out // nog)  # outputs per thread
        exact = n_out % nog == 0
        UN_OUT, UNO = u(n_out), u(no)
        N_INS = tuple(u(x[0]) for x in run)
        B_OFFS = tuple(u(max(x[3], 0)) for x in run)
        W_OFFS = tuple(u(x[4]) for x in run)

        @cuda.jit(device=True)
        def run_layers(chunk, wts):
            tid = cuda.threadIdx.x
            cg = tid % ncg
            og = tid // ncg
            acc = cuda.local.array((nc, no), float32)
            a = cuda.local.array(nc, float32)
            wv = cuda.local.array(no, float32)
            an = cuda.local.array(nc, float32)
            wn = cuda.local.array(no, float32)
            row0 = u(cg) * US  # chunk row of this thread's first cell; cell r is UCS further on
            col0 = u(og)  # this thread's first output; output q is UNOG further on
            for layer in range(n_layers):
                # (a select, not a tuple indexed at run time: that costs 32 registers)
                n_in = N_INS[0] if layer == 0 else N_INS[-1]
                w = W_OFFS[0] if layer == 0 else W_OFFS[-1]
                for q in range(UNO):
                    bq = float32(0.0)
                    if biased and (exact or col0 + UNOG * q < UN_OUT):
                        bq = wts[(B_OFFS[0] if layer == 0 else B_OFFS[-1]) + col0 + UNOG * q]
                    for r in range(UNC):
                        acc[r, q] = bq
                for r in range(UNC):
                    a[r] = chunk[row0 + UCS * r]
                for q in range(UNO):
                    wv[q] = wts[w + col0 + UNOG * q] if exact or col0 + UNOG * q < UN_OUT else float32(0.0)
                for k in range(n_in):
                    # fetch the next input's operands before this one's products (hides their latency)
                    kn = k + U1 if k + U1 < n_in else k
                    for r in range(UNC):
                        an[r] = chunk[row0 + UCS * r + kn]
                    for q in range(UNO):
                        o = col0 + UNOG * q
                        wn[q] = wts[w + kn * UN_OUT + o] if exact or o < UN_OUT else float32(0.0)
                    for r in range(UNC):
                        for q in range(UNO):
                            acc[r, q] += a[r] * wv[q]
                    for r in range(UNC):
                        a[r] = an[r]
                    for q in range(UNO):
                        wv[q] = wn[q]
                cuda.syncthreads()  # every thread has read the layer's inputs
                for r in range(UNC):
                    for q in range(UNO):
                        o = col0 + UNOG * q
                        if exact or o < UN_OUT:
                            chunk[row0 + UCS * r + o] = max(acc[r, q], float32(0.0)) if relu else acc[r, q]
                cuda.syncthreads()

        return run_layers

    def make_last(layer):
        """Device function: the last layer (its bias here only with a relu; else it comes with the residual)."""
        n_in, n_out, relu, b_off, w_off = layer
        no = -(-n_out // nog)
        UIN, UNO, UW, UB = u(n_in), u(no), u(w_off), u(max(b_off, 0))
        biased = b_off >= 0

        @cuda.jit(device=True)
        def last(chunk, wts):
            tid = cuda.threadIdx.x
            cg = tid % ncg
            og = tid // ncg
            a = cuda.local.array(nc, float32)
            acc3 = cuda.local.array((nc, no), float32)
            wv3 = cuda.local.array(no, float32)
            row0 = u(cg) * US
            col0 = u(og)
            for q in range(UNO):
                bq = float32(0.0)
                if biased and col0 + UNOG * q < UOUT:
                    bq = wts[UB + col0 + UNOG * q]
                for r in range(UNC):
                    acc3[r, q] = bq
            for k in range(UIN):
                for r in range(UNC):
                    a[r] = chunk[row0 + UCS * r + k]
                for q in range(UNO):
                    o = col0 + UNOG * q
                    wv3[q] = wts[UW + k * UOUT + o] if o < UOUT else float32(0.0)
                for r in range(UNC):
                    for q in range(UNO):
                        acc3[r, q] += a[r] * wv3[q]
            cuda.syncthreads()
            for r in range(UNC):
                for q in range(UNO):
                    o = col0 + UNOG * q
                    if o < UOUT:
                        chunk[row0 + UCS * r + o] = max(acc3[r, q], float32(0.0)) if relu else acc3[r, q]
            cuda.syncthreads()

        return last

    def chain(first, rest):
        @cuda.jit(device=True)
        def both(chunk, wts):
            first(chunk, wts)
            rest(chunk, wts)

        return both

    mlp = make_last(LAYERS[-1])
    for run in reversed(_runs(LAYERS)):
        mlp = chain(make_run(run), mlp)

    @cuda.jit(device=True)
    def flush(state, base_b, height, width, count, chunk, slot_y, slot_x, slot_key, wts, noise_std, bad):
        """MLP of the ``count`` gathered cells of ``chunk`` and their residual update (the whole block)."""
        tid = cuda.threadIdx.x
        if mode == 0:
            mlp(chunk, wts)
        # residual add: one (cell, channel pair) per item
        for i in range(tid, count * PAIRS, nt):
            m = i // PAIRS
            pair = i - m * PAIRS
            cell = ((base_b + slot_y[m]) * width + slot_x[m]) * C + (R0 - 1)  # channel R0 + o is cell + 1 + o
            o = 2 * pair
            d0 = chunk[m * S + o]
            if OUT_BIAS >= 0:
                d0 += wts[UOB + u(o)]
            d1 = float32(0.0)
            if o + 1 < OUT:
                d1 = chunk[m * S + o + 1]
                if OUT_BIAS >= 0:
                    d1 += wts[UOB + u(o + 1)]
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

    @cuda.jit(device=True)
    def may_update(ring, pos, mask, cell, alive_thr):
        """The alive rule of the cell at ring position ``pos`` (flat cell index ``cell``)."""
        if ALIVE == 1:
            return _is_alive(ring[pos * C + ALIVE_CH], alive_thr)
        if ALIVE == 2:
            return (mask[cell] & 2) != 0  # within one cell of a cell alive before the step
        return True

    @cuda.jit
    def step(state, rowhalo, colhalo, height, width, n_rb, n_cb, wts, mask, seed, step_idx, fire_rate,
             noise_std, alive_thr, seg_rows, b_off, strip_off, seg_off, origin_b, origin_y, origin_x, bad):
        """One in-place step of the cells of one (strip, segment, sample); run ``save_halos`` first
        (and, under the max-pool rule, ``maxpool_pre``).

        Grid (strips, segments, samples - b_off), block (NCG * NOG,). Arrays are flat views:
        state (B*H*W*C,) float32 or float16 ((B, H, W, C) C order); rowhalo
        ((B, n_rb, 2, W, C) flattened) and colhalo ((B, n_cb, 2, H, C) flattened), same
        dtype. wts: the packed float32 weights (:func:`.cuda_shape.pack_weights`); mask:
        (B*H*W,) uint8, maxpool_pre's mask under the max-pool rule (else unused). seed: uint64;
        step_idx: int64; fire_rate, noise_std, alive_thr: float32; seg_rows: rows per segment;
        b_off, strip_off, seg_off: first sample, strip and segment of this launch; origin_*:
        global coordinates of cell (0, 0, 0) for the random keys; bad: (1,) int64, set to 1 +
        the sample of a cell that became non-finite (NaN or inf).
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
            # Compact the cells of this sub-tile that may update and fire.
            for i in range(tid, SUB, nt):
                r = 1 + i // TW
                col = 1 + i - (r - 1) * TW
                gy = y0 - 1 + r
                gx = x0 - 1 + col
                if gy < ys1 and gx < width and may_update(ring, r * RING_W + col, mask,
                                                          (b * height + gy) * width + gx, alive_thr):
                    key = np.uint64(rng.cell_key(seed, step_idx, origin_b + b, origin_y + gy, origin_x + gx))
                    if rng.fire_uniform(key) <= fire_rate:
                        j = cuda.atomic.add(counter, 0, 1)
                        sub_pos[j] = r * RING_W + col
                        sub_key[j] = key
            cuda.syncthreads()
            n = counter[0] if mode != 2 else 0
            # Gather their perception into the chunk; run the MLP whenever it is full.
            done = 0
            while done < n:
                take = min(n - done, M - count)
                if DEPTHWISE:  # one (cell, channel) per item: its F filters
                    for i in range(tid, take * C, nt):
                        j = i // C
                        c = i - j * C
                        perceive(ring, u(sub_pos[done + j] * C + c), chunk, u((count + j) * S + c * (PIN // C)))
                else:
                    for i in range(tid, take * 9, nt):  # one (cell, neighbour) per item, C channels each
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
                          wts, noise_std, bad)
                    count = 0
            cuda.syncthreads()  # ring, counter and lists are rewritten by the next sub-tile
        if count > 0:
            flush(state, b * height, height, width, count, chunk, slot_y, slot_x, slot_key,
                  wts, noise_std, bad)

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
    colhalo[b, l, 1] = column (l+1)*TW (boundary l, between strips l and l+1). Wrapping,
    the last boundary of each is the sample's edge: side 0 its last row (column), side 1
    its first.
    """
    n_b, height, width = state.shape[0], state.shape[1], state.shape[2]
    n_rb = -(-height // seg_rows) - (0 if WRAP else 1)
    n_cb = -(-width // TW) - (0 if WRAP else 1)
    n_rows = n_b * n_rb * 2 * width
    n_cols = n_b * n_cb * 2 * height
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n_rows + n_cols:
        if i < n_rows:  # item = ((b, boundary s, side) row, column x)
            x, side, s, b = _boundary_item(i, width, n_rb)
            y = (s + 1) * seg_rows - 1 + side
            if WRAP and s == n_rb - 1:
                y = height - 1 if side == 0 else 0
            if y < height:
                for c in range(C):
                    rowhalo[b, s, side, x, c] = state[b, y, x, c]
        else:  # item = ((b, boundary l, side) column, row y)
            y, side, ll, b = _boundary_item(i - n_rows, height, n_cb)
            x = (ll + 1) * TW - 1 + side
            if WRAP and ll == n_cb - 1:
                x = width - 1 if side == 0 else 0
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
    n_rb = max(1, -(-height // seg_rows) - (0 if WRAP else 1))
    n_cb = max(1, -(-width // TW) - (0 if WRAP else 1))
    return (batch, n_rb, 2, width, C), (batch, n_cb, 2, height, C)


def choose_seg_rows(batch, height, width, sms):
    """Rows per segment: the largest of 128, 64, 32, 16 that still gives about 32 blocks per SM."""
    strips = -(-width // TW)
    for rows in (128, 64, 32):
        if batch * strips * -(-height // rows) >= 32 * sms:
            return rows
    return 16


# -- the max-pool alive rule ------------------------------------------------------------------------

@cuda.jit(device=True)
def _any_above(state, b, y, x, radius, height, width, thr):
    """Whether channel ALIVE_CH is above ``thr`` within ``radius`` cells of (y, x) in sample b (the
    max-pool; cells outside the grid are ignored, or wrapped around with WRAP)."""
    for dy in range(-radius, radius + 1):
        yy = y + dy
        if WRAP:
            yy = yy % height
        elif yy < 0 or yy >= height:
            continue
        for dx in range(-radius, radius + 1):
            xx = x + dx
            if WRAP:
                xx = xx % width
            elif xx < 0 or xx >= width:
                continue
            if _is_alive(float32(state[b, yy, xx, ALIVE_CH]), thr):
                return True
    return False


@cuda.jit
def maxpool_pre(state, alive_thr, mask):
    """Before a step: mask (B*H*W,) uint8 = bit 0: alive (3x3 max-pool above the threshold), bit 1:
    within one cell of an alive cell (5x5 max-pool): the cells the step updates when they fire."""
    n_b, height, width = state.shape[0], state.shape[1], state.shape[2]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n_b * height * width:
        b, y, x = _cell_of(i, height, width)
        pre = _any_above(state, b, y, x, 1, height, width, alive_thr)
        near = pre or _any_above(state, b, y, x, 2, height, width, alive_thr)
        mask[i] = (1 if pre else 0) + (2 if near else 0)
        i += stride


@cuda.jit
def maxpool_keep(state, alive_thr, mask):
    """After a step: mask = 1 where the cell is alive both before (maxpool_pre's bit 0) and after, else 0.

    Reads only the cell's own mask entry, so it may be rewritten in place."""
    n_b, height, width = state.shape[0], state.shape[1], state.shape[2]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n_b * height * width:
        b, y, x = _cell_of(i, height, width)
        keep = (mask[i] & 1) != 0 and _any_above(state, b, y, x, 1, height, width, alive_thr)
        mask[i] = 1 if keep else 0
        i += stride


@cuda.jit
def zero_dead(state, mask):
    """Zero every channel of the cells maxpool_keep did not keep (a separate launch: the rule after
    the step reads the neighbours' values before any is zeroed)."""
    n_b, height, width = state.shape[0], state.shape[1], state.shape[2]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n_b * height * width:
        if mask[i] == 0:
            b, y, x = _cell_of(i, height, width)
            for c in range(C):
                state[b, y, x, c] = 0.0
        i += stride


# -- metrics (the MNIST layout: gray channel 0, class channels 10..19) and helpers ------------------

_label_of = cuda.jit(device=True)(spec.label_of)
_unit_gray = cuda.jit(device=True)(spec.unit_gray)


@cuda.jit(device=True)
def _cell_of(i, height, width):
    """(sample, row, column) of flat cell index i in a (B, H, W) grid."""
    return i // (width * height), (i // width) % height, i % width


@cuda.jit(device=True)
def _label(state, b, y, x):
    """spec's label rule on a float32 copy of the cell's channels (the state may be float16)."""
    cell = cuda.local.array(MNIST_C, float32)
    for c in range(spec.CLASS_START, MNIST_C):
        cell[c] = float32(state[b, y, x, c])
    return _label_of(cell)


@cuda.jit
def count_kernel(state, alive_thr, targets, counts):
    """Per-sample counts for the metrics, in the layout of spec.N_COUNTS, added into counts[b].

    MNIST layout only (gray channel 0, class channels 10..19). Grid (blocks per sample, B).
    state: (B, H, W, 20) float32/float16; targets: (B, H, W) int16 (-1: no target); counts:
    (B, 13) int64, zeroed by the caller. Each block sums in shared memory first, so the
    global atomics do not all hit the same 13 words.
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
    """out[b, y, x] = label of each alive cell, -1 on dead cells (int8 (B, H, W)); MNIST layout only."""
    n_b, height, width = state.shape[0], state.shape[1], state.shape[2]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n_b * height * width:
        b, y, x = _cell_of(i, height, width)
        if _is_alive(float32(state[b, y, x, 0]), alive_thr):
            out[b, y, x] = _label(state, b, y, x)[0]
        else:
            out[b, y, x] = spec.DEAD
        i += stride


@cuda.jit
def init_kernel(gray, is_uint8, state):
    """state = initial state of ``gray`` (B, H, W): channel GRAY_CH = gray (uint8 through spec.unit_gray), others 0."""
    n_b, height, width = state.shape[0], state.shape[1], state.shape[2]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n_b * height * width:
        b, y, x = _cell_of(i, height, width)
        g = gray[b, y, x]
        for c in range(C):
            state[b, y, x, c] = 0.0
        state[b, y, x, GRAY_CH] = _unit_gray(g) if is_uint8 else float32(g)
        i += stride


@cuda.jit
def copy_window(state, b0, y0, x0, out):
    """out (nb, h, w, C) = state[b0:b0+nb, y0:y0+h, x0:x0+w] in out's type (the window lies inside).

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
    """Mutate a window: channel GRAY_CH = gray (nb, h, w) float32; the residual channels zeroed where
    the new gray is dead (static alive rule: MNIST channel 0, channels 1..19)."""
    n_b, height, width = gray.shape[0], gray.shape[1], gray.shape[2]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n_b * height * width:
        b, y, x = _cell_of(i, height, width)
        g = gray[b, y, x]
        state[b0 + b, y0 + y, x0 + x, GRAY_CH] = g
        if not _is_alive(float32(state[b0 + b, y0 + y, x0 + x, GRAY_CH]), alive_thr):
            for c in range(R0, R0 + OUT):
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
