"""The numba-cpu backend: the fused in-place Numba CPU kernel (:mod:`fastca.kernels.cpu`)."""

import sys

import numpy as np

from .. import _numba_setup, metrics, spec
from .._numba_setup import KERNEL_LOCK
from .base import BackendInfo, HostRunner, register


class NumbaCPU(HostRunner):
    """Fused in-place Numba CPU kernel; float32 or float16 (as uint16 bits) state storage.

    Option ``band_rows``: rows per parallel band (default: 64, or 256 for samples shorter
    than 64 rows); results do not depend on it.
    """

    def __init__(self, weights, state, params, band_rows=None):
        super().__init__(params)
        import numba

        from ..kernels import cell, cpu
        from ..kernels.storage import kernel_view

        self._kernel = cpu.step_inplace
        _announce_compilation(self._kernel)
        self.state = state  # float32, or float16 (storage="float16")
        n_b, n_h, n_w, _ = state.shape
        self._rows = kernel_view(state).reshape(n_b * n_h, n_w, spec.CHANNELS)  # a view: the kernel's layout
        self._index = None  # cpu.alive_index of the state, built before the next step when None
        self._height = n_h
        self._bands = cpu.make_bands(n_b, n_h, band_rows)
        self._nonfinite = np.zeros(len(self._bands), np.int64)
        self._scratch = cpu.scratch_buffers(len(self._bands), n_w, numba.config.NUMBA_NUM_THREADS)
        self._weights = cell.kernel_weights(weights)
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
            index = self._alive_index()
            # Bands go to whichever thread is free (dynamic schedule, one band at a time): a thread slowed
            # by other work on its core does not hold the step back; results do not depend on it.
            chunk = numba.set_parallel_chunksize(1)
            try:
                self._kernel(self._rows, self._height, *self._weights, seed, np.int64(t), fire_rate, noise_std,
                             origin, self._bands, self._nonfinite, *self._scratch, *index)
            finally:
                numba.set_parallel_chunksize(chunk)

    def count(self, handle, buf, i):
        """Counts of the current state into buf[i], reading only the alive cells (from the alive index)."""
        buf[i] = metrics.counts(self.state, handle, self._thr, index=self._alive_index())

    def _alive_index(self):
        """The alive index of the state (kernels.cpu.alive_index), built when missing."""
        if self._index is None:
            from ..kernels import cpu

            with KERNEL_LOCK:
                self._index = cpu.alive_index(self._rows, self._thr)
        return self._index

    def state_written(self):
        """Channel 0 may have changed outside the kernel: rebuild the alive index before the next step."""
        self._index = None

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


_ANNOUNCED = False


def _announce_compilation(kernel):
    """Say once, on stderr, that the first run compiles the kernels (15-20 s of silence otherwise)."""
    global _ANNOUNCED
    if _ANNOUNCED or kernel.signatures or not _numba_setup.fresh_cache:
        return
    _ANNOUNCED = True
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
