"""The Growing NCA in `fastca play` (issue 24): the state edits behind it (``Simulation.edit``'s
"erase" and "seed" on a model without a gray channel, equal to the same change on the host state
and a restart, on every backend), the RGBA frame protocol, seed and erase messages, the model
switch (within the cell budget), refusals, the cut regrowing on the page's session, and the CLI."""

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastca
from benchmarks import registry
from fastca import growing

pytest.importorskip("aiohttp")
from aiohttp import WSMsgType  # noqa: E402
from test_play import expect_error, next_frame, paused, run  # noqa: E402

import fastca.play  # noqa: E402
from fastca.play import GROWING_SIZE, RGBA, decode_frame, encode_rgba_frame, rgba_pixels  # noqa: E402
from fastca.simulation import stroke_mask  # noqa: E402

HOST_BACKENDS = registry.host_backends()


@pytest.fixture(scope="module")
def gecko():
    return fastca.pretrained("growing-gecko")


@pytest.fixture(scope="module")
def world(digits):
    """A 112x112 gray world of 16 test digits."""
    return fastca.data.mnist_world(digits[0][:16], digits[1][:16], 112, 112)[0]


def grown(gecko, backend, storage="float32", steps=30, shape=(40, 44)):
    """A simulation of one seed grown ``steps`` steps (a young gecko: alive and dead cells, hidden state)."""
    sim = fastca.Simulation(gecko, growing.seed_state(1, *shape)[0], backend=backend, seed=7, storage=storage)
    sim.run(steps)
    return sim


def restarted(gecko, state, backend, storage, start):
    return fastca.Simulation(gecko, state, backend=backend, seed=7, storage=storage, input="state", start_step=start)


# --- Simulation.edit on a state model -----------------------------------------------------------


@pytest.mark.parametrize("backend, storage", [(b, "float32") for b in HOST_BACKENDS] + [("numba-cpu", "float16")])
def test_state_edits_equal_host_operations_and_a_restart(gecko, backend, storage):
    if backend not in fastca.available_backends():
        pytest.skip(f"{backend} is not available")
    sim = grown(gecko, backend, storage)
    yy, xx = np.ogrid[:40, :44]
    host = sim.state()
    assert (host[..., 3] > 0.1).sum() > 50  # something to cut
    sim.edit("erase", center=(20.3, 22.0), radius=5)  # a disc: every channel zeroed
    host[(yy - 20.3) ** 2 + (xx - 22.0) ** 2 <= 25] = 0
    np.testing.assert_array_equal(sim.state(), host)
    sim.edit("erase", points=[(12, 10), (30.5, 35)], width=3)  # a polyline
    host[stroke_mask(40, 44, [(12, 10), (30.5, 35)], 3)] = 0
    np.testing.assert_array_equal(sim.state(), host)
    sim.edit("seed", center=(5.7, 39.2))  # the cell (5, 39) becomes the seed
    host[5, 39] = growing.seed_cell(gecko.description)
    np.testing.assert_array_equal(sim.state(), host)
    np.testing.assert_array_equal(growing.seed_cell(), [0, 0, 0] + [1] * 13)
    sim.run(6)  # the runner's derived data (numba-cpu's alive index) follows the edits
    fresh = restarted(gecko, host, backend, storage, 30)
    fresh.run(6)
    np.testing.assert_array_equal(sim.state(), fresh.state())


CUDA_SIM_EDITS = """
import numpy as np, fastca
from fastca import growing
from fastca.backends.numba_cuda import NumbaCUDA


def read_window(self, b0, y0, x0, nb, h, w):  # the simulator's shapes refuse shape[-1] (a real GPU's do not)
    out = self._cuda.device_array((nb, h, w, self.state.shape[3]), np.float32)
    self._k.copy_window[self._k.launch_1d(nb * h * w)](self.state, b0, y0, x0, out)
    return out.copy_to_host()


NumbaCUDA.read_window = read_window
nca = fastca.pretrained("growing-gecko")
for storage in ("float32", "float16"):
    sim = fastca.Simulation(nca, growing.seed_state(1, 8, 9)[0], backend="numba-cuda", seed=3, storage=storage)
    sim.run(2)
    host = sim.state()
    sim.edit("erase", center=(4, 4), radius=1.5)
    yy, xx = np.ogrid[:8, :9]
    host[(yy - 4) ** 2 + (xx - 4) ** 2 <= 2.25] = 0
    sim.edit("seed", center=(1.5, 7.2))
    host[1, 7] = growing.seed_cell()
    np.testing.assert_array_equal(sim.state(), host)
    sim.run(1)
    fresh = fastca.Simulation(nca, host, backend="numba-cuda", seed=3, storage=storage, input="state", start_step=2)
    fresh.run(1)
    np.testing.assert_array_equal(sim.state(), fresh.state())
print("edits ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None, reason="numba-cuda not installed")
def test_state_edits_on_numba_cuda_under_the_simulator():
    """The device path (a window written into the device state) on an 8x9 grid, in a process of its own."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(CUDA_SIM_EDITS)], capture_output=True, text=True,
                       env=env, timeout=600)
    assert p.returncode == 0 and "edits ok" in p.stdout, p.stdout[-2000:] + p.stderr[-3000:]


def test_mnist_erase_keeps_its_meaning_and_takes_a_polyline(model, world):
    sim = fastca.Simulation(model, world[:40, :40], backend="numba-cpu", seed=2)
    sim.run(2)
    before = sim.state()
    sim.edit("erase", points=[(5, 5), (30, 20)], width=4)
    g = np.where(stroke_mask(40, 40, [(5, 5), (30, 20)], 4), np.float32(0), before[..., 0])
    np.testing.assert_array_equal(sim.state(), fastca.mutate(before, g))


@pytest.mark.parametrize("call, fragment", [
    (lambda s: s.edit("stroke", points=[(1, 1)]), "static gray channel"),
    (lambda s: s.edit("set", gray=np.zeros((2, 2), np.uint8)), "static gray channel"),
    (lambda s: s.edit("seed", center=(20, 99)), "inside the 40x44 grid"),
    (lambda s: s.edit("seed", center=(-0.5, 3)), "inside the 40x44 grid"),
    (lambda s: s.edit("seed", center=(np.nan, 3)), "inside the 40x44 grid"),
    (lambda s: s.edit("seed", center="ab"), "inside the 40x44 grid"),
    (lambda s: s.edit("seed"), "seed needs center"),
    (lambda s: s.edit("seed", center=(1, 1), sample=1), "sample must be an int in 0..0"),
    (lambda s: s.edit("seed", center=(1, 1), sample=True), "sample must be"),
    (lambda s: s.edit("erase", center=(40, 2)), "inside the 40x44 grid"),
    (lambda s: s.edit("erase", center=(4, 2), radius=-1), "radius must be"),
    (lambda s: s.edit("erase", center=(4, 2), radius=np.inf), "radius must be"),
    (lambda s: s.edit("erase"), "erase needs center"),
    (lambda s: s.edit("erase", center=(4, 2), points=[(1, 1)]), "not both"),
    (lambda s: s.edit("erase", points=[(1, 1), (1, 50)]), "inside the 40x44 grid"),
    (lambda s: s.edit("erase", points=[], width=2), "inside the 40x44 grid"),
    (lambda s: s.edit("erase", points=[(1, 1)], width=-2), "width must be"),
    (lambda s: s.edit("grow"), "edit kind must be one of"),
])
def test_state_edits_refuse_bad_input(gecko, call, fragment):
    sim = fastca.Simulation(gecko, growing.seed_state(1, 40, 44)[0], backend="numba-cpu")
    before = sim.state()
    with pytest.raises(ValueError, match=fragment):
        call(sim)
    np.testing.assert_array_equal(sim.state(), before)  # nothing written


def test_a_seed_needs_a_model_that_grows_from_one(model, world):
    mnist = fastca.Simulation(model, world[:28, :28], backend="numba-cpu")
    with pytest.raises(ValueError, match="'static' rule: draw with 'stroke'"):
        mnist.edit("seed", center=(3, 3))
    texture = next(d for d in fastca.model.KNOWN if d.alive.rule == "none")
    nca = fastca.NCA(texture, {k: np.zeros(s, np.float32) for k, s in texture.weight_shapes().items()})
    sim = fastca.Simulation(nca, np.zeros((9, 9, texture.channels), np.float32), backend="numba-cpu")
    with pytest.raises(ValueError, match="'none' rule"):
        sim.edit("seed", center=(3, 3))
    sim.edit("erase", center=(4, 4), radius=2)  # a cut applies to any state


# --- the frame protocol -----------------------------------------------------------------------------


def test_rgba_frames_round_trip_and_composite_like_the_article():
    state = np.random.default_rng(0).uniform(-0.5, 1.5, (5, 7, 16)).astype(np.float32)
    state[0, 0, :4] = np.nan
    rgba = rgba_pixels(state)
    assert rgba.dtype == np.uint8 and rgba.shape == (5, 7, 4) and not rgba[0, 0].any()
    buf = encode_rgba_frame(2**32 + 9, rgba, paused=True)
    assert len(buf) == 16 + 5 * 7 * 4
    step, is_paused, got, none = decode_frame(buf)
    assert (step, is_paused, none) == (9, True, None)
    np.testing.assert_array_equal(got, rgba)
    assert fastca.play.HEADER.unpack_from(buf)[4] == RGBA | fastca.play.PAUSED
    # the page: 255 - a + rgb (clamped) equals growing.to_rgb up to the rounding of each term
    page = np.clip(255 - rgba[..., 3:].astype(int) + rgba[..., :3], 0, 255)
    assert np.abs(page - growing.to_rgb(np.clip(state, 0, 1)).astype(int)).max() <= 1


# --- the page's session -------------------------------------------------------------------------------


def run_growing(check, **options):
    return run(check, **{"model": "growing-gecko", "size": None, **options})


def alpha(frame):
    return frame[2][..., 3]


def test_the_growing_model_starts_with_a_seed_in_the_middle():
    async def check(server, client):
        assert server.size == GROWING_SIZE
        ws = await client.ws_connect("/ws")
        frame = await next_frame(ws)
        assert frame[2].shape == (GROWING_SIZE, GROWING_SIZE, 4) and frame[3] is None
        ys, xs = np.nonzero(alpha(frame))
        c = GROWING_SIZE // 2
        assert len(ys) and abs(ys.mean() - c) < 3 and abs(xs.mean() - c) < 3  # growing from the middle
        await ws.close()

    run_growing(check)


def test_seed_and_erase_land_exactly_where_asked():
    async def check(server, client):
        ws = await client.ws_connect("/ws")
        await paused(ws)
        await ws.send_json({"type": "clear"})
        assert not (await next_frame(ws))[2].any()
        await ws.send_json({"type": "seed", "at": [10.6, 20.2]})
        rgba = (await next_frame(ws))[2]
        assert np.argwhere(rgba.any(-1)).tolist() == [[10, 20]]
        np.testing.assert_array_equal(rgba[10, 20], [0, 0, 0, 255])
        await ws.send_json({"type": "reset"})
        await ws.send_json({"type": "speed", "steps_per_frame": 50})
        await ws.send_json({"type": "pause", "paused": False})
        frame = await next_frame(ws)
        while frame[0] < 100:
            frame = await next_frame(ws)
        before = (await paused(ws))[2]
        await ws.send_json({"type": "erase", "points": [[40, 40], [52, 60]], "radius": 5})
        after = (await next_frame(ws))[2]
        cut = stroke_mask(96, 96, [(40, 40), (52, 60)], 10)
        assert before[cut, 3].any() and not after[cut].any()  # every channel of the cut: dead, transparent
        np.testing.assert_array_equal(after[~cut], before[~cut])
        await ws.close()

    run_growing(check)


def test_the_cut_regrows_on_the_page():
    """The page's session: grown, cut (a disc of radius 10 on the gecko's right), regrown to the target
    within 300 steps (MSE per RGBA value of the frames against the gecko padded to the world)."""
    target = growing.pad_target(growing.gecko_target(), (GROWING_SIZE - growing.TARGET_SIZE) // 2)

    def mse(frame):
        return float(((frame[2] / 255 - target) ** 2).mean())

    async def advance(ws, to):
        frame = await next_frame(ws)
        while frame[0] < to:
            frame = await next_frame(ws)
        return frame

    async def check(server, client):
        ws = await client.ws_connect("/ws")
        await ws.send_json({"type": "speed", "steps_per_frame": 50})
        await advance(ws, 250)
        grown = await paused(ws)
        assert mse(grown) < 0.001, mse(grown)  # (measured: 3e-5)
        ys, xs = np.nonzero(alpha(grown) > 25)
        centre = [float(ys.mean()), float(xs.mean() + 6)]
        await ws.send_json({"type": "erase", "points": [centre], "radius": 10})
        cut = await next_frame(ws)
        assert mse(cut) > 0.005, mse(cut)  # (0.0076)
        await ws.send_json({"type": "pause", "paused": False})
        back = await advance(ws, cut[0] + 300)
        assert mse(back) < 0.001, (mse(grown), mse(cut), mse(back))  # back to the grown gecko (3e-5)
        await ws.close()

    run_growing(check)


def test_the_model_switch_restarts_the_world_within_the_cell_budget():
    async def check(server, client):
        ws = await client.ws_connect("/ws")
        await paused(ws)
        errors = []
        await ws.send_json({"type": "model", "name": "growing-gecko"})
        frame = await next_frame(ws, errors)
        while frame[3] is not None:  # frames of the digits sent before the switch
            frame = await next_frame(ws, errors)
        assert frame[2].shape == (56, 56, 4) and frame[1]  # 96^2 does not fit: the current size, still paused
        assert sum(server.sessions.values()) == 56 * 56
        assert any(e["type"] == "info" and "plant a seed" in e["message"] for e in errors), errors
        await ws.send_json({"type": "model", "name": "fastca-mnist"})
        frame = await next_frame(ws)
        assert frame[2].shape == (56, 56) and frame[3] is not None and frame[2].any()  # test digits again
        await ws.close()

    run(check, max_cells=56 * 56 + 100)

    async def default_size(server, client):
        ws = await client.ws_connect("/ws")
        await paused(ws)
        await ws.send_json({"type": "model", "name": "growing-gecko"})
        frame = await next_frame(ws)
        while frame[3] is not None:
            frame = await next_frame(ws)
        assert frame[2].shape == (GROWING_SIZE, GROWING_SIZE, 4) and frame[0] == 0
        assert sum(server.sessions.values()) == GROWING_SIZE**2
        await ws.send_json({"type": "size", "size": 72})
        frame = await next_frame(ws)
        assert frame[2].shape == (72, 72, 4) and alpha(frame)[36, 36] == 255  # a new seed in the middle
        await ws.close()

    run(default_size)


BAD_GROWING = {  # id: (message, fragment of the error)
    "stroke": ({"type": "stroke", "points": [[1, 1]]}, "'stroke' does not apply to the growing-gecko model"),
    "digit": ({"type": "digit", "at": [1, 1]}, "'digit' does not apply"),
    "noise": ({"type": "noise", "amount": 1}, "'noise' does not apply"),
    "preset": ({"type": "preset", "name": "many"}, "'preset' does not apply"),
    "seed-outside": ({"type": "seed", "at": [96, 1]}, "inside the 96x96 world"),
    "seed-missing": ({"type": "seed"}, "inside the 96x96 world"),
    "seed-string": ({"type": "seed", "at": "48,48"}, "inside the 96x96 world"),
    "erase-no-points": ({"type": "erase", "points": []}, "points must be a list"),
    "erase-outside": ({"type": "erase", "points": [[1, -1]]}, "inside the 96x96 world"),
    "erase-radius": ({"type": "erase", "points": [[1, 1]], "radius": 1e9}, "radius must be"),
    "erase-radius-bool": ({"type": "erase", "points": [[1, 1]], "radius": True}, "radius must be"),
    "model-path": ({"type": "model", "name": "../assets/growing_gecko.npz"}, "model must be one of"),
    "model-list": ({"type": "model", "name": ["growing-gecko"]}, "model must be one of"),
    "size": ({"type": "size", "size": 100}, "size must be one of"),
}


@pytest.mark.parametrize("msg, fragment", BAD_GROWING.values(), ids=BAD_GROWING.keys())
def test_bad_growing_messages_get_an_error_and_the_session_goes_on(msg, fragment, caplog):
    async def check(server, client):
        ws = await client.ws_connect("/ws")
        await next_frame(ws)
        await ws.send_json(msg)
        await expect_error(ws, fragment)
        frame = await paused(ws)  # still served, still growing
        assert frame[3] is None and frame[2].shape == (96, 96, 4)
        await ws.close()

    run_growing(check)
    assert not [r for r in caplog.records if r.exc_info], "a bad message is not a bug: no traceback in the log"


def test_growing_messages_do_not_apply_to_the_digits():
    async def check(server, client):
        ws = await client.ws_connect("/ws")
        await next_frame(ws)
        for msg in ({"type": "seed", "at": [3, 3]}, {"type": "erase", "points": [[3, 3]]}):
            await ws.send_json(msg)
            errors = []
            while not errors:
                await next_frame(ws, errors)
            assert f"'{msg['type']}' does not apply to the fastca-mnist model" in errors[0]["message"], errors
        await ws.close()

    run(check)


def test_stats_say_the_model_and_its_kind():
    async def check(server, client):
        ws = await client.ws_connect("/ws")
        for _ in range(400):
            msg = await asyncio.wait_for(ws.receive(), 120)
            if msg.type == WSMsgType.BINARY:
                await ws.send_json({"type": "ack"})
                continue
            body = json.loads(msg.data)
            if body["type"] == "stats":
                assert body["model"] == "growing-gecko" and body["kind"] == "growing", body
                break
        else:
            raise AssertionError("no stats")
        await ws.close()

    run_growing(check)


# --- the server and the command line ---------------------------------------------------------------


def test_the_server_takes_model_names_from_its_list_only():
    assert set(fastca.PRETRAINED) <= set(fastca.play.MODELS)
    assert fastca.play.PlayServer(model="growing-gecko").size == GROWING_SIZE
    assert fastca.play.PlayServer(model="growing-gecko", size=72).size == 72
    assert fastca.play.PlayServer().size == fastca.play.DEFAULT_SIZE
    for bad in ("nope", "growing_gecko.npz", None):
        with pytest.raises(ValueError, match="model must be one of"):
            fastca.play.PlayServer(model=bad)


@pytest.mark.parametrize("argv, size", [([], 56), (["--model", "growing-gecko"], GROWING_SIZE),
                                        (["--model", "growing-gecko", "--size", "128"], 128),
                                        (["--model", "distill-2020"], 56)])
def test_fastca_play_model_option(argv, size, monkeypatch):
    from fastca.cli import main

    served = {}
    monkeypatch.setattr(fastca.play, "serve", lambda **kwargs: served.update(kwargs))
    assert main(["play", *argv]) == 0
    assert served["size"] == size and served["model"] == (argv[1] if argv else "fastca-mnist")


def test_fastca_play_refuses_an_unknown_model(capsys):
    from fastca.cli import main

    assert main(["play", "--model", "growing_gecko.npz"]) == 2
    err = capsys.readouterr().err
    assert "--model must be one of fastca-mnist, distill-2020, growing-gecko" in err
