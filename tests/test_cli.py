"""The console commands end to end in a subprocess: outputs exist, decode, have the right
frame count and size; bad input exits non-zero with one line and leaves no output file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

import fastca

# the commands run the fastca this process imports (also from another folder, or a mutated copy)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(fastca.__file__).resolve().parents[1])]
                                                   + [p for p in [os.environ.get("PYTHONPATH")] if p])}


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fastca", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=ENV)


def frames_of(path):
    return iio.imread(path, index=None)


def test_demo_writes_animation_picture_and_metrics(tmp_path):
    out = tmp_path / "demo"
    p = run("demo", "--rows", 1, "--cols", 2, "--steps", 8, "--frame-every", 2, "--scale", 3, "--out", out)
    assert p.returncode == 0, p.stderr
    assert "accuracy %" in p.stdout and "fastca-mnist" in p.stdout and str(out) in p.stdout
    gif = frames_of(out / "animation.gif")
    assert gif.shape[:3] == (5, 28 * 3, 56 * 3)  # steps 0, 2, 4, 6, 8
    png = iio.imread(out / "final.png")
    assert png.shape[:2] == (84, 168)
    np.testing.assert_array_equal(png[..., :3], gif[-1][..., :3])
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["accuracy"]) == 8 and metrics["mutation_step"] == 4
    assert metrics["events"] == [{"step": 4, "type": "replace_all", "count": 1}]
    assert iio.imread(out / "curves.png").ndim == 3


def test_simulate_mnist_index(tmp_path):
    p = run("simulate", "--mnist-index", 3, "--steps", 4, "--frame-every", 4, "--scale", 1, "--fps", 100,
            "--out", tmp_path)
    assert p.returncode == 0, p.stderr
    assert frames_of(tmp_path / "animation.gif").shape[:3] == (2, 28, 28)
    with Image.open(tmp_path / "animation.gif") as im:
        assert im.info["duration"] == 10  # 100 fps, GIF's finest delay
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["input"].startswith("MNIST test digit 3") and len(m["digit_agreement"]) == 4


def test_simulate_world_with_events(tmp_path):
    events = tmp_path / "events.json"
    events.write_text(json.dumps([{"step": 2, "type": "erase", "center": [20, 20], "radius": 5},
                                  {"step": 3, "type": "stroke", "points": [[5, 5], [30, 40]], "width": 2},
                                  {"step": 3, "type": "replace", "count": 2}]))
    out = tmp_path / "o"
    p = run("simulate", "--world", 40, 60, "--steps", 5, "--events", events, "--seed", 4, "--scale", 1, "--out", out)
    assert p.returncode == 0, p.stderr
    gif = frames_of(out / "animation.gif")
    assert gif.shape[:3] == (4, 40, 60)  # steps 0, 2, 4, 5
    m = json.loads((out / "metrics.json").read_text())
    assert [e["type"] for e in m["events"]] == ["erase", "stroke", "replace", "replace"]
    assert all("tile" in e and "image" in e for e in m["events"][2:])


def test_simulate_image_any_size(tmp_path):
    img = np.full((50, 37, 3), 255, np.uint8)  # dark stroke on a light background: inverted
    img[10:40, 15:20] = 0
    Image.fromarray(img).save(tmp_path / "one.png")
    p = run("simulate", "--image", tmp_path / "one.png", "--label", 1, "--steps", 3, "--scale", 1,
            "--out", tmp_path / "o")
    assert p.returncode == 0, p.stderr
    assert iio.imread(tmp_path / "o" / "final.png").shape[:2] == (50, 37)


@pytest.mark.parametrize(
    "make, args, fragment",
    [
        (None, ["--image", "missing.png"], "image file not found"),
        (lambda d: (d / "x.png").write_text("not an image"), ["--image", "x.png"], "not a readable image"),
        (lambda d: (d / "e.png").write_bytes(b""), ["--image", "e.png"], "not a readable image"),
        (lambda d: Image.fromarray(np.zeros((9, 9), np.uint8)).save(d / "k.png"), ["--image", "k.png"],
         "no alive cell"),
        (None, ["--world", "0", "5"], "--world H W must be in 1..20000"),
        (None, ["--mnist-index", "-1"], "--mnist-index must be in"),
        (None, ["--world", "30", "30", "--steps", "0"], "--steps must be >= 1"),
        (None, ["--world", "30", "30", "--events", "[{\"type\": \"boom\", \"step\": 1}]"], "needs a 'type'"),
        (None, ["--world", "30", "30", "--backend", "warp"], "unknown backend 'warp'"),
        (None, [], "give exactly one of"),
        (lambda d: Image.fromarray(np.full((9, 9), 200, np.uint8)).save(d / "d.png"), ["--image", "d.png", "--label",
                                                                                          "12"], "--label is the digit"),
        (None, ["--mnist-index", "3", "--label", "5"], "without --image"),
        (None, ["--world", "30", "30", "--events", '[{"type": "erase", "step": 1, "count": 1e12}]'], "'count' must be"),
        (None, ["--world", "30", "30", "--events", '[{"type": "erase", "step": 1}, {"type": "erase", "step": 2, '
                '"center": [99, 3]}]'], "event 1 (erase): center must be [row, column] inside the 30x30 world"),
        (None, ["--world", "60", "60", "--events", '[{"type": "replace", "step": 1, "tile": [5, 0]}]'],
         "event 0 (replace): 'tile' must be [row, col] in the 3x3 tile grid"),
        (None, ["--world", "30", "30", "--steps", "5", "--events", '[{"type": "erase", "step": 9}]'],
         "not before the end of the run"),
        (None, ["--world", "30", "30", "--events", "events.json"], "no such file 'events.json'"),
        (None, ["--world", "20000", "20000", "--scale", "1000"], "this run needs about"),
        (None, ["--mnist-index", "0", "--scale", "100000"], "this run needs about"),  # 28x28 cells, 21 TiB of frames
        (lambda d: Image.fromarray(np.full((9, 9), 200, np.uint8)).save(d / "i.png"), ["--image", "i.png", "--scale",
                                                                                         "100000"], "this run needs about"),
        (None, ["--world", "1", "16384", "--scale", "4"], "GIF frames are at most 65535 pixels a side"),
        (None, ["--world", "30", "30", "--events", "."], "events: .: not a regular file"),
        (None, ["--mnist-index", "0", "--seed", "-1"], "--seed must be an integer in 0..2**64-1, got -1"),
        (None, ["--mnist-index", "0", "--seed", str(2**64)], "--seed must be"),
        (None, ["--mnist-index", "0", "--fps", "101"], "--fps must be in 1..100"),
        (None, ["--world", "1000", "1000", "--steps", "2", "--events",
                '[{"type": "replace_all", "step": 0, "count": 10000}]'], "events would visit about 4e+10 cells"),
        (None, ["--world", "30", "30", "--events", '[{"type": "stroke", "step": 0, "points": [[0, 0]], "width": 31}]'],
         "'width' must be a number in [0, 30]"),
    ],
)
def test_simulate_bad_input(tmp_path, make, args, fragment):
    if make:
        make(tmp_path)
    p = run("simulate", *args, "--out", "out", cwd=tmp_path)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastca: error:") and fragment in lines[0], p.stderr
    assert not (tmp_path / "out").exists()


def test_demo_bad_option_is_one_line_error(tmp_path):
    p = run("demo", "--rows", 0, cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["fastca: error: --rows and --cols must be in 1..16, got 0 and 10"]
    assert not (tmp_path / "fastca-out").exists()


def test_eval_and_train_refuse_non_positive_counts(tmp_path):
    for cmd in (["eval", "--digits", "0"], ["eval", "--digits", "-3"], ["train", "--limit", "0"]):
        p = run(*cmd, "--out", "o", cwd=tmp_path)
        assert p.returncode == 2 and "must be >= 1" in p.stderr, p.stderr
        assert not (tmp_path / "o").exists()


def test_unwritable_out_fails_before_the_work(tmp_path):
    (tmp_path / "file").write_text("x")
    p = run("simulate", "--mnist-index", 1, "--steps", 2, "--out", tmp_path / "file" / "sub")
    assert p.returncode == 2 and "cannot write to the output folder" in p.stderr and "step" not in p.stdout.split(";")[-1]


def test_image_without_label_has_no_target(tmp_path):
    img = np.zeros((28, 28), np.uint8)
    img[8:20, 12:16] = 255
    Image.fromarray(img).save(tmp_path / "one.png")
    p = run("simulate", "--image", tmp_path / "one.png", "--steps", 3, "--scale", 1, "--out", tmp_path / "o")
    assert p.returncode == 0, p.stderr
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["accuracy"] == [None, None, None]  # not scored as digit 0
    assert all(d["digit"] is None and d["accuracy"] is None for d in metrics["digits"])


def test_bad_model_files_are_one_line_errors(tmp_path):
    (tmp_path / "m.json").write_text('{"modelTopology": {"node": [{"name": "sequential/conv2d/Conv2D/ReadVariableOp'
                                      '/resource", "attr": {"value": {"tensor": {}}}}]}}')
    np.save(tmp_path / "m.npy", np.zeros(3))
    (tmp_path / "m.npy").rename(tmp_path / "m.npz")
    for name, fragment in (("m.json", "malformed node"), ("m.npz", "m.npz: not a readable fastca model file")):
        p = run("simulate", "--mnist-index", 0, "--steps", 1, "--model", tmp_path / name, "--out", tmp_path / "o")
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and fragment in lines[0], p.stderr


def test_memory_estimate_refuses_with_the_numbers(monkeypatch):
    from fastca.cli import outputs as cli

    monkeypatch.setattr(cli, "_available_memory", lambda: 8 << 30)
    with pytest.raises(cli.CLIError, match=r"needs about .* GiB .* but 8.0 GiB are available"):
        cli._check_memory(20000, 20000, 1)
    cli._check_memory(280, 280, 2)  # a small world fits
    with pytest.raises(cli.CLIError, match=r"needs about .* frames of 2243 MiB at --scale 1000"):
        cli._check_memory(28, 28, 1000)  # the enlarged frames count
    with pytest.raises(cli.CLIError, match="needs about"):
        cli._check_memory(28, 28, 1, steps=10**9)  # and the per-step curves
    need = 1000 * 1000 * cli.MEMORY_PER_CELL + cli.MEMORY_FRAMES * 3 * 1000 * 1000 * 4 + 10 * cli.MEMORY_PER_STEP
    monkeypatch.setattr(cli, "_available_memory", lambda: need * 1.25 + 1)
    cli._check_memory(1000, 1000, 2, 10)  # fits in 80% of what is available
    monkeypatch.setattr(cli, "_available_memory", lambda: need * 1.25 - 8)
    with pytest.raises(cli.CLIError, match="needs about"):
        cli._check_memory(1000, 1000, 2, 10)


def test_images_scale_by_their_own_depth(tmp_path):
    """A 16-bit PNG and float TIFFs give the 8-bit picture's cells (no clipping to 0/255, no dark
    float image); light backgrounds are still inverted."""
    from fastca import data
    from fastca.cli import outputs as cli

    digit = data.sample_digits()[0][0]
    Image.fromarray(digit).save(tmp_path / "d8.png")
    Image.fromarray(digit.astype(np.uint16) * 257).save(tmp_path / "d16.png")
    Image.fromarray((65535 - digit.astype(np.uint16) * 257).astype(np.uint16)).save(tmp_path / "light16.png")
    Image.fromarray(digit.astype(np.float32) / 255).save(tmp_path / "unit.tif")  # in [0, 1]: as it is
    Image.fromarray(digit.astype(np.float32) * 4 - 100).save(tmp_path / "range.tif")  # stretched from its range
    Image.fromarray(digit.astype(np.float32) / 127.5 - 1).save(tmp_path / "signed.tif")  # [-1, 1]: stretched too
    Image.fromarray(digit.astype(np.int32) * 257, mode="I").save(tmp_path / "d32.tif")  # 32-bit ints of 16-bit levels
    modes = {name: Image.open(tmp_path / name).mode for name in ("d16.png", "unit.tif", "d32.tif")}
    assert modes == {"d16.png": "I;16", "unit.tif": "F", "d32.tif": "I"}
    eight = cli._load_image(str(tmp_path / "d8.png"))
    assert data.alive_mask(eight).sum() == 105
    for name in ("d16.png", "light16.png", "unit.tif", "range.tif", "signed.tif", "d32.tif"):
        np.testing.assert_array_equal(cli._load_image(str(tmp_path / name)), eight, err_msg=name)
    nan = digit.astype(np.float32)
    nan[0, 0] = np.nan
    Image.fromarray(nan).save(tmp_path / "nan.tif")
    with pytest.raises(cli.CLIError, match="NaN or infinite"):
        cli._load_image(str(tmp_path / "nan.tif"))
    p = run("simulate", "--image", tmp_path / "d16.png", "--label", 7, "--steps", 1, "--scale", 1, "--out", tmp_path / "o")
    assert p.returncode == 0, p.stderr
    assert sum(d["cells"] for d in json.loads((tmp_path / "o" / "metrics.json").read_text())["digits"]) == 105


@pytest.mark.parametrize("name", ["animation.gif", "metrics.json", "final.png.partial.png"])
def test_output_name_taken_by_a_folder_fails_before_the_work(tmp_path, name):
    (tmp_path / "o" / name).mkdir(parents=True)
    p = run("simulate", "--mnist-index", 0, "--steps", 2, "--out", tmp_path / "o")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "exists as a folder" in lines[0], p.stderr
    assert p.stdout == ""  # refused before the banner
    assert sorted(f.name for f in (tmp_path / "o").iterdir()) == [name]  # no partial file, nothing written


def test_numbers_are_checked_before_any_output(tmp_path):
    from helpers import MNIST_DIR

    data = ["--data", MNIST_DIR] if (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists() else []  # else refused anyway
    for args in (["demo", "--seed", "-1"], ["simulate", "--mnist-index", "0", "--seed", "-1"],
                 ["simulate", "--mnist-index", "0", "--seed", str(2**64)], ["eval", "--seed", "-1"],
                 ["eval", "--digits", "1", "--storage", "float64", *data],
                 ["demo", "--rows", "1", "--cols", "1", "--fps", "0"]):
        p = run(*args, "--out", "o", cwd=tmp_path)
        assert p.returncode == 2 and p.stdout == "" and len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)
        assert not (tmp_path / "o").exists()


def test_mp4_beyond_h264_sizes_is_left_out_with_a_note(tmp_path):
    from fastca import viz

    p = run("simulate", "--world", 1, 5, "--steps", 2, "--scale", 1, "--out", tmp_path)
    assert p.returncode == 0, p.stderr
    assert frames_of(tmp_path / "animation.gif").shape[1:3] == (1, 5)
    assert not (tmp_path / "animation.mp4").exists()
    if viz.ffmpeg_available():
        assert "no animation.mp4: MP4 (H.264) frames are 2..16384 pixels a side" in p.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--mnist-index", "0", "--scale", "100000"], "this run needs about"),
        (["--image", "i.png", "--scale", "100000"], "this run needs about"),
        (["--world", "2", "16384", "--scale", "4"], "GIF frames are at most 65535 pixels a side"),
        (["--world", "1000", "1000", "--steps", "2", "--events", '[{"type": "replace_all", "step": 0, "count": 10000}]'],
         "events would visit about"),
        (["--mnist-index", "0", "--out", "/proc"], "cannot write to the output folder '/proc'"),
        (["--model", "growing-gecko", "--world", "20000", "20000", "--seeds", "1", "--scale", "100"],
         "this run needs about"),
        (["--model", "growing-gecko", "--world", "1", "16384", "--seeds", "1", "--scale", "4"],
         "GIF frames are at most 65535 pixels a side"),
        (["--model", "growing-gecko", "--world", "64", "64", "--seeds", "5", "--spacing", "20"],
         "--seeds 5: 5 seeds do not fit in a 64x64 world 20 cells apart: at most 4 (one per 39x39 box)"),
    ],
    ids=["memory-mnist", "memory-image", "gif-size", "event-cost", "out-not-writable", "memory-seeds", "gif-seeds",
         "too-many-seeds"],
)
def test_refused_before_the_work(tmp_path, args, fragment):
    """Refusals that depend on the run's size or its folder come before the banner and any file."""
    Image.fromarray(np.full((9, 9), 200, np.uint8)).save(tmp_path / "i.png")
    p = run("simulate", "--steps", 2, "--out", "out", *args, cwd=tmp_path)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and fragment in lines[0], p.stderr
    assert p.stdout == "" and not (tmp_path / "out").exists()


def test_mp4_left_out_when_its_encoder_would_not_fit(monkeypatch, tmp_path):
    from fastca import viz
    from fastca.cli import outputs as cli

    if not viz.ffmpeg_available():
        pytest.skip("MP4 needs ffmpeg")
    need = cli._memory_need(1000, 1000, 2, 10)[0]
    encoder = cli.MEMORY_MP4_PER_PIXEL * 2000 * 2000
    monkeypatch.setattr(cli, "_available_memory", lambda: (need + encoder) * 1.25 + 1)
    assert [os.path.basename(p) for p in cli._Animations(tmp_path, 2, 10, (1000, 1000), 10).paths] == \
        ["animation.gif", "animation.mp4"]
    monkeypatch.setattr(cli, "_available_memory", lambda: (need + encoder) * 1.25 - 8)
    cli._check_memory(1000, 1000, 2, 10)  # the run itself fits
    animations = cli._Animations(tmp_path, 2, 10, (1000, 1000), 10)
    assert [os.path.basename(p) for p in animations.paths] == ["animation.gif"]
    note = (f"no animation.mp4: its encoder would need about {encoder / 2**30:.1f} GiB more "
            f"({(need + encoder) / 2**30:.1f} GiB in all, {(need + encoder) * 1.25 / 2**30:.1f} GiB available)")
    assert animations.notes == [note]


# -- any model: seeds for the models that grow, the MNIST layout for the digit commands ----------------------

def test_simulate_grows_seeds_planted_at_random(tmp_path):
    out = tmp_path / "o"
    p = run("simulate", "--model", "growing-gecko", "--world", 48, 64, "--seeds", 2, "--spacing", 20, "--steps", 12,
            "--frame-every", 4, "--scale", 2, "--seed", 3, "--out", out)
    assert p.returncode == 0, p.stderr
    assert "2 seeds at random cells of a 48x64 world, at least 20 apart; model 'growing-gecko'" in p.stdout
    gif = frames_of(out / "animation.gif")
    assert gif.shape[:3] == (4, 96, 128)  # steps 0, 4, 8, 12
    final = iio.imread(out / "final.png")
    np.testing.assert_array_equal(final[..., :3], gif[-1][..., :3])
    assert sorted(f.name for f in out.iterdir() if f.suffix != ".mp4") == ["animation.gif", "final.png", "metrics.json"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["seeds"] == 2 and m["spacing"] == 20 and m["world"] == [48, 64] and m["frame_steps"] == [0, 4, 8, 12]
    (y0, x0), (y1, x1) = m["seed_positions"]
    assert max(abs(y0 - y1), abs(x0 - x1)) >= 20
    alive = m["alive_cells"]
    assert len(alive) == 13 and alive[0] == 2 and alive[12] > alive[4] > 2 * 9  # each seed's 3x3 and more
    assert m["finite"] == [True] * 13 and "accuracy" not in m
    # the picture is drawn on white: far from the seeds the cells are dead
    corner = final[:8, :8] if min(y0, y1, x0, x1) > 20 else None
    assert corner is None or (corner == 255).all()


def test_simulate_grows_a_seed_under_each_marked_pixel(tmp_path):
    picture = np.full((8, 8, 3), 255, np.uint8)
    picture[1, 1] = picture[6, 5] = 0
    Image.fromarray(picture).save(tmp_path / "dots.png")
    p = run("simulate", "--model", "growing-gecko", "--seeds-image", tmp_path / "dots.png", "--world", 64, 64,
            "--steps", 3, "--scale", 1, "--out", tmp_path / "o")
    assert p.returncode == 0, p.stderr
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["seed_positions"] == [[12, 12], [52, 44]] and m["spacing"] is None  # under the pixels' centres
    assert m["alive_cells"][0] == 2 and m["alive_cells"][3] > 2
    assert frames_of(tmp_path / "o" / "animation.gif").shape[1:3] == (64, 64)


def cli_main(*args):
    """fastca's main in this process: (exit status, stdout, stderr); a bug's exception propagates."""
    import contextlib
    import io

    from fastca.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("args, fragment", [
    (["simulate", "--model", "growing-gecko", "--mnist-index", "0"],
     "--mnist-index needs a self-classifying MNIST model; model 'growing-gecko' lacks a readout (class channels), "
     "a static gray channel 0"),
    (["eval", "--model", "growing-gecko"], "fastca eval needs a self-classifying MNIST model; model 'growing-gecko' "
                                           "lacks a readout"),
    (["simulate", "--model", "growing-gecko", "--world", "30", "30", "--events", "[]"], "--events needs a self-"),
    (["simulate", "--model", "growing-gecko", "--world", "64", "64"], "give one of --seeds N (with --world H W)"),
    (["simulate", "--model", "growing-gecko", "--seeds", "3"], "--seeds N plants seeds on a world: give --world H W"),
    (["simulate", "--model", "growing-gecko", "--world", "9", "9", "--seeds", "0"], "--seeds and --spacing must be"),
    (["simulate", "--model", "growing-gecko", "--seeds-image", "none.png"], "seeds picture not found: none.png"),
    (["simulate", "--model", "growing-gecko", "--seeds-image", "white.png", "--world", "9", "9"],
     "white.png has no marked pixel"),
    (["simulate", "--model", "growing-gecko", "--world", "9", "9", "--seeds", "1", "--backend", "warp"],
     "unknown backend 'warp'"),
    (["simulate", "--world", "30", "30", "--seeds", "2"], "--seeds and --seeds-image plant seeds for models that grow"),
    (["simulate", "--model", "odd.npz", "--world", "30", "30"],
     "--world needs a self-classifying MNIST model; model 'odd-5-7' lacks a readout (class channels) and 20 channels "
     "(it has 5)"),
    (["simulate", "--model", "wide.npz", "--mnist-index", "0"], "lacks 10 class channels 10..19 (its readout: 4 "
                                                                "classes from channel 1)"),
    (["simulate", "--model", "rgb.npz", "--world", "9", "9", "--seeds", "1"], "model 'rgb' has 3 channels"),
    (["demo", "--model", "texture.npz"], "fastca demo of a model that does not grow"),
    (["distributed", "--store", "s", "--world", "28", "28", "--steps", "1", "--model", "growing-gecko"],
     "fastca distributed runs the self-classifying MNIST weights only so far"),
])
def test_models_are_refused_where_they_lack_what_a_command_needs(tmp_path, monkeypatch, args, fragment):
    """Every refusal is one line naming the model and what it lacks, before any output file or folder."""
    from fastca import model
    from fastca.nca import NCA

    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(tmp_path / "white.png")
    NCA.random(model.ODD[0], name="odd-5-7").save(tmp_path / "odd.npz")
    wide = model.ModelSpec(name="wide", channels=5, perception=model.Conv3x3(7), layers=(model.Dense(4),),
                           residual=(1, 5), alive=model.Alive("static", 0, 0.1), readout=model.Readout(1, 4))
    NCA.random(wide, name="wide").save(tmp_path / "wide.npz")
    NCA.random(model.ModelSpec(name="rgb", channels=3, perception=model.Depthwise(("identity",)),
                               layers=(model.Dense(3),), residual=(0, 3), alive=model.Alive("maxpool", 2)),
               name="rgb").save(tmp_path / "rgb.npz")
    NCA.random(model.TEXTURE, name="texture").save(tmp_path / "texture.npz")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = cli_main(*args, *(["--out", "o"] if args[0] != "distributed" else []))
    assert code == 2 and out == "" and err.count("\n") == 1 and fragment in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_model_accepts_embedded_names_and_every_model_file(tmp_path):
    import fastca
    from fastca.cli.options import CLIError, _model

    assert _model(None).name == "fastca-mnist" and _model("distill-2020").name.startswith("distill-2020")
    gecko = _model("growing-gecko")
    assert isinstance(gecko, fastca.NCA)
    gecko.save(tmp_path / "gecko.npz")  # a description file
    again = _model(str(tmp_path / "gecko.npz"))
    assert again.description == gecko.description and again.name == gecko.name
    fastca.pretrained().save(tmp_path / "mnist.npz")  # MNIST weights (format 1)
    assert isinstance(_model(str(tmp_path / "mnist.npz")), fastca.NCAWeights)
    with pytest.raises(CLIError, match="model file not found: nope.npz .embedded models: fastca-mnist, "
                                       "distill-2020, growing-gecko"):
        _model("nope.npz")


def test_a_bug_keeps_its_traceback_and_a_user_error_is_one_line(monkeypatch):
    """Only fastca's own errors (and OSError, MemoryError: the machine's) become exit 2; any other
    exception inside a command is a bug and propagates."""
    from fastca import errors
    from fastca.cli import simulate

    def raising(exc):
        def command(args, model):
            raise exc
        return command

    for bug in (ValueError("a bug"), KeyError("a bug"), TypeError("a bug"), RuntimeError("a bug"),
                FloatingPointError("a bug")):
        monkeypatch.setattr(simulate, "_run_mnist", raising(bug))
        with pytest.raises(type(bug), match="a bug"):
            cli_main("simulate", "--mnist-index", 0)
    for user, line in ((errors.InputError("bad input"), "bad input"), (errors.RunError("store in use"), "store in use"),
                       (simulate.CLIError("bad option"), "bad option"),
                       (FileNotFoundError(2, "No such file or directory", "x.png"), "No such file or directory: 'x.png'"),
                       (MemoryError(), "out of memory")):
        monkeypatch.setattr(simulate, "_run_mnist", raising(user))
        code, out, err = cli_main("simulate", "--mnist-index", 0)
        assert code == 2 and out == "" and err.startswith("fastca: error: ") and line in err, err
        assert err.count("\n") == 1


def test_a_bug_in_a_subprocess_prints_its_traceback(tmp_path):
    """The console command itself: a KeyError from inside a command is not turned into exit 2."""
    code = ("import sys; from fastca.cli import simulate\n"
            "def bug(args, model):\n    raise KeyError('planted bug')\n"
            "simulate._run_mnist = bug\n"
            "from fastca.cli import main; sys.exit(main(['simulate', '--mnist-index', '0']))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env=ENV)
    assert p.returncode == 1 and "Traceback" in p.stderr and "KeyError: 'planted bug'" in p.stderr, p.stderr


def test_memory_estimate_counts_a_described_models_channels():
    from fastca.cli import outputs as cli

    base = cli._memory_need(100, 100, 1, 0)[0]
    assert cli._memory_need(100, 100, 1, 0, channels=16)[0] == base  # within the MNIST state's 20 channels
    assert cli._memory_need(100, 100, 1, 0, channels=120)[0] == base + 100 * 100 * 100 * cli.MEMORY_PER_CHANNEL
