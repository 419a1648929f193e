"""The numba-cuda backend: the fused in-place Numba CUDA kernel (:mod:`fastca.kernels.cuda`),
generated for the model's description (:mod:`fastca.kernels.cuda_shape`).

The state stays on the device across steps, runs and edits; per-step counts for the
metrics are written to a device buffer and read once at the end of a run (for the MNIST
layout; other descriptions' counts and labels are taken from a host copy of the state).
"""

import importlib.util

import numpy as np

from .. import metrics, spec
from .._state import gray_channel, host_state, is_state_input
from .base import BackendInfo, register
from .host import numba_cuda
from ..errors import InputError, InputTypeError


class NumbaCUDA:
    """Fused in-place Numba CUDA kernel of the model's description; float32 or float16 state storage
    on the device. ``weights``: anything with ``description`` (a ModelSpec; absent: the MNIST model)
    and ``arrays()`` (name -> float32 array), e.g. :class:`fastca.NCAWeights` or :class:`fastca.nca.NCA`.

    Options: ``seg_rows`` (rows per thread block's segment; default from the grid and the
    SM count) and ``layout`` (a key of ``kernels.cuda.LAYOUTS``) tune the launch, ``mode``
    is for the benchmark's time breakdown; results do not depend on the first two.
    ``block_order="reverse"`` (tests) launches one block at a time, last block first: the
    CUDA simulator otherwise runs blocks in index order, which hides a block reading cells
    that another block has already written.
    """

    host_view = False  #: read() returns a host copy
    cheap_nonfinite_check = False  #: nonfinite() synchronises with the device

    def __init__(self, weights, state, params, seg_rows=None, layout=None, mode=0, block_order="normal"):
        cuda = numba_cuda()

        from ..kernels import cuda_shape

        description = getattr(weights, "description", None)
        if description is None:
            from ..model import MNIST as description
        kern = cuda_shape.kernel(description)  # ValueError when the description cannot run here
        self._cuda, self._k = cuda, kern
        self.description = description
        self.params = params
        self.state = state  # (B, H, W, C) float32 or float16 device array, owned
        n_b, n_h, n_w, n_c = state.shape
        if n_c != description.channels:
            raise InputError(f"state has {n_c} channels, model {description.name!r} has {description.channels}")
        if seg_rows is None:
            seg_rows = kern.choose_seg_rows(n_b, n_h, n_w, _sm_count(cuda))
        self.seg_rows = int(seg_rows)
        row_shape, col_shape = kern.halo_shapes(n_b, n_h, n_w, self.seg_rows)
        self._rowhalo = cuda.device_array(row_shape, state.dtype)
        self._colhalo = cuda.device_array(col_shape, state.dtype)
        self._flat = tuple(a.reshape(a.size) for a in (state, self._rowhalo, self._colhalo))  # views, no copies
        self._weights = cuda.to_device(cuda_shape.pack_weights(description, weights.arrays()))
        # the max-pool rule's (B*H*W,) uint8 mask (maxpool_pre, maxpool_keep); one unused byte otherwise
        self._maxpool = description.alive.rule == "maxpool"
        self._mask = cuda.device_array(n_b * n_h * n_w if self._maxpool else 1, np.uint8)
        self._mnist_metrics = metrics.mnist_layout(description)
        p = params
        self._args = (np.uint64(p.seed), np.float32(p.fire_rate), np.float32(p.noise_std),
                      np.float32(p.alive_threshold))
        self._origin = tuple(int(v) for v in p.origin)
        self.layout = layout or kern.DEFAULT_LAYOUT
        self._kernel = kern.step_kernel(self.layout, state.dtype == np.float16, mode)
        self._threads = kern.threads_per_block(self.layout)
        self._grid = (-(-n_w // kern.TW), -(-n_h // self.seg_rows))
        n_halo = n_b * (row_shape[1] * 2 * n_w + col_shape[1] * 2 * n_h)
        self._halo_launch = kern.launch_1d(n_halo)
        self._cell_launch = kern.launch_1d(n_b * n_h * n_w)
        self._count_grid = (max(1, min(-(-n_h * n_w // 256), 1024)), n_b)
        self._thr = np.float32(p.alive_threshold)
        self._bad = cuda.to_device(np.zeros(1, np.int64))
        if block_order not in ("normal", "reverse"):
            raise InputError(f"block_order must be 'normal' or 'reverse', got {block_order!r}")
        self._reverse = block_order == "reverse"

    @classmethod
    def to_state(cls, x, input_kind, dtype=np.float32, description=None):
        """Return (state (B, H, W, C) ``dtype`` device array owned by the run, leading shape, batched?).

        C: the description's channels (None: the MNIST model's 20). ``x`` is a host array
        (copied to the device once) or a device array exposing ``__cuda_array_interface__``
        (Numba, CuPy, torch CUDA): copied device to device, never through the host. Device
        gray input is uint8 or float32 in [0, 1] (for a description with a static alive
        channel, which it goes into); device state input must be float32 (or ``dtype``) and
        finite (both checked on the device: one scalar comes back).
        """
        cuda = numba_cuda()

        from ..kernels import cuda as kern

        if not is_device_array(x):
            state, lead, batched = host_state(x, input_kind, dtype, description)
            return cuda.to_device(state), lead, batched
        n_c = spec.CHANNELS if description is None else description.channels
        # Wrap foreign device arrays (CuPy, torch) without a copy; the simulator has no wrapper.
        arr = cuda.as_cuda_array(x) if hasattr(cuda, "as_cuda_array") else x
        shape = tuple(arr.shape)
        if is_state_input(shape, arr.dtype, input_kind, n_c):
            if len(shape) not in (3, 4) or shape[-1] != n_c or arr.dtype not in (np.float32, dtype):
                raise InputError(f"device state must be float32 (H, W, {n_c}) or (B, H, W, {n_c}), "
                                 f"got {arr.dtype} {shape}")
            if min(shape) < 1:
                raise InputError(f"empty input: shape {shape} has a zero-length axis")
            state = cuda.device_array((int(np.prod(shape[:-3])),) + shape[-3:], dtype)
            if arr.dtype == dtype:
                state.copy_to_device(arr.reshape(state.shape))
            else:  # float32 device state into float16 storage: round on the device
                copy = kern if description is None else _module(description)
                copy.copy_window[kern.launch_1d(state.size // n_c)](arr.reshape(state.shape), 0, 0, 0, state)
            big = float(np.finfo(dtype).max)  # after the copy: a float32 value past 65504 is inf in float16
            if _count_outside(state.reshape(state.size), -big, big):
                hint = " or exceeds the float16 range (65504): use storage='float32'" if dtype == np.float16 else ""
                raise InputError(f"device state contains NaN or inf{hint}")
            return state, shape[:-1], len(shape) == 4
        gray_channel(description)  # a gray image needs a static alive channel to go into
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise InputError(f"device gray input must be a non-empty (H, W) or (B, H, W), got shape {shape}")
        if arr.dtype not in (np.uint8, np.float32):
            raise InputTypeError(f"device gray input must be uint8 or float32, got {arr.dtype}")
        gray = arr.reshape((-1,) + shape[-2:]) if len(shape) == 3 else arr.reshape((1,) + shape)
        if arr.dtype == np.float32 and _count_outside(arr.reshape(arr.size), 0.0, 1.0):
            raise InputError("device gray input must lie in [0, 1] (float32), and be finite")
        state = cuda.device_array(tuple(gray.shape) + (n_c,), dtype)
        init = kern if description is None else _module(description)
        init.init_kernel[kern.launch_1d(gray.size)](gray, arr.dtype == np.uint8, state)
        return state, shape, len(shape) == 3

    def poison(self):
        """Fill the halo buffers with NaN (tests: a read of an unsaved halo value cannot pass)."""
        for a in (self._rowhalo, self._colhalo):
            a.copy_to_device(np.full(a.shape, np.nan, a.dtype))

    def step(self, t):
        """Advance the state by one step (two launches, or five under the max-pool rule; no host round trip)."""
        seed, fire_rate, noise_std, alive = self._args
        k = self._k
        if self._maxpool:  # the rule before the step, and the cells whose update can matter
            k.maxpool_pre[self._cell_launch](self.state, self._thr, self._mask)
        k.save_halos[self._halo_launch](self.state, self._rowhalo, self._colhalo, self.seg_rows)
        n_b, n_h, n_w, _ = self.state.shape
        args = (self._flat[0], self._flat[1], self._flat[2], n_h, n_w, self._rowhalo.shape[1], self._colhalo.shape[1],
                self._weights, self._mask, seed, np.int64(t), fire_rate, noise_std, alive, self.seg_rows)
        if self._reverse:
            for b0 in reversed(range(n_b)):
                for seg in reversed(range(self._grid[1])):
                    for strip in reversed(range(self._grid[0])):
                        self._kernel[(1, 1, 1), self._threads](*args, b0, strip, seg, *self._origin, self._bad)
        else:
            for b0 in range(0, n_b, 65535):  # the grid's z extent is at most 65535
                grid = self._grid + (min(65535, n_b - b0),)
                self._kernel[grid, self._threads](*args, b0, 0, 0, *self._origin, self._bad)
        if self._maxpool:  # alive before and after, then zero the rest
            k.maxpool_keep[self._cell_launch](self.state, self._thr, self._mask)
            k.zero_dead[self._cell_launch](self.state, self._mask)

    def nonfinite(self):
        """The sample of a cell that became non-finite since the last call (None: none); resets.

        Reads one device word, so the simulation asks at the end of a run, not every step.
        """
        flag = int(self._bad.copy_to_host()[0])
        if flag == 0:
            return None
        self._bad.copy_to_device(np.zeros(1, np.int64))
        return flag - 1

    def prepare_targets(self, targets):
        """The (B, H, W) target map, copied to the device once (kept on the host for a model whose
        counts are taken there)."""
        targets = np.ascontiguousarray(targets, dtype=np.int16)
        return self._cuda.to_device(targets) if self._mnist_metrics else targets

    def new_counts(self, n):
        buf = self._cuda.device_array((n, self.state.shape[0], metrics.n_counts(self.description)), np.int64)
        buf.copy_to_device(np.zeros(buf.shape, np.int64))
        return buf

    def count(self, handle, buf, i):
        """Counts of the current state into buf[i]: on the device, without synchronisation, for the
        MNIST layout; for any other description from a host copy of the state (metrics.counts_described)."""
        if self._mnist_metrics:
            self._k.count_kernel[self._count_grid, 256](self.state, self._thr, handle, buf[i])
            return
        counts = metrics.counts_described(self.description, self.read(), handle, self._thr)
        buf[i].copy_to_device(np.ascontiguousarray(counts, np.int64))

    def counts_host(self, buf):
        return buf.copy_to_host()

    def read(self):
        """A host copy of the current state."""
        return self.state.copy_to_host()

    def labels(self):
        """The (B, H, W) int8 label map on the device (-1: dead); computed on the host for a model
        without the MNIST layout (metrics.label_map_described)."""
        if not self._mnist_metrics:
            return self._cuda.to_device(metrics.label_map_described(self.description, self.read(), self._thr))
        out = self._cuda.device_array(self.state.shape[:-1], np.int8)
        self._k.label_kernel[self._cell_launch](self.state, self._thr, out)
        return out

    def output(self, array, output):
        if output == "device":
            return array
        if output != "host":
            raise InputError(f"output must be 'host' or 'device', got {output!r}")
        return array.copy_to_host()

    def read_window(self, b0, y0, x0, nb, h, w):
        out = self._cuda.device_array((nb, h, w, self.state.shape[3]), np.float32)
        self._k.copy_window[self._k.launch_1d(nb * h * w)](self.state, b0, y0, x0, out)
        return out.copy_to_host()

    def write_gray(self, b0, y0, x0, gray):
        """Gray into the static alive channel of a window; the residual channels zeroed where it is dead."""
        d_gray = self._cuda.to_device(np.ascontiguousarray(gray, np.float32))
        self._k.write_gray[self._k.launch_1d(gray.size)](self.state, b0, y0, x0, d_gray, self._thr)


def _sm_count(cuda):
    """Multiprocessors of the current GPU (1 under the simulator)."""
    try:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:  # the simulator's device has no attributes
        return 1


def _module(description):
    """The kernel module generated for ``description``."""
    from ..kernels import cuda_shape

    return cuda_shape.kernel(description)


def _count_outside(flat, lo, hi):
    """Elements of a flat device array outside [lo, hi] or NaN, counted on the device (one scalar comes back)."""
    cuda = numba_cuda()
    from ..kernels import cuda as kern

    out = cuda.to_device(np.zeros(1, np.int64))
    kern.count_outside[kern.launch_1d(flat.size)](flat, np.float32(lo), np.float32(hi), out)
    return int(out.copy_to_host()[0])


def is_device_array(x):
    """True for arrays in GPU memory: anything with __cuda_array_interface__, or a simulator array."""
    if hasattr(x, "__cuda_array_interface__"):
        return True
    if importlib.util.find_spec("numba_cuda") is None:
        return False
    cuda = numba_cuda()
    return bool(getattr(cuda, "is_cuda_array", lambda a: type(a).__name__ == "FakeCUDAArray")(x))


def _probe():
    """(usable, reason, auto_ok): the package, then a GPU; the simulator runs but is never chosen by auto."""
    if importlib.util.find_spec("numba_cuda") is None:
        return False, "the numba-cuda package is not installed (pip install 'fastca[cuda]')", False
    cuda = numba_cuda()
    if not cuda.is_available():
        return False, "no usable CUDA GPU (numba.cuda.is_available() is False: check the driver and CUDA_VISIBLE_DEVICES)", False
    from numba import config

    if config.ENABLE_CUDASIM:
        return True, "CUDA simulator (NUMBA_ENABLE_CUDASIM=1: far slower than numba-cpu)", False
    return True, "GPU", True


INFO = register(BackendInfo(
    name="numba-cuda",
    load=lambda: NumbaCUDA,
    probe=_probe,
    storages=("float32", "float16"),
    outputs=("host", "device"),
    device_input=True,
    speed_rank=30,
    summary="fused in-place Numba CUDA kernel (compacted cells, register-tiled MLP), state on the device",
))
