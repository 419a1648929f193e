"""The CUDA kernel of a model description: its generated block, its packed weights, its module.

:func:`kernel` returns the copy of :mod:`.cuda` generated for a description (:mod:`.generate`);
:func:`pack_weights` lays the description's arrays out as that copy reads them. Both follow
:func:`layout`, so the block and the packing cannot disagree.

Packed weights: one float32 array; per learned layer its (in, out) matrix (row-major, not
padded: the kernel guards the outputs past a multiple of its thread groups), then its bias
when it has one, each starting on a 128-byte boundary (as separate allocations would). A
learned 3x3 perception is the first layer, its HWIO kernel read as (9 C, features) rows in
(kernel row, kernel column, channel) order, the order the kernel gathers the neighbourhood
in. A depthwise perception's features are computed in the description's channel-major
order (feature ``c * F + f``), so the first dense layer's rows are used as they are.

Tiling (:func:`tiling`): the strip width ``TW``, the sub-tile height ``TH`` and the chunk
``M`` are the MNIST kernel's (32, 4, 32, tuned on an H100) whenever the block's shared
memory (ring, chunk, index lists) fits in the 48 KB that need no opt-in; otherwise the
first smaller choice that fits. A description that fits none is refused (ValueError).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fastca.errors import InputError

from . import generate

SHARED_LIMIT = 48 * 1024  #: bytes of static shared memory a block may use without opt-in
_ALIGN = 32  #: floats per 128-byte line
#: (TW, TH, M) in order of preference: wide strips (few halo columns) and big chunks first.
#: TH >= 2 (a sub-tile's first two ring rows come from the previous ring's last two), M a
#: multiple of every layout's cell groups (8).
TILINGS = tuple((tw, th, m) for tw, th in ((32, 4), (32, 2), (16, 4), (16, 2), (8, 2)) for m in (32, 16, 8))


def _up(n, m=_ALIGN):
    return -(-n // m) * m


@dataclasses.dataclass(frozen=True)
class Layer:
    """One learned layer as the kernel computes it (offsets in floats into the packed weights)."""

    name: str  # the weight's name in the description (w1, w2, ...)
    bias: str | None  # the bias's name, or None
    n_in: int
    n_out: int
    relu: bool
    w_off: int
    b_off: int  # -1: none


def layout(description):
    """(layers, total floats) of ``description``'s packed weights."""
    from fastca.model import Conv3x3

    specs = []  # (weight name, bias name or None, in, out, relu)
    if isinstance(description.perception, Conv3x3):
        p = description.perception
        specs.append(("w1", "b1" if p.bias else None, 9 * description.channels, p.features, p.activation == "relu"))
        k0, n_in = 2, p.features
    else:
        k0, n_in = 1, description.features
    for i, layer in enumerate(description.layers):
        specs.append((f"w{k0 + i}", f"b{k0 + i}" if layer.bias else None, n_in, layer.width,
                      layer.activation == "relu"))
        n_in = layer.width
    shapes = description.weight_shapes()
    layers, off = [], 0
    for name, bias, n_in, n_out, relu in specs:
        assert int(np.prod(shapes[name])) == n_in * n_out
        w_off = off
        off = _up(off + n_in * n_out)
        b_off = -1
        if bias is not None:
            b_off = off
            off = _up(off + n_out)
        layers.append(Layer(name, bias, n_in, n_out, relu, w_off, b_off))
    return tuple(layers), off


def shared_bytes(channels, tw, th, m, stride):
    """Static shared memory of one block: ring, chunk, sub-tile and chunk index lists, counter."""
    return 4 * ((th + 2) * (tw + 2) * channels + m * stride) + 12 * tw * th + 16 * m + 4


def chunk_stride(description):
    """Row stride of the chunk: the widest of the first layer's inputs and every layer's outputs, made odd."""
    layers, _ = layout(description)
    width = max([layers[0].n_in] + [x.n_out for x in layers])
    return width | 1


def tiling(description):
    """(TW, TH, M): the first of TILINGS whose shared memory fits; ValueError naming the limit if none does."""
    c, stride = description.channels, chunk_stride(description)
    for tw, th, m in TILINGS:
        if shared_bytes(c, tw, th, m, stride) <= SHARED_LIMIT:
            return tw, th, m
    need = shared_bytes(c, *TILINGS[-1], stride)
    raise InputError(f"model {description.name!r} cannot run on numba-cuda: even the smallest block "
                     f"(TW, TH, M = {TILINGS[-1]}) needs {need} bytes of shared memory for {c} channels and "
                     f"chunk rows of {stride} floats, over the {SHARED_LIMIT} bytes (48 KB) of static shared "
                     "memory a block may use")


def render(description):
    """The generated block of :mod:`.cuda` for ``description`` (Python source)."""
    from fastca.model import Depthwise

    d = description
    layers, total = layout(d)
    tw, th, m = tiling(d)
    depthwise = isinstance(d.perception, Depthwise)
    rule = {"none": 0, "static": 1, "maxpool": 2}[d.alive.rule]
    last = layers[-1]
    # the last layer's bias comes with the residual add, unless a relu must follow it
    out_bias = last.b_off if not last.relu else -1
    entries = [(x.n_in, x.n_out, x.relu, x.b_off if (x is not last or x.relu) else -1, x.w_off) for x in layers]
    lines = [
        f"C = {d.channels}  # channels per cell",
        f"R0 = {d.residual[0]}  # first channel the residual updates",
        f"OUT = {d.n_updated}  # channels it updates (the last layer's width)",
        f"ALIVE = {rule}  # alive rule: 0 none (every cell updates), 1 static, 2 max-pool",
        f"ALIVE_CH = {d.alive.channel if rule else 0}  # the channel the alive rule reads",
        f"WRAP = {d.boundary == 'wrap'}  # boundary: the other side of the sample (torus) instead of zeros",
        (f"DEPTHWISE = {depthwise}  # perception: fixed depthwise filters (perceive) instead of a learned 3x3 "
         "convolution"),
        f"PIN = {layers[0].n_in}  # inputs of the first learned layer per cell"
        + (" (9 C: the 3x3 neighbourhood)" if not depthwise else " (F C depthwise features)"),
        f"TW = {tw}  # strip width: columns per block",
        f"TH = {th}  # rows per sub-tile",
        f"M = {m}  # cells per MLP chunk",
        (f"S = {chunk_stride(d)}  # row stride of the chunk buffer (odd: conflict-free shared-memory rows; "
         ">= every layer's width)"),
        "#: learned layers, in order: (inputs, outputs, relu, bias offset or -1, weight offset) in the packed weights",
        f"LAYERS = ({', '.join(repr(e) for e in entries)}{',' if len(entries) == 1 else ''})",
        f"OUT_BIAS = {out_bias}  # offset of the last layer's bias, added with the residual (-1: none)",
        f"WEIGHTS = {total}  # floats in the packed weights",
        "",
        "",
        "@cuda.jit(device=True)",
        "def perceive(ring, src, chunk, dst):",
    ]
    if not depthwise:
        lines.append('    """Depthwise perception (unused: this model\'s perception is a learned convolution)."""')
        return "\n".join(lines)
    ring_row = (tw + 2) * d.channels  # floats between vertically adjacent ring cells
    names = ", ".join(d.perception.filters)
    lines += [f'    """chunk[dst + f] = filter f ({names}) of one channel at ring[src] (uint64 indices; a ring',
              f'    row is {ring_row} floats, a cell {d.channels})."""']
    kernels = d.perception.kernel()
    for f, name in enumerate(d.perception.filters):
        terms = []
        for i in range(3):
            for j in range(3):
                k = float(kernels[i, j, f])
                if k == 0:
                    continue
                delta = (i - 1) * ring_row + (j - 1) * d.channels
                at = "src" if delta == 0 else (f"src + np.uint64({delta})" if delta > 0 else f"src - np.uint64({-delta})")
                terms.append(f"ring[{at}]" if k == 1 else f"float32({k!r}) * ring[{at}]")
        expr = terms[0]
        for t in terms[1:]:
            expr = f"({expr}) + {t}"
        lines.append(f"    chunk[dst + np.uint64({f})] = {expr}  # {name}")
    return "\n".join(lines)


def kernel(description):
    """The :mod:`.cuda` module generated for ``description`` (imported; compiled on first launch).

    ValueError when the description cannot run on this kernel (see :func:`tiling`)."""
    return generate.load("cuda", render(description), description.name)


def pack_weights(description, arrays):
    """The packed float32 weights (WEIGHTS,) of ``arrays`` (name -> array, the description's shapes)."""
    layers, total = layout(description)
    out = np.zeros(total, np.float32)
    for x in layers:
        w = np.asarray(arrays[x.name], np.float32).reshape(x.n_in, x.n_out)  # HWIO -> (9C, F) (row, col, channel)
        out[x.w_off:x.w_off + x.n_in * x.n_out] = w.ravel()
        if x.bias is not None:
            out[x.b_off:x.b_off + x.n_out] = np.asarray(arrays[x.bias], np.float32)
    return out
