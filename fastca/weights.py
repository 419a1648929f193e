"""Model weights in the canonical (reference) layout, with validation and ``.npz`` I/O."""

import dataclasses
import numbers
import os
import re
import stat
import zipfile

import numpy as np

from . import _checks, spec
from .errors import InputError, InputTypeError, RunError

FORMAT_VERSION = 1
MODEL_KIND = "self-classifying-mnist"
_MAX_MEMBER_BYTES = 1 << 20  #: the largest array (w1, 57,600 B as float32; 115 KB as float64) and its header fit easily
_MAX_FILE_BYTES = 32 << 20  #: a weights file is under 300 KB; unknown members are allowed but never read
_MAX_HEADER_BYTES = 10000  #: NumPy's own limit for an .npy header

SAFE_TORCH = (2, 6)  #: first torch whose ``torch.load(weights_only=True)`` runs no code from the file


def require_safe_torch_load(torch=None):
    """Refuse a torch whose ``torch.load(..., weights_only=True)`` can be made to run code.

    Before torch 2.6, a crafted file could run code through ``weights_only`` loading
    (CVE-2025-32434), so call this before every ``torch.load`` of a file. ``torch``: the
    module (default: imported here). Returns the module; raises RuntimeError naming the
    version found when it is older than 2.6 (or its version cannot be read).
    """
    if torch is None:
        import torch
    version = str(getattr(torch, "__version__", ""))
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None or (int(match.group(1)), int(match.group(2))) < SAFE_TORCH:
        raise RunError(
            f"torch {version or '(unknown version)'} cannot load files safely: before 2.6, "
            "torch.load(weights_only=True) can be made to run code from the file (CVE-2025-32434); "
            "upgrade torch: pip install 'torch>=2.6'"
        )
    return torch


def open_regular_file(path, max_bytes):
    """Open ``path`` for binary reading when it is a regular file of at most ``max_bytes`` bytes.

    A device (``/dev/zero``), pipe, socket or folder is refused before anything is read
    (opened non-blocking, so a pipe without a writer cannot hang the call). Raises
    FileNotFoundError, another OSError from opening, or ValueError naming the file.
    """
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: not a regular file (a device, pipe, socket or folder); refusing to read it")
        if info.st_size > max_bytes:
            raise InputError(f"{path}: {info.st_size} bytes, more than the {max_bytes} such a file can hold")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@dataclasses.dataclass(frozen=True)
class NCAWeights:
    """Weights and run-time defaults of one self-classifying MNIST automaton.

    Arrays are float32, C-contiguous, in the reference layout:

    - ``w1`` (3, 3, 20, 80): perception kernel, HWIO (kernel row, kernel column, in, out)
    - ``b1`` (80,)
    - ``w2`` (80, 80): dense layer, (in, out)
    - ``b2`` (80,)
    - ``w3`` (80, 19): output layer, (in, out)
    - ``b3`` (19,)

    ``fire_rate``, ``alive_threshold`` and ``noise_std`` are the defaults that
    :func:`fastca.simulate` uses when not overridden. Construction validates
    shapes, dtypes (any real float is converted to float32) and finiteness.
    """

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    w3: np.ndarray
    b3: np.ndarray
    fire_rate: float = spec.FIRE_RATE
    alive_threshold: float = spec.ALIVE_THRESHOLD
    noise_std: float = spec.NOISE_STD
    name: str = "unnamed"

    def __post_init__(self):
        for key, shape in spec.WEIGHT_SHAPES.items():
            arr = np.asarray(getattr(self, key))
            if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
                raise InputTypeError(f"weight {key} must be a float array, got dtype {arr.dtype}")
            if arr.shape != shape:
                raise InputError(f"weight {key} must have shape {shape}, got {arr.shape}")
            with np.errstate(over="ignore"):
                arr = np.ascontiguousarray(arr, dtype=np.float32)
            if not np.all(np.isfinite(arr)):  # after the cast: 1e39 in float64 is inf in float32
                raise InputError(f"weight {key} contains NaN or inf (in float32)")
            arr.setflags(write=False)
            object.__setattr__(self, key, arr)
        for key in ("fire_rate", "alive_threshold", "noise_std"):
            value = _real(key, getattr(self, key))
            if key != "noise_std" and not 0.0 <= value <= 1.0:
                raise InputError(f"{key} must be in [0, 1], got {value}")
            object.__setattr__(self, key, value)
        _checks.check_noise_std("noise_std", self.noise_std)
        if not isinstance(self.name, str):
            raise InputTypeError(f"name must be a str, got {type(self.name).__name__}")

    @classmethod
    def random(cls, seed=0, scale=0.1, **kwargs):
        """Random non-zero weights (normal, std ``scale``), for tests and benchmarks."""
        rng = np.random.default_rng(seed)
        arrays = {k: rng.normal(0, scale, s).astype(np.float32) for k, s in spec.WEIGHT_SHAPES.items()}
        return cls(**arrays, **{"name": f"random(seed={seed})", **kwargs})

    @classmethod
    def zeros_output(cls, seed=0, **kwargs):
        """Fresh-training initialisation: random perception and hidden layers, zero output layer."""
        rng = np.random.default_rng(seed)
        w1 = rng.normal(0, (1 / spec.PERCEPTION_IN) ** 0.5, spec.WEIGHT_SHAPES["w1"])
        w2 = rng.normal(0, (1 / spec.HIDDEN) ** 0.5, spec.WEIGHT_SHAPES["w2"])
        z = np.zeros
        return cls(w1, z(spec.HIDDEN), w2, z(spec.HIDDEN), z((spec.HIDDEN, spec.MUTABLE)), z(spec.MUTABLE), **kwargs)

    @property
    def description(self):
        """The model description (:data:`fastca.model.MNIST`) with these weights' fire rate, noise and threshold."""
        import dataclasses as dc

        from .model import MNIST

        return dc.replace(MNIST, fire_rate=self.fire_rate, noise_std=self.noise_std,
                          alive=dc.replace(MNIST.alive, threshold=self.alive_threshold))

    @property
    def n_params(self):
        """Number of trainable parameters (22,499 for the reference architecture)."""
        return sum(getattr(self, k).size for k in spec.WEIGHT_SHAPES)

    def arrays(self):
        """The six arrays as a dict in canonical order."""
        return {k: getattr(self, k) for k in spec.WEIGHT_SHAPES}

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def save(self, path):
        """Write ``.npz`` with the six arrays and metadata; written atomically (temp file + rename)."""
        path = os.fspath(path)
        meta = dict(
            format_version=np.int64(FORMAT_VERSION),
            model_kind=np.str_(MODEL_KIND),
            fire_rate=np.float64(self.fire_rate),
            alive_threshold=np.float64(self.alive_threshold),
            noise_std=np.float64(self.noise_std),
            name=np.str_(self.name),
        )
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **self.arrays(), **meta)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save`; raises ValueError (one line, naming the file) for a
        truncated, foreign or malformed file, and for anything that is not a regular file.

        Only the members the format knows are read, each after its ``.npy`` header was checked
        (shape, dtype, size), so no declared size is ever allocated before it is checked.
        """
        path = os.fspath(path)
        try:
            with open_regular_file(path, _MAX_FILE_BYTES) as f:
                data = _read_members(f)
        except FileNotFoundError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, TypeError, MemoryError) as exc:
            msg = _checks.first_line(exc)
            if msg.startswith(path + ": "):
                raise InputError(msg) from None
            raise InputError(f"{path}: not a readable fastca weights .npz ({msg})") from None
        missing = [k for k in ("format_version", "model_kind", *spec.WEIGHT_SHAPES) if k not in data]
        if missing:
            raise InputError(f"{path}: not a fastca weights file, missing {', '.join(missing)}")
        if str(data["model_kind"]) != MODEL_KIND:
            raise InputError(f"{path}: model kind {str(data['model_kind'])[:100]!r}, expected {MODEL_KIND!r}")
        version = int(data["format_version"])
        if version > FORMAT_VERSION:
            raise InputError(
                f"{path}: format version {version} is newer than this fastca understands ({FORMAT_VERSION}); "
                "upgrade fastca"
            )
        if version < 1:
            raise InputError(f"{path}: format version {version} is not a fastca weights format (1..{FORMAT_VERSION})")
        scalars = {k: data[k][()].item() for k in ("fire_rate", "alive_threshold", "noise_std") if k in data}
        try:
            return cls(
                **{k: data[k] for k in spec.WEIGHT_SHAPES},
                **scalars,
                name=str(data["name"]) if "name" in data else os.path.basename(path),
            )
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path}: {exc}") from None


# What each member the format knows must be: (shape, dtype kinds). Strings are 0-d unicode arrays.
_MEMBERS = {
    "format_version": ((), "iu"),
    "model_kind": ((), "U"),
    "fire_rate": ((), "fiu"),
    "alive_threshold": ((), "fiu"),
    "noise_std": ((), "fiu"),
    "name": ((), "U"),
    **{k: (shape, "fiu") for k, shape in spec.WEIGHT_SHAPES.items()},
}


def _read_members(f):
    """The known members of an open .npz file, each read after its header was checked; a dict of arrays."""
    data = {}
    with zipfile.ZipFile(f) as z:
        names = set(z.namelist())
        for key, (shape, kinds) in _MEMBERS.items():
            if key + ".npy" not in names:
                continue
            info = z.getinfo(key + ".npy")
            if info.file_size > _MAX_MEMBER_BYTES:
                raise InputError(f"member {key!r} holds {info.file_size} bytes, more than the format's")
            with z.open(info) as member:
                data[key] = _read_npy(member, key, shape, kinds)
    return data


def _read_npy(member, key, shape, kinds, limit=_MAX_MEMBER_BYTES):
    """One .npy member whose header must declare ``shape``, a dtype of one of ``kinds`` and at most
    ``limit`` bytes (default: this format's 1 MiB per array; a described model's file passes its own)."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        got_shape, fortran, dtype = np.lib.format.read_array_header_1_0(member, max_header_size=_MAX_HEADER_BYTES)
    elif version == (2, 0):
        got_shape, fortran, dtype = np.lib.format.read_array_header_2_0(member, max_header_size=_MAX_HEADER_BYTES)
    else:
        raise InputError(f"member {key!r}: unsupported .npy version {version}")
    if dtype.hasobject or dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(f"member {key!r} has dtype {dtype}, expected {_KIND_NAMES[kinds]}")
    if tuple(got_shape) != shape:
        raise InputError(f"member {key!r} has shape {tuple(got_shape)}, expected {shape}")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes > limit:
        raise InputError(f"member {key!r} declares {nbytes} bytes, more than the format's")
    raw = member.read(nbytes)
    if len(raw) != nbytes:
        raise InputError(f"member {key!r} is truncated ({len(raw)} of {nbytes} bytes)")
    if member.read(1):  # (reading to the member's end also checks its CRC)
        raise InputError(f"member {key!r} holds data after its array")
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


_KIND_NAMES = {"iu": "an integer", "U": "a string", "fiu": "real numbers"}


def _real(key, value):
    """A model scalar as a float: a real number (Python, NumPy or a 0-d array), never a bool or a string."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{key} must be a real number, got {type(value).__name__}")
    return float(value)
