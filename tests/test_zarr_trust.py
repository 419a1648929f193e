"""Trust in a Zarr store (issue 22, items 4, 5, 6, 14, 15): one run per store (a lock), every chunk a round
reads was written (a record of each chunk's size and CRC-32), the world's provenance and the record's
attributes are checked, and `fastca distributed` checks its options before any work. Stores are 56x56 in
28x28 chunks, so the tests stay fast; the Numba kernels run in this process only."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="dask is not installed (pip install 'fastca[distributed]')")
zarr = pytest.importorskip("zarr")

import fastca  # noqa: E402
from fastca import cli  # noqa: E402
from fastca import distributed as fd  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE, CHUNK, HALO, SEED = 56, 28, 4, 1
LAST = "c/0/1/1/0"  # the last chunk of a 2x2 grid


def _world():
    images, labels, digits = fd.mnist_digits("embedded-sample")
    gray, index, labels = fd.mnist_world(SIDE, SIDE, (CHUNK, CHUNK), images=images, labels=labels, seed=SEED)
    world = {"kind": "mnist-world", **digits, "seed": SEED, "height": SIDE, "width": SIDE}
    return gray, fd.MnistTiles(index, labels), world


def _run(model, store, steps, **kw):
    kw = {"halo": HALO, "seed": SEED, "progress": None, "scheduler": "synchronous", **kw}
    return fd.zarr_run(model, store, steps, **kw)


def _reference(model, steps):
    gray, _, _ = _world()
    return fastca.simulate(model, gray.compute(), steps, seed=SEED, storage="float16", backend="numba-cpu").state


@pytest.fixture(scope="module")
def base(model, tmp_path_factory):
    """A store at step 4 (array b; array a holds step 0), made with tiles and the world's provenance."""
    store = str(tmp_path_factory.mktemp("zarr") / "base")
    gray, tiles, world = _world()
    _, t = _run(model, store, 4, gray=gray, tiles=tiles, world=world)
    assert t == 4 and fd._latest(store) == ("b", 4)
    return store


@pytest.fixture
def store(base, tmp_path):
    path = str(tmp_path / "store")
    shutil.copytree(base, path)
    return path


def _zarr_json(store, name):
    with open(os.path.join(store, name, "zarr.json")) as f:
        return f.read()


def _edit(store, name, fn):
    path = os.path.join(store, name, "zarr.json")
    with open(path) as f:
        meta = json.load(f)
    fn(meta)
    with open(path, "w") as f:
        json.dump(meta, f)


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_lock(store, owner):
    with open(os.path.join(store, fd.LOCK_NAME), "w") as f:
        f.write(owner if isinstance(owner, str) else json.dumps(owner))


# --- item 4: one run per store ---------------------------------------------------------------------------


def test_a_second_run_is_refused_while_the_first_runs_and_the_first_keeps_its_bits(model, store):
    paused, go, errors = threading.Event(), threading.Event(), []
    out = {}

    def progress(msg):
        if msg.startswith("round to step 8"):
            paused.set()
            go.wait(120)

    def first():
        try:
            out["state"], out["t"] = _run(model, store, 12, progress=progress)
            out["state"] = out["state"].compute()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            paused.set()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert paused.wait(300) and not errors, errors
        before = {n: _zarr_json(store, n) for n in "ab"}
        with pytest.raises(fd.StoreLocked, match="in use by another run"):
            _run(model, store, 16, halo=2)
        with pytest.raises(fd.StoreLocked, match="in use by another run"):
            _run(model, store, 16, halo=2, break_lock=True)  # never broken while its owner lives
        assert {n: _zarr_json(store, n) for n in "ab"} == before  # the refused run wrote nothing
    finally:
        go.set()
        thread.join(300)
    assert not errors, errors
    assert out["t"] == 12
    np.testing.assert_array_equal(out["state"][0], _reference(model, 12))
    assert not os.path.exists(os.path.join(store, fd.LOCK_NAME))  # released


def test_two_processes_on_one_store_the_second_is_refused_naming_the_first(model, store):
    """The issue's scenario: a second run while the first runs (here: paused after a round, in another
    process). The second is refused naming the first (also with --break-lock: its owner lives), writes
    nothing, and the first ends with the bits of a clean run."""
    code = ("import sys; import fastca; from fastca import distributed as fd\n"
            "def progress(msg):\n"
            "    if msg.startswith('round to step 8'):\n        print('paused', flush=True); sys.stdin.readline()\n"
            f"state, t = fd.zarr_run(fastca.pretrained(), {store!r}, 12, halo={HALO}, seed={SEED}, progress=progress,"
            " scheduler='synchronous')\n"
            "print('reached', t, flush=True)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         cwd=ROOT)
    try:
        assert p.stdout.readline().strip() == "paused"
        before = {n: _zarr_json(store, n) for n in "ab"}
        with pytest.raises(fd.StoreLocked, match=f"in use by another run \\(pid {p.pid} on "):
            _run(model, store, 16)
        with pytest.raises(fd.StoreLocked, match=f"pid {p.pid}"):
            _run(model, store, 16, break_lock=True)  # its owner is alive: never broken
        cmd = [sys.executable, "-m", "fastca", "distributed", "--store", store, "--steps", "16", "--break-lock"]
        q = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert q.returncode == 2 and q.stdout == "", q.stdout + q.stderr
        assert q.stderr.count("\n") == 1 and f"in use by another run (pid {p.pid}" in q.stderr, q.stderr
        assert {n: _zarr_json(store, n) for n in "ab"} == before  # the refused runs wrote nothing
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "reached 12"
    finally:
        p.stdin.close()
        p.wait(300)
    assert p.returncode == 0
    assert not os.path.exists(os.path.join(store, fd.LOCK_NAME))
    state, t = _run(model, store, 12)  # free again; no round left
    assert t == 12
    np.testing.assert_array_equal(state.compute()[0], _reference(model, 12))


def test_a_dead_runs_lock_is_broken_only_on_request(model, store):
    host = socket.gethostname()
    _write_lock(store, {"pid": _dead_pid(), "host": host, "started": "2020-01-01 00:00:00"})
    with pytest.raises(fd.StoreLocked, match="no longer running.*--break-lock"):
        _run(model, store, 8)
    _write_lock(store, {"pid": 12345, "host": host + "-elsewhere", "started": "x"})
    with pytest.raises(fd.StoreLocked, match="on another host"):
        _run(model, store, 8)
    _write_lock(store, "garbage")
    with pytest.raises(fd.StoreLocked, match="cannot be read"):
        _run(model, store, 8)
    assert fd._latest(store) == ("b", 4)
    for owner in ({"pid": _dead_pid(), "host": host}, {"pid": 12345, "host": host + "-elsewhere"}, "garbage"):
        _write_lock(store, owner)
        with fd.store_lock(store, break_lock=True):
            with open(os.path.join(store, fd.LOCK_NAME)) as f:
                assert json.load(f)["pid"] == os.getpid()
        assert not os.path.exists(os.path.join(store, fd.LOCK_NAME))
    _write_lock(store, {"pid": _dead_pid(), "host": host})
    state, t = _run(model, store, 8, break_lock=True)
    assert t == 8
    np.testing.assert_array_equal(state.compute()[0], _reference(model, 8))
    assert not os.path.exists(os.path.join(store, fd.LOCK_NAME))


def test_the_lock_is_released_when_the_run_fails(model, store):
    with pytest.raises(ValueError, match="settings"):
        _run(model, store, 8, seed=SEED + 1)
    assert not os.path.exists(os.path.join(store, fd.LOCK_NAME))
    with fd.store_lock(store):  # free
        pass


# --- item 5 and 15: every chunk a round reads was written ----------------------------------------------------


@pytest.mark.parametrize("key", ["c/0/0/0/0", LAST], ids=["first", "last"])
def test_a_missing_chunk_is_refused_before_the_round_writes_anything(model, store, key):
    os.remove(os.path.join(store, "b", *key.split("/")))
    older = _zarr_json(store, "a")  # the state at step 0: the round would overwrite it first
    with pytest.raises(ValueError, match=f"b: chunk {key} is missing"):
        _run(model, store, 8)
    assert _zarr_json(store, "a") == older
    with pytest.raises(ValueError, match=f"chunk {key} is missing"):
        _run(model, store, 4)  # no round left: the state returned is checked too
    iy, ix = int(key.split("/")[2]), int(key.split("/")[3])
    lost = zarr.open_array(os.path.join(store, "b"), mode="r")[0, iy * CHUNK : (iy + 1) * CHUNK,
                                                             ix * CHUNK : (ix + 1) * CHUNK]
    assert np.isnan(lost).all()  # the fill value is never data


def test_a_truncated_chunk_is_a_one_line_error_naming_it(model, store):
    file = os.path.join(store, "b", *LAST.split("/"))
    size = os.path.getsize(file)
    with open(file, "r+b") as f:
        f.truncate(size // 2)
    cmd = [sys.executable, "-m", "fastca", "distributed", "--store", store, "--steps", "8", "--halo", str(HALO),
           "--seed", str(SEED)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, "FASTCA_MNIST_DIR": os.path.join(store, "none")})
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr and "Task was destroyed" not in p.stderr, p.stderr
    assert f"b: chunk {LAST} is {size // 2} bytes, {size} were written" in p.stderr, p.stderr
    assert fd._latest(store) == ("b", 4)


def test_a_chunk_changed_in_place_fails_its_checksum(model, store):
    """Other data in a valid chunk file of the same size (zstd reads it without complaint): only the
    recorded CRC-32 tells."""
    numcodecs = pytest.importorskip("numcodecs")
    file = os.path.join(store, "b", *LAST.split("/"))
    with open(file, "rb") as f:
        raw = f.read()
    data = np.frombuffer(numcodecs.Zstd().decode(raw), np.float16).copy()
    data[: 28 * 20] = 0.5  # a row of the chunk, changed
    changed = bytes(numcodecs.Zstd(level=19).encode(data))
    pad = len(raw) - len(changed) - 8
    assert pad >= 0
    changed += b"\x50\x2a\x4d\x18" + pad.to_bytes(4, "little") + b"\0" * pad  # a zstd skippable frame: same size
    with open(file, "wb") as f:
        f.write(changed)
    assert np.all(zarr.open_array(os.path.join(store, "b"), mode="r")[0, 28, 28:, :] == 0.5)  # reads fine
    with pytest.raises(ValueError, match=f"chunk {LAST} does not match its checksum"):
        _run(model, store, 8)


def test_a_chunk_that_does_not_decode_is_named(model, store):
    file = os.path.join(store, "b", *LAST.split("/"))
    with open(file, "r+b") as f:
        raw = bytearray(f.read())
        raw[8:] = bytes(255 - b for b in raw[8:])
        f.seek(0)
        f.write(raw)
    with pytest.raises(ValueError, match=f"chunk {LAST} (does not match its checksum|cannot be decoded)"):
        _run(model, store, 8)


# --- item 6: provenance and the record's attributes -----------------------------------------------------------


def test_a_resumed_run_must_have_the_stores_world_and_tiles(model, store):
    gray, tiles, world = _world()
    with pytest.raises(ValueError, match="not the ones the store was made with"):
        _run(model, store, 8, tiles=fd.MnistTiles(tiles.index, (tiles.labels + 1) % 10))  # another digit pool
    with pytest.raises(ValueError, match="the stored world is"):
        _run(model, store, 8, world={**world, "digits": "mnist-test"})
    with pytest.raises(ValueError, match="a resumed run keeps its world"):
        _run(model, store, 8, gray=gray[:28])
    assert fd._latest(store) == ("b", 4)
    _, t = _run(model, store, 8, gray=gray, tiles=tiles, world=world)  # the same world: resumed
    assert t == 8


def _set(**attrs):
    return lambda meta: meta["attributes"].update(attrs)


@pytest.mark.parametrize("edit, message", [
    (_set(step=10**6), "step 1000000 is not previous_step 0 \\+ halo 4"),
    (_set(step="4"), "attribute 'step' is '4', not an int >= 0"),
    (_set(step=10**6, previous_step=10**6 - 4), "do not match their checksum"),
    (lambda meta: meta.update(shape=[1, 28, 56, 20]), "the array is \\(1, 28, 56, 20\\)"),
    (_set(chunk_bytes=[1, 2, 3]), "'chunk_bytes' does not list the array's 4 chunks"),
    (_set(format=None), "written by another version of fastca"),
], ids=["step-huge", "step-string", "step-consistent-edit", "shape-halved", "chunk-list", "old-format"])
def test_edited_or_damaged_attributes_are_refused(model, store, edit, message):
    _edit(store, "b", edit)
    with pytest.raises(ValueError, match=message):
        _run(model, store, 8)
    for read in (fd.stored_shape, fd.describe, fd._latest):
        with pytest.raises(ValueError, match=message):
            read(store)
    assert not os.path.exists(os.path.join(store, fd.LOCK_NAME))


# --- item 14: fastca distributed checks its options before any work -------------------------------------------


def _cli(capsys, *args):
    rc = cli.main(["distributed", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_options_are_checked_before_any_work(model, store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FASTCA_MNIST_DIR", str(tmp_path / "none"))
    fresh = str(tmp_path / "fresh")
    new = ["--store", fresh, "--world", str(SIDE), str(SIDE), "--chunk", str(CHUNK), "--halo", str(HALO), "--steps",
           "4", "--seed", str(SEED)]
    for extra, message in ((["--workers", "-3"], "--workers must be >= 0"),
                           (["--window", "50", "0", "10", "10"], "must lie inside the 56x56 world"),
                           (["--window", "0", "0", "0", "10"], "H and W >= 1")):
        rc, out, err = _cli(capsys, *new, *extra)
        assert rc == 2 and message in err and "round to step" not in out, out + err
        assert not os.path.exists(os.path.join(fresh, "a")), extra  # no work done
    old = ["--store", store, "--halo", str(HALO), "--seed", str(SEED), "--steps", "4"]
    for extra, message in ((["--world", "56", "28"], "holds a 56x56 world"),
                           (["--chunk", "14"], "is stored in 28x28 chunks"),
                           (["--window", "0", "0", "57", "1"], "must lie inside")):
        rc, out, err = _cli(capsys, *old, *extra)
        assert rc == 2 and message in err, out + err
    assert fd._latest(store) == ("b", 4) and not os.path.exists(os.path.join(store, "window.png"))
    rc, out, err = _cli(capsys, *old, "--world", "56", "56", "--chunk", "28", "--window", "0", "0", "56", "56")
    assert rc == 0 and "reached step 4" in out, out + err  # the store's own values are accepted


def test_cli_resume_uses_the_digits_the_store_was_made_from(model, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FASTCA_MNIST_DIR", raising=False)
    images, labels = fastca.data.sample_digits()
    other = (images[::-1].copy(), labels[::-1].copy())  # "the MNIST test set" here: another digit pool

    def load_mnist(split="test", path=None):
        return other

    store = str(tmp_path / "s")
    args = ["--store", store, "--halo", str(HALO), "--seed", str(SEED), "--chunk", str(CHUNK)]
    rc, out, err = _cli(capsys, *args, "--world", str(SIDE), str(SIDE), "--steps", "4")
    assert rc == 0, out + err
    monkeypatch.setattr(fastca.data, "load_mnist", load_mnist)  # $FASTCA_MNIST_DIR set: other digits are there
    rc, out, err = _cli(capsys, *args, "--steps", "8")
    assert rc == 0 and "resuming" in out, out + err
    _, tiles, _ = _world()
    ref = _reference(model, 8)
    targets = tiles.targets(0, SIDE, 0, SIDE)
    accuracy, _ = fastca.metrics.step_metrics(ref[None], targets)
    assert "round to step 8/8" in out and f"accuracy {accuracy:.2f}%" in out, out
    # a store made from "the MNIST test set" needs it to resume, and the same digits
    store2 = str(tmp_path / "s2")
    args2 = ["--store", store2, "--halo", str(HALO), "--seed", str(SEED), "--chunk", str(CHUNK)]
    rc, out, err = _cli(capsys, *args2, "--world", str(SIDE), str(SIDE), "--steps", "0")
    assert rc == 0 and json.loads(fd.describe(store2))["world"]["digits"] == "mnist-test", out + err
    monkeypatch.setattr(fastca.data, "load_mnist", lambda *a, **k: (images, labels))  # other digits, same name
    rc, out, err = _cli(capsys, *args2, "--steps", "4")
    assert rc == 2 and "these have hash" in err, out + err

    def missing(*a, **k):
        raise FileNotFoundError("MNIST test files not found")

    monkeypatch.setattr(fastca.data, "load_mnist", missing)
    rc, out, err = _cli(capsys, *args2, "--steps", "4")
    assert rc == 2 and "was made from the MNIST test set, which is not here" in err, out + err
    assert fd._latest(store2) == ("a", 0)


def test_simulate_and_zarr_run_accept_numpy_integers(model, tmp_path):
    gray, _, _ = _world()
    x = gray.rechunk((CHUNK, CHUNK))
    out = fd.simulate(model, x, np.int64(6), halo=np.int64(4), seed=np.uint8(SEED), storage="float16")
    np.testing.assert_array_equal(out.compute(scheduler="synchronous"), _reference(model, 6))
    _, t = _run(model, str(tmp_path / "s"), np.int32(4), gray=gray, halo=np.int16(4), seed=np.int64(SEED))
    assert t == 4
    with pytest.raises(ValueError, match="halo must be an int >= 1"):
        fd.simulate(model, x, 3, halo=np.bool_(True))


def test_a_chunk_lost_during_a_round_is_named_by_the_task_that_reads_it(model, store):
    """The round's own check came first; a neighbour's chunk deleted afterwards reads as NaN (the fill
    value), and the task that reads it names it instead of advancing NaN or dead cells."""
    record = fd.stored_record(store)
    src, dst = os.path.join(store, "b"), os.path.join(store, "a")
    fd._open_new(dst, tuple(record["shape"]), tuple(record["chunks"]), np.float16)
    os.remove(os.path.join(src, *LAST.split("/")))
    task = fd._ZarrRound(model, src, dst, HALO, 4, SEED, "float16", None, "numba-cpu")
    with pytest.raises(ValueError, match=f"b: chunk {LAST} holds NaN or inf"):
        task((0, 0, 0, 0), (0, 0, 0), (record["chunk_bytes"][0], record["chunk_crc32"][0]))  # chunk 0's window
