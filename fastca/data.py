"""MNIST loading (the four canonical IDX ``.gz`` files) and "MNIST worlds" (tiled canvases)."""

import gzip
import hashlib
import os

import numpy as np

from . import spec
from .errors import InputError

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
ENV_VAR = "FASTCA_MNIST_DIR"
DIGIT = 28


def mnist_dir(path=None):
    """The folder holding the MNIST files: ``path``, else ``$FASTCA_MNIST_DIR``, else None."""
    path = path if path is not None else os.environ.get(ENV_VAR)
    return os.fspath(path) if path else None


def _read_idx(path, ndim):
    with open(path, "rb") as f:
        raw = f.read()
    md5 = hashlib.md5(raw).hexdigest()
    name = os.path.basename(path)
    if MD5.get(name) != md5:
        raise InputError(f"{path}: md5 {md5} does not match the canonical MNIST file ({MD5.get(name)})")
    data = gzip.decompress(raw)
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x800 + ndim:
        raise InputError(f"{path}: not an IDX file of {ndim} dimensions (magic {magic:#x})")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(split="test", path=None):
    """Load MNIST: (images uint8 (N, 28, 28), labels uint8 (N,)), N = 60,000 (train) or 10,000 (test).

    Reads the canonical ``.gz`` IDX files from ``path`` or ``$FASTCA_MNIST_DIR`` and
    checks their md5 sums. Raises FileNotFoundError saying how to get them when missing.
    """
    if split not in FILES:
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    folder = mnist_dir(path)
    names = FILES[split]
    if folder is None or not all(os.path.exists(os.path.join(folder, n)) for n in names):
        where = f"in {folder!r}" if folder else f"(no path given and ${ENV_VAR} is not set)"
        raise FileNotFoundError(
            f"MNIST {split} files not found {where}. Download {', '.join(names)} from a MNIST mirror "
            f"(e.g. https://ossci-datasets.s3.amazonaws.com/mnist/) into a folder and pass path=... "
            f"or set ${ENV_VAR}. fastca.data.sample_digits() works offline with a small embedded sample."
        )
    images = _read_idx(os.path.join(folder, names[0]), 3)
    labels = _read_idx(os.path.join(folder, names[1]), 1)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (DIGIT, DIGIT):
        raise InputError(f"MNIST {split}: images {images.shape} and labels {labels.shape} do not match")
    return images, labels


def digits_hash(images, labels):
    """SHA-256 (hex) of a digit pool, images and labels with their shapes: what results made from it depend on."""
    h = hashlib.sha256()
    for a in (np.asarray(images, np.uint8), np.asarray(labels, np.int64)):
        h.update(repr(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def sample_digits():
    """The small MNIST test sample embedded in the package (offline): (images (N, 28, 28) uint8, labels (N,)).

    The first test digits of MNIST (Y. LeCun, C. Cortes, C. J. C. Burges; CC BY-SA 3.0).
    """
    from importlib import resources

    with resources.files("fastca").joinpath("assets/mnist_test_sample.npz").open("rb") as f:
        with np.load(f) as z:
            return z["images"], z["labels"]


def alive_mask(gray, alive_threshold=0.1):
    """Bool map of the cells a gray image makes alive: ``gray / 255 > threshold`` in float32.

    gray: uint8 array of any shape (as the simulator converts it).
    """
    return spec.is_alive(spec.unit_gray(np.asarray(gray)), np.float32(alive_threshold))


def tile_index(n_images, rows, cols, seed=None):
    """(rows, cols) int64: the image in each tile of an MNIST world, in order (cycling) or drawn from ``seed``."""
    n = rows * cols
    order = np.arange(n) % n_images if seed is None else np.random.default_rng(seed).integers(0, n_images, n)
    return order.reshape(rows, cols)


def tile_picture(images, index):
    """(rows*28, cols*28) uint8: the images of ``index`` (rows, cols) laid side by side."""
    rows, cols = index.shape
    return images[index].transpose(0, 2, 1, 3).reshape(rows * DIGIT, cols * DIGIT)


def mnist_world(images, labels, height, width, *, seed=None):
    """Tile digits into one large canvas, an "MNIST world".

    images: (N, 28, 28) uint8; labels: (N,). Digits are laid row-major in a grid of
    28x28 tiles, taking images in order (cycling when more tiles than images), or in a
    random order from ``seed``. Tiles cut by the right/bottom edge are cropped.
    Returns (gray (height, width) uint8, targets (height, width) int16 per-cell digit
    labels, index (n_rows, n_cols) int64 of the image in each tile).
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 3 or images.shape[1:] != (DIGIT, DIGIT) or images.dtype != np.uint8:
        raise InputError(f"images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1]:
        raise InputError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
    if not (height >= 1 and width >= 1):
        raise InputError(f"world must be at least 1x1, got {height}x{width}")
    rows, cols = -(-height // DIGIT), -(-width // DIGIT)
    index = tile_index(len(images), rows, cols, seed)
    gray = tile_picture(images, index)[:height, :width]
    targets = np.repeat(np.repeat(labels[index].astype(np.int16), DIGIT, 0), DIGIT, 1)[:height, :width]
    return np.ascontiguousarray(gray), np.ascontiguousarray(targets), index
