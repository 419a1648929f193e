"""State storage types for the CPU kernels: float32, or float16 kept as its uint16 bits.

Numba has no float16 type on the CPU, so a float16 state travels into the kernels as a
``uint16`` view of the same memory. :func:`load` reads any stored element as float32
and :func:`store` rounds a float32 back to the storage type; both are resolved at
compile time from the element type, so the float32 kernels are unchanged (identity)
and the float16 ones convert with the CPU's F16C instructions (LLVM ``fpext`` /
``fptrunc``: IEEE round-to-nearest-even, bit-identical to NumPy's ``astype``).
Arithmetic is always float32.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

STORAGE = {"float32": np.float32, "float16": np.float16}  #: public name -> numpy dtype of the state


def kernel_view(state):
    """The array the kernels take: float32 as is, float16 as its uint16 bits (a view, no copy)."""
    return state.view(np.uint16) if state.dtype == np.float16 else state


@intrinsic
def _half_to_f32(typingctx, h):
    if h != types.uint16:
        return None

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@intrinsic
def _f32_to_half(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(types.float32), codegen


def load(v):
    """float32 value of a stored element (float32, or float16 bits as uint16)."""
    return np.float32(v)


def store(x, like):
    """``x`` (float32) in the storage type of ``like`` (an element of the target array)."""
    return x


@overload(load, inline="always")
def _load(v):
    if v == types.uint16:
        return lambda v: _half_to_f32(v)
    if v == types.float32:
        return lambda v: v
    return None


@overload(store, inline="always")
def _store(x, like):
    if like == types.uint16:
        return lambda x, like: _f32_to_half(np.float32(x))
    if like == types.float32:
        return lambda x, like: np.float32(x)
    return None


@intrinsic
def _memcpy(typingctx, dst, src, nbytes):
    """Copy ``nbytes`` bytes from address ``src`` to address ``dst`` (intp each; no overlap)."""
    sig = types.void(types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        cgutils.raw_memcpy(builder, builder.inttoptr(args[0], i8p), builder.inttoptr(args[1], i8p), args[2], 1)
        return context.get_dummy_value()

    return sig, codegen


def load_row(src, dst):
    """dst[:, :] = src as float32; src: (W, 20) stored row (or a run of its columns), dst: the same
    shape in float32, both C-contiguous."""


@overload(load_row, inline="always")
def _load_row(src, dst):
    if src.dtype == types.float32:  # a plain memcpy: several times faster than Numba's element loop
        return lambda src, dst: _memcpy(dst.ctypes.data, src.ctypes.data, src.size * 4)

    def convert(src, dst):  # one flat loop over the elements: it vectorises (F16C), a loop per cell did not
        s = src.reshape(src.size)
        d = dst.reshape(dst.size)
        for i in range(s.size):
            d[i] = load(s[i])

    return convert


def as_f32_row(src, buf):
    """A stored (W, 20) row as float32: ``src`` itself when float32, else converted into ``buf``."""
    return src


@overload(as_f32_row, inline="always")
def _as_f32_row(src, buf):
    if src.dtype == types.float32:
        return lambda src, buf: src

    def impl(src, buf):
        load_row(src, buf)
        return buf

    return impl


@intrinsic
def prefetch(typingctx, addr):
    """Ask the CPU to bring the cache line at address ``addr`` (intp) into its outer caches: a hint
    (LLVM's prefetch: read, locality 2, data) that never faults and returns nothing."""
    sig = types.void(types.intp)

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.inttoptr(args[0], i8p), i32(0), i32(2), i32(1)])
        return context.get_dummy_value()

    return sig, codegen
