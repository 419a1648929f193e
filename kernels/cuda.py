"""Numba CUDA kernels: one fused, in-place automaton step per launch (plus a halo copy).

Layout and update scheme (the GPU form of the CPU kernel's bands):

- The state ``(B, H, W, 20)`` float32 stays on the device and is updated in place, so
  device memory holds one state plus 2/TY of it in saved halo rows.
- One thread block per (band of TY rows, sample). The block sweeps its band left to
  right in chunks of TX columns. For each chunk it loads a (TY+2) x (TX+2) x 20 tile
  into shared memory: its own rows from the state (not yet written this step), the
  row above and below the band from the halo copy that ``save_halo`` made before the
  step, and the column left of the chunk from the previous chunk's tile (``left``),
  kept before that chunk was written. So every cell reads step t and writes t+1.
- The MLP weights (80 -> 80 -> 19 and biases) are staged in shared memory once per
  block; the perception weights (180 x 80) are read from global memory, where every
  thread of a warp reads the same element (a broadcast).
- A chunk whose tile interior has no alive cell is skipped (``syncthreads_or``).
- Random numbers come from :mod:`fastca.rng`, the same functions the CPU kernel calls,
  so fire masks are bit-identical to numba-cpu and torch.

Shared memory: tile 18*10*20 + left 18*20 + w2 80*80 + w3 80*19 + b2 + b3 floats
= 48,076 bytes, inside the 48 KiB of static shared memory every CUDA GPU offers.
"""

import numpy as np
from numba import float32

from fastca import metrics, rng, spec
from fastca._compat import numba_cuda

cuda = numba_cuda()

TX = 8  #: columns per chunk = threadIdx.x (the fastest-varying array axis)
TY = 16  #: rows per band = threadIdx.y; halo memory is 2/TY of the state
C = spec.CHANNELS
HID = spec.HIDDEN
OUT = spec.MUTABLE
NTHREADS = TX * TY
# shared-array shapes must be compile-time literals: plain globals, not expressions in the kernel
TILE_H = TY + 2
TILE_W = TX + 2

_cell_labels = cuda.jit(device=True)(metrics.cell_labels_py)


@cuda.jit
def save_halo(state, halo):
    """halo[b, k, 0] = row k*TY-1 and halo[b, k, 1] = row (k+1)*TY of sample b (when inside).

    state: (B, H, W, 20) float32; halo: (B, K, 2, W, 20) float32, K = ceil(H / TY).
    """
    n_b, height, width = state.shape[0], state.shape[1], state.shape[2]
    n_k = halo.shape[1]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    total = n_b * n_k * 2 * width
    while i < total:
        x = i % width
        t = i // width
        side = t % 2
        t = t // 2
        k = t % n_k
        b = t // n_k
        y = k * TY - 1 if side == 0 else (k + 1) * TY
        if 0 <= y < height:
            for c in range(C):
                halo[b, k, side, x, c] = state[b, y, x, c]
        i += stride


@cuda.jit
def step_kernel(state, halo, w1r, b1, w2, b2, w3, b3, seed, step, fire_rate, noise_std, alive_thr):
    """One in-place step. Launch with grid (K, B) and block (TX, TY); run ``save_halo`` first.

    state: (B, H, W, 20); halo: (B, K, 2, W, 20); w1r: (180, 80); b1: (80,); w2: (80, 80);
    b2: (80,); w3: (80, 19); b3: (19,), all float32 device arrays. seed: uint64;
    step: int64; fire_rate, noise_std, alive_thr: float32.
    """
    tile = cuda.shared.array((TILE_H, TILE_W, C), float32)
    left = cuda.shared.array((TILE_H, C), float32)
    w2s = cuda.shared.array((HID, HID), float32)
    w3s = cuda.shared.array((HID, OUT), float32)
    b2s = cuda.shared.array(HID, float32)
    b3s = cuda.shared.array(OUT, float32)
    h1 = cuda.local.array(HID, float32)
    h2 = cuda.local.array(HID, float32)

    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * TX + tx
    k = cuda.blockIdx.x
    b = cuda.blockIdx.y
    height = state.shape[1]
    width = state.shape[2]
    y0 = k * TY
    y = y0 + ty

    # Stage the MLP weights once per block; the grid's left edge is zero padding.
    for i in range(tid, HID * HID, NTHREADS):
        w2s[i // HID, i % HID] = w2[i // HID, i % HID]
    for i in range(tid, HID * OUT, NTHREADS):
        w3s[i // OUT, i % OUT] = w3[i // OUT, i % OUT]
    for i in range(tid, HID, NTHREADS):
        b2s[i] = b2[i]
    for i in range(tid, OUT, NTHREADS):
        b3s[i] = b3[i]
    for i in range(tid, (TY + 2) * C, NTHREADS):
        left[i // C, i % C] = 0.0
    cuda.syncthreads()

    for x0 in range(0, width, TX):
        # Load tile columns 1..TX+1 (global x0..x0+TX); column 0 is the saved `left`.
        for i in range(tid, (TY + 2) * (TX + 1) * C, NTHREADS):
            c = i % C
            t = i // C
            q = 1 + t % (TX + 1)
            r = t // (TX + 1)
            gy = y0 - 1 + r
            gx = x0 - 1 + q
            v = float32(0.0)
            if gx < width and 0 <= gy < height:
                if r == 0:
                    v = halo[b, k, 0, gx, c]
                elif r == TY + 1:
                    v = halo[b, k, 1, gx, c]
                else:
                    v = state[b, gy, gx, c]
            tile[r, q, c] = v
        for i in range(tid, (TY + 2) * C, NTHREADS):
            tile[i // C, 0, i % C] = left[i // C, i % C]
        cuda.syncthreads()

        x = x0 + tx
        alive = y < height and x < width and tile[ty + 1, tx + 1, 0] > alive_thr
        any_alive = cuda.syncthreads_or(1 if alive else 0)
        # Keep this chunk's last column (old values) as the next chunk's left neighbour.
        for i in range(tid, (TY + 2) * C, NTHREADS):
            left[i // C, i % C] = tile[i // C, TX, i % C]
        if any_alive and alive:
            key = np.uint64(rng.cell_key(seed, step, b, y, x))  # the simulator returns a Python int
            if rng.fire_uniform(key) <= fire_rate:
                _update_cell(tile, ty, tx, w1r, b1, w2s, b2s, w3s, b3s, h1, h2, key, noise_std, state, b, y, x)
        cuda.syncthreads()


@cuda.jit(device=True, inline=True)
def _update_cell(tile, ty, tx, w1r, b1, w2s, b2s, w3s, b3s, h1, h2, key, noise_std, state, b, y, x):
    """Perception from the shared tile, the MLP, noise, and the residual add into the state."""
    for o in range(HID):
        acc = b1[o]
        for i in range(3):
            for j in range(3):
                base = (i * 3 + j) * C
                for c in range(C):
                    acc += tile[ty + i, tx + j, c] * w1r[base + c, o]
        h1[o] = max(acc, float32(0.0))
    for o in range(HID):
        acc = b2s[o]
        for i in range(HID):
            acc += h1[i] * w2s[i, o]
        h2[o] = max(acc, float32(0.0))
    for pair in range((OUT + 1) // 2):
        z0, z1 = rng.normal_pair(key, pair)
        for o in range(2 * pair, min(2 * pair + 2, OUT)):
            acc = float32(0.0)
            for i in range(HID):
                acc += h2[i] * w3s[i, o]
            ds = acc + b3s[o]
            if noise_std > 0:
                ds += (z0 if o == 2 * pair else z1) * noise_std
            state[b, y, x, 1 + o] += ds


@cuda.jit(device=True, inline=True)
def _cell_of(i, height, width):
    """(sample, row, column) of flat cell index i in a (B, H, W) grid."""
    return i // (width * height), (i // width) % height, i % width


@cuda.jit
def count_kernel(state, alive_thr, targets, counts):
    """Per-sample counts for the metrics: counts[b] = [alive, correct, cells per label 0..9].

    state: (B, H, W, 20) float32; targets: (B, H, W) int16; counts: (B, 12) int64, zeroed.
    """
    n_b, height, width = state.shape[0], state.shape[1], state.shape[2]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n_b * height * width:
        b, y, x = _cell_of(i, height, width)
        if state[b, y, x, 0] > alive_thr:
            label, label11 = _cell_labels(state[b, y, x])
            cuda.atomic.add(counts, (b, 0), 1)
            if label == targets[b, y, x]:
                cuda.atomic.add(counts, (b, 1), 1)
            if label11 < spec.N_CLASSES:
                cuda.atomic.add(counts, (b, 2 + label11), 1)
        i += stride


@cuda.jit
def label_kernel(state, alive_thr, out):
    """out[b, y, x] = label of each alive cell, -1 on dead cells (int8 (B, H, W))."""
    n_b, height, width = state.shape[0], state.shape[1], state.shape[2]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n_b * height * width:
        b, y, x = _cell_of(i, height, width)
        if state[b, y, x, 0] > alive_thr:
            out[b, y, x] = _cell_labels(state[b, y, x])[0]
        else:
            out[b, y, x] = metrics.DEAD
        i += stride


@cuda.jit
def init_kernel(gray, scale, state):
    """state = initial state of ``gray`` (B, H, W) (uint8 or float): channel 0 = gray * scale."""
    n_b, height, width = state.shape[0], state.shape[1], state.shape[2]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n_b * height * width:
        b, y, x = _cell_of(i, height, width)
        state[b, y, x, 0] = float32(gray[b, y, x]) * scale
        for c in range(1, C):
            state[b, y, x, c] = 0.0
        i += stride


def halo_shape(batch, height, width):
    """Shape of the halo buffer for a (batch, height, width) grid."""
    return (batch, -(-height // TY), 2, width, C)


def launch_1d(n, threads=256):
    """(blocks, threads) for a grid-stride loop over n items, capped so launches stay small."""
    return max(1, min(-(-n // threads), 65535)), threads
