"""Digit pools and MNIST worlds built chunk by chunk (the whole world never exists in memory), and
their tile layout (:class:`MnistTiles`) for out-of-core metrics."""

import dataclasses

import numpy as np

from .. import data, metrics
from .reduce import _votes
from .rounds import _dask
from ..errors import InputError


DIGIT_SOURCES = ("mnist-test", "embedded-sample")  #: where the digits of an MNIST world come from


def mnist_digits(source="auto"):
    """(images, labels, provenance) of a digit pool: ``"mnist-test"`` (the MNIST test set from
    ``$FASTCA_MNIST_DIR``), ``"embedded-sample"`` (the package's sample), or ``"auto"`` (the first that
    is there). provenance: {"digits": the source, "digits_sha256": :func:`fastca.data.digits_hash`}, to record with a
    store (``zarr_run(world=...)``) so that a resumed run uses the same digits."""
    if source == "auto":
        try:
            images, labels = data.load_mnist("test")
            source = "mnist-test"
        except FileNotFoundError:
            images, labels = data.sample_digits()
            source = "embedded-sample"
    elif source == "mnist-test":
        images, labels = data.load_mnist("test")
    elif source == "embedded-sample":
        images, labels = data.sample_digits()
    else:
        raise InputError(f"digit source must be 'auto' or one of {DIGIT_SOURCES}, got {source!r}")
    return images, labels, {"digits": source, "digits_sha256": data.digits_hash(images, labels)}


def mnist_world(height, width, chunks, *, images=None, labels=None, seed=0):
    """A (height, width) uint8 dask array of tiled MNIST digits, built chunk by chunk (the whole world
    never exists in memory), and its (rows, cols) tile index (NumPy). Same layout as
    :func:`fastca.data.mnist_world` with ``seed`` (random test digits, one per 28x28 tile).
    ``images=None``: the digits of :func:`mnist_digits` ("auto")."""
    da = _dask()
    if images is None:
        images, labels, _ = mnist_digits("auto")
    rows, cols = -(-height // data.DIGIT), -(-width // data.DIGIT)
    index = data.tile_index(len(images), rows, cols, seed)

    def block(block_info=None):
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        r0, r1, c0, c1 = y0 // 28, -(-y1 // 28), x0 // 28, -(-x1 // 28)
        pic = data.tile_picture(images, index[r0:r1, c0:c1])
        return np.ascontiguousarray(pic[y0 - r0 * 28 : y1 - r0 * 28, x0 - c0 * 28 : x1 - c0 * 28])

    gray = da.map_blocks(block, dtype=np.uint8, chunks=da.core.normalize_chunks(chunks, (height, width)))
    return gray, index, np.asarray(labels)


def tile_ids(height, width, chunks):
    """(1, height, width) int64 dask array: the index of each cell's 28x28 tile (row-major), chunked."""
    da = _dask()
    cols = -(-width // data.DIGIT)

    def block(block_info=None):
        (y0, y1), (x0, x1) = block_info[None]["array-location"][1:]
        yy, xx = np.mgrid[y0:y1, x0:x1]
        return ((yy // 28) * cols + xx // 28)[None]

    return da.map_blocks(block, dtype=np.int64, chunks=((1,),) + da.core.normalize_chunks(chunks, (height, width)))


@dataclasses.dataclass(frozen=True)
class MnistTiles:
    """The digit layout of an MNIST world (B = 1): ``index`` (rows, cols) of the image in each 28x28
    tile and the images' ``labels``, as :func:`mnist_world` returns them. Gives a window's per-cell
    targets and tile numbers, so out-of-core rounds can count accuracy and per-digit votes."""

    index: np.ndarray
    labels: np.ndarray

    def targets(self, y0, y1, x0, x1):
        """(1, y1-y0, x1-x0) int16 per-cell digit labels of a window."""
        lab = self.labels[self.index].astype(np.int16)
        return np.ascontiguousarray(lab[np.arange(y0, y1) // data.DIGIT][:, np.arange(x0, x1) // data.DIGIT])[None]

    def votes(self, state, y0, x0):
        """Alive cells per label (column 10: undecided) for each tile that the window of ``state``
        (1, h, w, 20) at (y0, x0) touches: ((r0, r1, c0, c1) tile range, votes (r1-r0, c1-c0, 11) int64)."""
        _, h, w, _ = state.shape
        r0, r1, c0, c1 = y0 // data.DIGIT, -(-(y0 + h) // data.DIGIT), x0 // data.DIGIT, -(-(x0 + w) // data.DIGIT)
        _, classes = metrics.picture_maps(state)
        rows = (np.arange(y0, y0 + h) // data.DIGIT - r0)[:, None]
        cols = (np.arange(x0, x0 + w) // data.DIGIT - c0)[None, :]
        votes = _votes(rows * (c1 - c0) + cols, classes[0], (r1 - r0) * (c1 - c0))
        return (r0, r1, c0, c1), votes.reshape(r1 - r0, c1 - c0, 11)
