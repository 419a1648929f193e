"""``NCA``: any 3x3 neural CA fastca runs, as a model description with its weights, and its file.

A file is an ``.npz`` holding the description as JSON (``description``), the arrays under
the names :meth:`fastca.model.ModelSpec.weight_shapes` gives, ``format_version`` 2 and
``model_kind`` "described". Loading reads the description first (a bounded string), then
each array after its ``.npy`` header was checked against the shape the description
declares, so no size a file declares is allocated before it is checked.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any, Mapping

import numpy as np

from . import _checks
from .model import ModelSpec
from .errors import InputError, InputTypeError

FORMAT_VERSION = 2
MODEL_KIND = "described"
_MAX_DESCRIPTION = 1 << 16  #: bytes of a description's JSON
_MAX_FILE_BYTES = 256 << 20  #: the largest weights file read (a 4096-wide layer is 64 MB)


class NCA:
    """A model description (:class:`fastca.model.ModelSpec`) with its float32 weights.

    ``arrays``: name -> array with the shapes ``description.weight_shapes()`` gives (any real
    dtype; stored as read-only float32 copies; NaN and inf are refused). ``fire_rate``,
    ``noise_std`` and ``alive_threshold`` are the description's, the defaults
    :func:`fastca.simulate` and :class:`fastca.Simulation` use.
    """

    def __init__(self, description: ModelSpec, arrays: Mapping[str, np.ndarray], name: str | None = None):
        if not isinstance(description, ModelSpec):
            raise InputTypeError(f"description must be a fastca.model.ModelSpec, got {type(description).__name__}")
        if not isinstance(arrays, Mapping):
            raise InputTypeError(f"arrays must be a mapping of name -> array, got {type(arrays).__name__}")
        self.description = description
        self._arrays = description.check_weights(arrays)
        name = description.name if name is None else name
        if not isinstance(name, str):
            raise InputTypeError(f"name must be a str, got {type(name).__name__}")
        self.name = name

    def __repr__(self):
        return f"NCA({self.description.name!r}, name={self.name!r}, {self.n_params} parameters)"

    @property
    def fire_rate(self) -> float:
        return self.description.fire_rate

    @property
    def noise_std(self) -> float:
        return self.description.noise_std

    @property
    def alive_threshold(self) -> float:
        return self.description.alive.threshold

    @property
    def n_params(self) -> int:
        return sum(a.size for a in self._arrays.values())

    def arrays(self) -> dict:
        """The arrays by name (read-only float32), in the description's order."""
        return dict(self._arrays)

    @classmethod
    def random(cls, description: ModelSpec, seed: int = 0, scale: float = 0.1, name: str | None = None) -> "NCA":
        """Random weights (normal, std ``scale``) for ``description``: for tests and benchmarks."""
        return cls(description, description.random_weights(seed, scale), name or f"{description.name} random({seed})")

    @classmethod
    def from_torch(cls, module_or_state_dict, description: ModelSpec | None = None, name: str | None = None) -> "NCA":
        """From a :class:`fastca.torch_model.DescribedNCA` (its description is used) or from a state dict
        of one (``params.w1``, ... or ``w1``, ...; ``description`` required)."""
        desc = getattr(module_or_state_dict, "description", None) or description
        if desc is None:
            raise InputError("a state dict needs description=: the ModelSpec it was trained with")
        sd = module_or_state_dict.state_dict() if hasattr(module_or_state_dict, "state_dict") else module_or_state_dict
        arrays = {}
        for key, value in sd.items():
            k = key[len("params."):] if key.startswith("params.") else key
            if k == "filters":  # DescribedNCA's fixed depthwise filters: part of the description
                continue
            arrays[k] = value.detach().cpu().double().numpy() if hasattr(value, "detach") else np.asarray(value)
        return cls(desc, arrays, name)

    def save(self, path) -> None:
        """Write the description and the arrays to an ``.npz`` (atomically: temp file + rename)."""
        path = os.fspath(path)
        meta: dict[str, Any] = dict(
            format_version=np.asarray(FORMAT_VERSION, np.int64), model_kind=np.asarray(MODEL_KIND),
            description=np.asarray(self.description.to_json()), name=np.asarray(self.name))
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            members: dict[str, Any] = {**self._arrays, **meta}
            np.savez(f, **members)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "NCA":
        """Read a file written by :meth:`save`; one-line ValueError naming the file for anything else."""
        from .weights import _read_npy, open_regular_file

        path = os.fspath(path)
        try:
            with open_regular_file(path, _MAX_FILE_BYTES) as f, zipfile.ZipFile(f) as z:
                names = set(z.namelist())

                def member(key, shape, kinds, limit):
                    if key + ".npy" not in names:
                        raise InputError(f"missing {key}")
                    info = z.getinfo(key + ".npy")
                    if info.file_size > limit:
                        raise InputError(f"member {key!r} holds {info.file_size} bytes, more than the format's")
                    with z.open(info) as m:
                        return _read_npy(m, key, shape, kinds, limit)

                kind = str(member("model_kind", (), "U", 1024))
                if kind != MODEL_KIND:
                    raise InputError(f"model kind {kind[:100]!r}, expected {MODEL_KIND!r} "
                                     "(a self-classifying MNIST file loads with fastca.load_model or NCAWeights.load)")
                version = int(member("format_version", (), "iu", 1024))
                if version != FORMAT_VERSION:
                    raise InputError(f"format version {version}, this fastca reads {FORMAT_VERSION}")
                text = str(member("description", (), "U", 4 * _MAX_DESCRIPTION))
                description = ModelSpec.from_json(text, "description")
                name = str(member("name", (), "U", 4096)) if "name.npy" in names else os.path.basename(path)
                arrays = {k: member(k, shape, "fiu", _MAX_FILE_BYTES)
                          for k, shape in description.weight_shapes().items()}
        except FileNotFoundError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, TypeError, MemoryError) as exc:
            raise InputError(f"{path}: not a readable fastca model file ({_checks.first_line(exc)})") from None
        try:
            return cls(description, arrays, name)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path}: {exc}") from None


def load_model(path):
    """Any fastca model file: a described model (:class:`NCA`) or self-classifying MNIST weights
    (:class:`fastca.NCAWeights`, format 1), told apart by the file's ``model_kind``."""
    from .weights import NCAWeights, open_regular_file

    path = os.fspath(path)
    try:
        with open_regular_file(path, _MAX_FILE_BYTES) as f, zipfile.ZipFile(f) as z:
            described = "description.npy" in z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise InputError(f"{path}: not a readable fastca model file ({_checks.first_line(exc)})") from None
    return NCA.load(path) if described else NCAWeights.load(path)
