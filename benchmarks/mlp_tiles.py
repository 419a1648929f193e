"""The CPU kernel's dense layers in isolation: each register tile's rate on one block, against the FMA peak.

    python -m benchmarks.mlp_tiles [--model NAME ...] [--rows 64] [--tiles 2x5,4x3,...]

For every learned layer of each model description (the shapes the generated kernel computes:
outputs padded to whole vectors, the first layer of a learned perception reading three runs
of 3C floats through an address table, as in the step), times ``kernels.dense`` at each
candidate tile on a block of ``--rows`` cells (the step's BLOCK), one thread, data in cache,
and prints GFLOP/s on executed FMAs (padded outputs) and their share of the one-thread FMA peak
at the same vector width, measured in the same run (``benchmarks/peak_fma.c``). The vector
width is the kernel's (``FASTCA_VECTOR_BITS`` forces one; ``NUMBA_CPU_NAME=znver3`` compiles
AVX2-only code with its 16 registers on a newer CPU). The last line per layer is the tile that
``kernels.dense`` uses now.
"""

from __future__ import annotations

import argparse
import json
import time

import numba
import numpy as np

from benchmarks.machine import cpu_model, fma_peak
from fastca.kernels import cpu_shape, dense

MODELS = ("self-classifying-mnist", "growing")


def _candidates(vl: int, no: int) -> list[tuple[int, int]]:
    """Tiles whose accumulators and weight vectors fit 32 registers (a superset of what 16 allow)."""
    out = []
    for mr in range(1, dense.MR_MAX + 1):
        for nvb in range(1, min(no // vl, 8) + 1):
            if mr * nvb + nvb + 1 <= 32:
                out.append((mr, nvb))
    return out


def _timer(layer, segments: bool):
    """A compiled loop that calls ``layer`` ``reps`` times (addresses as in the step)."""

    @numba.njit(cache=False)
    def run(a, w, b, c, n, reps):
        for _ in range(reps):
            layer(a.ctypes.data, w.ctypes.data, b.ctypes.data, c.ctypes.data, n)

    return run


def time_layer(k: int, no: int, relu: bool, segments, rows: int, tile) -> float:
    """Seconds per call of one (k -> no) layer over ``rows`` cells with register tile ``tile``."""
    from fastca.kernels.cpu import aligned_zeros

    rng = np.random.default_rng(0)
    buf_rows = rows + dense.MR_MAX
    if segments is None:
        layer = dense.dense(k, no, relu, tile=tile)
        a = aligned_zeros((buf_rows, k))
        a[:] = rng.standard_normal(a.shape)
    else:
        layer = dense.dense_rows(segments, no, relu, tile=tile)
        src = aligned_zeros((buf_rows * 3, segments[0]))
        src[:] = rng.standard_normal(src.shape)
        a = np.empty((buf_rows, 3), np.int64)  # three runs per row, anywhere in memory
        for i in range(buf_rows):
            for s in range(3):
                a[i, s] = src.ctypes.data + 4 * segments[0] * (3 * i + s)
    w = aligned_zeros((k, no))
    w[:] = rng.standard_normal(w.shape) * 0.05
    b = aligned_zeros((no,))
    c = aligned_zeros((buf_rows, no))
    run = _timer(layer, segments is not None)
    run(a, w, b, c, rows, 10)  # compile and warm the caches
    reps = 10
    while True:
        t0 = time.perf_counter()
        run(a, w, b, c, rows, reps)
        dt = time.perf_counter() - t0
        if dt > 0.05:
            break
        reps *= 4
    best = dt / reps
    for _ in range(4):
        t0 = time.perf_counter()
        run(a, w, b, c, rows, reps)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def main(argv=None) -> None:
    from fastca import model as model_mod

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help=f"a description name (default: {', '.join(MODELS)})")
    parser.add_argument("--rows", type=int, default=64, help="cells per block (the step's BLOCK)")
    parser.add_argument("--tiles", help="candidate tiles as RxV,RxV (default: all that fit 32 registers)")
    args = parser.parse_args(argv)
    vl = dense.VL
    bits = 32 * vl
    peak1 = fma_peak(1, bits)
    print(json.dumps({"cpu": cpu_model(), "vector_bits": bits, "fma_peak_1_thread_gflops": peak1,
                      "current_tiles": dense.tiles(), "numba_cpu_name": numba.config.CPU_NAME}), flush=True)
    for name in args.model or MODELS:
        known = {d.name: d for d in model_mod.KNOWN}
        if name not in known:
            parser.error(f"unknown description {name!r}; known: {', '.join(known)}")
        desc = known[name]
        layers, _ = cpu_shape.layout(desc)
        learned_perception = isinstance(desc.perception, model_mod.Conv3x3)
        for i, x in enumerate(layers):
            segments = (3 * desc.channels,) * 3 if i == 0 and learned_perception else None
            tiles = ([tuple(int(v) for v in t.split("x")) for t in args.tiles.split(",")] if args.tiles
                     else _candidates(vl, x.out_pad))
            flop = 2 * x.k * x.out_pad * args.rows
            results = []
            for tile in tiles:
                sec = time_layer(x.k, x.out_pad, x.relu, segments, args.rows, tile)
                results.append((flop / sec / 1e9, tile))
            results.sort(reverse=True)
            cur = dense.tile_for(x.out_pad)
            cur_rate = next(r for r, t in results if t == cur) if cur in [t for _, t in results] else None
            print(f"{name} layer {i}: {x.k} -> {x.out_pad} ({'3 runs' if segments else 'rows'}), {args.rows} cells")
            for rate, tile in results[:6]:
                print(f"  tile {tile[0]}x{tile[1]}: {rate:7.1f} GFLOP/s  {100 * rate / peak1:5.1f}% of the 1-thread peak")
            if cur_rate is not None:
                print(f"  current {cur[0]}x{cur[1]}: {cur_rate:7.1f} GFLOP/s  {100 * cur_rate / peak1:5.1f}%")
            print(json.dumps({"model": name, "layer": i, "k": x.k, "out": x.out_pad, "rows": args.rows,
                              "rates": {f"{t[0]}x{t[1]}": round(r, 1) for r, t in results}}), flush=True)


if __name__ == "__main__":
    main()
