"""Counter-based random numbers shared by every backend.

Each number is a pure function of its key, so the same seed gives bit-identical
fire masks on torch, Numba CPU and Numba CUDA, for any thread count or tiling:

- cell key  = hash(seed, step, sample, y, x)   (y, x: global grid coordinates)
- fire draw = U[0, 1) float32 with 24 random bits, from hash(cell key, FIRE stream)
- noise     = N(0, 1), from hash(cell key, NOISE stream, channel // 2) by Box-Muller
              (even channels take the cosine, odd channels the sine)

The hash is the SplitMix64 finaliser (a bijection on 64 bits with full
avalanche) applied after folding in each key component. The scalar functions
are plain ``numba.njit`` functions so that the CPU kernel and the CUDA kernel
call the very same code; the array functions at the end serve the torch backend and
users (their loops over many cells are compiled in ``kernels/rng_grid.py`` and loaded
through :mod:`fastca.backends.host`). Integer arithmetic makes the fire draws exact
everywhere; the noise goes through plain float32 arithmetic (its own logarithm and
sine/cosine polynomials, no math library) and a correctly rounded ``sqrt``, with
integer-only branch-free steps, so the CPU kernel computes it 8 or 16 cells at a time
in vector registers with the same bits as one at a time: noise is bit for bit the same
between torch and numba-cpu, and agrees to float32 rounding with CUDA (whose compiler
fuses multiply-adds).
"""

import math

import numba
import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_S40 = np.uint64(40)
_S16 = np.uint64(16)
_S38 = np.uint64(38)
_LOW2 = np.uint64(3)
_LOW22 = np.uint64(0x3FFFFF)
_FIRE_STREAM = np.uint64(0x46495245)  # "FIRE"
_NOISE_STREAM = np.uint64(0x4E4F4953) << _S32  # "NOIS" in the high word
_INV_2_24 = np.float32(1.0 / (1 << 24))
_HALF_PI_2_22 = np.float32(math.pi / 2 / (1 << 22))  # angle step inside a quadrant
_LN2 = np.float32(math.log(2.0))
_SQRT2 = np.float32(math.sqrt(2.0))

jit = numba.njit(cache=True, inline="always")


@jit
def mix64(z):
    """SplitMix64 finaliser: uint64 -> uint64 bijection with full avalanche."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@jit
def row_key(seed, step, sample, y):
    """uint64 key of one grid row at one step (the first four levels of :func:`cell_key`)."""
    h = mix64(np.uint64(seed) + _GOLDEN)
    h = mix64(h ^ np.uint64(step))
    h = mix64(h ^ np.uint64(sample))
    return mix64(h ^ np.uint64(y))


@jit
def key_in_row(row, x):
    """uint64 key of the cell at column x of a row keyed ``row``: cell_key = key_in_row(row_key, x)."""
    return mix64(np.uint64(row) ^ np.uint64(x))


@jit
def cell_key(seed, step, sample, y, x):
    """uint64 key of one cell at one step; all arguments are non-negative integers."""
    return key_in_row(row_key(seed, step, sample, y), x)


@jit
def fire_uniform(key):
    """The cell's fire draw: float32 in [0, 1), a multiple of 2**-24 (exact on every backend)."""
    return np.float32(mix64(np.uint64(key) ^ _FIRE_STREAM) >> _S40) * _INV_2_24


@jit
def _sincos_quarter(t):
    """(sin t, cos t) for t in [0, pi/2], float32 Taylor polynomials (error < 1e-7)."""
    t2 = t * t
    s = t * (np.float32(1.0) + t2 * (np.float32(-1 / 6) + t2 * (np.float32(1 / 120) + t2 * (
        np.float32(-1 / 5040) + t2 * (np.float32(1 / 362880) + t2 * np.float32(-1 / 39916800))))))
    c = np.float32(1.0) + t2 * (np.float32(-0.5) + t2 * (np.float32(1 / 24) + t2 * (np.float32(-1 / 720) + t2 * (
        np.float32(1 / 40320) + t2 * (np.float32(-1 / 3628800) + t2 * np.float32(1 / 479001600))))))
    return s, c


@jit
def _halve_down(t, e, p):
    """One step of a branch-free search for the exponent: t /= 2**p and e += p if t >= 2**p (exact)."""
    big = t >= np.float32(2.0 ** p)
    return (t * np.float32(2.0 ** -p) if big else t), (e + np.float32(p) if big else e)


@jit
def _log_u24(m):
    """ln(m * 2**-24) as float32 for an integer 1 <= m <= 2**24 given as float32 (exact), by plain arithmetic.

    m = 2**e * f with f in [1, 2) found by exact halvings (a branch-free binary search), moved
    to [sqrt(1/2), sqrt(2)), then ln f = 2 atanh(s) with s = (f - 1) / (f + 1), |s| < 0.172, by
    its series to s**9 (error below float32 rounding): within 3 ulp of ln, all in float32 so
    that it runs 8 or 16 lanes wide.
    """
    f, e = _halve_down(m, np.float32(0.0), 16)
    f, e = _halve_down(f, e, 8)
    f, e = _halve_down(f, e, 4)
    f, e = _halve_down(f, e, 2)
    f, e = _halve_down(f, e, 1)
    big = f > _SQRT2
    f = f * np.float32(0.5) if big else f
    e = e + (np.float32(1.0) if big else np.float32(0.0)) - np.float32(24.0)
    s = (f - np.float32(1.0)) / (f + np.float32(1.0))
    s2 = s * s
    series = np.float32(1.0) + s2 * (np.float32(1 / 3) + s2 * (np.float32(1 / 5) + s2 * (
        np.float32(1 / 7) + s2 * np.float32(1 / 9))))
    return e * _LN2 + (s + s) * series


@jit
def noise_fields(key, pair):
    """The random fields of a cell's normal pair ``pair``, from one 64-bit hash, as float32 integers.

    (u, quadrant, angle step): u = bits 40..63 + 1, in [1, 2**24]; quadrant = bits 38..39;
    angle step = bits 16..37, < 2**22 (all exact in float32). Integer work only; see
    :func:`normal_pair`.
    """
    h = mix64(np.uint64(key) ^ (_NOISE_STREAM + np.uint64(pair)))  # casts: exact when called from Python
    return (np.float32(np.int32(h >> _S40)) + np.float32(1.0), np.float32(np.int32((h >> _S38) & _LOW2)),
            np.float32(np.int32((h >> _S16) & _LOW22)))


@jit
def normal_from_fields(u, quadrant, angle):
    """Two standard normals (float32) from :func:`noise_fields` by Box-Muller; float32 arithmetic only."""
    r = math.sqrt(np.float32(-2.0) * _log_u24(u))  # math, not np: numba-cuda compiles math.sqrt (sqrtf); the same bits
    s, c = _sincos_quarter(angle * _HALF_PI_2_22)
    # quadrant q rotates (c, s) by q * 90 degrees: (c, s), (-s, c), (-c, -s), (s, -c)
    odd = quadrant == np.float32(1.0) or quadrant == np.float32(3.0)
    a = s if odd else c
    b = c if odd else s
    a_sign = np.float32(-1.0) if quadrant == np.float32(1.0) or quadrant == np.float32(2.0) else np.float32(1.0)
    b_sign = np.float32(-1.0) if quadrant >= np.float32(2.0) else np.float32(1.0)  # q = 2, 3
    return (r * a) * a_sign, (r * b) * b_sign


@jit
def normal_pair(key, pair):
    """Two independent standard normal draws (float32) for mutable channels 2*pair and 2*pair+1.

    Box-Muller in float32 from one 64-bit hash (:func:`noise_fields`): bits 40..63 give the
    radius's uniform u1 in (0, 1] (so draws are finite, bounded by sqrt(2 ln 2**24) = 5.8;
    its logarithm is :func:`_log_u24`), bits 38..39 the quadrant and bits 16..37 the angle
    inside it. The sine and cosine are polynomials (plain arithmetic, the same on every
    backend, and cheaper than libm); the quadrant is chosen by selects, not branches (its
    bits are random). The integer part (64-bit) and the float part (32-bit) are separate
    functions so that a vectorised caller can run each at its own vector width.
    """
    u, quadrant, angle = noise_fields(key, pair)
    return normal_from_fields(u, quadrant, angle)


def _origin(origin):
    return np.asarray(origin, np.int64).reshape(3)


def uniform(seed, step, shape, origin=(0, 0, 0)):
    """Fire draws for a (B, H, W) grid at one step: float32 array in [0, 1).

    ``origin``: global (sample, row, column) of the grid's first cell.
    """
    from .backends import host  # the kernels import this module: the backends load them when called

    out = np.empty(tuple(shape), np.float32)
    host.uniform_grid(np.uint64(seed), np.int64(step), _origin(origin), out)
    return out


def fire_mask(seed, step, alive, fire_rate, origin=(0, 0, 0)):
    """Update mask ``(u <= fire_rate) & alive``; ``alive`` is a (B, H, W) bool array."""
    return (uniform(seed, step, alive.shape, origin) <= np.float32(fire_rate)) & alive


def noise_at(seed, step, b, y, x, std, channels=19):
    """Noise ``std * N(0, 1)`` (float32, shape (n, channels)) for the n cells at (b[i], y[i], x[i])."""
    from .backends import host

    b, y, x = (np.ascontiguousarray(a, dtype=np.int64) for a in (b, y, x))
    out = np.empty((b.shape[0], channels), np.float32)
    host.noise_at(np.uint64(seed), np.int64(step), b, y, x, np.float32(std), out)
    return out


def normal_grid(seed, step, shape, channels=19, origin=(0, 0, 0)):
    """Standard normal draws for every cell of a (B, H, W) grid: float32 (B, H, W, channels)."""
    b, y, x = np.indices(tuple(shape)).reshape(3, -1) + _origin(origin)[:, None]
    return noise_at(seed, step, b, y, x, 1.0, channels).reshape(tuple(shape) + (channels,))
