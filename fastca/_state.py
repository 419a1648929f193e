"""Host-side input handling shared by the backends and the simulation: what an input means
(a gray image, a batch, or a full state) and the initial state it gives."""

import numpy as np

from . import _checks, spec
from .errors import InputError


def gray_channel(description=None):
    """The channel a gray image goes into: the static alive channel (MNIST: 0); ValueError for a
    description whose aliveness is not a static channel (its input must be a full state)."""
    if description is None:
        return spec.GRAY
    if description.alive.rule != "static":
        raise InputError(f"model {description.name!r} (alive rule {description.alive.rule!r}) takes a full state "
                         f"(H, W, {description.channels}) or (B, H, W, {description.channels}), not a gray image: "
                         "gray images go into a static alive channel")
    return description.alive.channel


def initial_state(gray, dtype=np.float32, description=None):
    """The initial state of a gray image or batch: gray in the alive channel (MNIST: 0), zeros elsewhere.

    gray: (H, W) or (B, H, W), uint8 (through :func:`fastca.spec.unit_gray`) or float in
    [0, 1]. Returns ``dtype`` (float32 or float16) (..., H, W, C), C the description's
    channels (default: the MNIST model's 20). Rows are converted in chunks, so no full-size
    float32 copy of the gray input is made (it matters on 10^8-cell worlds).
    """
    channel = gray_channel(description)
    channels = spec.CHANNELS if description is None else description.channels
    gray = _checks.check_gray(gray)
    state = np.zeros(gray.shape + (channels,), dtype)
    rows_in = gray.reshape(-1, gray.shape[-1])
    rows_out = state.reshape(-1, gray.shape[-1], channels)
    for r0 in range(0, rows_in.shape[0], 1024):
        rows_out[r0 : r0 + 1024, :, channel] = _checks.gray_to_float(rows_in[r0 : r0 + 1024])
    return state


def is_state_input(shape, dtype, input_kind, channels=spec.CHANNELS):
    """Whether an input of this shape and dtype is a full state (else a gray image or batch).

    "auto": 4 dimensions, or 3 with ``channels`` float channels last; "state"/"gray" force the choice.
    """
    if input_kind not in ("auto", "gray", "state"):
        raise InputError(f"input must be 'auto', 'gray' or 'state', got {input_kind!r}")
    if input_kind != "auto":
        return input_kind == "state"
    if len(shape) == 3 and np.dtype(dtype).kind == "f" and shape[-1] != channels and abs(shape[-1] - channels) <= 2:
        raise InputError(f"a float array of shape {tuple(shape)} is ambiguous: a state needs {channels} channels "
                         f"last; pass input='gray' if it is {shape[0]} images of {shape[1]}x{shape[2]}")
    return len(shape) == 4 or (len(shape) == 3 and shape[-1] == channels and np.dtype(dtype).kind == "f")


def host_state(x, input_kind, dtype=np.float32, description=None):
    """Return (state (B, H, W, C) ``dtype`` owned copy, leading shape, batched?); C: the description's
    channels (default: the MNIST model's 20)."""
    arr = np.asarray(x)
    channels = spec.CHANNELS if description is None else description.channels
    if is_state_input(arr.shape, arr.dtype, input_kind, channels):
        state, lead = _checks.check_state(arr, dtype, channels)
        state = state.copy() if np.shares_memory(state, arr) else state
    else:
        state = initial_state(arr, dtype, description)
        lead = state.shape[:-1]
        state = state.reshape((-1,) + state.shape[-3:])
    return state, lead, len(lead) == 3


def mutate_host(state, new_gray, alive_threshold=spec.ALIVE_THRESHOLD, description=None):
    """In place on a (B, H, W, C) host state: the gray (alive) channel = new_gray (float32 (B, H, W)),
    and the residual channels (MNIST: 1..19) zeroed where the new gray makes the cell dead (the
    article's mutation)."""
    channel = gray_channel(description)
    r0, r1 = (1, spec.CHANNELS) if description is None else description.residual
    spec.mutate(state, new_gray, np.float32(alive_threshold), channel, (r0, r1))
