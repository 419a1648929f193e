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
    """Fused in-place Numba CUDA kernel (:mod:`fastca.kernels.cuda`); the state stays on the device.

    ``seg_rows`` (rows per thread block's segment; default from the grid and the SM count)
    and ``layout`` (a key of ``kernels.cuda.LAYOUTS``) tune the launch; results do not
    depend on either.
    """

    name = "numba-cuda"
    device = True

    def __init__(self, weights, state, seed, fire_rate, noise_std, alive_threshold, seg_rows=None, layout=None,
                 mode=0):
        cuda = numba_cuda()

        from .kernels import cuda as kern

        self._cuda, self._k = cuda, kern
        self.state = state  # (B, H, W, 20) float32 or float16 device array, owned
        n_b, n_h, n_w, _ = state.shape
        if seg_rows is None:
            seg_rows = kern.choose_seg_rows(n_b, n_h, n_w, _sm_count(cuda))
        self.seg_rows = int(seg_rows)
        row_shape, col_shape = kern.halo_shapes(n_b, n_h, n_w, self.seg_rows)
        self._rowhalo = cuda.device_array(row_shape, state.dtype)
        self._colhalo = cuda.device_array(col_shape, state.dtype)
        self._flat = tuple(a.reshape(a.size) for a in (state, self._rowhalo, self._colhalo))  # views, no copies
        w = weights
        self._weights = tuple(cuda.to_device(np.ascontiguousarray(a, np.float32).ravel())
                              for a in (w.w1, w.b1, w.w2, w.b2, w.w3, w.b3))
        self._args = (np.uint64(seed), np.float32(fire_rate), np.float32(noise_std), np.float32(alive_threshold))
        self.layout = layout or kern.DEFAULT_LAYOUT
        self._kernel = kern.step_kernel(self.layout, state.dtype == np.float16, mode)
        self._threads = kern.threads_per_block(self.layout)
        self._grid = (-(-n_w // kern.TW), -(-n_h // self.seg_rows))
        n_halo = n_b * (row_shape[1] * 2 * n_w + col_shape[1] * 2 * n_h)
        self._halo_launch = kern.launch_1d(n_halo)
        self._cell_launch = kern.launch_1d(n_b * n_h * n_w)
        self._alive_threshold = np.float32(alive_threshold)

    @staticmethod
    def to_device_state(x, input_kind, dtype=np.float32):
        """Return (state (B, H, W, 20) ``dtype`` device array owned by the run, leading shape, batched?).

        ``x`` is a host array (copied to the device once) or a device array exposing
        ``__cuda_array_interface__`` (Numba, CuPy, torch CUDA): copied device to device,
        never through the host. Device gray input is uint8 or float32 in [0, 1] (not
        range-checked on the device); device state input must be float32 (or ``dtype``).
        """
        cuda = numba_cuda()

        from .kernels import cuda as kern

        if not _is_device_array(x):
            from .simulate import _as_state

            state, lead, batched = _as_state(x, input_kind, dtype)
            return cuda.to_device(state), lead, batched
        # Wrap foreign device arrays (CuPy, torch) without a copy; the simulator has no wrapper.
        arr = cuda.as_cuda_array(x) if hasattr(cuda, "as_cuda_array") else x
        shape = tuple(arr.shape)
        from .simulate import is_state_input

        if is_state_input(shape, arr.dtype, input_kind):
            if len(shape) not in (3, 4) or shape[-1] != spec.CHANNELS or arr.dtype not in (np.float32, dtype):
                raise ValueError(f"device state must be float32 (H, W, 20) or (B, H, W, 20), got {arr.dtype} {shape}")
            if min(shape) < 1:
                raise ValueError(f"empty input: shape {shape} has a zero-length axis")
            n_b = int(np.prod(shape[:-3]))
            if arr.dtype == dtype:
                state = cuda.device_array((n_b,) + shape[-3:], dtype)
                state.copy_to_device(arr.reshape(state.shape))
            else:  # float32 device state into float16 storage: round on the device
                state = cuda.device_array((n_b,) + shape[-3:], dtype)
                kern.convert_kernel[kern.launch_1d(state.size // spec.CHANNELS)](arr.reshape(state.shape), state)
            return state, shape[:-1], len(shape) == 4
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ValueError(f"device gray input must be a non-empty (H, W) or (B, H, W), got shape {shape}")
        if arr.dtype not in (np.uint8, np.float32):
            raise TypeError(f"device gray input must be uint8 or float32, got {arr.dtype}")
        gray = arr.reshape((-1,) + shape[-2:]) if len(shape) == 3 else arr.reshape((1,) + shape)
        state = cuda.device_array(tuple(gray.shape) + (spec.CHANNELS,), dtype)
        scale = np.float32(255) if arr.dtype == np.uint8 else np.float32(1)
        kern.init_kernel[kern.launch_1d(gray.size)](gray, scale, state)
        return state, shape, len(shape) == 3

    def step(self, t):
        """Advance the state by one step (two launches, no host round trip)."""
        seed, fire_rate, noise_std, alive = self._args
        k = self._k
        k.save_halos[self._halo_launch](self.state, self._rowhalo, self._colhalo, self.seg_rows)
        n_b, n_h, n_w, _ = self.state.shape
        for b0 in range(0, n_b, 65535):  # the grid's z extent is at most 65535
            grid = self._grid + (min(65535, n_b - b0),)
            self._kernel[grid, self._threads](
                self._flat[0], self._flat[1], self._flat[2], n_h, n_w, self._rowhalo.shape[1], self._colhalo.shape[1],
                *self._weights, seed, np.int64(t), fire_rate, noise_std, alive, self.seg_rows, b0, 0, 0, 0)

    def set_targets(self, targets):
        """Copy the (B, H, W) target map to the device once."""
        self._targets = self._cuda.to_device(np.ascontiguousarray(targets, dtype=np.int16))
        self._counts = self._cuda.device_array((self.state.shape[0], 2 + spec.N_CLASSES), np.int64)
        self._zeros = np.zeros(self._counts.shape, np.int64)
        n_h, n_w = self.state.shape[1:3]
        self._count_grid = (max(1, min(-(-n_h * n_w // 256), 1024)), self.state.shape[0])

    def metrics(self):
        """(accuracy %, agreement %), counted on the device; only (B, 12) counts come back."""
        self._counts.copy_to_device(self._zeros)
        self._k.count_kernel[self._count_grid, 256](self.state, self._alive_threshold, self._targets, self._counts)
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


def _sm_count(cuda):
    """Multiprocessors of the current GPU (1 under the simulator)."""
    try:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:  # the simulator's device has no attributes
        return 1


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
            if chosen == "numba-cuda":
                why = "a usable GPU: numba-cuda is the fastest backend there, see benchmarks/RESULTS.md"
            elif usable:
                why = "numba-cuda runs only under the CUDA simulator here, far slower than numba-cpu"
            else:
                why = f"numba-cuda unavailable: {reason}; numba-cpu is the fastest CPU backend"
            log.info("backend auto -> %s (%s)", chosen, why)
        backend = chosen
    if backend not in _RUNNERS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(('auto',) + BACKENDS)}")
    if backend == "numba-cuda":
        usable, reason = cuda_status()
        if not usable:
            raise RuntimeError(f"backend 'numba-cuda' is not available: {reason}")
    return _RUNNERS[backend]
