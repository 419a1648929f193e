"""The CPU kernel of a model description: its generated block, its packed weights, its module.

:func:`kernel` returns the compiled-on-demand copy of :mod:`.cpu` for a description
(:mod:`.generate`); :func:`pack_weights` lays the description's arrays out as that copy
reads them. Both follow :func:`layout`, so the block and the packing cannot disagree.

Packed weights: one cache-line aligned float32 array; per learned layer its (in, out)
matrix with ``out`` padded with zero columns to whole vectors (``dense.padded``), then its
bias (zeros when the layer has none), each starting on a cache line. A learned 3x3
perception is the first layer, its HWIO kernel read as (9 C, features) rows in (kernel
row, kernel column, channel) order, the order of the three runs of 3C floats the kernel
reads. A depthwise perception is computed into P as feature ``f * C + c`` (filter-major:
the loop over channels is contiguous and vectorises), so the first dense layer's rows are
permuted from the description's channel-major order (``c * F + f``) to match. The inputs
of a layer after a padded one are its rows padded with zeros the same way.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import dense, generate

_ALIGN = 16  #: floats per cache line


def _up(n, m=_ALIGN):
    return -(-n // m) * m


@dataclasses.dataclass(frozen=True)
class Layer:
    """One learned layer as the kernel computes it (offsets in floats into the packed weights)."""

    name: str  # the weight's name in the description (w1, w2, ...)
    bias: str | None  # the bias's name, or None
    k: int  # inputs per row as read
    out: int  # real outputs
    out_pad: int  # outputs as computed (whole vectors)
    relu: bool
    w_off: int
    b_off: int


def layout(description):
    """The kernel's layers for ``description`` and the packed size: (layers, total floats)."""
    from fastca.model import Conv3x3

    shapes = description.weight_shapes()
    specs = []  # (weight name, bias name or None, real out, relu)
    if isinstance(description.perception, Conv3x3):
        p = description.perception
        specs.append(("w1", "b1" if p.bias else None, p.features, p.activation == "relu"))
        first_k, k0 = 9 * description.channels, 2
    else:
        first_k, k0 = description.features, 1
    for i, layer in enumerate(description.layers):
        specs.append((f"w{k0 + i}", f"b{k0 + i}" if layer.bias else None, layer.width, layer.activation == "relu"))
    layers, off, k = [], 0, first_k
    for name, bias, out, relu in specs:
        assert shapes[name][-1] == out
        out_pad = dense.padded(out)
        w_off = off
        off += _up(k * out_pad)
        b_off = off
        off += _up(out_pad)
        layers.append(Layer(name, bias, k, out, out_pad, relu, w_off, b_off))
        k = out_pad
    return tuple(layers), off


def render(description):
    """The generated block of :mod:`.cpu` for ``description`` (Python source)."""
    from fastca.model import Conv3x3

    d = description
    layers, total = layout(d)
    depthwise = not isinstance(d.perception, Conv3x3)
    hidden = [x.out_pad for x in layers[:-1]]
    rule = {"none": 0, "static": 1, "maxpool": 2}[d.alive.rule]
    lines = [
        f"C = {d.channels}",
        f"R0 = {d.residual[0]}",
        f"OUT = {d.n_updated}",
        f"OUT_PAD = {layers[-1].out_pad}",
        f"ALIVE = {rule}",
        f"ALIVE_CH = {d.alive.channel if rule else 0}",
        f"WRAP = {d.boundary == 'wrap'}",
        f"DEPTHWISE = {depthwise}",
        f"FEATURES = {d.features if depthwise else 1}",
        f"MAXW = {max(hidden, default=dense.VL)}",
        f"WEIGHTS = {total}",
        "",
    ]
    for i, x in enumerate(layers):
        if i == 0 and not depthwise:
            lines.append(f"layer0 = dense.dense_rows(({3 * d.channels}, {3 * d.channels}, {3 * d.channels}), "
                         f"{x.out_pad}, {x.relu})")
        else:
            lines.append(f"layer{i} = dense.dense({x.k}, {x.out_pad}, {x.relu})")
    lines += ["", "", "@jit", "def perceive(table, P, n):",
              '    """P[i] = the depthwise perception of block cell i < n, feature f * C + c."""']
    if depthwise:
        lines += ["    for i in range(n):",
                  "        runs = (table[i, 0], table[i, 1], table[i, 2])",
                  f"        for c in range({d.channels}):"]
        for f, name in enumerate(d.perception.filters):
            kern = d.perception.kernel()[..., f]
            terms = [f"np.float32({float(kern[i, j])!r}) * f32_at(runs[{i}], {j * d.channels} + c)"
                     for i in range(3) for j in range(3) if kern[i, j] != 0]
            expr = terms[0]
            for t in terms[1:]:
                expr = f"({expr}) + {t}"
            lines.append(f"            P[i, {f * d.channels} + c] = {expr}  # {name}")
    lines += ["", "", "@jit", "def mlp_block(table, wts, P, HA, HB, D, n):",
              '    """D[:n] = the MLP of the first n block cells (bias included); see the module docstring."""',
              "    w = wts.ctypes.data"]
    source = "P.ctypes.data" if depthwise else "table.ctypes.data"
    for i, x in enumerate(layers):
        target = "D.ctypes.data" if i == len(layers) - 1 else ("HA.ctypes.data" if i % 2 == 0 else "HB.ctypes.data")
        lines.append(f"    layer{i}({source}, w + {4 * x.w_off}, w + {4 * x.b_off}, {target}, n)")
        source = target
    return "\n".join(lines)


def kernel(description):
    """The :mod:`.cpu` module generated for ``description`` (imported; compiled on first call)."""
    return generate.load("cpu", render(description), description.name)


def pack_weights(description, arrays):
    """The packed, aligned float32 weights of ``arrays`` (name -> array, the description's shapes)."""
    from fastca.model import Depthwise

    from .cpu import aligned_zeros

    layers, total = layout(description)
    out = aligned_zeros((total,))
    for i, x in enumerate(layers):
        w = np.asarray(arrays[x.name], np.float32)
        w = w.reshape(-1, w.shape[-1])  # HWIO (3, 3, C, F) -> (9C, F) in (row, column, channel) order
        if i == 0 and isinstance(description.perception, Depthwise):
            n_f, c = len(description.perception.filters), description.channels
            w = w.reshape(c, n_f, -1).transpose(1, 0, 2).reshape(n_f * c, -1)  # row c*F+f -> f*C+c
        block = out[x.w_off:x.w_off + x.k * x.out_pad].reshape(x.k, x.out_pad)
        block[:w.shape[0], :x.out] = w
        if x.bias is not None:
            out[x.b_off:x.b_off + x.out] = np.asarray(arrays[x.bias], np.float32)
    out.setflags(write=False)
    return out
