"""Compiled helpers of :mod:`fastca.world`: connected components of alive cells, and strokes drawn
row by row near their segments. :mod:`fastca.world` calls them through :mod:`fastca.backends.host`."""

import math

import numba
import numpy as np


@numba.njit(cache=True)
def components(alive, out):
    """8-connected components of ``alive`` (H, W) bool into ``out`` (H, W) int32 (0 = none)."""
    h, w = alive.shape
    stack = np.empty((h * w, 2), np.int64)
    n = 0
    for y0 in range(h):
        for x0 in range(w):
            if alive[y0, x0] and out[y0, x0] == 0:
                n += 1
                out[y0, x0] = n
                top = 0
                stack[0, 0], stack[0, 1] = y0, x0
                top = 1
                while top > 0:
                    top -= 1
                    y, x = stack[top, 0], stack[top, 1]
                    for dy in range(-1, 2):
                        for dx in range(-1, 2):
                            yy, xx = y + dy, x + dx
                            if 0 <= yy < h and 0 <= xx < w and alive[yy, xx] and out[yy, xx] == 0:
                                out[yy, xx] = n
                                stack[top, 0], stack[top, 1] = yy, xx
                                top += 1
    return n


@numba.njit(cache=True)
def stroke_rows(gray, h, w, pts, half, r2, row0, lo, hi, paint):
    """The cells near a polyline ``pts`` (n, 2) float64, row by row: for each segment, the rows
    within ``half`` + 1 of it and, in each row, the columns within ``half`` + 1 of the part of the
    segment that is that close (a superset of the cells within ``half``, with a cell to spare), so
    the work is proportional to the stroke's area, not the world's. Returns the number of these
    candidate cells.

    paint=True: each candidate cell of ``gray`` (h, w) uint8 within ``half`` of the segment becomes
    255, by the predicate of :func:`fastca.simulation.stroke_mask` (the same float64 operations;
    ``r2`` = half**2 as it computes it); lo/hi (rows from ``row0``) receive the first/last column
    changed in each row. paint=False: nothing is evaluated, lo/hi receive each row's first/last
    candidate column (what :func:`fastca.world.event_cost` charges before the run)."""
    n = pts.shape[0]
    m = half + 1.0
    visited = 0
    for s in range(max(n - 1, 1)):
        ya, xa = pts[s, 0], pts[s, 1]
        yb, xb = (pts[s + 1, 0], pts[s + 1, 1]) if n > 1 else (ya, xa)
        dy, dx = yb - ya, xb - xa
        den = max(dy * dy + dx * dx, 1e-9)
        for y in range(max(0, math.floor(min(ya, yb) - m)), min(h - 1, math.ceil(max(ya, yb) + m)) + 1):
            fy = float(y)
            ta, tb = 0.0, 1.0
            if dy != 0.0:  # the part of the segment within m rows of this one
                ta, tb = (fy - m - ya) / dy, (fy + m - ya) / dy
                if ta > tb:
                    ta, tb = tb, ta
                ta, tb = max(ta, 0.0), min(tb, 1.0)
                if ta > tb:
                    continue
            xs, xe = xa + ta * dx, xa + tb * dx
            if xs > xe:
                xs, xe = xe, xs
            x0, x1 = max(0, math.floor(xs - m)), min(w - 1, math.ceil(xe + m))
            if x0 > x1:
                continue
            visited += x1 - x0 + 1
            r = y - row0
            if not paint:
                lo[r] = min(lo[r], x0)
                hi[r] = max(hi[r], x1)
                continue
            for x in range(x0, x1 + 1):
                fx = float(x)
                t = ((fy - ya) * dy + (fx - xa) * dx) / den
                if t < 0.0:
                    t = 0.0
                elif t > 1.0:
                    t = 1.0
                ey = fy - (ya + t * dy)
                ex = fx - (xa + t * dx)
                if ey * ey + ex * ex <= r2 and gray[y, x] != 255:
                    gray[y, x] = 255
                    lo[r] = min(lo[r], x)
                    hi[r] = max(hi[r], x)
    return visited

