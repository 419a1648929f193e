"""The numba-cpu backend: the fused in-place Numba CPU kernel (:mod:`fastca.kernels.cpu`)."""

import sys

import numpy as np

from .. import _numba_setup
from .._numba_setup import KERNEL_LOCK
from .base import BackendInfo, HostRunner, register


class NumbaCPU(HostRunner):
    """Fused in-place Numba CPU kernel of the model's description (generated per description, see
    :mod:`fastca.kernels.cpu_shape`); float32 or float16 (as uint16 bits) state storage.

    Option ``band_rows``: rows per parallel band (default: 64, or 256 for samples shorter
    than 64 rows); results do not depend on it.
    """

    def __init__(self, weights, state, params, band_rows=None):
        description = weights.description
        super().__init__(params, description)
        import numba

        from ..kernels import cpu_shape
        from ..kernels.storage import kernel_view

        self._k = cpu_shape.kernel(description)
        self._kernel = self._k.step_inplace
        _announce_compilation(self._k)
        self.state = state  # float32, or float16 (storage="float16")
        n_b, n_h, n_w, n_c = state.shape
        self._rows = kernel_view(state).reshape(n_b * n_h, n_w, n_c)  # a view: the kernel's layout
        self._rule = description.alive.rule
        self._index = None  # the index of the cells that may update, built before the next step when None
        self._height = n_h
        self._bands = self._k.make_bands(n_b, n_h, band_rows)
        self._nonfinite = np.zeros(len(self._bands), np.int64)
        self._scratch = self._k.scratch_buffers(len(self._bands), n_b, n_w, numba.config.NUMBA_NUM_THREADS)
        self._weights = cpu_shape.pack_weights(description, weights.arrays())
        if self._rule == "maxpool":  # bit masks: hot, pre, act, read, keep, live (kernels.cpu.maxpool_masks)
            self._masks = self._k.maxpool_masks(n_b * n_h, n_w)  # live: all set (any cell may hold values)
            self._fresh = True  # hot must be read from the state before the next step
            self._hot = self._masks[0]
            self._ptr = np.zeros((2, n_b * n_h + 1), np.int64)
            self._runs = np.zeros((0, 2), np.int32)
        else:
            self._hot = np.zeros((1, 1), np.uint64)  # unused
        p = params
        self._args = (np.uint64(p.seed), np.float32(p.fire_rate), np.float32(p.noise_std),
                      np.asarray(p.origin, np.int64))

    def poison(self):
        """Fill the scratch buffers with NaN, or 255 (tests: a read of an unwritten value cannot pass)."""
        for a in self._scratch:
            a.fill(np.nan if a.dtype.kind == "f" else 255)

    def step(self, t):
        """Advance the state by one step whose random numbers are keyed by step index ``t``."""
        import numba

        seed, fire_rate, noise_std, origin = self._args
        with KERNEL_LOCK:
            index = self._maxpool_index() if self._rule == "maxpool" else self._alive_index()
            # Bands go to whichever thread is free (dynamic schedule, one band at a time): a thread slowed
            # by other work on its core does not hold the step back; results do not depend on it.
            chunk = numba.set_parallel_chunksize(1)
            try:
                self._kernel(self._rows, self._height, self._weights, seed, np.int64(t), fire_rate, noise_std,
                             origin, self._bands, self._nonfinite, *self._scratch, *index, self._hot, self._thr)
            finally:
                numba.set_parallel_chunksize(chunk)
            if self._rule == "maxpool":
                m = self._masks
                self._k.maxpool_keep(self._height, self._rows.shape[1], m)
                self._k.zero_dead(self._rows, m[5], m[2], m[4], m[0])
                self._fresh = self._thr < 0  # a zeroed cell is alive: hot must be read again

    def _maxpool_index(self):
        """The max-pool rule's index for this step: the cells within one cell of an alive one (and the
        values they read). Its runs array grows when the alive region does (rarely: by half again)."""
        k, m = self._k, self._masks
        if self._thr < 0:  # a zero cell is alive: any cell may count
            k.mark_all(m[5], self._rows.shape[1])
        k.maxpool_pre(self._rows, self._height, self._thr, m, self._fresh)
        n = k.index_counts(m[2], m[3], self._ptr)
        if n > self._runs.shape[0]:
            self._runs = np.zeros((max(n, self._runs.shape[0] * 3 // 2), 2), np.int32)
        k.index_fill(m[2], m[3], self._rows.shape[1], self._ptr, self._runs)
        return self._ptr, self._runs

    def count(self, handle, buf, i):
        """Counts of the current state into buf[i] (MNIST: reading only the alive cells, from the alive index)."""
        from .. import metrics as m

        if m.mnist_layout(self.description):
            buf[i] = m.counts(self.state, handle, self._thr, index=self._alive_index())
        else:
            super().count(handle, buf, i)

    def _alive_index(self):
        """The alive index of the state (kernels.cpu.alive_index), built when missing."""
        if self._index is None:
            with KERNEL_LOCK:
                self._index = self._k.alive_index(self._rows, self._thr, self._height)
        return self._index

    def state_written(self):
        """The state may have changed outside the kernel: rebuild the alive index before the next step
        (under the max-pool rule: any cell may hold values again)."""
        self._index = None
        if self._rule == "maxpool":
            self._k.mark_all(self._masks[5], self._rows.shape[1])
            self._fresh = True

    def nonfinite(self):
        """The sample of a cell that became non-finite since the last call (None: none); resets."""
        hit = self._nonfinite[self._nonfinite > 0]
        if hit.size == 0:
            return None
        self._nonfinite[:] = 0
        return int(hit.min()) - 1

    def read(self):
        """The current state as a numpy array (a view, no copy)."""
        return self.state


_ANNOUNCED = set()


def _announce_compilation(module):
    """Say on stderr, once per generated kernel module, that this run compiles it (15-20 s of silence
    otherwise): when Numba's cache holds nothing for it and this process has not compiled it yet."""
    from ..kernels import generate

    if module.__name__ in _ANNOUNCED or module.step_inplace.signatures or generate.is_cached(module):
        return
    _ANNOUNCED.add(module.__name__)
    print(f"fastca: compiling the CPU kernels (first run only, about 20 s; cached in {_numba_setup.cache_dir})",
          file=sys.stderr, flush=True)


INFO = register(BackendInfo(
    name="numba-cpu",
    load=lambda: NumbaCPU,
    probe=lambda: (True, "CPU", True),
    storages=("float32", "float16"),
    speed_rank=20,
    summary="fused in-place Numba CPU kernel (register-tiled MLP of blocks of the alive, firing cells)",
))
