"""colorize's palette, animations, and MNIST worlds: components, events, per-digit metrics."""

import numpy as np
import pytest

import fastca
from fastca import viz, world


def test_colorize_uses_the_palette():
    state = np.zeros((2, 12, 20), np.float32)
    state[0, :10, 0] = 1.0
    for d in range(10):
        state[0, d, 10 + d] = 1.0  # alive cell d says digit d
    state[0, 10, 0] = 1.0
    state[0, 10, 10:] = -1.0  # alive, all classes negative: undecided (black)
    rgb = viz.colorize(state)
    assert rgb.shape == (2, 12, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, :10], viz.PALETTE[:10])
    np.testing.assert_array_equal(rgb[0, 10], [0, 0, 0])
    np.testing.assert_array_equal(rgb[1], np.full((12, 3), 255))  # dead, gray 0: white background
    state[0, 3, 0] = 0.5  # gray shading halfway to white
    np.testing.assert_array_equal(viz.colorize(state)[0, 3], np.round(255 + 0.5 * (viz.PALETTE[3] - 255.0)))
    with pytest.raises(ValueError, match="state must be"):
        viz.colorize(np.zeros((3, 3)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_colorize_follows_the_label_rule_on_non_finite_classes(bad):
    """A class channel that is NaN or inf gives no label (spec.label_of): black, as the picture maps say."""
    state = np.zeros((1, 4, 20), np.float32)
    state[0, :, 0] = 1.0
    state[0, :, 10 + 3] = 2.0  # digit 3 ...
    state[0, 1, 10 + 7] = bad  # ... but one channel not finite: undecided, whatever the argmax says
    state[0, 2, 10 + 3] = bad
    state[0, 3, 10:] = bad
    rgb = viz.colorize(state)
    np.testing.assert_array_equal(rgb[0, 0], viz.PALETTE[3])
    np.testing.assert_array_equal(rgb[0, 1:], np.zeros((3, 3)))
    _, classes = fastca.metrics.picture_maps(state[None])
    np.testing.assert_array_equal(viz.PALETTE[classes[0, 0]], rgb[0])  # the compiled rule agrees (gray 1)


def test_save_animation_gif_and_errors(tmp_path):
    import imageio.v3 as iio

    frames = [np.full((6, 8, 3), i * 40, np.uint8) for i in range(4)]
    viz.save_animation(frames, tmp_path / "a.gif")
    assert iio.imread(tmp_path / "a.gif", index=None).shape[:3] == (4, 6, 8)
    with pytest.raises(ValueError, match=".gif or .mp4"):
        viz.save_animation(frames, tmp_path / "a.avi")
    with pytest.raises(ValueError, match="no frames"):
        viz.save_animation([], tmp_path / "b.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif"]


def test_animation_writer_streams_exact_frames(tmp_path):
    import imageio.v3 as iio
    from PIL import Image

    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (60, 3)).astype(np.uint8)  # <= 256 colours: GIF keeps them exactly
    frames = [palette[rng.integers(0, 60, (13, 21))] for _ in range(7)]
    with viz.AnimationWriter(tmp_path / "a.gif", fps=20, scale=2) as writer:
        for f in frames:
            writer.add(f)
        assert not (tmp_path / "a.gif").exists()  # appears only when complete
    back = iio.imread(tmp_path / "a.gif", index=None)
    assert back.shape == (7, 26, 42, 3)
    for f, b in zip(frames, back):
        np.testing.assert_array_equal(b, viz.upscale(f, 2))
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == 7 and im.info["duration"] == 50 and im.info["loop"] == 0
    many = rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)  # more than 256 colours: quantised, close
    viz.save_animation([many, many], tmp_path / "q.gif")
    assert np.abs(iio.imread(tmp_path / "q.gif", index=0)[..., :3].astype(int) - many).mean() < 12
    # a failure mid-run leaves nothing behind; frames must keep one size
    with pytest.raises(ValueError, match="every frame"):
        with viz.AnimationWriter(tmp_path / "b.gif") as writer:
            writer.add(frames[0])
            writer.add(frames[0][:5])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "q.gif"]


def test_animation_writer_mp4(tmp_path):
    if not viz.ffmpeg_available():
        pytest.skip("MP4 needs ffmpeg: pip install 'fastca[video]'")
    import imageio.v2 as iio2

    frames = [np.full((15, 23, 3), 30 * i, np.uint8) for i in range(5)]
    with viz.AnimationWriter(tmp_path / "a.mp4", fps=10, scale=2) as writer:
        for f in frames:
            writer.add(f)
    with iio2.get_reader(tmp_path / "a.mp4") as reader:
        back = [frame for frame in reader]  # list(reader) would trust its infinite length hint
    assert len(back) == 5 and back[0].shape == (30, 46, 3)
    assert [round(float(b.mean()) / 30) for b in back] == [0, 1, 2, 3, 4]


def test_run_world_streams_frames(model, digits):
    w = world.World.from_digits(*digits, 56, 56, seed=1)
    kept = world.run_world(model, w, 6, seed=3, frame_every=2)
    seen = []
    streamed = world.run_world(model, w, 6, seed=3, frame_every=2, on_frame=seen.append)
    assert len(seen) == 4 and len(streamed.frames) == 1  # nothing but the last frame is held
    for a, b in zip(kept.frames, seen):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(streamed.frames[0], kept.frames[-1])
    assert streamed.frame_steps == kept.frame_steps == [0, 2, 4, 6]


def test_components_8_connected():
    alive = np.zeros((6, 6), bool)
    alive[0, 0] = alive[1, 1] = True  # diagonal neighbours: one component
    alive[4:6, 4:6] = True
    comp, n = world.components(alive)
    assert n == 2 and comp[0, 0] == comp[1, 1] != comp[5, 5] and comp[3, 3] == 0


def test_world_run_events_reproducible(model, digits):
    w = world.World.from_digits(*digits, 56, 84, seed=2)
    events = [{"step": 3, "type": "erase", "count": 2, "radius": 4}, {"step": 4, "type": "replace"}]
    a = world.run_world(model, w, 6, events=events, seed=5, frame_every=3)
    b = world.run_world(model, w, 6, events=events, seed=5, frame_every=3)
    np.testing.assert_array_equal(a.state, b.state)
    assert a.events == b.events and len(a.events) == 3
    assert a.frame_steps == [0, 3, 6] and len(a.frames) == 3
    c = world.run_world(model, w, 6, events=events, seed=6, frame_every=3)
    assert c.events != a.events
    # erased disks are dead and empty
    cy, cx = a.events[0]["center"]
    assert np.all(a.state[cy, cx] == 0)
    assert np.all(w.gray == world.World.from_digits(*digits, 56, 84, seed=2).gray)  # input world untouched


def test_digit_metrics_and_consensus(model, digits):
    images, labels = digits
    w = world.World.from_digits(images[:6], labels[:6], 56, 84)
    r = world.run_world(model, w, 80, seed=0, frame_every=40)
    assert len(r.digits) >= 6
    settled = [d for d in r.digits if d["steps_to_consensus"] is not None]
    assert settled, "no digit reached consensus in 80 steps"
    for d in settled:
        assert d["agreement"] and d["accuracy"] == 100.0 and 1 <= d["steps_to_consensus"] <= 80
    assert r.accuracy[-1] > 80


def test_bad_events():
    with pytest.raises(ValueError, match="'step' must be an int"):
        world.load_events([{"type": "erase", "step": -1}])
    with pytest.raises(ValueError, match="not valid JSON"):
        world.load_events("[{")
    w = world.World.from_digits(*fastca.data.sample_digits(), 28, 28)
    with pytest.raises(ValueError, match="outside the"):
        world.apply_event(fastca.initial_state(w.gray), w, {"step": 0, "type": "replace", "tile": [3, 0]},
                          np.random.default_rng(0))


def _stroke_reference(gray, points, width):
    from fastca.simulation import stroke_mask

    return np.maximum(gray, np.where(stroke_mask(*gray.shape, points, width), 255, 0).astype(np.uint8))


def test_stroke_into_is_stroke_mask_on_the_cells_near_the_stroke():
    """The windowed stroke sets exactly the cells the whole-world mask sets (same float64 test), and
    its windows cover every changed cell."""
    rng = np.random.default_rng(3)
    for trial in range(400):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        n = int(rng.integers(1, 7))
        if trial % 2:  # integer points (events' points): many cells exactly at the brush's edge
            pts = np.stack([rng.integers(0, h, n), rng.integers(0, w, n)], 1).astype(float)
        else:
            pts = np.stack([rng.uniform(-3, h + 3, n), rng.uniform(-3, w + 3, n)], 1)
        width = float(rng.choice([0, 1, 2, 3, 4, 2 * np.sqrt(2), 7, rng.uniform(0, 12)]))
        before = rng.choice(np.array([0, 40, 255], np.uint8), (h, w))
        gray = before.copy()
        _, windows = world.stroke_into(gray, pts, width)
        np.testing.assert_array_equal(gray, _stroke_reference(before, pts, width), err_msg=f"trial {trial}")
        covered = np.zeros((h, w), bool)
        for y0, y1, x0, x1 in windows:
            assert y1 - y0 <= world.EDIT_BAND
            covered[y0:y1, x0:x1] = True
        assert not ((gray != before) & ~covered).any()


class _RecordingSim:
    """A stand-in for Simulation that keeps the gray it is sent and the windows' areas."""

    def __init__(self, gray):
        self.gray, self.areas = gray.copy(), []

    def edit(self, kind, *, gray, at):
        assert kind == "set"
        y, x = at
        self.gray[y : y + gray.shape[0], x : x + gray.shape[1]] = gray
        self.areas.append(gray.size)


def test_a_long_stroke_costs_its_area_not_the_world():
    """10,000 points on a 2000x2000 world: the cells evaluated are bounded by the segments' lengths
    times the brush (not points x world, 4e10), and so are the windows sent to the simulation."""
    import time

    rng = np.random.default_rng(0)
    n = 2000
    walk = np.clip(n // 2 + np.cumsum(rng.integers(-3, 4, (10_000, 2)), 0), 0, n - 1)
    for pts, width in ((walk, 2.0), (rng.integers(0, n, (10_000, 2)), 3.0)):  # short and long segments
        gray = np.zeros((n, n), np.uint8)
        visited, windows = world.stroke_into(gray, pts, width)
        m = width / 2 + 1
        length = np.abs(np.diff(pts, axis=0)).sum(1)  # |dy| + |dx| of each segment
        assert visited <= ((4 * m + 6) * length + (2 * m + 3) ** 2).sum()
        area = sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in windows)
        assert area <= n * n and area <= visited
        ev = {"step": 0, "type": "stroke", "points": pts.tolist(), "width": width}
        assert world.event_cost(ev, n, n) >= visited + area  # the bound checked before the run
        w = world.World(np.zeros((n, n), np.uint8), np.zeros((n, n), np.int16), np.zeros((1, 1), np.int64),
                        np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.int64))
        sim = _RecordingSim(w.gray)
        t0 = time.perf_counter()
        world.apply_event(sim, w, ev, np.random.default_rng(0))
        assert time.perf_counter() - t0 < 5
        np.testing.assert_array_equal(w.gray, gray)
        np.testing.assert_array_equal(sim.gray, gray)  # the simulation got every change
        assert sum(sim.areas) == area


def test_events_edit_only_what_they_touch_and_match_whole_world_edits(model, digits):
    """Erase, stroke (across many bands) and replace edit windows of the run's own copy of the world;
    the run is bit-identical to one whose events edit the whole world (the former code)."""
    from fastca.simulation import Simulation

    w = world.World.from_digits(*digits, 90, 120, seed=4)
    events = [{"step": 1, "type": "stroke", "points": [[0, 0], [89, 119], [3, 110], [60, 2]], "width": 3},
              {"step": 1, "type": "erase", "center": [45, 60], "radius": 12.5},
              {"step": 2, "type": "replace", "tile": [1, 2]}, {"step": 2, "type": "stroke", "points": [[7, 7]]}]
    run = world.run_world(model, w, 4, events=events, seed=2, frame_every=4)
    sim = Simulation(model, w.gray, seed=2)
    gray = w.gray.copy()
    for t in range(1, 5):
        sim.run(1, progress=False)
        for ev in (e for e in run.events if e["step"] == t and t < 4):
            new = gray.copy()
            if ev["type"] == "stroke":
                new = _stroke_reference(gray, ev["points"], ev["width"])
            elif ev["type"] == "erase":
                yy, xx = np.ogrid[:90, :120]
                new[(yy - ev["center"][0]) ** 2 + (xx - ev["center"][1]) ** 2 <= ev["radius"] ** 2] = 0
            else:
                r, c = ev["tile"]
                new[28 * r : 28 * r + 28, 28 * c : 28 * c + 28] = digits[0][ev["image"]][: 90 - 28 * r, : 120 - 28 * c]
            ys, xs = np.nonzero(new != gray)
            sim.edit("set", gray=new[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], at=(ys.min(), xs.min()))
            gray = new
    np.testing.assert_array_equal(run.state, sim.state())
    assert np.all(w.gray == world.World.from_digits(*digits, 90, 120, seed=4).gray)  # input world untouched


def test_event_cost_is_bounded_before_the_run(monkeypatch):
    w = world.World.from_digits(*fastca.data.sample_digits(), 64, 64)
    every = [{"step": 0, "type": "replace_all", "index": 0}]
    assert world.event_cost(every[0], 64, 64) == 4 * 64 * 64 + world.EVENT_OVERHEAD == 5 * 64 * 64
    monkeypatch.setattr(world, "EVENT_WORK_FLOOR", 0)  # the limit is then the run's cells x steps
    world.validate_events(every, w, 5)  # exactly the limit: allowed
    with pytest.raises(ValueError, match=r"events would visit about 2.05e\+04 cells .* allows \(1.64e\+04: the 64x64 "
                                         r"world's cells x 4 steps.*costliest is event 0 \(replace_all, count 1"):
        world.validate_events(every, w, 4)
    monkeypatch.setattr(world, "EVENT_WORK_FLOOR", 5 * 64 * 64)  # a floor for short runs
    world.validate_events(every, w, 1)
    monkeypatch.setattr(world, "EVENT_WORK_FLOOR", 5 * 64 * 64 - 1)
    with pytest.raises(ValueError, match="events would visit"):
        world.validate_events(every, w, 1)
    monkeypatch.undo()
    big = world.World(np.zeros((2000, 2000), np.uint8), np.zeros((2000, 2000), np.int16),
                      np.zeros((72, 72), np.int64), *fastca.data.sample_digits())
    points = np.random.default_rng(0).integers(0, 2000, (10_000, 2)).tolist()
    world.validate_events([{"step": 0, "type": "stroke", "points": points, "index": 0}], big, 1)  # cheap enough
    for ev, copies in (({"type": "erase", "radius": 1500, "count": 200}, 3), ({"type": "replace_all", "count": 100}, 3),
                       ({"type": "stroke", "count": 10_000, "width": 400}, 1), ({"type": "replace", "count": 10_000}, 30)):
        world.validate_events([dict(ev, step=0, index=0, count=1)] * copies, big, 2)
        with pytest.raises(ValueError, match="events would visit"):
            world.validate_events([dict(ev, step=0, index=0)] * copies, big, 2)
    with pytest.raises(ValueError, match="events would visit"):  # run_world checks it too, before any step
        world.run_world(None, big, 2, events=[{"step": 0, "type": "replace_all", "count": 100}])


def test_events_file_must_be_a_readable_json_file(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="not a regular file"):
        world.load_events(str(tmp_path))
    with pytest.raises(ValueError, match="not a regular file"):
        world.load_events(tmp_path)
    os_fifo = tmp_path / "fifo"
    import os

    os.mkfifo(os_fifo)
    with pytest.raises(ValueError, match="not a regular file"):  # never blocks on a pipe (or reads /dev/zero)
        world.load_events(str(os_fifo))
    (tmp_path / "bad.json").write_bytes(b"[\xff]")
    with pytest.raises(ValueError, match="not UTF-8"):
        world.load_events(str(tmp_path / "bad.json"))
    (tmp_path / "big.json").write_text("[" + " " * 100 + "]")
    monkeypatch.setattr(world, "MAX_EVENTS_FILE", 64)
    with pytest.raises(ValueError, match="more than the 64"):
        world.load_events(str(tmp_path / "big.json"))
    with pytest.raises(ValueError, match="nested too deeply"):
        world.load_events("[" * 100_000)


def test_animation_size_limits_and_no_partial_file_left(tmp_path):
    one_row = np.zeros((1, viz.GIF_MAX_SIDE, 3), np.uint8)
    viz.save_animation([one_row], tmp_path / "wide.gif")  # GIF's largest side: written
    with pytest.raises(ValueError, match="GIF frames are at most 65535 pixels"):
        viz.save_animation([np.zeros((1, viz.GIF_MAX_SIDE + 1, 3), np.uint8)], tmp_path / "wider.gif")
    with pytest.raises(ValueError, match="GIF frames are at most 65535 pixels"):  # after enlarging
        viz.AnimationWriter(tmp_path / "scaled.gif", scale=2).add(np.zeros((1, 32768, 3), np.uint8))
    assert viz.animation_size_error(".gif", viz.GIF_MAX_SIDE, 1) is None
    assert viz.animation_size_error(".mp4", 2, viz.MP4_MAX_SIDE) is None
    assert "MP4" in viz.animation_size_error(".mp4", 2, viz.MP4_MAX_SIDE + 1)
    assert "MP4" in viz.animation_size_error(".mp4", 1, 100)  # even sides of at least 2
    (tmp_path / "dir.gif").mkdir()  # the name is taken by a folder: the rename fails, nothing is left
    with pytest.raises(OSError):
        viz.save_animation([one_row[:, :8]], tmp_path / "dir.gif")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(OSError):
        viz.save_png(one_row[:, :8], tmp_path / "dir.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.gif", "dir.png", "wide.gif"]


def test_event_bounds_at_their_edges():
    """Each bound of validate_events/load_events accepts its last valid value and refuses the next."""
    w = world.World.from_digits(*fastca.data.sample_digits(), 30, 40)  # a 2x2 tile grid

    def check(ev, steps=5):
        world.validate_events(world.load_events([ev]), w, steps)

    check({"step": 4, "type": "erase", "center": [29, 39], "radius": 40})
    check({"step": 0, "type": "stroke", "points": [[29, 39]] * world.MAX_STROKE_POINTS, "width": 40})
    check({"step": 0, "type": "replace", "tile": [1, 1], "count": world.MAX_EVENT_COUNT})
    for ev, message in (
        ({"step": 5, "type": "erase"}, "not before the end of the run"),
        ({"step": 0, "type": "erase", "center": [30, 0]}, "center must be"),
        ({"step": 0, "type": "erase", "center": [0, 40]}, "center must be"),
        ({"step": 0, "type": "erase", "center": [-1, 0]}, "center must be"),
        ({"step": 0, "type": "erase", "radius": 40.001}, "'radius' must be a number in"),
        ({"step": 0, "type": "erase", "radius": -0.5}, "'radius' must be a number in"),
        ({"step": 0, "type": "stroke", "points": [[0, 0]] * (world.MAX_STROKE_POINTS + 1)}, "'points' must be a list"),
        ({"step": 0, "type": "stroke", "points": []}, "'points' must be a list"),
        ({"step": 0, "type": "stroke", "points": [[0, 0], [30, 2]]}, "points must be"),
        ({"step": 0, "type": "stroke", "width": 41}, "'width' must be a number in"),
        ({"step": 0, "type": "replace", "tile": [2, 0]}, "'tile' must be"),
        ({"step": 0, "type": "replace", "tile": [0, 2]}, "'tile' must be"),
        ({"step": 0, "type": "replace", "count": world.MAX_EVENT_COUNT + 1}, "'count' must be"),
        ({"step": 0, "type": "replace", "count": 0}, "'count' must be"),
    ):
        with pytest.raises(ValueError, match=message):
            check(ev)
