"""Input validation shared by the public API; raises the errors users see."""

import numbers

import numpy as np

from . import spec
from .errors import InputError, InputTypeError


def check_steps(steps):
    """Return ``steps`` as a non-negative int, or raise naming the problem."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise InputTypeError(f"steps must be an int, got {type(steps).__name__}")
    if steps < 0:
        raise InputError(f"steps must be >= 0, got {steps}")
    return int(steps)


def check_seed(seed):
    """Return ``seed`` as an int in [0, 2**64), or raise."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InputTypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise InputError(f"seed must be in [0, 2**64), got {seed}")
    return int(seed)


def first_line(exc, limit=300):
    """The first line of an exception's message (at most ``limit`` characters), or its type's name when empty."""
    lines = str(exc).splitlines()
    return lines[0][:limit] if lines and lines[0] else type(exc).__name__


def check_probability(name, value):
    """Return ``value`` as a float in [0, 1], or raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name} must be a float in [0, 1], got {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise InputError(f"{name} must be in [0, 1], got {value}")
    return value


#: Bound of the shared generator's standard normal draws (:mod:`fastca.rng`: sqrt(2 ln 2**24) = 5.77).
NOISE_DRAW_MAX = 5.8


def check_noise_std(name, value, dtype=np.float32):
    """Return ``value`` as a float std >= 0 whose noise draws stay finite in ``dtype`` storage, or raise
    naming ``name`` (a std whose draws overflow is the parameter's fault, not the model's)."""
    value = float(value)
    if not (np.isfinite(value) and value >= 0):
        raise InputError(f"{name} must be finite and >= 0, got {value}")
    dtype = np.dtype(dtype)
    limit = float(np.finfo(dtype).max) / NOISE_DRAW_MAX
    if value > limit:
        raise InputError(f"{name} {value:g} is too large: its noise draws (up to {NOISE_DRAW_MAX} std) overflow "
                         f"{dtype.name} (max {float(np.finfo(dtype).max):g}); it must be at most {limit:.4g}")
    return value


def check_noise(noise, default, dtype=np.float32):
    """Resolve the ``noise`` argument to a std >= 0 (None -> the model's default, False -> 0) whose
    draws stay finite in ``dtype`` storage."""
    if noise is None:
        return check_noise_std("noise std (the model's noise_std)", default, dtype)
    if noise is True:
        return check_noise_std("noise std (the model's noise_std)", default if default > 0 else spec.NOISE_STD, dtype)
    if noise is False:
        return 0.0
    if isinstance(noise, np.bool_) or not isinstance(noise, numbers.Real):
        raise InputTypeError(f"noise must be None, a bool or a std >= 0, got {type(noise).__name__}")
    return check_noise_std("noise std", noise, dtype)


def check_gray(gray):
    """Check a gray image or batch's shape ((H, W) or (B, H, W)) and dtype (uint8 or float); returns it."""
    gray = np.asarray(gray)
    if gray.ndim not in (2, 3):
        raise InputError(f"gray input must be (H, W) or (B, H, W), got shape {gray.shape}")
    _check_grid(gray.shape)
    if gray.dtype != np.uint8 and gray.dtype.kind != "f":
        raise InputTypeError(
            f"gray input must be uint8 or float in [0, 1], got dtype {gray.dtype}; "
            "convert with x.astype(np.uint8) or x / 255"
        )
    return gray


def gray_to_float(gray):
    """Validate a gray image or batch and return it as float32 in [0, 1].

    ``gray``: (H, W) or (B, H, W); uint8 (scaled by 1/255) or float in [0, 1].
    """
    gray = check_gray(gray)
    if gray.dtype == np.uint8:
        return spec.unit_gray(gray)
    gray = gray.astype(np.float32)
    if not np.all(np.isfinite(gray)):
        raise InputError("gray input contains NaN or inf")
    if gray.size and (gray.min() < 0 or gray.max() > 1):
        raise InputError(
            f"float gray input must be in [0, 1], got range [{gray.min()}, {gray.max()}]; "
            "pass uint8 images or divide by 255"
        )
    return gray


def check_state(state, dtype=np.float32, channels=spec.CHANNELS):
    """Validate a full state (..., H, W, C); return it as ``dtype`` (B, H, W, C) plus its leading shape."""
    state = np.asarray(state)
    if state.ndim not in (3, 4) or state.shape[-1] != channels:
        raise InputError(
            f"state must be (H, W, {channels}) or (B, H, W, {channels}), got shape {state.shape}"
        )
    if state.dtype.kind != "f":
        raise InputTypeError(f"state must be a float array, got dtype {state.dtype}")
    _check_grid(state.shape)
    lead = state.shape[:-1]
    dtype = np.dtype(dtype)
    with np.errstate(over="ignore"):  # float64 -> float32 (or anything -> float16) may overflow: checked below
        out = np.ascontiguousarray(state.reshape((-1,) + state.shape[-3:]), dtype=dtype)
    if not np.all(np.isfinite(out)):  # after the cast: 1e300 in float64 is inf in float32
        if not np.all(np.isfinite(state)):
            raise InputError("state contains NaN or inf")
        hint = ": use storage='float32'" if dtype == np.float16 else ""
        raise InputError(f"state values exceed the {dtype.name} range ({float(np.finfo(dtype).max):g}){hint}")
    return out, lead


def _check_grid(shape):
    if any(n < 1 for n in shape):
        raise InputError(f"empty input: shape {shape} has a zero-length axis (grids are at least 1x1)")


def check_storage(storage):
    """Validate a storage name ("float32" or "float16") and return its numpy dtype."""
    from .backends.host import storage_types  # at call time: the backends import this module

    types = storage_types()
    if storage not in types:
        raise InputError(f"storage must be one of {sorted(types)}, got {storage!r}")
    return np.dtype(types[storage])
