"""Model weights in the canonical (reference) layout, with validation and ``.npz`` I/O."""

import dataclasses
import os
import zipfile

import numpy as np

from . import spec

FORMAT_VERSION = 1
MODEL_KIND = "self-classifying-mnist"
_MAX_MEMBER_BYTES = 1 << 20  #: the largest array (w1, 57,600 B as float32; 115 KB as float64) and its header fit easily


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
                raise TypeError(f"weight {key} must be a float array, got dtype {arr.dtype}")
            if arr.shape != shape:
                raise ValueError(f"weight {key} must have shape {shape}, got {arr.shape}")
            with np.errstate(over="ignore"):
                arr = np.ascontiguousarray(arr, dtype=np.float32)
            if not np.all(np.isfinite(arr)):  # after the cast: 1e39 in float64 is inf in float32
                raise ValueError(f"weight {key} contains NaN or inf (in float32)")
            arr.setflags(write=False)
            object.__setattr__(self, key, arr)
        for key in ("fire_rate", "alive_threshold"):
            value = float(getattr(self, key))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {value}")
            object.__setattr__(self, key, value)
        noise = float(self.noise_std)
        if not (np.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise_std must be finite and >= 0, got {noise}")
        object.__setattr__(self, "noise_std", noise)

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
        """Read a file written by :meth:`save`; raises ValueError for a truncated or foreign file."""
        path = os.fspath(path)
        known = ("format_version", "model_kind", "fire_rate", "alive_threshold", "noise_std", "name",
                 *spec.WEIGHT_SHAPES)
        try:
            if not zipfile.is_zipfile(path):
                raise ValueError("not a zip archive (an .npy array or another file?)")
            with np.load(path, allow_pickle=False) as z:
                data = {}
                for k in known:  # only the members the format knows, each within its size
                    if k not in z.files:
                        continue
                    size = z.zip.getinfo(k + ".npy").file_size
                    if size > _MAX_MEMBER_BYTES:
                        raise ValueError(f"member {k!r} holds {size} bytes, more than the format's")
                    data[k] = z[k]
        except FileNotFoundError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a readable fastca weights .npz ({exc})") from exc
        missing = [k for k in ("format_version", "model_kind", *spec.WEIGHT_SHAPES) if k not in data]
        if missing:
            raise ValueError(f"{path}: not a fastca weights file, missing {', '.join(missing)}")
        if str(data["model_kind"]) != MODEL_KIND:
            raise ValueError(f"{path}: model kind {str(data['model_kind'])!r}, expected {MODEL_KIND!r}")
        if int(data["format_version"]) > FORMAT_VERSION:
            raise ValueError(
                f"{path}: format version {int(data['format_version'])} is newer than this fastca "
                f"understands ({FORMAT_VERSION}); upgrade fastca"
            )
        return cls(
            **{k: data[k] for k in spec.WEIGHT_SHAPES},
            fire_rate=float(data.get("fire_rate", spec.FIRE_RATE)),
            alive_threshold=float(data.get("alive_threshold", spec.ALIVE_THRESHOLD)),
            noise_std=float(data.get("noise_std", spec.NOISE_STD)),
            name=str(data.get("name", os.path.basename(path))),
        )
