"""Seeds planted on a world, for the models that grow from seeds (the Growing NCA and other
models without a static gray channel).

A seed is one cell whose channels from the alive channel on are 1 (the Growing NCA's seed:
alpha and the hidden channels, channels 3..15; a model without an alive rule: channels 3 on),
on a world of zeros. Positions are (row, column) cells::

    from fastca import seeds
    net = fastca.pretrained("growing-gecko")
    where = seeds.random_positions(512, 512, 20, spacing=40, seed=0)   # or seeds.positions_from_image("map.png", 512, 512)
    state = seeds.plant_seeds(net.description, 512, 512, where)       # (1, 512, 512, 16) float32
    sim = fastca.Simulation(net, state, input="state")
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import InputError, InputTypeError
from .model import ModelSpec

#: the largest picture side :func:`positions_from_image` reads (its header is checked before decoding)
MAX_PICTURE_SIDE = 20000
#: below half: dark (luminance) or transparent (alpha), for :func:`marked_pixels`
HALF = 0.5


def _side(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise InputError(f"{name} must be >= 1, got {value}")
    return int(value)


def seed_channels(description: ModelSpec) -> slice:
    """The channels a seed sets to 1: from the max-pool rule's alive channel to the last (the Growing
    NCA: alpha and the hidden channels, 3..15); for a model without an alive rule, from channel 3
    (RGB stay 0, as in the Growing NCA), or every channel of a model with fewer than 4. A model whose
    cells are alive where a static channel says so (the MNIST digits) takes a picture, not seeds."""
    if not isinstance(description, ModelSpec):
        raise InputTypeError(f"description must be a fastca.model.ModelSpec, got {type(description).__name__}")
    alive = description.alive
    if alive.rule == "static":
        raise InputError(f"model {description.name!r} has a static alive channel ({alive.channel}): its cells live "
                         "where its input picture is drawn, so it takes a picture, not seeds")
    first = alive.channel if alive.rule == "maxpool" else min(3, description.channels - 1)
    return slice(first, description.channels)


def check_positions(positions: Any, height: int, width: int) -> np.ndarray:
    """``positions`` as an (N, 2) int64 array of (row, column) cells inside the height x width world."""
    p = np.asarray(positions)
    if p.size == 0:
        return np.zeros((0, 2), np.int64)
    if p.ndim != 2 or p.shape[1] != 2 or p.dtype.kind not in "iu":
        raise InputTypeError(f"positions must be (N, 2) integer (row, column) pairs, got {p.dtype} {p.shape}")
    p = p.astype(np.int64)
    outside = (p[:, 0] < 0) | (p[:, 0] >= height) | (p[:, 1] < 0) | (p[:, 1] >= width)
    if outside.any():
        raise InputError(f"seed position {p[outside][0].tolist()} is outside the {height}x{width} world")
    return p


def plant_seeds(description: ModelSpec, height: int, width: int, positions: Any,
                dtype: Any = np.float32) -> np.ndarray:
    """A (1, height, width, C) world of zeros (float32, or ``dtype``) with a seed at each (row, column) of ``positions``
    (channels :func:`seed_channels` set to 1; a position given twice is one seed). ``description``:
    the model's :class:`fastca.model.ModelSpec` (``model.description``). ``dtype`` float16 halves a
    huge world's memory (for a :class:`fastca.Simulation` with ``storage="float16"``)."""
    channels = seed_channels(description)
    height, width = _side(height, "height"), _side(width, "width")
    p = check_positions(positions, height, width)
    if np.dtype(dtype) not in (np.float32, np.float16):
        raise InputError(f"dtype must be float32 or float16, got {np.dtype(dtype)}")
    state = np.zeros((1, height, width, description.channels), dtype)
    state[0, p[:, 0], p[:, 1], channels] = 1
    return state


def max_seeds(height: int, width: int, spacing: int = 1) -> int:
    """How many seeds :func:`random_positions` can place ``spacing`` cells apart: one per box of
    ``2 * spacing - 1`` cells a side (every cell when ``spacing`` is 1)."""
    box = 2 * _side(spacing, "spacing") - 1
    return -(-_side(height, "height") // box) * -(-_side(width, "width") // box)


def random_positions(height: int, width: int, n: int, spacing: int = 1, seed: int = 0) -> np.ndarray:
    """``n`` random (row, column) cells, every two at least ``spacing`` cells apart along a row or a
    column (so at least ``spacing`` apart in straight line too); (n, 2) int64, sorted.

    The world is cut into boxes of ``2 * spacing - 1`` cells a side (the last row and column of
    boxes may be cut short by the world's edge); ``n`` distinct boxes are drawn at random and each
    seed lies at a random cell of its box's top-left ``spacing`` x ``spacing`` corner, so seeds of
    neighbouring boxes are ``spacing`` apart at least. More seeds than boxes (:func:`max_seeds`) is
    an :class:`~fastca.errors.InputError` saying how many fit. ``seed``: the generator's seed
    (0..2**64-1); the same arguments give the same cells.
    """
    height, width = _side(height, "height"), _side(width, "width")
    spacing = _side(spacing, "spacing")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"the number of seeds must be an integer >= 0, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise InputError(f"seed must be an integer in 0..2**64-1, got {seed!r}")
    box = 2 * spacing - 1
    rows, cols = -(-height // box), -(-width // box)
    if n > rows * cols:
        where = "one per cell" if spacing == 1 else f"one per {box}x{box} box"
        raise InputError(f"{n} seeds do not fit in a {height}x{width} world {spacing} cells apart: "
                         f"at most {rows * cols} ({where})")
    rng = np.random.default_rng([int(seed), 0x5EED5])  # a stream of its own (not the run's keys)
    boxes = rng.choice(rows * cols, int(n), replace=False)  # a set-based draw when n is small: no O(boxes) array
    y0, x0 = boxes // cols * box, boxes % cols * box
    ys = y0 + rng.integers(0, np.minimum(spacing, height - y0))
    xs = x0 + rng.integers(0, np.minimum(spacing, width - x0))
    order = np.lexsort((xs, ys))
    return np.stack([ys[order], xs[order]], 1).astype(np.int64)


def marked_pixels(picture: Any) -> np.ndarray:
    """(h, w) bool: the pixels of a picture that mark a seed.

    ``picture``: (h, w) gray, (h, w, 3) RGB or (h, w, 4) RGBA; uint8, uint16 (scaled by their
    depth) or float in [0, 1]; or a bool mask, taken as it is. A picture with transparent pixels
    (alpha below half) marks its opaque pixels, whatever their colour (a shape drawn on a
    transparent background); any other marks its dark pixels (luminance below half: a drawing
    on white).
    """
    a = np.asarray(picture)
    if a.dtype == bool and a.ndim == 2:
        return a.copy()
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or a.dtype.kind not in "uif":
        raise InputError(f"a seeds picture is (h, w) gray, (h, w, 3) RGB or (h, w, 4) RGBA, got {a.dtype} {a.shape}")
    levels = a.astype(np.float32) / (np.float32(np.iinfo(a.dtype).max) if a.dtype.kind in "ui" else 1)
    if not np.isfinite(levels).all():
        raise InputError("a seeds picture has NaN or infinite pixels")
    if levels.ndim == 2:
        return levels < HALF
    if levels.shape[2] == 4 and (levels[..., 3] < HALF).any():
        return levels[..., 3] >= HALF
    luminance = levels[..., :3] @ np.asarray([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as Pillow's "L"
    return luminance < HALF


def _read_picture(path: str) -> np.ndarray:
    """A picture file as a uint8 (h, w, 4) RGBA array; its size is checked before its pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise InputError(f"seeds picture not found (or not a file): {path}")
    try:
        with Image.open(path) as im:
            if im.width > MAX_PICTURE_SIDE or im.height > MAX_PICTURE_SIDE:
                raise InputError(f"seeds picture {path} is {im.width}x{im.height}; at most "
                                 f"{MAX_PICTURE_SIDE}x{MAX_PICTURE_SIDE} pixels")
            return np.asarray(im.convert("RGBA"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"not a readable picture: {path} ({type(exc).__name__})") from None


def positions_from_image(image: Any, height: int | None = None, width: int | None = None) -> np.ndarray:
    """The (row, column) cells of a height x width world under the marked pixels of a picture
    (:func:`marked_pixels`): (N, 2) int64, sorted, each cell once.

    ``image``: a file path (PNG, JPEG, ... read as RGBA) or an array as :func:`marked_pixels`
    takes. The picture is stretched over the world: pixel (i, j) of an h x w picture is the cell
    ``(floor((i + 0.5) * height / h), floor((j + 0.5) * width / w))``, the cell under its centre;
    ``height`` and ``width`` default to the picture's (one cell per pixel). A picture without a
    marked pixel is an :class:`~fastca.errors.InputError`.
    """
    source = os.fspath(image) if isinstance(image, (str, os.PathLike)) else None
    marked = marked_pixels(_read_picture(source) if source is not None else image)
    h, w = marked.shape
    height = h if height is None else _side(height, "height")
    width = w if width is None else _side(width, "width")
    rows, cols = np.nonzero(marked)
    if rows.size == 0:
        raise InputError(f"{'the seeds picture' if source is None else source} has no marked pixel (dark on a "
                         "light background, or opaque on a transparent one)")
    ys = ((2 * rows + 1) * height) // (2 * h)  # floor((i + 0.5) * height / h) in integers
    xs = ((2 * cols + 1) * width) // (2 * w)
    return np.unique(np.stack([ys, xs], 1).astype(np.int64), axis=0)
