"""numba-cuda on every model description fastca knows, against the float64 oracle of fastca.model.

The kernel is generated per description (kernels/cuda_shape.py renders the block of the
template kernels/cuda.py). Grids are tiny (the simulator runs every thread as a Python
thread); ``seg_rows`` is forced small in some cases so that a 9-row grid already has
several segments, and one grid is wider than a strip, so blocks share row and column
boundaries (and, wrapping, the sample's edges).
"""

import dataclasses
import os

import numpy as np
import pytest
from helpers import TOLERANCES, assert_close

from fastca import model as models
from fastca import rng
from fastca.backends.base import Params
from fastca.backends.numba_cuda import NumbaCUDA
from fastca.kernels import cuda as template
from fastca.kernels import cuda_shape, generate
from fastca.nca import NCA

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
KNOWN = {d.name: d for d in models.KNOWN}
IDS = list(KNOWN)


def described_state(d, shape, seed):
    """A (B, H, W, C) float32 state whose alive channel mixes alive and dead cells under d's rule
    (values well away from the threshold), with non-zero channels everywhere (dead cells too)."""
    g = np.random.default_rng(seed)
    s = g.normal(0, 0.5, shape + (d.channels,)).astype(np.float32)
    a = d.alive
    if a.rule == "static":
        alive = g.random(shape) < 0.6
        s[..., a.channel] = np.where(alive, g.uniform(0.3, 1.0, shape), g.uniform(-0.5, a.threshold - 0.04, shape))
    elif a.rule == "maxpool":  # sparse seeds: alive regions, their borders, and cells far from any
        seed_cells = g.random(shape) < 0.06
        s[..., a.channel] = np.where(seed_cells, g.uniform(0.3, 1.0, shape), g.uniform(-0.5, a.threshold - 0.04, shape))
    return s


def cuda_steps(nca, state, steps, seed, start=0, fire_rate=None, noise_std=None, origin=(0, 0, 0), seg_rows=None,
               layout=None):
    """``steps`` steps of the numba-cuda runner from ``state`` (host (B, H, W, C)); the final host state.

    Under the simulator, blocks run one at a time in reverse order (the simulator would run
    them in index order, hiding a block that reads cells another block already wrote); the
    halo buffers start as NaN, so a halo value read without having been saved shows.
    """
    d = nca.description
    fire_rate = d.fire_rate if fire_rate is None else fire_rate
    noise_std = d.noise_std if noise_std is None else noise_std
    d_state, _, _ = NumbaCUDA.to_state(state, "state", np.float32, d)
    params = Params(seed, fire_rate, noise_std, nca.alive_threshold, origin)
    runner = NumbaCUDA(nca, d_state, params, seg_rows=seg_rows, layout=layout,
                       block_order="reverse" if SIMULATED else "normal")
    runner.poison()
    for t in range(start, start + steps):
        runner.step(t)
    assert runner.nonfinite() is None
    return runner.read()


def oracle_steps(d, arrays, state, steps, seed, start=0, fire_rate=None, noise_std=None, origin=(0, 0, 0)):
    """The same steps with fastca.model.step_float64 (each step's result rounded to float32, as stored)."""
    fire_rate = d.fire_rate if fire_rate is None else fire_rate
    noise_std = d.noise_std if noise_std is None else noise_std
    spec = dataclasses.replace(d, fire_rate=fire_rate, noise_std=noise_std)
    s = np.asarray(state, np.float32)
    out = s.astype(np.float64)
    for t in range(start, start + steps):
        fire = rng.fire_mask(seed, t, np.ones(s.shape[:3], bool), fire_rate, origin)
        noise = rng.normal_grid(seed, t, s.shape[:3], d.n_updated, origin) if noise_std > 0 else None
        out = models.step_float64(spec, arrays, s, fire, noise)
        s = out.astype(np.float32)
    return out


def test_mnist_block_is_the_shipped_one():
    """The template as shipped is the MNIST kernel: rendering the MNIST description gives its very block."""
    text = generate.template_source("cuda")
    block = text[text.index(generate.BEGIN):text.index(generate.END)].split("\n", 1)[1]
    assert cuda_shape.render(models.MNIST).strip() == block.strip()
    _, total = cuda_shape.layout(models.MNIST)
    assert total == template.WEIGHTS and template.SHARED_BYTES <= cuda_shape.SHARED_LIMIT


@pytest.mark.parametrize("name", IDS)
def test_every_description_fits_and_packs(name):
    d = KNOWN[name]
    mod = cuda_shape.kernel(d)
    assert mod.SHARED_BYTES <= cuda_shape.SHARED_LIMIT
    assert mod.S % 2 == 1 and mod.S >= max(x[0] for x in mod.LAYERS[:1]) and mod.S >= max(x[1] for x in mod.LAYERS)
    assert all(mod.M % ncg == 0 for ncg, _ in mod.LAYOUTS.values())
    arrays = d.random_weights(3)
    packed = cuda_shape.pack_weights(d, arrays)
    assert packed.shape == (mod.WEIGHTS,)
    layers, _ = cuda_shape.layout(d)
    for x in layers:  # every array lies where the kernel reads it
        np.testing.assert_array_equal(packed[x.w_off:x.w_off + x.n_in * x.n_out], arrays[x.name].ravel())
        if x.bias:
            np.testing.assert_array_equal(packed[x.b_off:x.b_off + x.n_out], arrays[x.bias])


def test_description_too_big_for_shared_memory_is_refused():
    big = models.ModelSpec(name="too-wide", channels=600, perception=models.Conv3x3(8),
                           layers=(models.Dense(600, activation="none"),), residual=(0, 600))
    with pytest.raises(ValueError, match="shared memory"):
        cuda_shape.kernel(big)


# (description, (B, H, W), seg_rows, layout, steps): one step and a few; several segments; both layouts
CASES = [(name, (2, 9, 11), seg, lay, steps) for name in IDS for seg, lay, steps in ((None, None, 1), (4, "64", 3))]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[4]}step-seg{c[2]}" for c in CASES])
def test_steps_match_float64_oracle(case):
    name, shape, seg_rows, layout, steps = case
    d = KNOWN[name]
    arrays = d.random_weights(seed=len(name))
    nca = NCA(d, arrays)
    state = described_state(d, shape, seed=steps)
    kw = dict(seed=5, start=3, origin=(1, 2, 3))
    gpu = cuda_steps(nca, state, steps, seg_rows=seg_rows, layout=layout, **kw)
    ref = oracle_steps(d, arrays, state, steps, **kw)
    assert_close(gpu, ref, TOLERANCES["one_step"], f"numba-cuda vs float64 oracle, {name}, {steps} steps")
    if d.alive.rule == "maxpool":  # exactly the cells the rule kills are zero
        np.testing.assert_array_equal(np.all(gpu == 0, -1), np.all(ref == 0, -1))
        assert 0 < np.mean(np.all(gpu == 0, -1)) < 1, "the test state must have live and dead cells"
    elif d.alive.rule == "static":  # the alive channel is never written, dead cells keep their values
        np.testing.assert_array_equal(gpu[..., d.alive.channel], state[..., d.alive.channel])
        dead = state[..., d.alive.channel] <= np.float32(d.alive.threshold)
        assert dead.any() and (~dead).any()
        np.testing.assert_array_equal(gpu[dead], state[dead])


@pytest.mark.parametrize("name", ["texture", "odd-33"])
def test_wrap_across_strips_and_segments(name):
    """Wider than a strip (several strips, a partial last one) and several segments: a wrapping
    grid reads the other side of the sample across block boundaries, every cell firing."""
    d = KNOWN[name]
    arrays = d.random_weights(seed=11)
    state = described_state(d, (1, 5, 35), seed=12)
    kw = dict(seed=2, fire_rate=1.0, noise_std=0.0)
    gpu = cuda_steps(NCA(d, arrays), state, 1, seg_rows=2, **kw)
    assert_close(gpu, oracle_steps(d, arrays, state, 1, **kw), TOLERANCES["one_step"], f"{name} wrap, 1x5x35")


def test_results_do_not_depend_on_blocking():
    """Segment height and thread layout change which block and slot a cell falls in, not its bits."""
    d = KNOWN["growing"]
    nca = NCA(d, d.random_weights(seed=4))
    state = described_state(d, (1, 9, 11), seed=4)
    runs = [cuda_steps(nca, state, 2, seed=4, seg_rows=s, layout=lay) for s, lay in ((2, "64"), (16, "128"))]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_labels_and_counts_of_a_described_readout():
    """A description with a readout that is not the MNIST layout: labels and counts come from the host."""
    from fastca import metrics

    d = models.ModelSpec(name="odd-readout", channels=5, perception=models.Conv3x3(7),
                         layers=(models.Dense(4, activation="none"),), residual=(1, 5),
                         alive=models.Alive("static", 0, 0.1), readout=models.Readout(1, 4))
    nca = NCA(d, d.random_weights(1))
    state = described_state(d, (2, 4, 5), seed=1)
    d_state, _, _ = NumbaCUDA.to_state(state, "state", np.float32, d)
    runner = NumbaCUDA(nca, d_state, Params(0, 0.5, 0.0, 0.1))
    labels = runner.output(runner.labels(), "host")
    np.testing.assert_array_equal(labels, metrics.label_map_described(d, state, np.float32(0.1)))
    targets = np.random.default_rng(0).integers(-1, 4, (2, 4, 5))
    buf = runner.new_counts(1)
    runner.count(runner.prepare_targets(targets), buf, 0)
    np.testing.assert_array_equal(runner.counts_host(buf)[0],
                                  metrics.counts_described(d, state, targets.astype(np.int16), np.float32(0.1)))


@pytest.mark.parametrize("shift", [-0.45, 0.3])
def test_maxpool_rule_kills_and_grows(shift):
    """The Growing NCA with its alive channel pushed down (alive cells die: the rule after the step
    zeroes them) or up (dead cells next to alive ones come alive and keep their neighbours alive)."""
    d = KNOWN["growing"]
    arrays = d.random_weights(seed=7)
    arrays[f"w{len(d.layers)}"][:, d.alive.channel] *= 0.1  # the alive channel's update: mostly the bias
    arrays[f"b{len(d.layers)}"][d.alive.channel] = shift
    state = described_state(d, (2, 9, 11), seed=8)
    kw = dict(seed=1, fire_rate=1.0, noise_std=0.0)
    gpu = cuda_steps(NCA(d, arrays), state, 1, **kw)
    ref = oracle_steps(d, arrays, state, 1, **kw)
    assert_close(gpu, ref, TOLERANCES["one_step"], f"growing, alive channel shifted by {shift}")
    pre = models.alive_mask(d, state)
    post = models.alive_mask(d, ref.astype(np.float32))
    changed = (pre & ~post) if shift < 0 else (post & ~pre)
    assert changed.any() and (pre & post).any(), "the rule after the step must matter in this test"
    np.testing.assert_array_equal(np.all(gpu == 0, -1), ~(pre & post))
