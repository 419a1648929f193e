"""The kernels' non-finite flag, exhaustively: NaN, +inf and -inf written into each updated channel
(1..19) of an alive cell, with float32 and float16 storage, on every backend that flags as it writes
(numba-cpu here; numba-cuda under the CUDA simulator, in a subprocess unless this process already runs
under it, as the mutation runner does).

How the kernel is made to WRITE the value (inputs are checked, so it cannot be passed in): all weights
are zero but the last layer's bias, so the update of every channel is exactly that bias.

- +inf / -inf: the bias is +-max and the cell's channel c holds +-max (finite, the largest of the storage
  type): only channel c overflows (every other channel holds 0 + bias, finite), so a check that skips
  a channel, or tests only NaN, misses its case.
- NaN: the bias is 0 and channel c of the live state is set to NaN after the run was built (as a user
  writing the live array could); the kernel writes NaN + 0 = NaN there (and into the channels its MLP
  spreads the NaN to).

Grids are 1x1 and the batch holds 2 samples: the cell is in sample 1 (sample 0 is dead), the run starts
at step 5, fire rate 1 and no noise, so the error must name step 6 and sample 1. Each case also checks
that the cell is never a class (nor counted as right) when a class channel (10..19) is non-finite.
"""

import importlib.util
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastca
from fastca import spec

CHANNELS = range(1, spec.CHANNELS)
VALUES = ("nan", "+inf", "-inf")
STORAGES = ("float32", "float16")
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _weights(bias):
    arrays = {k: np.zeros(s, np.float32) for k, s in spec.WEIGHT_SHAPES.items()}
    arrays["b3"] = np.full(spec.MUTABLE, bias, np.float32)
    return fastca.NCAWeights(**arrays, name=f"bias {bias}")


def run_case(backend, storage, channel, value, on_nonfinite="raise"):
    """Run one case; returns a list of what went wrong (empty when the kernel flagged it as it should)."""
    big = float(np.finfo(storage).max)
    sign = -1.0 if value == "-inf" else 1.0
    state = np.zeros((2, 1, 1, spec.CHANNELS), np.float32)
    state[1, 0, 0, spec.GRAY] = 1.0  # sample 1's cell is alive; sample 0's is dead
    if value != "nan":
        state[1, 0, 0, channel] = sign * big
    options = dict(layout="64") if backend == "numba-cuda" else None  # fewer simulated threads
    sim = fastca.Simulation(_weights(0.0 if value == "nan" else sign * big), state, backend=backend, storage=storage,
                            fire_rate=1.0, noise=False, start_step=5, input="state", on_nonfinite=on_nonfinite,
                            options=options)
    if value == "nan":
        if backend == "numba-cuda":
            live = sim.state("device")
            live[1, 0, 0, channel] = np.nan
        else:
            sim.state(copy=False)[1, 0, 0, channel] = np.nan
    case = f"{backend} {storage} channel {channel} {value} ({on_nonfinite})"
    problems = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            sim.run(1)
            if on_nonfinite == "raise":
                problems.append(f"{case}: no FloatingPointError")
        except FloatingPointError as exc:
            if on_nonfinite != "raise" or "at step 6, in sample 1:" not in str(exc):
                problems.append(f"{case}: {exc}")
    if on_nonfinite == "warn" and not any("non-finite" in str(w.message) for w in caught):
        problems.append(f"{case}: no warning")
    cell = sim.state()[1, 0, 0].astype(np.float32)
    written = cell[channel]
    if not (np.isnan(written) if value == "nan" else written == sign * np.inf):
        problems.append(f"{case}: the test did not work: channel {channel} holds {written}")
    elif value != "nan" and not np.isfinite(np.delete(cell, channel)).all():
        problems.append(f"{case}: the test did not work: another channel overflowed too ({cell})")
    if channel >= spec.CLASS_START:  # a class channel is non-finite: never a class, never counted as right
        label = int(sim.labels()[1, 0, 0])
        counts = sim.counts(np.array([-1, channel - spec.CLASS_START]))
        if label != spec.N_CLASSES or counts[1, 0] != 1 or counts[1, 1] != 0 or counts[1, 2:2 + spec.N_CLASSES].any():
            problems.append(f"{case}: counted as a class: label {label}, counts {counts[1].tolist()}")
    return problems


def run_all(backend, warn_every=1, stop_at=None):
    """Every case on ``backend`` (raise), and every ``warn_every``-th one again with on_nonfinite="warn";
    the problems found (stops once ``stop_at`` were found: the simulator is slow)."""
    problems = []
    i = 0
    for storage in STORAGES:
        for channel in CHANNELS:
            for value in VALUES:
                problems += run_case(backend, storage, channel, value)
                if i % warn_every == 0:
                    problems += run_case(backend, storage, channel, value, on_nonfinite="warn")
                i += 1
                if stop_at is not None and len(problems) >= stop_at:
                    return problems
    return problems


def test_cpu_kernel_flags_every_channel():
    problems = run_all("numba-cpu")
    assert not problems, "\n".join(problems[:20])


needs_numba_cuda = pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                                      reason="numba-cuda not installed")

# The subprocess imports the same fastca as this process (the mutation runner's copy, or the checkout).
_CHILD = (
    "import sys; sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r}); import fastca; "
    "assert fastca.__file__ == {init!r}, fastca.__file__; from test_nonfinite import run_all; "
    "problems = run_all('numba-cuda', warn_every=19, stop_at=3); print('\\n'.join(problems) or 'ALL FLAGGED')"
)


@needs_numba_cuda
def test_cuda_kernel_flags_every_channel_under_simulator():
    if SIMULATED:
        problems = run_all("numba-cuda", warn_every=19, stop_at=3)
        assert not problems, "\n".join(problems[:20])
        return
    tests = os.path.dirname(os.path.abspath(__file__))
    code = _CHILD.format(root=os.path.dirname(os.path.dirname(fastca.__file__)), tests=tests, init=fastca.__file__)
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1200,
                       cwd=os.path.dirname(tests))
    assert p.returncode == 0 and p.stdout.strip().endswith("ALL FLAGGED"), p.stdout[-4000:] + p.stderr[-3000:]
