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
