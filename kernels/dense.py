"""Register-tiled dense layers for the CPU kernel, written as LLVM vector code.

``dense(K, NO, relu)`` returns a Numba intrinsic ``f(a, w, b, c, n)`` (addresses as
``intp``, from ``array.ctypes.data``) computing, for rows ``i < n``::

    c[i, :NO] = act(b[:NO] + sum_k a[i, k] * w[k, :NO])     # act: ReLU or identity

with ``a`` (rows, K), ``w`` (K, NO), ``b`` (NO,), ``c`` (rows, NO), all float32,
C-contiguous, ``NO`` a multiple of :data:`VL`. Rows are taken ``MR`` at a time (the
buffers must hold ``n`` rounded up to ``MR`` rows; the extra rows are computed and
ignored). Each tile of ``MR`` rows x ``NVB`` vectors of outputs keeps its sums in vector
registers for the whole ``k`` loop: per ``k``, ``NVB`` weight vectors are loaded and each
row's ``a[i, k]`` is broadcast into ``NVB`` fused multiply-adds. That is what a BLAS
microkernel does; done here, it needs no packing, no call overhead and no minimum size,
and it runs at a high fraction of the FMA peak on a block of a few dozen cells, where a
BLAS call on a 64-row block does not.

Rounding: every output starts from its bias and adds the products in ``k`` order with one
rounding per fused multiply-add, so a row's result depends on nothing but its own inputs
(not on ``n``, the tile it falls in, or the thread): the bit-identity across thread
counts, bands and chunks needs nothing more.

Vector width: 16 floats (512-bit) where the CPU has AVX-512F, else 8 (AVX2). Set
``FASTCA_VECTOR_BITS=256`` (or 512) to force a width (A/B measurements); it keys fastca's
kernel cache folder (with a user-set ``NUMBA_CACHE_DIR``, use a separate folder per width).
Both widths give the same bits (tests/test_vector_width.py).
"""

import os

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def vector_bits():
    """512 where the CPU (or ``$NUMBA_CPU_FEATURES``) has AVX-512F, else 256; ``$FASTCA_VECTOR_BITS`` overrides."""
    forced = os.environ.get("FASTCA_VECTOR_BITS")
    if forced in ("256", "512"):
        return int(forced)
    features = os.environ.get("NUMBA_CPU_FEATURES")
    if features is not None:
        return 512 if "+avx512f" in features.split(",") else 256
    return 512 if llvm.get_host_cpu_features().get("avx512f") else 256


VL = vector_bits() // 32  #: floats per vector register
# Tile shapes (rows MR x vectors NVB, for 80 outputs / for the last layer): the MR * NVB sums and NVB
# weight vectors fit the 32 zmm (AVX-512) or 16 ymm (AVX2) registers; chosen by microbenchmark.
_TILES = {16: {"wide": (4, 5), "narrow": (8, 2)}, 8: {"wide": (2, 5), "narrow": (4, 3)}}
MR_MAX = 8  #: row buffers given to dense() need this many spare rows


def tiles():
    """The register tiles used here: {"wide": (rows, vectors), "narrow": (rows, vectors)}."""
    return dict(_TILES[VL])


def padded(n):
    """``n`` rounded up to a whole number of vectors (the output widths dense() takes)."""
    return -(-n // VL) * VL


def dense(K, NO, relu):
    """The intrinsic ``f(a, w, b, c, n)`` for a (K -> NO) layer; see the module docstring."""
    return _layer(K, NO, relu, segments=None)


def dense_rows(segments, NO, relu):
    """Like :func:`dense`, but row i of ``a`` is ``len(segments)`` runs of floats anywhere in memory.

    ``f(table, w, b, c, n)``: ``table`` is the address of an (rows, S) int64 array whose
    entry [i, s] is the address of run s of row i (``segments[s]`` floats), so the layer
    reads its inputs where they lie (no copy into a row buffer). The runs are taken one at a
    time over all tiles (the sums wait in ``c``), so only one run's weights, ``segments[s]`` x
    NO floats, stream through the L1 cache at a time. Entries of rows n.. up to the tile are
    read too: they must be valid addresses.
    """
    return _layer(sum(segments), NO, relu, segments=tuple(segments))


def _layer(K, NO, relu, segments):
    if NO % VL:
        raise ValueError(f"output width {NO} is not a multiple of {VL}")
    mr, nvb = _TILES[VL]["wide" if NO // VL >= 4 else "narrow"]

    @intrinsic
    def layer(typingctx, a, w, b, c, n):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            _emit(builder, args, K, NO, mr, nvb, relu, segments)
            return context.get_dummy_value()

        return sig, codegen

    return layer


def _emit(builder, args, K, NO, mr, nvb, relu, segments):
    """Emit the layer's loops (see dense / dense_rows) into the caller's function."""
    f32 = ir.FloatType()
    vec = ir.VectorType(f32, VL)
    intp = args[0].type
    fptr = f32.as_pointer()
    a_addr = args[0]
    w, b, c = (builder.inttoptr(x, fptr) for x in args[1:4])
    n = args[4]
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), f"llvm.fma.v{VL}f32")
    zero = ir.Constant(vec, None)
    splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), VL), None)

    def const(v):
        return ir.Constant(intp, v)

    def vptr(base, offset):
        return builder.bitcast(builder.gep(base, [offset]), vec.as_pointer())

    if segments is None:  # one run per row, rows K floats apart
        runs = [(0, K)]

        def run_base(row, s):
            return builder.gep(builder.inttoptr(a_addr, fptr), [builder.mul(row, const(K))])
    else:
        starts = [sum(segments[:s]) for s in range(len(segments))]
        runs = list(zip(starts, segments))
        table = builder.inttoptr(a_addr, intp.as_pointer())

        def run_base(row, s):
            entry = builder.gep(table, [builder.add(builder.mul(row, const(len(segments))), const(s))])
            return builder.inttoptr(builder.load(entry), fptr)

    # Run groups: all runs per tile (sums stay in registers), or one run per pass over the tiles.
    groups = [list(range(len(runs)))] if segments is None else [[s] for s in range(len(runs))]
    acc = [[cgutils.alloca_once(builder, vec) for _ in range(nvb)] for _ in range(mr)]
    tiles = builder.udiv(builder.add(n, const(mr - 1)), const(mr))
    for g, group in enumerate(groups):
        first, last = g == 0, g == len(groups) - 1
        with cgutils.for_range(builder, tiles) as tile:
            row0 = builder.mul(tile.index, const(mr))
            crows = [builder.mul(builder.add(row0, const(m)), const(NO)) for m in range(mr)]
            for v0 in range(0, NO // VL, nvb):
                cols = [v * VL for v in range(v0, min(v0 + nvb, NO // VL))]
                for m in range(mr):
                    for j, col in enumerate(cols):
                        source = vptr(b, const(col)) if first else vptr(c, builder.add(crows[m], const(col)))
                        builder.store(builder.load(source, align=4), acc[m][j])
                for s in group:
                    k0, length = runs[s]
                    bases = [run_base(builder.add(row0, const(m)), s) for m in range(mr)]
                    with cgutils.for_range(builder, const(length)) as kloop:
                        k = kloop.index
                        wrow = builder.mul(builder.add(k, const(k0)), const(NO))
                        ws = [builder.load(vptr(w, builder.add(wrow, const(col))), align=4) for col in cols]
                        for m in range(mr):
                            x = builder.load(builder.gep(bases[m], [k]))
                            undef = ir.Constant(vec, ir.Undefined)
                            xs = builder.shuffle_vector(builder.insert_element(undef, x, const(0)), undef, splat_mask)
                            for j in range(len(cols)):
                                builder.store(builder.call(fma, [xs, ws[j], builder.load(acc[m][j])]), acc[m][j])
                for m in range(mr):
                    for j, col in enumerate(cols):
                        y = builder.load(acc[m][j])
                        if relu and last:  # max(y, 0) keeping NaN (unordered compare): non-finite inputs stay visible
                            y = builder.select(builder.fcmp_unordered(">", y, zero), y, zero)
                        builder.store(y, vptr(c, builder.add(crows[m], const(col))), align=4)
