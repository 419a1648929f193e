"""Dask-distributed and Zarr-backed runs: bit-identical to fastca.simulate with the same seed."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="dask is not installed (pip install 'fastca[distributed]')")
import dask  # noqa: E402

import fastca  # noqa: E402
from fastca import distributed as fd  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def world():
    images, labels = fastca.data.sample_digits()
    gray, targets, index = fastca.data.mnist_world(images, labels, 256, 250, seed=2)
    return gray, targets


def reference(model, x, steps, **kw):
    return fastca.simulate(model, x, steps, backend="numba-cpu", **kw).state


@pytest.mark.parametrize(
    "chunks, halo, steps, start",
    [
        ((64, 64), 16, 20, 0),  # 250 % 64 = 58: chunks that do not divide the grid; steps not a multiple of the halo
        ((256, 250), 16, 7, 3),  # one chunk; start_step > 0
        ((16, 50), 16, 17, 0),  # chunk = halo
        ((40, 37), 1, 3, 5),  # halo 1
        ((70, 90), 5, 12, 0),  # halo 5
    ],
)
def test_bit_identical_on_the_synchronous_scheduler(model, world, chunks, halo, steps, start):
    gray = world[0]
    with dask.config.set(scheduler="synchronous"):
        out = fd.simulate(model, da.from_array(gray, chunks=chunks), steps, halo=halo, seed=7, start_step=start)
        np.testing.assert_array_equal(out.compute(), reference(model, gray, steps, seed=7, start_step=start))


def test_float16_and_batches_chunked_along_b(model, digits):
    images = digits[0][:6]
    x = da.from_array(images, chunks=(2, 28, 28))
    with dask.config.set(scheduler="synchronous"):
        out = fd.simulate(model, x, 9, halo=4, seed=1, storage="float16").compute()
    ref = reference(model, images, 9, seed=1, storage="float16")
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, ref)


def test_chunks_smaller_than_the_halo_are_refused(model, world):
    with pytest.raises(ValueError, match="smaller than the halo"):
        fd.simulate(model, da.from_array(world[0], chunks=(64, 64)), 5, halo=16 * 5)  # 58 < 80 too
    with pytest.raises(ValueError, match="smaller than the halo"):
        fd.simulate(model, da.from_array(world[0], chunks=(100, 100)), 5, halo=60)  # the last chunk has 50 columns


def test_metrics_reduced_from_chunks(model, world):
    gray, targets = world
    x = da.from_array(gray, chunks=(60, 60))
    with dask.config.set(scheduler="synchronous"):
        state = fd.simulate(model, x, 10, halo=5, seed=3, persist=False)
        c = fd.counts(state[None], da.from_array(targets[None], chunks=(1, 60, 60))).compute()
        whole = state.compute()
        np.testing.assert_array_equal(c, fastca.metrics.counts(whole[None], targets[None].astype(np.int16)))
        assert fd.accuracy_agreement(state[None], targets[None]) == fastca.metrics.step_metrics(whole[None],
                                                                                                targets[None])
        ids = fd.tile_ids(256, 250, (60, 60))
        votes = fd.digit_votes(state[None], ids, 10 * 9).compute()  # 60x60 chunks cut through 28x28 tiles
    labels = fastca.label_map(whole[None])[0]
    tiles = ids.compute()[0]
    expected = []
    for k in range(votes.shape[0]):
        lab = labels[(tiles == k) & (labels >= 0)]
        expected.append(len(lab) > 0 and np.all(lab == lab[0]))
    agree = 100.0 * sum(expected) / sum(votes.sum(axis=1) > 0)
    assert fd.digit_agreement(votes) == pytest.approx(agree)


def test_world_built_chunk_by_chunk_equals_the_in_memory_one():
    images, labels = fastca.data.sample_digits()
    gray, index, _ = fd.mnist_world(150, 170, (40, 64), images=images, labels=labels, seed=4)
    ref, _, ref_index = fastca.data.mnist_world(images, labels, 150, 170, seed=4)
    np.testing.assert_array_equal(gray.compute(), ref)
    np.testing.assert_array_equal(index, ref_index)


@pytest.mark.slow
def test_local_cluster_of_two_processes_and_a_killed_worker(model, world):
    distributed = pytest.importorskip("distributed")
    gray = world[0]
    ref = reference(model, gray, 12, seed=4)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        out = fd.simulate(model, da.from_array(gray, chunks=(64, 64)), 12, halo=4, seed=4).compute()
        np.testing.assert_array_equal(out, ref)
        # kill a worker while a lazy (unpersisted) run computes: its tasks are recomputed elsewhere
        long_ref = reference(model, gray, 40, seed=4)
        lazy = fd.simulate(model, da.from_array(gray, chunks=(64, 64)), 40, halo=2, seed=4, persist=False)
        future = client.compute(lazy)
        time.sleep(1.0)
        assert not future.done(), "the run ended before the kill: make it longer"
        victim = list(client.scheduler_info()["workers"])[0]
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        np.testing.assert_array_equal(future.result(timeout=300), long_ref)


def test_zarr_run_resumes_after_a_kill_with_the_same_bits(model, tmp_path, world):
    pytest.importorskip("zarr")
    gray = world[0][:120, :120]
    ref = reference(model, gray, 12, seed=6, storage="float16")
    x = da.from_array(gray, chunks=(40, 40))
    with dask.config.set(scheduler="synchronous"):
        state, t = fd.zarr_run(model, str(tmp_path / "whole"), 12, gray=x, halo=3, seed=6, progress=None)
        np.testing.assert_array_equal(state.compute()[0], ref)
        assert t == 12
    # the same run in a process killed after its second round, then resumed here
    store = str(tmp_path / "killed")
    code = (
        "import sys, os, numpy as np, dask, dask.array as da, fastca; from fastca import distributed as fd;"
        f"gray = np.load({str(tmp_path / 'g.npy')!r}); dask.config.set(scheduler='synchronous');"
        "rounds = []\n"
        "def progress(msg):\n    rounds.extend([msg] if msg.startswith('round') else [])\n    print(msg, flush=True)\n    "
        "if len(rounds) == 2: os.kill(os.getpid(), 9)\n"
        f"fd.zarr_run(fastca.pretrained(), {store!r}, 12, gray=da.from_array(gray, chunks=(40, 40)), halo=3, seed=6,"
        " progress=progress)"
    )
    np.save(tmp_path / "g.npy", gray)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode != 0 and p.stdout.count("round to step") == 2, p.stdout + p.stderr[-2000:]
    assert fd._latest(store)[1] == 6  # two complete rounds of 3 steps
    with pytest.raises(fd.StoreLocked, match="no longer running.*--break-lock"):
        fd.zarr_run(model, store, 12, halo=5, seed=6, progress=None)  # the killed run's lock: broken on request
    with dask.config.set(scheduler="synchronous"):
        state, t = fd.zarr_run(model, store, 12, halo=5, seed=6, progress=None, break_lock=True)  # another halo
        np.testing.assert_array_equal(state.compute()[0], ref)
    with pytest.raises(ValueError, match="settings"):
        fd.zarr_run(model, store, 15, halo=3, seed=7, progress=None)


def _digit_agreement(labels, tiles):
    """Percent of tiles whose alive cells all carry one label (plain NumPy, from a label map)."""
    agree = has = 0
    for k in np.unique(tiles):
        lab = labels[tiles == k]
        lab = lab[lab != -1]  # dead cells; -2 (undecided) stays and breaks agreement
        if len(lab):
            has += 1
            agree += bool(np.all(lab == lab[0]) and lab[0] >= 0)
    return 100.0 * agree / has


def test_zarr_rounds_report_accuracy_and_digit_agreement(model, tmp_path):
    pytest.importorskip("zarr")
    images, labels = fastca.data.sample_digits()
    gray, index, labels = fd.mnist_world(90, 100, (30, 50), images=images, labels=labels, seed=5)
    seen = {}
    with dask.config.set(scheduler="synchronous"):
        fd.zarr_run(model, str(tmp_path / "s"), 8, gray=gray, halo=4, seed=2, progress=None,
                    tiles=fd.MnistTiles(index, labels), on_round=lambda t, info: seen.update({t: info}))
    assert sorted(seen) == [4, 8]
    g = gray.compute()
    _, targets, _ = fastca.data.mnist_world(images, labels, 90, 100, seed=5)
    tiles = fd.tile_ids(90, 100, (90, 100)).compute()[0]
    for t in (4, 8):
        ref = fastca.simulate(model, g, t, seed=2, storage="float16", backend="numba-cpu").state
        accuracy, _ = fastca.metrics.step_metrics(ref[None], targets[None])
        assert seen[t]["accuracy"] == pytest.approx(accuracy, abs=1e-9)
        label_map = fastca.label_map(ref[None])[0]
        assert seen[t]["digit_agreement"] == pytest.approx(_digit_agreement(label_map, tiles), abs=1e-9)


def test_cli_distributed_runs_resumes_and_draws(tmp_path):
    pytest.importorskip("zarr")
    store = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "fastca", "distributed", "--store", store, "--chunk", "40", "--seed", "3"]
    env = {**os.environ, "FASTCA_MNIST_DIR": str(tmp_path / "none")}  # the embedded digits, wherever this runs
    p = subprocess.run(cmd + ["--world", "90", "100", "--halo", "4", "--steps", "6"], capture_output=True, text=True,
                       env=env, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("round to step") == 2 and "digits agreeing" in p.stdout
    p = subprocess.run(cmd + ["--halo", "3", "--steps", "9", "--window", "10", "20", "30", "40", "--workers", "2"],
                       capture_output=True,
                       text=True, env=env, timeout=600, cwd=ROOT)
    assert p.returncode == 0 and "resuming" in p.stdout and p.stdout.count("round to step") == 1, p.stdout + p.stderr
    images, labels = fastca.data.sample_digits()
    gray, _, _ = fastca.data.mnist_world(images, labels, 90, 100, seed=3)
    ref = fastca.simulate(fastca.pretrained(), gray, 9, seed=3, storage="float16", backend="numba-cpu").state
    np.testing.assert_array_equal(da.from_zarr(os.path.join(store, fd._latest(store)[0])).compute()[0], ref)
    import imageio.v3 as iio

    assert iio.imread(os.path.join(store, "window.png")).shape == (30, 40, 3)
    assert iio.imread(os.path.join(store, "overview.png")).shape == (90, 100, 3)
    p = subprocess.run(cmd + ["--steps", "12", "--seed", "4"], capture_output=True, text=True, env=env, timeout=600,
                       cwd=ROOT)
    assert p.returncode != 0 and "settings" in p.stderr
