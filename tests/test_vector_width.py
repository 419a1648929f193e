"""The CPU kernel gives the same bits whatever vector width its MLP was generated for.

kernels/dense.py emits 16-float (AVX-512) or 8-float (AVX2) vector code depending on the
CPU; each output still starts from its bias and adds its products in the same order with
one rounding per fused multiply-add, so both must agree to the last bit. The other width
runs in a subprocess with its own Numba cache (``FASTCA_VECTOR_BITS`` is read when the
kernels are generated).
"""

import os
import subprocess
import sys

import numpy as np

import fastca
from fastca.kernels import dense

SCRIPT = r"""
import sys
import numpy as np
import fastca
from fastca.kernels import dense
gray = np.random.default_rng(3).random((3, 37, 83)).astype(np.float32)
model = fastca.NCAWeights.random(seed=5)
for storage in ("float32", "float16"):
    res = fastca.simulate(model, gray, 6, seed=9, storage=storage, backend="numba-cpu")
    np.save(sys.argv[1] + f"_{storage}.npy", res.state)
print("VL", dense.VL)
"""


def test_same_bits_at_both_vector_widths(tmp_path):
    gray = np.random.default_rng(3).random((3, 37, 83)).astype(np.float32)
    model = fastca.NCAWeights.random(seed=5)
    other = 256 if dense.VL == 16 else 512
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "other")], capture_output=True, text=True,
                       timeout=900, env={**os.environ, "FASTCA_VECTOR_BITS": str(other),
                                                      "NUMBA_CACHE_DIR": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"VL {other // 32}" in p.stdout
    for storage in ("float32", "float16"):
        here = fastca.simulate(model, gray, 6, seed=9, storage=storage, backend="numba-cpu").state
        there = np.load(tmp_path / f"other_{storage}.npy")
        assert np.any(here[..., 1:] != 0)
        np.testing.assert_array_equal(here.view(np.uint8), there.view(np.uint8))


def _layer_outputs(tile, segments, relu):
    """One dense layer (K -> 2 vectors + 1, inputs as rows or as three runs) computed with ``tile``."""
    import numba

    from fastca.kernels.cpu import aligned_zeros

    no = 3 * dense.VL
    k = sum(segments)
    rng = np.random.default_rng(11)
    rows = 13 + dense.MR_MAX  # 13 cells: a partial last tile for every tile height
    x = aligned_zeros((rows, k))
    x[:] = rng.standard_normal(x.shape)
    w = aligned_zeros((k, no))
    w[:] = rng.standard_normal(w.shape)
    b = aligned_zeros((no,))
    b[:] = rng.standard_normal(no)
    c = aligned_zeros((rows, no))
    if len(segments) == 1:
        layer, a = dense.dense(k, no, relu, tile=tile), x
    else:  # row i's runs in reverse order in memory: the table, not the layout, says where they are
        layer = dense.dense_rows(segments, no, relu, tile=tile)
        a = np.array([[x.ctypes.data + 4 * (i * k + sum(segments[:s])) for s in range(len(segments))]
                      for i in range(rows)], np.int64)

    @numba.njit
    def run(a, w, b, c):
        layer(a.ctypes.data, w.ctypes.data, b.ctypes.data, c.ctypes.data, 13)

    run(a, w, b, c)
    want = x[:13].astype(np.float64) @ w + b
    return c[:13].copy(), np.maximum(want, 0) if relu else want


def test_every_register_tile_gives_the_same_bits():
    """The tiles of every ISA (and odd ones) sum each output in the same order: same bits, right values."""
    tiles = {t for table in dense._TILES.values() for t in table.values()} | {(1, 1), (3, 2), (8, 3)}
    for segments, relu in (((37,), True), ((7, 7, 7), False)):
        outs = {t: _layer_outputs(t, segments, relu) for t in sorted(tiles)}
        first = next(iter(outs.values()))[0]
        for t, (got, want) in outs.items():
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"tile {t}")
            np.testing.assert_array_equal(got.view(np.uint32), first.view(np.uint32), err_msg=f"tile {t}")


def test_tiles_fit_their_registers():
    """Each ISA's tiles keep their sums, weight vectors and a broadcast in registers (no spills)."""
    for (vl, regs), table in dense._TILES.items():
        for rows, vectors in table.values():
            assert rows * vectors + vectors + 1 <= regs, ((vl, regs), rows, vectors)
            assert rows <= dense.MR_MAX
    assert dense.tiles() == dense._TILES[(dense.VL, dense.REGISTERS)]


def test_avx2_only_features_select_avx2_code():
    """The features string for AVX2-only code makes the kernels 256-bit with 16 registers (no compile needed)."""
    features = dense.avx2_only_features()
    assert "+avx512f" not in features.split(",")
    code = "from fastca.kernels import dense; print(dense.VL, dense.REGISTERS, dense.tiles()['wide'])"
    env = {**os.environ, "NUMBA_CPU_NAME": "znver3", "NUMBA_CPU_FEATURES": features}
    env.pop("FASTCA_VECTOR_BITS", None)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[:2] == ["8", "16"]
