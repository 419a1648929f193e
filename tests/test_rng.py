"""The shared counter-based generator: statistics, determinism, independence of keys."""

import numpy as np

import fastca
from fastca import rng


def test_uniform_statistics():
    u = rng.uniform(123, 4, (4, 128, 128)).astype(np.float64)
    assert u.min() >= 0 and u.max() < 1
    n = u.size
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 0.003
    # 10 equal bins: chi-square with 9 dof, p > 1e-4 bound
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    chi2 = ((counts - n / 10) ** 2 / (n / 10)).sum()
    assert chi2 < 33.7, chi2


def test_uniform_is_24_bit_exact():
    u = rng.uniform(1, 2, (1, 64, 64))
    assert np.all(u * 2**24 == np.floor(u * 2**24))


def test_neighbouring_keys_uncorrelated():
    u = rng.uniform(5, 0, (2, 256, 256)).astype(np.float64) - 0.5
    pairs = {
        "x": (u[:, :, 1:], u[:, :, :-1]),
        "y": (u[:, 1:], u[:, :-1]),
        "sample": (u[1], u[0]),
        "step": (rng.uniform(5, 1, (2, 256, 256)) - 0.5, u),
        "seed": (rng.uniform(6, 0, (2, 256, 256)) - 0.5, u),
    }
    for name, (a, b) in pairs.items():
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert abs(r) < 0.02, f"correlation {r:.4f} between neighbouring {name} keys"


def test_normal_statistics():
    z = rng.normal_grid(9, 3, (1, 96, 96), channels=19).astype(np.float64)
    flat = z.reshape(-1)
    assert abs(flat.mean()) < 0.01
    assert abs(flat.var() - 1) < 0.02
    # fraction beyond 2 sigma ~ 4.55%
    assert abs((np.abs(flat) > 2).mean() - 0.0455) < 0.004
    # channels of one cell (cos/sin of one pair, and different pairs) are uncorrelated
    c = np.corrcoef(z.reshape(-1, 19).T)
    off = c[~np.eye(19, dtype=bool)]
    assert np.abs(off).max() < 0.05


def test_deterministic_and_seed_dependent():
    a = rng.uniform(42, 7, (3, 17, 19))
    np.testing.assert_array_equal(a, rng.uniform(42, 7, (3, 17, 19)))
    assert (a != rng.uniform(43, 7, (3, 17, 19))).mean() > 0.99
    # keys use global coordinates: a sub-grid's draws are the grid's draws
    big = rng.uniform(42, 7, (3, 40, 40))
    np.testing.assert_array_equal(big[:, :17, :19], a)


def test_noise_at_matches_grid():
    z = rng.normal_grid(1, 2, (2, 5, 6))
    b, y, x = np.array([1, 0]), np.array([4, 2]), np.array([5, 3])
    np.testing.assert_array_equal(rng.noise_at(1, 2, b, y, x, 1.0), z[b, y, x])


def test_fire_mask_rate():
    alive = np.ones((1, 200, 200), bool)
    alive[0, :100] = False
    m = fastca.rng.fire_mask(3, 0, alive, 0.25)
    assert not m[0, :100].any()
    assert abs(m[0, 100:].mean() - 0.25) < 0.01


def test_log_within_a_few_ulp_over_its_whole_domain():
    # The noise's own logarithm (plain float32 arithmetic, so it runs in vector registers):
    # ln(m / 2**24) for every integer 1 <= m <= 2**24 in a sample that includes both ends.
    import numba

    m = np.concatenate([np.arange(1, 4097), np.random.default_rng(0).integers(1, 2**24, 100_000),
                        np.arange(2**24 - 4096, 2**24 + 1)]).astype(np.float32)

    @numba.njit
    def logs(m, out):
        for i in range(m.shape[0]):
            out[i] = rng._log_u24(m[i])

    out = np.empty_like(m)
    logs(m, out)
    exact = np.log(m.astype(np.float64) / 2**24)
    ulp = np.abs(out - exact) / np.spacing(np.maximum(np.abs(exact), 1e-30).astype(np.float32))
    assert out[-1] == 0.0 and ulp.max() < 4, ulp.max()


def test_vectorised_noise_equals_one_cell_at_a_time():
    # The CPU kernel draws a block's noise pair by pair over all its cells; the bits must be
    # those of normal_pair cell by cell (what torch and the oracle use).
    from fastca.kernels import cpu_shape

    cell = cpu_shape.kernel(fastca.model.MNIST)

    keys = np.random.default_rng(1).integers(0, 2**63, 37).astype(np.uint64)
    z0 = np.zeros((cell.PAIRS, cell.ROWS), np.float32)
    z1 = np.zeros_like(z0)
    scratch = (np.zeros(cell.ROWS, np.float32), np.zeros(cell.ROWS, np.float32), np.zeros(cell.ROWS, np.float32))
    import numba

    numba.njit(error_model="numpy")(cell.noise_block.py_func)(keys, len(keys), z0, z1, *scratch)
    for i, key in enumerate(keys):
        for p in range(cell.PAIRS):
            assert (z0[p, i], z1[p, i]) == rng.normal_pair(key, p)
