"""The CPU kernel's bit masks (64 cells a word): dilations, the max-pool rule's masks, the index runs and
the zeroing of dead cells, against NumPy on bool arrays, at widths around word boundaries."""

import numpy as np
import pytest

from fastca.kernels import cpu, cpu_shape
from fastca.model import TEXTURE

WIDTHS = (1, 2, 5, 63, 64, 65, 128, 130)


@pytest.fixture(scope="module", params=["zero", "wrap"])
def kernel(request):
    """(kernel module, wraps): the shipped template (zero padding) and the texture model's copy (torus)."""
    if request.param == "zero":
        return cpu, False
    return cpu_shape.kernel(TEXTURE), True


def pack(mask):
    """(N, W) bool -> (N, ceil(W / 64)) uint64, bit x % 64 of word x // 64 = column x."""
    n, w = mask.shape
    padded = np.zeros((n, -(-w // 64) * 64), bool)
    padded[:, :w] = mask
    return np.packbits(padded, axis=1, bitorder="little").view("<u8").astype(np.uint64)


def unpack(words, width):
    return np.unpackbits(words.astype("<u8").view(np.uint8), axis=1, bitorder="little")[:, :width].astype(bool)


def box(mask, height, radius, wrap):
    """(N, W) bool dilated by the (2 radius + 1)^2 square inside each sample of ``height`` rows."""
    m = mask.reshape(-1, height, mask.shape[1])
    out = np.zeros_like(m)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if wrap:
                out |= np.roll(m, (dy, dx), axis=(1, 2))
            else:
                p = np.pad(m, ((0, 0), (radius, radius), (radius, radius)))
                out |= p[:, radius - dy:radius - dy + m.shape[1], radius - dx:radius - dx + m.shape[2]]
    return out.reshape(mask.shape)


def random_mask(rng, n, w, density):
    return rng.random((n, w)) < density


@pytest.mark.parametrize("width", WIDTHS)
def test_dilate_and_last_word(kernel, width):
    k, wrap = kernel
    rng = np.random.default_rng(width)
    for height, samples, density in ((7, 3, 0.05), (1, 4, 0.3), (2, 2, 0.5), (11, 1, 0.02)):
        mask = random_mask(rng, height * samples, width, density)
        out = k.masks(1, height * samples, width)[0]
        k.dilate(pack(mask), height, width, out)
        np.testing.assert_array_equal(unpack(out, width), box(mask, height, 1, wrap))
        tail = -(-width // 64) * 64 - width
        assert tail == 0 or np.all(out[:, -1] >> np.uint64(64 - tail) == 0), "bits past the last column set"


@pytest.mark.parametrize("width", WIDTHS)
def test_maxpool_masks_index_and_zeroing(kernel, width):
    k, wrap = kernel
    c = k.C
    rng = np.random.default_rng(100 + width)
    height, samples = 9, 2
    n = height * samples
    rows = rng.normal(0, 1, (n, width, c)).astype(np.float32)
    rows[..., k.ALIVE_CH] = np.where(rng.random((n, width)) < 0.08, 0.5, 0.05)
    m = k.maxpool_masks(n, width)
    assert unpack(m[5], width).all() and np.all(m[:5] == 0)
    k.maxpool_pre(rows, height, np.float32(0.1), m, True)
    hot = rows[..., k.ALIVE_CH] > np.float32(0.1)
    for got, radius in ((m[0], 0), (m[1], 1), (m[2], 2), (m[3], 3)):
        np.testing.assert_array_equal(unpack(got, width), box(hot, height, radius, wrap), err_msg=f"radius {radius}")

    ptr = np.zeros((2, n + 1), np.int64)
    runs = np.zeros((k.index_counts(m[2], m[3], ptr), 2), np.int32)
    k.index_fill(m[2], m[3], width, ptr, runs)
    read_rows = box(hot, height, 3, wrap)
    for r in range(n):
        for kind, want in ((0, box(hot, height, 2, wrap)[r]), (1, read_rows[r])):
            if kind == 1 and wrap:  # a row read anywhere is read whole
                want = np.full(width, want.any())
            got = np.zeros(width, bool)
            for a, b in runs[ptr[kind, r]:ptr[kind, r + 1]]:
                assert 0 <= a < b <= width and not got[a:b].any() and not (a > 0 and want[a - 1])
                got[a:b] = True
            np.testing.assert_array_equal(got, want, err_msg=f"row {r}, runs {kind}")

    # after a step: the kernel leaves hot current; keep = pre and the pooled new hot; dead cells zeroed
    new_hot = rng.random((n, width)) < 0.1
    m[0] = pack(new_hot)
    k.maxpool_keep(height, width, m)
    keep = box(hot, height, 1, wrap) & box(new_hot, height, 1, wrap)
    np.testing.assert_array_equal(unpack(m[4], width), keep)
    live, act = unpack(m[5], width), unpack(m[2], width)
    before = rows.copy()
    k.zero_dead(rows, m[5], m[2], m[4], m[0])
    dead = (live | act) & ~keep
    assert np.all(rows[dead] == 0)
    np.testing.assert_array_equal(rows[~dead], before[~dead])
    np.testing.assert_array_equal(unpack(m[5], width), keep)
    np.testing.assert_array_equal(unpack(m[0], width), new_hot & keep)


def test_above_reads_only_live_cells():
    rows = np.zeros((3, 70, cpu.C), np.float32)
    rows[..., cpu.ALIVE_CH] = 1.0
    live = np.zeros((3, 70), bool)
    live[1, 60:67] = True
    hot = cpu.masks(1, 3, 70)[0]
    cpu._above(rows, np.float32(0.1), hot, pack(live))
    np.testing.assert_array_equal(unpack(hot, 70), live)
