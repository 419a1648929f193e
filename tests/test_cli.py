"""The console commands end to end in a subprocess: outputs exist, decode, have the right
frame count and size; bad input exits non-zero with one line and leaves no output file."""

import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fastca", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


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
    p = run("simulate", "--mnist-index", 3, "--steps", 4, "--frame-every", 4, "--scale", 1, "--out", tmp_path)
    assert p.returncode == 0, p.stderr
    assert frames_of(tmp_path / "animation.gif").shape[:3] == (2, 28, 28)
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
    for name, fragment in (("m.json", "malformed node"), ("m.npz", "not a readable fastca weights .npz")):
        p = run("simulate", "--mnist-index", 0, "--steps", 1, "--model", tmp_path / name, "--out", tmp_path / "o")
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and fragment in lines[0], p.stderr


def test_memory_estimate_refuses_with_the_numbers(monkeypatch):
    from fastca import cli

    monkeypatch.setattr(cli, "_available_memory", lambda: 8 << 30)
    with pytest.raises(cli.CLIError, match=r"needs about .* GiB .* but 8.0 GiB are available"):
        cli._check_memory(20000, 20000, 1)
    cli._check_memory(280, 280, 2)  # a small world fits
