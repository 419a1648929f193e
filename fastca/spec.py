"""The self-classifying MNIST automaton: the one definition of its semantics.

Every backend (torch reference, Numba CPU, Numba CUDA) reads its constants from
here. The semantics follow the Distill article "Self-classifying MNIST Digits"
(Randazzo et al., 2020) and its reference notebook:

State
    ``(..., H, W, 20)`` float32, channels last. Channel 0 is the gray value of the
    pixel in [0, 1] and never changes. Channels 1..9 are hidden, channels 10..19 are
    the ten class channels (digit ``d`` is channel ``10 + d``).
Alive rule
    A cell is alive when ``gray > 0.1`` (compared in float32). Only alive cells
    update; dead cells keep their values, which their neighbours still see.
One step (synchronous: every cell reads step t and writes step t+1)
    1. ``p = relu(b1 + conv3x3(s, W1))``, zero padding outside the grid ("SAME"),
       ``W1`` is (3, 3, 20, 80) HWIO (kernel row, kernel column, in, out).
    2. ``h = relu(p @ W2 + b2)`` with ``W2`` (80, 80) (in, out).
    3. ``ds = h @ W3 + b3`` with ``W3`` (80, 19) (in, out).
    4. ``ds += noise_std * N(0, 1)`` per cell and channel (``noise_std`` 0.02 by default).
    5. ``m = (u <= fire_rate) & alive`` with ``u ~ U[0, 1)`` per cell and step.
    6. ``s[..., 1:] += ds * m``.
Input
    A uint8 gray value ``g`` is the float32 ``g / 255`` (IEEE division, the same bits on every
    backend, host or device): :func:`unit_gray`.
Labels
    A cell's label is the argmax of its class channels (the first on ties); it is
    "undecided" (:data:`N_CLASSES`) for the agreement count when all of them are negative,
    and both when any is NaN or inf: :func:`label_of` (one cell, compiled by the kernels),
    :func:`class_labels` (arrays). Dead cells have no label (:data:`DEAD` in label maps).
Mutation (the article's experiment)
    The gray channel takes a new image; the mutable channels of the cells that the new gray
    leaves dead are zeroed, the others keep their values: :func:`mutate`.
Randomness
    ``u`` and the noise come from the counter-based generator in :mod:`fastca.rng`,
    keyed by (seed, step, sample, y, x[, channel]) in global coordinates (a grid cut from a
    larger one passes its ``origin``), so every backend draws the same numbers for the
    same seed, and a piece of a grid the same numbers as the whole grid.
Numerics
    float32 storage and float32 accumulation, no fast-math.
"""

import numpy as np

CHANNELS = 20  #: channels per cell
GRAY = 0  #: index of the immutable gray channel
MUTABLE = CHANNELS - 1  #: channels 1..19 are updated
N_CLASSES = 10  #: digits 0..9
CLASS_START = CHANNELS - N_CLASSES  #: first class channel (10)
HIDDEN = 80  #: perception features and hidden-layer width
KERNEL = 3  #: perception kernel size (3x3, zero padding)
PERCEPTION_IN = KERNEL * KERNEL * CHANNELS  #: 180 inputs per cell to the first layer

ALIVE_THRESHOLD = 0.1  #: alive when gray > this
FIRE_RATE = 0.5  #: probability that an alive cell updates in a step
NOISE_STD = 0.02  #: std of the residual noise of the published model

#: floating point operations per updated cell (multiply-add = 2), for FLOP/s reports:
#: 2 * (180*80 + 80*80 + 80*19) = 44,640.
FLOP_PER_CELL = 2 * (PERCEPTION_IN * HIDDEN + HIDDEN * HIDDEN + HIDDEN * MUTABLE)

#: parameter count: 3*3*20*80 + 80 + 80*80 + 80 + 80*19 + 19 = 22,499
N_PARAMS = PERCEPTION_IN * HIDDEN + HIDDEN + HIDDEN * HIDDEN + HIDDEN + HIDDEN * MUTABLE + MUTABLE

#: canonical weight shapes (reference layout: HWIO perception, (in, out) dense)
WEIGHT_SHAPES = {
    "w1": (KERNEL, KERNEL, CHANNELS, HIDDEN),
    "b1": (HIDDEN,),
    "w2": (HIDDEN, HIDDEN),
    "b2": (HIDDEN,),
    "w3": (HIDDEN, MUTABLE),
    "b3": (MUTABLE,),
}

GRAY_LEVELS = 255  #: uint8 gray g means g / GRAY_LEVELS

#: Per-sample counts behind the metrics, in this order: alive cells, alive cells labelled
#: as their target, alive cells per label 0..9 (undecided cells in none), alive cells that
#: have a target (a target of -1 means none: such a cell is neither right nor wrong).
N_COUNTS = 2 + N_CLASSES + 1
COUNT_TARGETED = N_COUNTS - 1

DEAD = -1  #: label of a dead cell in label maps


# The rules below are plain Python: NumPy and torch call them on arrays, and the kernels
# compile the very same functions (numba.njit on the CPU, device functions on CUDA).


def is_alive(gray, threshold):
    """The alive rule: ``gray > threshold`` (both float32; arrays or scalars)."""
    return gray > threshold


def unit_gray(g):
    """A uint8 gray value (or array) as float32 in [0, 1]: ``float32(g) / float32(255)``."""
    return np.float32(g) / np.float32(GRAY_LEVELS)


def label_of(cell):
    """(label, label or N_CLASSES): the argmax of a cell's class channels, and the same
    with N_CLASSES ("undecided") when every class channel is negative.

    A cell with a non-finite class channel (NaN or inf) is never a class: both are
    N_CLASSES. ``cell``: the (20,) channels of one cell (or any array indexed the same way).
    """
    best = 0
    value = cell[CLASS_START]
    finite = value - value == 0  # False for NaN and inf
    for d in range(1, N_CLASSES):
        v = cell[CLASS_START + d]
        finite = finite and v - v == 0
        if v > value:
            value = v
            best = d
    if not finite:
        return N_CLASSES, N_CLASSES
    return best, (best if value >= 0 else N_CLASSES)


def class_labels(classes):
    """The array form of :func:`label_of`: (label, label or K) of class channels ``classes``
    (..., K), a NumPy array of any float type, compared as it is (no cast).

    label: the argmax (the first on ties), K where any class channel is not finite;
    the second: the same, and K ("undecided") where every class channel is negative.
    Both int64 (...).
    """
    k = classes.shape[-1]
    finite = np.isfinite(classes).all(axis=-1)
    label = np.where(finite, np.argmax(classes, axis=-1), k)
    return label, np.where(finite & (classes.max(axis=-1) >= 0), label, k)


def mutate(state, new_gray, threshold, channel=GRAY, residual=(1, CHANNELS)):
    """The mutation, in place on a state (..., C) (a NumPy array or a torch tensor).

    Channel ``channel`` becomes ``new_gray`` (...); the channels ``residual[0]:residual[1]`` are
    zeroed (+0.0) where the stored new gray is not alive (:func:`is_alive` against
    ``threshold``; a NumPy float16 state is widened to float32 first, exactly). The CUDA
    kernel ``write_gray`` applies the same rule cell by cell.
    """
    state[..., channel] = new_gray
    rest = state[..., residual[0]:residual[1]]
    if isinstance(state, np.ndarray):
        rest[~is_alive(state[..., channel].astype(np.float32), threshold)] = 0
    else:  # a torch tensor: masked_fill_ stays on its device (a boolean index would wait for the host)
        rest.masked_fill_(~is_alive(state[..., channel], threshold)[..., None], 0)
