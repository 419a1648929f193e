"""fastca.seeds: seeds planted where asked, random cells at least their spacing apart (and refused
when they cannot fit), a picture's marked pixels mapped onto a world."""

import numpy as np
import pytest
from PIL import Image

from fastca import model, seeds
from fastca.errors import FastcaError, InputError, InputTypeError


def test_plant_seeds_sets_the_alive_channel_and_the_ones_after_it():
    state = seeds.plant_seeds(model.GROWING, 6, 7, [[1, 2], [5, 6], [1, 2]])  # a position twice: one seed
    assert state.shape == (1, 6, 7, 16) and state.dtype == np.float32
    expected = np.zeros((6, 7, 16), np.float32)
    expected[1, 2, 3:] = expected[5, 6, 3:] = 1  # RGB stay 0, as growing.seed_state's seed
    np.testing.assert_array_equal(state[0], expected)
    odd = model.ODD[1]  # max-pool on channel 32 of 33
    assert seeds.plant_seeds(odd, 3, 3, [[0, 0]])[0, 0, 0].nonzero()[0].tolist() == [32]
    texture = seeds.plant_seeds(model.TEXTURE, 2, 2, np.asarray([[1, 1]], np.int32))  # no alive rule: from 3
    assert texture[0, 1, 1].nonzero()[0].tolist() == list(range(3, 12))
    assert not seeds.plant_seeds(model.GROWING, 4, 4, np.zeros((0, 2), np.int64)).any()
    half = seeds.plant_seeds(model.GROWING, 6, 7, [[1, 2], [5, 6]], dtype=np.float16)
    assert half.dtype == np.float16 and np.array_equal(half, state)
    with pytest.raises(InputError, match="float32 or float16"):
        seeds.plant_seeds(model.GROWING, 6, 7, [[1, 2]], dtype=np.float64)


def test_plant_seeds_matches_the_growing_module_seed():
    from fastca import growing

    np.testing.assert_array_equal(seeds.plant_seeds(model.GROWING, 72, 72, [[36, 36]]), growing.seed_state(1, 72, 72))


@pytest.mark.parametrize("positions, error, fragment", [
    ([[6, 0]], InputError, "[6, 0] is outside the 6x7 world"),
    ([[0, -1]], InputError, "outside"),
    ([[0.5, 1]], InputTypeError, "integer (row, column) pairs"),
    ([1, 2], InputTypeError, "(N, 2)"),
])
def test_plant_seeds_refuses_positions_outside_or_malformed(positions, error, fragment):
    with pytest.raises(error) as info:
        seeds.plant_seeds(model.GROWING, 6, 7, positions)
    assert fragment in str(info.value)


def test_plant_seeds_refuses_a_static_model_and_bad_sizes():
    with pytest.raises(InputError, match="static alive channel .* takes a picture, not seeds"):
        seeds.plant_seeds(model.MNIST, 4, 4, [[0, 0]])
    with pytest.raises(InputTypeError, match="ModelSpec"):
        seeds.plant_seeds("growing", 4, 4, [[0, 0]])
    with pytest.raises(InputError, match="height must be >= 1"):
        seeds.plant_seeds(model.GROWING, 0, 4, [])
    with pytest.raises(InputTypeError, match="width must be an integer"):
        seeds.plant_seeds(model.GROWING, 4, 4.0, [])


def _min_gap(p):
    """The smallest distance along a row or a column (Chebyshev) between two of the positions."""
    d = np.abs(p[:, None, :] - p[None, :, :]).max(-1)
    return d[~np.eye(len(p), dtype=bool)].min()


@pytest.mark.parametrize("h, w, spacing", [(64, 64, 20), (50, 37, 7), (10, 100, 3), (5, 5, 1), (1, 9, 2), (40, 40, 40)])
def test_random_positions_are_spacing_apart_up_to_the_most_that_fit(h, w, spacing):
    most = seeds.max_seeds(h, w, spacing)
    box = 2 * spacing - 1
    assert most == -(-h // box) * -(-w // box)
    for seed in range(5):
        p = seeds.random_positions(h, w, most, spacing, seed)
        assert p.shape == (most, 2) and p.dtype == np.int64
        assert (p >= 0).all() and (p[:, 0] < h).all() and (p[:, 1] < w).all()
        assert [tuple(x) for x in p] == sorted(set(map(tuple, p)))  # sorted, distinct
        if most > 1:
            assert _min_gap(p) >= spacing
    with pytest.raises(InputError) as info:
        seeds.random_positions(h, w, most + 1, spacing)
    assert f"{most + 1} seeds do not fit in a {h}x{w} world {spacing} cells apart: at most {most}" in str(info.value)


def test_random_positions_depend_on_the_seed_only():
    a = seeds.random_positions(500, 400, 30, 25, seed=7)
    np.testing.assert_array_equal(a, seeds.random_positions(500, 400, 30, 25, seed=7))
    assert not np.array_equal(a, seeds.random_positions(500, 400, 30, 25, seed=8))
    assert _min_gap(a) >= 25
    assert seeds.random_positions(4, 4, 0).shape == (0, 2)
    full = seeds.random_positions(3, 4, 12)  # spacing 1: every cell can hold one
    assert sorted(map(tuple, full)) == [(y, x) for y in range(3) for x in range(4)]
    big = seeds.random_positions(20000, 20000, 1000, 1, seed=2**64 - 1)  # drawn without a per-box array
    assert len(big) == 1000 and len(set(map(tuple, big))) == 1000


@pytest.mark.parametrize("args, fragment", [
    ((4, 4, -1), "number of seeds"), ((4, 4, 2.0), "number of seeds"), ((4, 4, 1, 0), "spacing must be >= 1"),
    ((4, 4, 1, 1, -1), "seed must be"), ((4, 4, 1, 1, 2**64), "seed must be"),
])
def test_random_positions_refuse_bad_arguments(args, fragment):
    with pytest.raises((InputError, InputTypeError), match=fragment):
        seeds.random_positions(*args)


def test_marked_pixels_dark_on_light_or_opaque_on_transparent():
    rgb = np.full((3, 4, 3), 255, np.uint8)
    rgb[1, 2] = 0
    rgb[2, 0] = (200, 30, 30)  # red: luminance 0.29, dark enough
    assert np.argwhere(seeds.marked_pixels(rgb)).tolist() == [[1, 2], [2, 0]]
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[0, 3] = (255, 255, 0, 255)  # a light opaque pixel on a transparent picture: marked
    rgba[1, 1] = (0, 0, 0, 100)  # dark but mostly transparent: not marked
    assert np.argwhere(seeds.marked_pixels(rgba)).tolist() == [[0, 3]]
    opaque = np.concatenate([rgb, np.full((3, 4, 1), 255, np.uint8)], -1)  # no transparent pixel: the dark ones
    np.testing.assert_array_equal(seeds.marked_pixels(opaque), seeds.marked_pixels(rgb))
    gray16 = np.full((2, 2), 65535, np.uint16)
    gray16[0, 1] = 30000
    assert np.argwhere(seeds.marked_pixels(gray16)).tolist() == [[0, 1]]
    assert np.argwhere(seeds.marked_pixels(np.asarray([[0.2, 0.9]]))).tolist() == [[0, 0]]
    mask = np.asarray([[False, True]])
    np.testing.assert_array_equal(seeds.marked_pixels(mask), mask)
    for bad in (np.zeros((2, 2, 2)), np.zeros(3), np.asarray([[np.nan]]), np.asarray([["a"]])):
        with pytest.raises(InputError):
            seeds.marked_pixels(bad)


def test_positions_from_image_put_each_pixel_on_the_cell_under_its_centre(tmp_path):
    picture = np.ones((4, 8))
    picture[0, 0] = picture[3, 7] = picture[2, 3] = 0
    p = seeds.positions_from_image(picture, 40, 100)
    # pixel (i, j) of a 4x8 picture -> cell (floor((i + 0.5) * 40 / 4), floor((j + 0.5) * 100 / 8))
    assert p.tolist() == [[5, 6], [25, 43], [35, 93]] and p.dtype == np.int64
    assert seeds.positions_from_image(picture).tolist() == [[0, 0], [2, 3], [3, 7]]  # the picture's size
    assert seeds.positions_from_image(np.zeros((6, 6)), 2, 2).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]  # each once
    Image.fromarray((picture * 255).astype(np.uint8)).save(tmp_path / "p.png")
    assert seeds.positions_from_image(tmp_path / "p.png", 40, 100).tolist() == p.tolist()
    assert seeds.positions_from_image(str(tmp_path / "p.png")).tolist() == [[0, 0], [2, 3], [3, 7]]


def test_positions_from_image_refusals(tmp_path):
    with pytest.raises(InputError, match="has no marked pixel"):
        seeds.positions_from_image(np.ones((3, 3)))
    Image.fromarray(np.full((3, 3), 255, np.uint8)).save(tmp_path / "white.png")
    with pytest.raises(InputError, match="white.png has no marked pixel"):
        seeds.positions_from_image(tmp_path / "white.png")
    with pytest.raises(InputError, match="not found"):
        seeds.positions_from_image(tmp_path / "missing.png")
    (tmp_path / "x.png").write_text("not a picture")
    with pytest.raises(InputError, match="not a readable picture"):
        seeds.positions_from_image(tmp_path / "x.png")
    with pytest.raises(InputError, match="height must be >= 1"):
        seeds.positions_from_image(np.zeros((3, 3)), 0, 3)


def test_errors_are_fastca_errors_and_the_builtins():
    """Code written against the builtins the library raised before (except ValueError) still catches them."""
    from fastca import errors

    assert issubclass(InputError, ValueError) and issubclass(InputTypeError, TypeError)
    assert issubclass(errors.RunError, RuntimeError) and issubclass(errors.NonFiniteError, FloatingPointError)
    for cls in (InputError, InputTypeError, errors.RunError, errors.NonFiniteError):
        assert issubclass(cls, FastcaError)
    assert not issubclass(FastcaError, (ValueError, TypeError, RuntimeError))
