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
