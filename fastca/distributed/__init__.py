"""Runs beyond one machine (Dask) and beyond memory (Zarr), bit-identical to :func:`fastca.simulate`.

A grid is a dask array split into chunks. Each **round** advances every chunk by
``k = min(halo // reach, steps left)`` steps on a copy of the chunk widened by ``k * reach`` cells
on each side that has a neighbour (:func:`reach`: 2 cells a step under the max-pool alive rule,
else 1) (``dask.array.map_overlap``; the grid's own edges stay zero
padding), keyed by the chunk's global origin, and keeps the chunk's interior. A cell k * reach
cells inside the widened copy depends only on cells of the whole grid, so every round gives
exactly the bits of the single-machine run with the same seed: the random keys are global
(``origin``) and the CPU kernel's products run on fixed-size blocks (a cell's bits do not
depend on its neighbours in a block). Tasks never modify their inputs, so a task recomputed
after a worker is lost gives the same bits.

Modules: :mod:`.rounds` (Dask rounds with halos: :func:`simulate`), :mod:`.reduce` (metrics
reduced over chunks), :mod:`.worlds` (digit pools, MNIST worlds built chunk by chunk),
:mod:`.lock` (one run per Zarr store), :mod:`.store` (a store's records and chunk checks),
:mod:`.out_of_core` (:func:`zarr_run`). Everything is re-exported here.

Optional extra: ``pip install "fastca[distributed]"`` (dask[array], distributed, zarr).
"""

from .lock import LOCK_NAME, StoreLocked, store_lock
from .out_of_core import _ZarrRound, zarr_run  # noqa: F401  (_ZarrRound: the tests run one task)
from .reduce import accuracy_agreement, counts, digit_agreement, digit_votes
from .rounds import advance, as_state, check_chunks, reach, simulate
from .store import _latest, _open_new  # noqa: F401  (the tests read the latest array, open a new one)
from .store import RECORD_FORMAT, describe, stored_record, stored_shape
from .worlds import DIGIT_SOURCES, MnistTiles, mnist_digits, mnist_world, tile_ids

__all__ = [
    "DIGIT_SOURCES",
    "LOCK_NAME",
    "RECORD_FORMAT",
    "MnistTiles",
    "StoreLocked",
    "accuracy_agreement",
    "advance",
    "as_state",
    "check_chunks",
    "counts",
    "describe",
    "digit_agreement",
    "digit_votes",
    "mnist_digits",
    "mnist_world",
    "reach",
    "simulate",
    "store_lock",
    "stored_record",
    "stored_shape",
    "tile_ids",
    "zarr_run",
]
