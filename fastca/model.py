"""Model descriptions: any 3x3 neural cellular automaton as one frozen, validated object.

A :class:`ModelSpec` says what one automaton step computes; the arrays it needs are
described by :meth:`ModelSpec.weight_shapes`. This module also holds the float64 NumPy
step of a description (:func:`step_float64`), written directly from the semantics below,
which the tests use as the oracle for every backend.

State
    ``(..., H, W, C)`` float32, channels last.
Perception (each cell reads its 3x3 neighbourhood; outside the grid: zeros, or the
other side of the grid with ``boundary="wrap"``)
    - :class:`Conv3x3`: a learned convolution ``C -> features``, HWIO weights
      ``(3, 3, C, features)``, optional bias, activation ``relu`` or ``none``;
    - :class:`Depthwise`: fixed 3x3 filters applied to every channel (cross-correlation,
      ``out[y, x] = sum k[i, j] * s[y + i - 1, x + j - 1]``), ``len(filters) * C``
      features ordered channel-major: feature ``c * len(filters) + f``.
Update
    A stack of :class:`Dense` layers (``(in, out)`` weights, optional bias, ``relu`` or
    ``none``); the last layer's width is the number of residual channels
    ``residual[1] - residual[0]``. ``ds = mlp(perception) + noise_std * N(0, 1)``.
Fire and residual
    ``m = (u <= fire_rate)`` per cell, ``s[..., r0:r1] += ds * m`` on the cells the alive
    rule lets update.
Alive rule (:class:`Alive`)
    - ``"static"``: alive when ``s[..., channel] > threshold``; the channel must lie
      outside the residual range, so aliveness never changes (the self-classifying MNIST
      digits: gray channel 0 > 0.1). Only alive cells update; dead cells keep their values.
    - ``"maxpool"``: alive when the 3x3 max-pool of ``s[..., channel]`` (cells outside the
      grid ignored) is ``> threshold``, taken before and after the update; every firing
      cell updates, then every cell that is not alive both before and after is set to zero
      (the Growing NCA: alpha, channel 3).
    - ``"none"``: every cell updates (texture NCAs).
Readout (optional, :class:`Readout`)
    ``classes`` class channels from ``start``: a cell's label is their argmax (labels and
    accuracy metrics exist only for descriptions with a readout).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from .errors import InputError, InputTypeError

ACTIVATIONS = ("relu", "none")
ALIVE_RULES = ("static", "maxpool", "none")
BOUNDARIES = ("zero", "wrap")

#: the fixed perception filters a :class:`Depthwise` perception may name (float32 values)
FILTERS = {
    "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32),
    "sobel_x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32) / np.float32(8),
    "sobel_y": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float32) / np.float32(8),
    "laplacian": np.array([[1, 2, 1], [2, -12, 2], [1, 2, 1]], np.float32) / np.float32(16),
}

#: the largest sizes a description may have (a file naming more is refused before any allocation)
MAX_CHANNELS = 1024
MAX_WIDTH = 4096
MAX_LAYERS = 16


def _int(value, name, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise InputError(f"{name} must be in [{lo}, {hi}], got {value}")
    return int(value)


def _float(value, name, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not (np.isfinite(value) and lo <= value <= hi):
        raise InputError(f"{name} must be finite and in [{lo}, {hi}], got {value}")
    return value


def _choice(value, name, options):
    if value not in options:
        raise InputError(f"{name} must be one of {', '.join(options)}; got {value!r}")
    return value


def _bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be true or false, got {type(value).__name__}")
    return bool(value)


@dataclass(frozen=True)
class Conv3x3:
    """A learned 3x3 convolution ``C -> features`` (HWIO weights), optional bias, relu or none."""

    features: int
    bias: bool = True
    activation: str = "relu"

    def __post_init__(self):
        object.__setattr__(self, "features", _int(self.features, "perception features", 1, MAX_WIDTH))
        object.__setattr__(self, "bias", _bool(self.bias, "perception bias"))
        _choice(self.activation, "perception activation", ACTIVATIONS)

    def n_features(self, channels):
        return self.features


@dataclass(frozen=True)
class Depthwise:
    """Fixed 3x3 filters (names in :data:`FILTERS`) on every channel: ``len(filters) * C`` features."""

    filters: tuple

    def __post_init__(self):
        filters = tuple(self.filters) if isinstance(self.filters, (list, tuple)) else None
        if not filters:
            raise InputError("a depthwise perception names at least one filter")
        for f in filters:
            _choice(f, "filter", tuple(FILTERS))
        if len(set(filters)) != len(filters):
            raise InputError(f"a depthwise perception names each filter once, got {filters}")
        object.__setattr__(self, "filters", filters)

    def n_features(self, channels):
        return len(self.filters) * channels

    def kernel(self):
        """(3, 3, k) float32: the filters stacked along the last axis."""
        return np.stack([FILTERS[f] for f in self.filters], -1)


@dataclass(frozen=True)
class Dense:
    """A dense layer of ``width`` outputs ((in, out) weights), optional bias, relu or none."""

    width: int
    bias: bool = True
    activation: str = "relu"

    def __post_init__(self):
        object.__setattr__(self, "width", _int(self.width, "layer width", 1, MAX_WIDTH))
        object.__setattr__(self, "bias", _bool(self.bias, "layer bias"))
        _choice(self.activation, "layer activation", ACTIVATIONS)


@dataclass(frozen=True)
class Alive:
    """The alive rule: ``"static"``, ``"maxpool"`` (of ``channel`` above ``threshold``) or ``"none"``."""

    rule: str = "none"
    channel: int = 0
    threshold: float = 0.1

    def __post_init__(self):
        _choice(self.rule, "alive rule", ALIVE_RULES)
        object.__setattr__(self, "channel", _int(self.channel, "alive channel", 0, MAX_CHANNELS - 1))
        object.__setattr__(self, "threshold", _float(self.threshold, "alive threshold", -1e30, 1e30))


@dataclass(frozen=True)
class Readout:
    """``classes`` class channels from ``start``: a cell's label is their argmax."""

    start: int
    classes: int

    def __post_init__(self):
        object.__setattr__(self, "start", _int(self.start, "readout start", 0, MAX_CHANNELS - 1))
        object.__setattr__(self, "classes", _int(self.classes, "readout classes", 2, MAX_CHANNELS))


@dataclass(frozen=True)
class ModelSpec:
    """One neural CA: channels, perception, dense layers, residual, fire rate, noise, alive rule, boundary.

    ``residual`` is the half-open channel range ``(start, stop)`` the update is added to;
    the last dense layer has ``stop - start`` outputs. See the module docstring for the
    semantics of each part.
    """

    name: str
    channels: int
    perception: Conv3x3 | Depthwise
    layers: tuple
    residual: tuple
    fire_rate: float = 0.5
    noise_std: float = 0.0
    alive: Alive = Alive()
    boundary: str = "zero"
    readout: Readout | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise InputTypeError("name must be a non-empty string")
        c = _int(self.channels, "channels", 1, MAX_CHANNELS)
        object.__setattr__(self, "channels", c)
        if not isinstance(self.perception, (Conv3x3, Depthwise)):
            raise InputTypeError("perception must be a Conv3x3 or a Depthwise")
        layers = tuple(self.layers) if isinstance(self.layers, (list, tuple)) else ()
        if not 1 <= len(layers) <= MAX_LAYERS or not all(isinstance(x, Dense) for x in layers):
            raise InputError(f"layers must be 1 to {MAX_LAYERS} Dense layers")
        object.__setattr__(self, "layers", layers)
        if not (isinstance(self.residual, (list, tuple)) and len(self.residual) == 2):
            raise InputTypeError("residual must be a (start, stop) pair of channels")
        r0 = _int(self.residual[0], "residual start", 0, c - 1)
        r1 = _int(self.residual[1], "residual stop", r0 + 1, c)
        object.__setattr__(self, "residual", (r0, r1))
        if layers[-1].width != r1 - r0:
            raise InputError(f"the last layer has {layers[-1].width} outputs but the residual updates "
                             f"{r1 - r0} channels ({r0}..{r1 - 1})")
        object.__setattr__(self, "fire_rate", _float(self.fire_rate, "fire_rate", 0.0, 1.0))
        object.__setattr__(self, "noise_std", _float(self.noise_std, "noise_std", 0.0, 1e30))
        if not isinstance(self.alive, Alive):
            raise InputTypeError("alive must be an Alive rule")
        if self.alive.rule != "none" and self.alive.channel >= c:
            raise InputError(f"alive channel {self.alive.channel} is not one of the {c} channels")
        if self.alive.rule == "static" and r0 <= self.alive.channel < r1:
            raise InputError(f"a static alive channel ({self.alive.channel}) must not be updated "
                             f"(residual {r0}..{r1 - 1}); use the maxpool rule for a channel that changes")
        _choice(self.boundary, "boundary", BOUNDARIES)
        if self.readout is not None:
            if not isinstance(self.readout, Readout):
                raise InputTypeError("readout must be a Readout or None")
            if self.readout.start + self.readout.classes > c:
                raise InputError(f"readout channels {self.readout.start}..{self.readout.start + self.readout.classes - 1}"
                                 f" exceed the {c} channels")

    # -- sizes -------------------------------------------------------------------------------
    @property
    def features(self):
        """Perception features per cell."""
        return self.perception.n_features(self.channels)

    @property
    def widths(self):
        """Input width of the first dense layer, then every layer's output width."""
        first = 9 * self.channels if isinstance(self.perception, Conv3x3) else self.features
        if isinstance(self.perception, Conv3x3):
            return (first, self.features) + tuple(x.width for x in self.layers)
        return (first,) + tuple(x.width for x in self.layers)

    @property
    def n_updated(self):
        """Channels the residual writes."""
        return self.residual[1] - self.residual[0]

    def weight_shapes(self):
        """Name -> shape of every array, in order: the learned perception (``w1``, ``b1``) if any, then the layers.

        Dense layer ``k`` (counting from 1 after a learned perception) has ``w{k}`` (in, out)
        and, with a bias, ``b{k}`` (out,). The self-classifying MNIST model's arrays are
        ``w1 (3, 3, 20, 80), b1, w2 (80, 80), b2, w3 (80, 19), b3``, as before.
        """
        shapes = {}
        k = 1
        if isinstance(self.perception, Conv3x3):
            shapes["w1"] = (3, 3, self.channels, self.perception.features)
            if self.perception.bias:
                shapes["b1"] = (self.perception.features,)
            k = 2
        width = self.features
        for i, layer in enumerate(self.layers):
            shapes[f"w{k + i}"] = (width, layer.width)
            if layer.bias:
                shapes[f"b{k + i}"] = (layer.width,)
            width = layer.width
        return shapes

    @property
    def flop_per_cell(self):
        """Floating point operations of the learned layers per updated cell (a multiply-add is 2)."""
        shapes = self.weight_shapes()
        return 2 * sum(int(np.prod(s)) for k, s in shapes.items() if k.startswith("w"))

    def random_weights(self, seed=0, scale=0.1):
        """Random float32 arrays for every shape (normal, std ``scale``), for tests and benchmarks."""
        rng = np.random.default_rng(seed)
        return {k: rng.normal(0, scale, s).astype(np.float32) for k, s in self.weight_shapes().items()}

    def check_weights(self, arrays, source="weights"):
        """Validated float32, read-only, C-contiguous copies of ``arrays`` (a name -> array mapping).

        Every array the description needs must be there with its shape, be real, and be
        finite after the cast to float32; unknown names are refused. Errors name ``source``.
        """
        shapes = self.weight_shapes()
        unknown = sorted(set(arrays) - set(shapes))
        missing = [k for k in shapes if k not in arrays]
        if unknown or missing:
            raise InputError(f"{source}: arrays do not match the description {self.name!r}"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unknown {', '.join(unknown)}" if unknown else ""))
        out = {}
        for k, shape in shapes.items():
            a = np.asarray(arrays[k])
            if a.dtype.kind not in "fiu":
                raise InputTypeError(f"{source}: {k} must be a real array, got dtype {a.dtype}")
            if a.shape != shape:
                raise InputError(f"{source}: {k} must have shape {shape}, got {a.shape}")
            with np.errstate(over="ignore"):
                a = np.ascontiguousarray(a, dtype=np.float32)
            if not np.all(np.isfinite(a)):  # after the cast: 1e39 is inf in float32
                raise InputError(f"{source}: {k} contains NaN or inf (in float32)")
            a.setflags(write=False)
            out[k] = a
        return out

    # -- files ---------------------------------------------------------------------------------
    def to_dict(self):
        """A JSON-ready dict (the inverse of :meth:`from_dict`)."""
        d = dataclasses.asdict(self)
        d["perception"] = {"kind": "conv3x3" if isinstance(self.perception, Conv3x3) else "depthwise",
                           **dataclasses.asdict(self.perception)}
        if isinstance(self.perception, Depthwise):
            d["perception"]["filters"] = list(self.perception.filters)
        d["residual"] = list(self.residual)
        d["layers"] = [dataclasses.asdict(x) for x in self.layers]
        return d

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d, source="description"):
        """Build a description from :meth:`to_dict`'s output; every field's type is checked (errors name ``source``)."""
        try:
            if not isinstance(d, dict):
                raise InputTypeError("a description is a JSON object")
            fields = {"name", "channels", "perception", "layers", "residual", "fire_rate", "noise_std", "alive",
                      "boundary", "readout"}
            unknown = sorted(set(d) - fields)
            if unknown:
                raise InputError(f"unknown fields {', '.join(unknown)}")
            p = dict(_obj(d.get("perception"), "perception"))
            kind = p.pop("kind", None)
            if kind == "conv3x3":
                perception = Conv3x3(**_only(p, ("features", "bias", "activation"), "perception"))
            elif kind == "depthwise":
                perception = Depthwise(**_only(p, ("filters",), "perception"))
            else:
                raise InputError(f"perception kind must be conv3x3 or depthwise, got {kind!r}")
            layers = d.get("layers")
            if not isinstance(layers, list):
                raise InputTypeError("layers must be a list")
            layers = tuple(Dense(**_only(_obj(x, "layer"), ("width", "bias", "activation"), "layer")) for x in layers)
            alive = Alive(**_only(_obj(d.get("alive", {}), "alive"), ("rule", "channel", "threshold"), "alive"))
            readout = d.get("readout")
            if readout is not None:
                readout = Readout(**_only(_obj(readout, "readout"), ("start", "classes"), "readout"))
            rest = {k: d[k] for k in ("fire_rate", "noise_std", "boundary") if k in d}
            return cls(name=d.get("name"), channels=d.get("channels"), perception=perception, layers=layers,
                       residual=d.get("residual"), alive=alive, readout=readout, **rest)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{source}: not a valid model description: {exc}") from None

    @classmethod
    def from_json(cls, text, source="description"):
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InputError(f"{source}: not a valid model description: {exc}") from None
        return cls.from_dict(d, source)

    def digest(self):
        """A short hash of the semantics (the name excluded): equal digests run the same kernels."""
        d = self.to_dict()
        d.pop("name")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _obj(value, name):
    if not isinstance(value, dict):
        raise InputTypeError(f"{name} must be an object")
    return value


def _only(d, keys, name):
    unknown = sorted(set(d) - set(keys))
    if unknown:
        raise InputError(f"{name}: unknown fields {', '.join(unknown)}")
    return d


# -- the descriptions the project knows -------------------------------------------------------

#: the self-classifying MNIST digits (Randazzo et al., Distill 2020): fastca-mnist and distill-2020
MNIST = ModelSpec(
    name="self-classifying-mnist", channels=20, perception=Conv3x3(80), layers=(Dense(80), Dense(19, activation="none")),
    residual=(1, 20), fire_rate=0.5, noise_std=0.02, alive=Alive("static", 0, 0.1), readout=Readout(10, 10))

#: the Growing NCA (Mordvintsev et al., Distill 2020)
GROWING = ModelSpec(
    name="growing", channels=16, perception=Depthwise(("identity", "sobel_x", "sobel_y")),
    layers=(Dense(128), Dense(16, activation="none")), residual=(0, 16), fire_rate=0.5, noise_std=0.0,
    alive=Alive("maxpool", 3, 0.1))

#: a texture NCA (Niklasson et al., Distill 2021): no alive rule, wrap-around
TEXTURE = ModelSpec(
    name="texture", channels=12, perception=Depthwise(("identity", "sobel_x", "sobel_y", "laplacian")),
    layers=(Dense(96), Dense(12, bias=False, activation="none")), residual=(0, 12), fire_rate=0.5, boundary="wrap")

#: odd shapes that stress kernel generators
ODD = (
    ModelSpec(name="odd-5-7", channels=5, perception=Conv3x3(7), layers=(Dense(4, activation="none"),),
              residual=(1, 5), noise_std=0.01, alive=Alive("static", 0, 0.1)),
    ModelSpec(name="odd-33", channels=33, perception=Conv3x3(130, bias=False),
              layers=(Dense(17), Dense(33, bias=False, activation="none")), residual=(0, 33),
              alive=Alive("maxpool", 32, 0.05), boundary="wrap"),
    ModelSpec(name="odd-one-layer", channels=6, perception=Depthwise(("sobel_y",)),
              layers=(Dense(6, bias=False, activation="none"),), residual=(0, 6), fire_rate=1.0),
)

KNOWN = (MNIST, GROWING, TEXTURE) + ODD


# -- the float64 oracle ------------------------------------------------------------------------

def _neighbourhood(x, boundary, fill):
    """(B, H, W, ...) -> (B, H, W, 3, 3, ...): every cell's 3x3 neighbourhood (outside: ``fill`` or wrapped)."""
    if boundary == "wrap":
        p = np.concatenate([x[:, -1:], x, x[:, :1]], 1)
        p = np.concatenate([p[:, :, -1:], p, p[:, :, :1]], 2)
    else:
        pad = [(0, 0), (1, 1), (1, 1)] + [(0, 0)] * (x.ndim - 3)
        p = np.pad(x, pad, constant_values=fill)
    h, w = x.shape[1:3]
    rows = [np.stack([p[:, i:i + h, j:j + w] for j in range(3)], 3) for i in range(3)]
    return np.stack(rows, 3)


def alive_mask(spec: ModelSpec, state):
    """(B, H, W) bool: the cells the alive rule calls alive in ``state`` (float compare in float32)."""
    a = spec.alive
    if a.rule == "none":
        return np.ones(state.shape[:3], bool)
    ch = state[..., a.channel].astype(np.float32)
    if a.rule == "maxpool":
        ch = _neighbourhood(ch, spec.boundary, -np.inf).max(axis=(3, 4))
    return ch > np.float32(a.threshold)


def step_float64(spec: ModelSpec, weights, state, fire, noise=None):
    """One step of ``spec`` in float64: the oracle every backend is tested against.

    ``weights``: name -> array (:meth:`ModelSpec.weight_shapes`); ``state``: (B, H, W, C);
    ``fire``: (B, H, W) bool, the cells whose ``u <= fire_rate``; ``noise``: (B, H, W,
    n_updated) standard normals or None (no noise). Returns the (B, H, W, C) float64 state.
    """
    s = np.asarray(state, np.float64)
    nb = _neighbourhood(s, spec.boundary, 0.0)  # (B, H, W, 3, 3, C)
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    if isinstance(spec.perception, Conv3x3):
        x = np.einsum("bhwijc,ijco->bhwo", nb, w["w1"])
        if spec.perception.bias:
            x = x + w["b1"]
        if spec.perception.activation == "relu":
            x = np.maximum(x, 0)
        k = 2
    else:
        kern = spec.perception.kernel().astype(np.float64)  # (3, 3, F)
        x = np.einsum("bhwijc,ijf->bhwcf", nb, kern).reshape(*s.shape[:3], -1)  # channel-major
        k = 1
    for i, layer in enumerate(spec.layers):
        x = x @ w[f"w{k + i}"]
        if layer.bias:
            x = x + w[f"b{k + i}"]
        if layer.activation == "relu":
            x = np.maximum(x, 0)
    if noise is not None and spec.noise_std > 0:
        x = x + spec.noise_std * np.asarray(noise, np.float64)
    r0, r1 = spec.residual
    pre = alive_mask(spec, state)
    update = fire if spec.alive.rule == "maxpool" else fire & pre
    out = s.copy()
    out[..., r0:r1] += x * update[..., None]
    if spec.alive.rule == "maxpool":
        post = alive_mask(spec, out)
        out = out * (pre & post)[..., None]
    return out
