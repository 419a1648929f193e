"""Checks that only a real GPU can run in reasonable time: large shapes, fresh random weights,
races (the same run twice must give the same bits), long rollouts, the published model on
500 test digits, and CuPy / torch CUDA inputs. Skipped under the simulator."""

import os

import numpy as np
import pytest
from helpers import TOLERANCES, assert_close, needs_mnist, oracle_step, tricky_state

import fastca
from fastca._compat import numba_cuda

from test_cuda_kernel import run_cuda

cuda = numba_cuda()

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="real GPU only")

# A fresh seed each run (printed on failure), so the kernel is checked on inputs nobody tuned it for.
FRESH = int(os.environ.get("FASTCA_TEST_SEED", np.random.SeedSequence().entropy % 2**31))
SHAPES = [(1, 1000, 1300), (2, 257, 129), (3, 63, 65), (1, 1, 2000), (1, 2000, 1)]


@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_random_weights_large_shapes(shape):
    weights = fastca.NCAWeights.random(seed=FRESH, scale=0.1)
    state = tricky_state(shape, seed=FRESH + 1)
    kw = dict(seed=FRESH % 1000, start_step=7, noise=0.02, input="state")
    gpu = run_cuda(weights, state, **kw)
    what = f"seed {FRESH}, {shape}"
    assert_close(gpu, oracle_step(weights, state, FRESH % 1000, 7), TOLERANCES["one_step"], f"vs float64 oracle, {what}")
    cpu = fastca.simulate(weights, state, 1, backend="numba-cpu", **kw).state
    assert_close(gpu, cpu, TOLERANCES["one_step"], f"vs numba-cpu, {what}")
    np.testing.assert_array_equal(np.any(gpu != state, -1), np.any(cpu != state, -1))


def test_same_run_twice_gives_the_same_bits(model):
    """A race (a block reading a cell another block already wrote) shows as a moving result."""
    gray, _ = _world(1024)
    runs = [fastca.simulate(model, gray, 20, backend="numba-cuda", seed=FRESH).state for _ in range(3)]
    runs.append(run_cuda(model, gray, 20, seg_rows=16, layout="64", seed=FRESH).reshape(runs[0].shape))
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])


def test_rollout_matches_cpu(model):
    gray, targets = _world(300)
    kw = dict(seed=FRESH, labels=targets)
    gpu = fastca.simulate(model, gray, 50, backend="numba-cuda", **kw)
    cpu = fastca.simulate(model, gray, 50, backend="numba-cpu", **kw)
    alive = cpu.alive
    same = (gpu.labels == cpu.labels)[alive].mean() * 100
    assert same >= TOLERANCES["rollout_label_agreement"], f"only {same:.3f}% of alive cell labels agree"
    assert abs(gpu.accuracy[-1] - cpu.accuracy[-1]) < 0.5


def test_float16_storage_large():
    """One step: within a float16 rounding of the CPU; three steps: such differences may grow a
    little through the MLP, so almost every value still agrees that closely."""
    weights = fastca.NCAWeights.random(seed=FRESH, scale=0.1)
    state = tricky_state((1, 300, 400), seed=FRESH)
    kw = dict(seed=5, noise=0.02, input="state", storage="float16")
    for steps, share in ((1, 1.0), (3, 0.9999)):
        gpu = fastca.simulate(weights, state, steps, backend="numba-cuda", **kw).state.astype(np.float32)
        cpu = fastca.simulate(weights, state, steps, backend="numba-cpu", **kw).state.astype(np.float32)
        close = np.abs(gpu - cpu) <= 1e-4 + 2e-3 * np.abs(cpu)
        assert close.mean() >= share, f"{steps} steps: {np.mean(~close):.2e} of the values differ (seed {FRESH})"
        assert np.mean(gpu == cpu) > 0.99


@needs_mnist
def test_published_model_500_digits_accuracy():
    images, labels = fastca.data.load_mnist("test")
    model = fastca.pretrained("distill-2020")
    kw = dict(seed=0, labels=labels[:500])
    gpu = fastca.simulate(model, images[:500], 200, backend="numba-cuda", **kw)
    cpu = fastca.simulate(model, images[:500], 200, backend="numba-cpu", **kw)
    print(f"accuracy@200 numba-cuda {gpu.accuracy[-1]:.3f} numba-cpu {cpu.accuracy[-1]:.3f}")
    assert abs(gpu.accuracy[-1] - cpu.accuracy[-1]) <= 0.3


@pytest.mark.parametrize("lib", ["cupy", "torch"])
def test_foreign_device_arrays(lib, model):
    mod = pytest.importorskip(lib)
    gray, _ = _world(64)
    host = fastca.simulate(model, gray, 5, backend="numba-cuda", seed=1)
    if lib == "cupy":
        dev = mod.asarray(gray)
    else:
        if not mod.cuda.is_available():
            pytest.skip("torch without CUDA")
        dev = mod.from_numpy(gray).cuda()
    out = fastca.simulate(model, dev, 5, backend="numba-cuda", seed=1)
    np.testing.assert_array_equal(out.state, host.state)


def _world(size):
    images, labels = fastca.data.sample_digits()
    gray, targets, _ = fastca.data.mnist_world(images, labels, size, size, seed=0)
    return gray, targets


DESCRIBED_SHAPES = [(2, 70, 100, 16), (1, 33, 65, 8), (3, 1, 40, None)]


@pytest.mark.parametrize("name", [d.name for d in fastca.model.KNOWN])
@pytest.mark.parametrize("shape", DESCRIBED_SHAPES, ids=["x".join(map(str, s)) for s in DESCRIBED_SHAPES])
def test_described_models_large_shapes(name, shape):
    """Every known description on grids of many blocks (several strips and segments), fresh
    random weights, 1 and 4 steps, against the float64 oracle; the same run twice gives the same bits."""
    from test_cuda_described import KNOWN, cuda_steps, described_state, oracle_steps

    from fastca.nca import NCA

    d = KNOWN[name]
    *grid, seg_rows = shape
    arrays = d.random_weights(seed=FRESH)
    nca = NCA(d, arrays)
    state = described_state(d, tuple(grid), seed=FRESH + 1)
    for steps in (1, 4):
        kw = dict(seed=FRESH % 1000, start=7, origin=(0, 5, 9))
        gpu = cuda_steps(nca, state, steps, seg_rows=seg_rows, **kw)
        what = f"{name} {shape}, {steps} steps, seed {FRESH}"
        assert_close(gpu, oracle_steps(d, arrays, state, steps, **kw), TOLERANCES["one_step"], what)
        np.testing.assert_array_equal(cuda_steps(nca, state, steps, seg_rows=seg_rows, layout="64", **kw), gpu)
