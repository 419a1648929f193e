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
Both widths give the same bits (tests/test_vector_width.py). The register tiles are chosen per
vector width and register count (:func:`tiles`); every tile gives the same bits too. To try the
code an AVX2-only CPU gets on an AVX-512 one, compile for it:
``NUMBA_CPU_NAME=znver3 NUMBA_CPU_FEATURES=$(python -c "from fastca.kernels import dense;
print(dense.avx2_only_features())")``.
"""

import os

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _target_features():
    """The CPU features Numba compiles for: ``$NUMBA_CPU_FEATURES`` when set, else the host's."""
    features = os.environ.get("NUMBA_CPU_FEATURES")
    if features is not None:
        return {f[1:] for f in features.split(",") if f.startswith("+")}
    return {name for name, on in llvm.get_host_cpu_features().items() if on}


def avx2_only_features():
    """The host's CPU features with AVX-512 (and AMX) turned off, as ``$NUMBA_CPU_FEATURES`` takes them: with
    ``NUMBA_CPU_NAME=znver3`` the kernels compile as on an AVX2-only CPU (256-bit vectors, 16 registers)."""
    off = ("avx512", "avx10", "evex512", "amx")
    return ",".join(("-" if not on or name.startswith(off) else "+") + name
                    for name, on in sorted(llvm.get_host_cpu_features().items()))


def vector_bits():
    """512 where the CPU (or ``$NUMBA_CPU_FEATURES``) has AVX-512F, else 256; ``$FASTCA_VECTOR_BITS`` overrides."""
    forced = os.environ.get("FASTCA_VECTOR_BITS")
    if forced in ("256", "512"):
        return int(forced)
    return 512 if "avx512f" in _target_features() else 256


def vector_registers():
    """Vector registers the compiled code may use: 32 with AVX-512 (EVEX encodings, any width), else 16."""
    return 32 if "avx512f" in _target_features() else 16


VL = vector_bits() // 32  #: floats per vector register
REGISTERS = vector_registers()  #: vector registers the tiles may fill
# Register tiles (rows MR x vectors NVB) keyed on (floats per vector, registers): "wide" for layers of
# 4 or more output vectors, "narrow" for fewer. The MR * NVB sums, NVB weight vectors and one broadcast
# fit the registers. Chosen with `python -m benchmarks.mlp_tiles` (each layer of the MNIST and Growing
# shapes, 64-cell blocks): 512-bit on Intel Xeon (AVX-512) and AMD EPYC Zen 4; 256-bit with 16 registers
# on an AMD EPYC Zen 4 compiling AVX2-only code (NUMBA_CPU_NAME=znver3, AVX-512 features off): 6x2 runs
# the Growing shape's 48 -> 128 layer at 91% of the one-thread FMA peak where 2x5 ran at 83%, and the
# MNIST layers as fast (92-94%); 256-bit with 32 registers (FASTCA_VECTOR_BITS=256 on an AVX-512 CPU):
# 4x4 at 96-100% on every wide layer where 2x5 ran the MNIST perception layer at 75%.
_TILES = {
    (16, 32): {"wide": (4, 5), "narrow": (8, 2)},
    (8, 32): {"wide": (4, 4), "narrow": (4, 3)},
    (8, 16): {"wide": (6, 2), "narrow": (4, 3)},
}
MR_MAX = 8  #: row buffers given to dense() need this many spare rows


def isa():
    """The code the MLP is generated as, in words: e.g. "AVX-512 (512-bit vectors, 32 registers)"."""
    name = "AVX-512" if REGISTERS == 32 else "AVX2"
    return f"{name} ({32 * VL}-bit vectors, {REGISTERS} registers)"


def tiles():
    """The register tiles used here: {"wide": (rows, vectors), "narrow": (rows, vectors)}."""
    return dict(_TILES.get((VL, REGISTERS), _TILES[(VL, 32)]))


def padded(n):
    """``n`` rounded up to a whole number of vectors (the output widths dense() takes)."""
    return -(-n // VL) * VL


def dense(K, NO, relu, tile=None):
    """The intrinsic ``f(a, w, b, c, n)`` for a (K -> NO) layer; see the module docstring.

    tile: (rows, vectors) of the register tile; None: :func:`tiles`' choice for NO (microbenchmarks
    pass others: ``benchmarks/mlp_tiles.py``)."""
    return _layer(K, NO, relu, segments=None, tile=tile)


def dense_rows(segments, NO, relu, tile=None):
    """Like :func:`dense`, but row i of ``a`` is ``len(segments)`` runs of floats anywhere in memory.

    ``f(table, w, b, c, n)``: ``table`` is the address of an (rows, S) int64 array whose
    entry [i, s] is the address of run s of row i (``segments[s]`` floats), so the layer
    reads its inputs where they lie (no copy into a row buffer). The runs are taken one at a
    time over all tiles (the sums wait in ``c``), so only one run's weights, ``segments[s]`` x
    NO floats, stream through the L1 cache at a time. Entries of rows n.. up to the tile are
    read too: they must be valid addresses.
    """
    return _layer(sum(segments), NO, relu, segments=tuple(segments), tile=tile)


def tile_for(NO):
    """The register tile (rows, vectors) used for a layer of NO outputs."""
    return tiles()["wide" if NO // VL >= 4 else "narrow"]


def _layer(K, NO, relu, segments, tile=None):
    if NO % VL:
        raise ValueError(f"output width {NO} is not a multiple of {VL}")
    mr, nvb = tile_for(NO) if tile is None else tile
    if not (1 <= mr <= MR_MAX and nvb >= 1):
        raise ValueError(f"tile {(mr, nvb)}: rows must be in 1..{MR_MAX}, vectors >= 1")

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
