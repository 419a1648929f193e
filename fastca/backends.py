"""Backend registry: name -> runner class, lazy imports, and the "auto" choice.

A runner owns the state of one simulation, ``(B, H, W, 20)`` float32, and advances
it one step at a time with :meth:`step`. This is the one place that imports kernels.
"""

import importlib.util
import logging
import os

import numpy as np

from . import metrics, spec
from ._compat import numba_cuda

BACKENDS = ("numba-cpu", "numba-cuda", "torch")
log = logging.getLogger("fastca")


class HostRunner:
    """Shared parts of the runners whose state is a host (numpy-compatible) array."""

    device = False

    def set_targets(self, targets):
        """Keep the (B, H, W) target map for :meth:`metrics`."""
        self._targets = targets

    def metrics(self):
        """(accuracy %, agreement %) of the current state against the target map."""
        return metrics.step_metrics(self.numpy(), self._targets, self._alive_threshold)

    def result(self, output):
        """(final state (B, H, W, 20), label map (B, H, W) int8) as numpy arrays."""
        if output != "host":
            raise ValueError(f"backend {self.name!r} computes on the host; output must be 'host', got {output!r}")
        state = self.numpy()  # the runner owns this array: no copy needed
        return state, metrics.label_map(state, self._alive_threshold)


class NumbaCPU(HostRunner):
    """Fused in-place Numba CPU kernel (:mod:`fastca.kernels.cpu`)."""

    name = "numba-cpu"

    def __init__(self, weights, state, seed, fire_rate, noise_std, alive_threshold):
        import numba

        from .kernels import cpu
        from .kernels.storage import kernel_view

        self._kernel = cpu.step_inplace
        self.state = state  # float32, or float16 (storage="float16")
        self._kernel_state = kernel_view(state)
        n_b, n_h, n_w, _ = state.shape
        threads_max = numba.config.NUMBA_NUM_THREADS
        self._bands = cpu.make_bands(n_b, n_h)
        self._scratch = cpu.scratch_buffers(len(self._bands), n_w, threads_max)
        w = weights
        self._weights = (w.w1.reshape(spec.PERCEPTION_IN, spec.HIDDEN), w.b1, w.w2, w.b2, w.w3, w.b3)
        self._args = (np.uint64(seed), np.float32(fire_rate), np.float32(noise_std), np.float32(alive_threshold))
        self._alive_threshold = alive_threshold

    def step(self, t):
        """Advance the state by one step whose random numbers are keyed by step index ``t``."""
        seed, fire_rate, noise_std, alive = self._args
        with _single_threaded_blas():  # the kernel's threads each call BLAS on their own block
            self._kernel(self._kernel_state, *self._weights, seed, np.int64(t), fire_rate, noise_std, alive,
                         self._bands, *self._scratch)

    def numpy(self):
        """The current state as a numpy array (a view, no copy)."""
        return self.state


_BLAS_LIMITER = None


def _single_threaded_blas():
    """Context manager limiting BLAS to one thread (threadpoolctl; built once, cheap to enter)."""
    global _BLAS_LIMITER
    if _BLAS_LIMITER is None:
        import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS Numba's np.dot calls, so it is controlled)
        from threadpoolctl import ThreadpoolController

        _BLAS_LIMITER = ThreadpoolController()
    return _BLAS_LIMITER.limit(limits=1, user_api="blas")


class Torch(HostRunner):
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
        self._alive_threshold = alive_threshold

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


class NumbaCUDA:
    """Fused in-place Numba CUDA kernel (:mod:`fastca.kernels.cuda`); the state stays on the device."""

    name = "numba-cuda"
    device = True

    def __init__(self, weights, state, seed, fire_rate, noise_std, alive_threshold):
        cuda = numba_cuda()

        from .kernels import cuda as kern

        self._cuda, self._k = cuda, kern
        self.state = state  # (B, H, W, 20) float32 device array, owned
        n_b, n_h, n_w, _ = state.shape
        self._halo = cuda.device_array(kern.halo_shape(n_b, n_h, n_w), np.float32)
        w = weights
        self._weights = tuple(
            cuda.to_device(np.ascontiguousarray(a))
            for a in (w.w1.reshape(spec.PERCEPTION_IN, spec.HIDDEN), w.b1, w.w2, w.b2, w.w3, w.b3)
        )
        self._args = (np.uint64(seed), np.float32(fire_rate), np.float32(noise_std), np.float32(alive_threshold))
        self._grid = (self._halo.shape[1], n_b)
        self._halo_launch = kern.launch_1d(n_b * self._halo.shape[1] * 2 * n_w)
        self._cell_launch = kern.launch_1d(n_b * n_h * n_w)
        self._alive_threshold = np.float32(alive_threshold)

    @staticmethod
    def to_device_state(x, input_kind):
        """Return (state (B, H, W, 20) float32 device array owned by the run, leading shape, batched?).

        ``x`` is a host array (copied to the device once) or a device array exposing
        ``__cuda_array_interface__`` (Numba, CuPy, torch CUDA): copied device to device,
        never through the host. Device gray input is uint8 or float32 in [0, 1] (not
        range-checked on the device); device state input must be float32.
        """
        cuda = numba_cuda()

        from .kernels import cuda as kern

        if not _is_device_array(x):
            from .simulate import _as_state

            state, lead, batched = _as_state(x, input_kind)
            return cuda.to_device(state), lead, batched
        # Wrap foreign device arrays (CuPy, torch) without a copy; the simulator has no wrapper.
        arr = cuda.as_cuda_array(x) if hasattr(cuda, "as_cuda_array") else x
        shape = tuple(arr.shape)
        from .simulate import is_state_input

        if is_state_input(shape, arr.dtype, input_kind):
            if len(shape) not in (3, 4) or shape[-1] != spec.CHANNELS or arr.dtype != np.float32:
                raise ValueError(f"device state must be float32 (H, W, 20) or (B, H, W, 20), got {arr.dtype} {shape}")
            if min(shape) < 1:
                raise ValueError(f"empty input: shape {shape} has a zero-length axis")
            state = cuda.device_array((int(np.prod(shape[:-3])),) + shape[-3:], np.float32)
            state.copy_to_device(arr.reshape(state.shape))
            return state, shape[:-1], len(shape) == 4
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ValueError(f"device gray input must be a non-empty (H, W) or (B, H, W), got shape {shape}")
        if arr.dtype not in (np.uint8, np.float32):
            raise TypeError(f"device gray input must be uint8 or float32, got {arr.dtype}")
        gray = arr.reshape((-1,) + shape[-2:]) if len(shape) == 3 else arr.reshape((1,) + shape)
        state = cuda.device_array(tuple(gray.shape) + (spec.CHANNELS,), np.float32)
        scale = np.float32(1 / 255) if arr.dtype == np.uint8 else np.float32(1)
        kern.init_kernel[kern.launch_1d(gray.size)](gray, scale, state)
        return state, shape, len(shape) == 3

    def step(self, t):
        """Advance the state by one step (two launches, no host round trip)."""
        seed, fire_rate, noise_std, alive = self._args
        self._k.save_halo[self._halo_launch](self.state, self._halo)
        self._k.step_kernel[self._grid, (self._k.TX, self._k.TY)](
            self.state, self._halo, *self._weights, seed, np.int64(t), fire_rate, noise_std, alive)

    def set_targets(self, targets):
        """Copy the (B, H, W) target map to the device once."""
        self._targets = self._cuda.to_device(np.ascontiguousarray(targets, dtype=np.int16))
        self._counts = self._cuda.device_array((self.state.shape[0], 2 + spec.N_CLASSES), np.int64)
        self._zeros = np.zeros(self._counts.shape, np.int64)

    def metrics(self):
        """(accuracy %, agreement %), counted on the device; only (B, 12) counts come back."""
        self._counts.copy_to_device(self._zeros)
        self._k.count_kernel[self._cell_launch](self.state, self._alive_threshold, self._targets, self._counts)
        return metrics.from_counts(self._counts.copy_to_host())

    def numpy(self):
        """A host copy of the current state."""
        return self.state.copy_to_host()

    def result(self, output):
        """(final state, label map): device arrays for output="device", numpy for "host"."""
        labels = self._cuda.device_array(self.state.shape[:-1], np.int8)
        self._k.label_kernel[self._cell_launch](self.state, self._alive_threshold, labels)
        if output == "device":
            return self.state, labels
        if output != "host":
            raise ValueError(f"output must be 'host' or 'device', got {output!r}")
        return self.state.copy_to_host(), labels.copy_to_host()


def _is_device_array(x):
    """True for arrays in GPU memory: anything with __cuda_array_interface__, or a simulator array."""
    if hasattr(x, "__cuda_array_interface__"):
        return True
    cuda = numba_cuda()

    return bool(getattr(cuda, "is_cuda_array", lambda a: type(a).__name__ == "FakeCUDAArray")(x))


_RUNNERS = {"numba-cpu": NumbaCPU, "numba-cuda": NumbaCUDA, "torch": Torch}


def cuda_status():
    """(usable, reason): whether the numba-cuda backend can run here, and why not."""
    if importlib.util.find_spec("numba_cuda") is None:
        return False, "the numba-cuda package is not installed (pip install 'fastca[cuda]')"
    cuda = numba_cuda()

    if not cuda.is_available():
        return False, "no usable CUDA GPU (numba.cuda.is_available() is False: check the driver and CUDA_VISIBLE_DEVICES)"
    return True, "CUDA simulator" if _simulating() else "GPU"


def _simulating():
    from numba import config

    return bool(config.ENABLE_CUDASIM)


def available_backends():
    """Names of the backends usable on this machine, fastest first."""
    names = []
    if cuda_status()[0]:
        names.append("numba-cuda")
    names.append("numba-cpu")
    if importlib.util.find_spec("torch") is not None:
        names.append("torch")
    return names


def resolve(backend):
    """Map a backend name (or "auto") to a runner class; raise naming the choices or what is missing.

    "auto" is ``$FASTCA_BACKEND`` when set, else numba-cuda when a real GPU is usable, else
    numba-cpu; the choice is logged on the "fastca" logger.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend == "auto":
        chosen = os.environ.get("FASTCA_BACKEND")
        if chosen is None:
            usable, reason = cuda_status()
            chosen = "numba-cuda" if usable and reason == "GPU" else "numba-cpu"
            log.info("backend auto -> %s (numba-cuda: %s)", chosen, reason if not usable else "usable")
        backend = chosen
    if backend not in _RUNNERS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(('auto',) + BACKENDS)}")
    if backend == "numba-cuda":
        usable, reason = cuda_status()
        if not usable:
            raise RuntimeError(f"backend 'numba-cuda' is not available: {reason}")
    return _RUNNERS[backend]
