"""Bad input gets a clear error before any work; nothing runs code from a file; NaN is never silent."""

import multiprocessing
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import fastca
from benchmarks import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_weights_checked_after_the_float32_cast():
    w = fastca.NCAWeights.random(seed=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        w.replace(b1=np.full(80, 1e39, np.float64))


def test_npz_reads_only_known_members_within_size(tmp_path):
    w = fastca.NCAWeights.random(seed=0)
    w.save(tmp_path / "ok.npz")
    big = tmp_path / "big.npz"
    with zipfile.ZipFile(tmp_path / "ok.npz") as src, zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        with dst.open("unused.npy", "w", force_zip64=True) as f:  # 64 MB of zeros, compressed to ~64 KB
            f.write(np.lib.format.magic(1, 0) + b"\0" * (64 << 20))
    loaded = fastca.NCAWeights.load(big)  # the unknown member is never decompressed
    np.testing.assert_array_equal(loaded.w1, w.w1)
    np.save(tmp_path / "array.npy", np.zeros(3))
    os.replace(tmp_path / "array.npy", tmp_path / "array.npz")
    with pytest.raises(ValueError, match="array.npz: not a readable fastca weights .npz"):
        fastca.NCAWeights.load(tmp_path / "array.npz")


def test_nonfinite_state_raises_or_warns_and_is_never_a_class():
    w = fastca.NCAWeights.random(seed=1, scale=0.1).replace(b3=np.full(19, 1e38, np.float32))
    images, labels = fastca.data.sample_digits()
    for backend in registry.host_backends():
        with pytest.raises(FloatingPointError, match=r"non-finite .* at step 2, in sample"):
            fastca.simulate(w, images[:2], 5, backend=backend)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        r = fastca.simulate(w, images[:2], 5, backend="numba-cpu", labels=labels[:2], on_nonfinite="warn")
    bad = ~np.isfinite(r.state[..., fastca.spec.CLASS_START:]).all(-1) & (r.labels != -1)
    assert bad.any()
    assert np.all(r.labels[bad] == fastca.spec.N_CLASSES)  # never a class, so never counted as correct
    ok = fastca.simulate(w, images[:2], 1, backend="numba-cpu", labels=labels[:2])  # before any overflow
    assert r.accuracy[-1] <= 100 * (~bad & (r.labels == labels[:2, None, None])).sum() / (r.labels != -1).sum()
    assert ok.accuracy[-1] >= 0


def test_all_dead_batch_has_no_agreement():
    r = fastca.simulate(fastca.pretrained(), np.zeros((2, 5, 5), np.uint8), 2, labels=[1, 2], backend="numba-cpu")
    assert np.isnan(r.accuracy[-1]) and np.isnan(r.agreement[-1])


def test_ambiguous_and_out_of_range_inputs():
    model = fastca.pretrained()
    with pytest.raises(ValueError, match="ambiguous"):
        fastca.simulate(model, np.zeros((4, 4, 19), np.float32), 1)
    fastca.simulate(model, np.zeros((4, 4, 19), np.float32), 1, input="gray")  # said explicitly: fine
    with pytest.raises(ValueError, match="start_step"):
        fastca.simulate(model, np.zeros((3, 3), np.uint8), 1, start_step=2**63 - 5)
    r = fastca.simulate(model, np.zeros((3, 3), np.uint8), 1, threads=np.int64(1))
    assert r.steps == 1


def _child(_):
    return float(fastca.simulate(fastca.pretrained(), fastca.data.sample_digits()[0][:1], 2,
                                 backend="numba-cpu").state.sum())


def test_fork_after_a_parallel_kernel():
    """The threading layer is fork-safe: a multiprocessing pool works after numba-cpu ran."""
    code = ("import multiprocessing as mp, fastca, sys; sys.path.insert(0, 'tests'); from test_trust import _child; "
            "fastca.simulate(fastca.pretrained(), fastca.data.sample_digits()[0][:2], 2, backend='numba-cpu'); "
            "p = mp.get_context('fork').Pool(2); print(p.map(_child, range(2))); p.close(); p.join()")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0 and "fork() called" not in p.stderr, p.stderr[-2000:]
    assert p.stdout.count(".") >= 2


def test_unwritable_cache_folder_falls_back(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(ro)
    code = "import fastca; from fastca import _numba_setup as s; print(s.cache_dir)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere: the fallback is not exercised")
    assert "no writable cache folder" in p.stderr and str(ro) not in p.stdout


def test_multiprocessing_default_is_not_broken():
    assert multiprocessing.get_start_method(allow_none=True) in (None, "fork", "spawn", "forkserver")


# --- every array a kernel indexes is checked against the state it runs with (issue 22, item 3) ---------


def test_targets_handle_of_another_simulation_is_refused():
    """A 28x28 handle on a 280x280 world scored 16.40%, a 1-sample handle on a batch of 4 scored 0.0:
    the count kernel read out of bounds."""
    model = fastca.pretrained()
    images, labels = fastca.data.sample_digits()
    small = fastca.Simulation(model, images[0], backend="numba-cpu")
    world = fastca.Simulation(model, np.tile(images[0], (10, 10)), backend="numba-cpu")
    one = fastca.Simulation(model, images[:1], backend="numba-cpu")
    four = fastca.Simulation(model, images[:4], backend="numba-cpu")
    for sim, handle in ((world, small.targets(int(labels[0]))), (four, one.targets(labels[:1])),
                        (one, four.targets(labels[:4]))):
        with pytest.raises(ValueError, match=r"targets were prepared for a numba-cpu simulation of \(B, H, W\)"):
            sim.metrics(handle)
        with pytest.raises(ValueError, match="targets were prepared"):
            sim.run(1, targets=handle)
    torch_sim = fastca.Simulation(model, images[:4], backend="torch")
    with pytest.raises(ValueError, match="prepared for a torch simulation"):
        four.counts(torch_sim.targets(labels[:4]))
    twin = fastca.Simulation(model, images[4:8], backend="numba-cpu")  # same backend and shape: fine
    assert four.counts(twin.targets(labels[:4])).shape == (4, fastca.spec.N_COUNTS)


def test_metrics_check_the_arrays_their_kernels_index():
    from fastca import metrics

    state = np.zeros((2, 5, 6, 20), np.float32)
    state[..., 0] = 1
    with pytest.raises(ValueError, match=r"targets must have the state's \(B, H, W\) \(2, 5, 6\)"):
        metrics.counts(state, np.zeros((1, 5, 6), np.int16))
    with pytest.raises(ValueError, match="targets must have the state's"):
        metrics.step_metrics(state, np.zeros((2, 4, 4), np.int16))
    with pytest.raises(TypeError, match="targets must be integers"):
        metrics.counts(state, np.zeros((2, 5, 6), np.float32))
    for bad in (state[..., :10], state[0], state.astype(np.float64)):
        for fn in (metrics.label_map, metrics.picture_maps, lambda s: metrics.counts(s, np.zeros((2, 5, 6), np.int16))):
            with pytest.raises((ValueError, TypeError), match="state must be"):
                fn(bad)
    from fastca.kernels import cpu

    ptr, runs = cpu.alive_index(state.reshape(10, 6, 20), np.float32(0.1))
    other = cpu.alive_index(np.ones((20, 6, 20), np.float32), np.float32(0.1))
    targets = np.zeros((2, 5, 6), np.int16)
    assert metrics.counts(state, targets, index=(ptr, runs))[:, 0].tolist() == [30, 30]
    for index in (other, (ptr, runs[:1]), (ptr, runs + 7)):
        with pytest.raises(ValueError, match="index"):
            metrics.counts(state, targets, index=index)


# --- values checked after every cast; parameters blamed for what they do (issue 22, item 9) -------------


def test_state_checked_after_the_cast():
    """A float64 state with 1e300 (finite) is inf in float32: it used to run and return inf."""
    model = fastca.pretrained()
    state = np.zeros((6, 6, 20), np.float64)
    state[2, 2, 7] = 1e300  # a dead cell: nothing would ever flag it
    with pytest.raises(ValueError, match="state values exceed the float32 range"):
        fastca.simulate(model, state, 1, backend="numba-cpu")
    with pytest.raises(ValueError, match="state values exceed the float32 range"):
        fastca.mutate(state, np.zeros((6, 6), np.uint8))
    with pytest.raises(ValueError, match="state values exceed the float16 range"):
        fastca.simulate(model, state.clip(0, 1e5), 1, backend="numba-cpu", storage="float16")
    state[2, 2, 7] = np.inf
    with pytest.raises(ValueError, match="state contains NaN or inf"):
        fastca.simulate(model, state, 1, backend="numba-cpu")


def test_noise_and_fire_rate_are_checked_and_named():
    """noise=1e300 (inf in float32) used to be blamed on "the model" after the run."""
    model = fastca.pretrained()
    gray = fastca.data.sample_digits()[0][:1]
    for noise in (1e300, 1e38):
        with pytest.raises(ValueError, match="noise std 1e.* is too large: its noise draws .* overflow float32"):
            fastca.Simulation(model, gray, backend="numba-cpu", noise=noise)
    with pytest.raises(ValueError, match="noise std 20000 is too large: .* overflow float16"):
        fastca.Simulation(model, gray, backend="numba-cpu", noise=2e4, storage="float16")
    with pytest.raises(ValueError, match=r"noise std \(the model's noise_std\) 20000 is too large"):
        fastca.Simulation(model.replace(noise_std=2e4), gray, backend="numba-cpu", storage="float16")
    for noise in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="noise std must be finite and >= 0"):
            fastca.Simulation(model, gray, backend="numba-cpu", noise=noise)
    for rate in (float("nan"), float("inf"), -0.1, 1.5):
        with pytest.raises(ValueError, match="fire_rate must be in"):
            fastca.Simulation(model, gray, backend="numba-cpu", fire_rate=rate)
    # a noise within range that still makes float16 overflow: the message names it too
    with pytest.raises(FloatingPointError, match=r"the model, or the noise \(std 10000\), makes it grow"):
        fastca.simulate(model, fastca.data.sample_digits()[0][:2], 30, backend="numba-cpu", storage="float16",
                        noise=1e4)
