"""Backend registry: name -> runner class, lazy imports, and the "auto" choice.

A runner owns the state of one simulation, ``(B, H, W, 20)`` float32, and advances
it one step at a time with :meth:`step`. This is the one place that imports kernels.
"""

import os

import numpy as np

from . import spec

BACKENDS = ("numba-cpu", "torch")


class NumbaCPU:
    """Fused in-place Numba CPU kernel (:mod:`fastca.kernels.cpu`)."""

    name = "numba-cpu"

    def __init__(self, weights, state, seed, fire_rate, noise_std, alive_threshold):
        import numba

        from .kernels import cpu

        self._kernel = cpu.step_inplace
        self.state = state
        n_b, n_h, n_w, _ = state.shape
        threads_max = numba.config.NUMBA_NUM_THREADS
        self._bands = cpu.make_bands(n_b, n_h, numba.get_num_threads())
        self._scratch = cpu.scratch_buffers(len(self._bands), n_w, threads_max)
        w = weights
        self._weights = (w.w1.reshape(spec.PERCEPTION_IN, spec.HIDDEN), w.b1, w.w2, w.b2,
                         *cpu.pad_output_layer(w.w3, w.b3))
        self._args = (np.uint64(seed), np.float32(fire_rate), np.float32(noise_std), np.float32(alive_threshold))

    def step(self, t):
        """Advance the state by one step whose random numbers are keyed by step index ``t``."""
        seed, fire_rate, noise_std, alive = self._args
        self._kernel(self.state, *self._weights, seed, np.int64(t), fire_rate, noise_std, alive,
                     self._bands, *self._scratch)

    def numpy(self):
        """The current state as a numpy array (a view, no copy)."""
        return self.state


class Torch:
    """The PyTorch reference module, fed the shared generator's masks and noise."""

    name = "torch"

    def __init__(self, weights, state, seed, fire_rate, noise_std, alive_threshold):
        import torch

        from .torch_model import TorchNCA

        self._torch = torch
        self.model = TorchNCA.from_weights(weights).eval()
        self.model.fire_rate, self.model.noise_std = fire_rate, noise_std
        self.model.alive_threshold = alive_threshold
        self.state = torch.from_numpy(state)
        self._args = (seed, fire_rate, noise_std, alive_threshold)

    def step(self, t):
        """Advance the state by one step whose random numbers are keyed by step index ``t``."""
        from .torch_model import shared_randomness

        seed, fire_rate, noise_std, alive = self._args
        mask, noise = shared_randomness(seed, t, self.numpy(), fire_rate, noise_std, alive)
        if noise is None:
            noise = self._torch.zeros(())
        with self._torch.no_grad():
            self.state = self.model(self.state, fire_mask=mask, noise=noise).contiguous()

    def numpy(self):
        """The current state as a numpy array (a view, no copy)."""
        return self.state.numpy()


_RUNNERS = {"numba-cpu": NumbaCPU, "torch": Torch}


def available_backends():
    """Names of the backends usable on this machine, fastest first."""
    names = []
    try:
        import numba  # noqa: F401

        names.append("numba-cpu")
    except ImportError:
        pass
    try:
        import torch  # noqa: F401

        names.append("torch")
    except ImportError:
        pass
    return names


def resolve(backend):
    """Map a backend name (or "auto") to a runner class; raise ValueError naming the choices."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend == "auto":
        backend = os.environ.get("FASTCA_BACKEND", "numba-cpu")
    if backend not in _RUNNERS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(('auto',) + BACKENDS)}")
    return _RUNNERS[backend]
