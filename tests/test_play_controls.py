"""The `fastca play` controls a reader of the article expects (issue 28), without a browser:
the default world's scale, reset, noise and damage (the robustness experiments), a swap that
keeps what the reader drew and says so, presets sized to be seen (within the cell budget),
the steps-per-frame limit the page's slider reaches, and the favicon."""

import asyncio
import json
import re
from importlib import resources

import numpy as np
import pytest

pytest.importorskip("aiohttp")
from aiohttp import WSMsgType
from test_play import next_frame, paused, run

import fastca.play
from fastca.play import DEFAULT_SIZE, MAX_STEPS_PER_FRAME


async def reply(ws, kind):
    """The next JSON message of ``kind`` (frames acknowledged on the way), then a frame of the
    world after it (asked for with a pause: the session is paused from then on)."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), 120)
        if msg.type == WSMsgType.BINARY:
            await ws.send_json({"type": "ack"})
        elif msg.type == WSMsgType.TEXT and json.loads(msg.data)["type"] == kind:
            break
        elif msg.type != WSMsgType.TEXT:
            raise ConnectionError(f"closed before a {kind} reply")
    await ws.send_json({"type": "pause", "paused": True})
    return json.loads(msg.data), await next_frame(ws)


def test_the_default_world_has_the_mnist_scale():
    """56x56 cells: a digit drawn a quarter to half of the fitted view is 14..28 cells (MNIST: 28x28)."""
    assert DEFAULT_SIZE == 56
    assert fastca.play.PlayServer().size == DEFAULT_SIZE
    from fastca.cli import _parser

    assert _parser().parse_args(["play"]).size is None  # the model's default (tests/test_play_growing.py)
    assert fastca.play.DEFAULT_SIZES["digits"] == DEFAULT_SIZE


def test_reset_gives_new_test_digits():
    async def check(server, client):
        ws = await client.ws_connect("/ws")
        await paused(ws)
        await ws.send_json({"type": "clear"})
        assert not (await next_frame(ws))[2].any()
        await ws.send_json({"type": "reset"})
        message, frame = await reply(ws, "info")
        assert "new test digits" in message["message"] and frame[2].shape == (56, 56) and (frame[2] > 0).sum() > 200
        await ws.close()

    run(check)


def test_noise_scrambles_the_votes_not_the_digits_and_damage_makes_a_disc_forget():
    async def check(server, client):
        ws = await client.ws_connect("/ws")
        await ws.send_json({"type": "speed", "steps_per_frame": 20})
        for _ in range(8):  # let the votes settle
            await next_frame(ws)
        step, _, gray, label = await paused(ws)
        alive = label != 255
        await ws.send_json({"type": "noise", "amount": 3})
        message, frame = await reply(ws, "info")
        assert f"{alive.sum()} cells" in message["message"], message
        np.testing.assert_array_equal(frame[2], gray)  # the digits stay
        assert frame[0] == step  # same step: the state was edited, not run
        assert (frame[3][alive] != label[alive]).mean() > 0.2  # many votes scrambled
        assert frame[3][alive].max() <= 10
        y, x = np.argwhere(alive)[len(np.argwhere(alive)) // 2]
        await ws.send_json({"type": "damage", "at": [int(y), int(x)], "radius": 5})
        message, frame = await reply(ws, "info")
        n = int(re.match(r"(\d+) cells forgot", message["message"]).group(1))
        yy, xx = np.ogrid[:56, :56]
        assert n == int((alive & ((yy - y) ** 2 + (xx - x) ** 2 <= 25)).sum()) > 0
        np.testing.assert_array_equal(frame[2], gray)
        await ws.close()

    run(check)


@pytest.mark.parametrize("raw, fragment", [({"type": "noise", "amount": 99}, "amount must be"),
                                           ({"type": "damage", "at": [999, 1]}, "inside the 56x56 world"),
                                           ({"type": "damage", "at": [1, 1], "radius": 0}, "radius must be"),
                                           ({"type": "speed", "steps_per_frame": MAX_STEPS_PER_FRAME + 1},
                                            "steps_per_frame must be")])
def test_bad_noise_damage_and_speed_get_an_error(raw, fragment):
    async def check(server, client):
        ws = await client.ws_connect("/ws")
        await next_frame(ws)
        await ws.send_json(raw)
        message, _ = await reply(ws, "error")
        assert fragment in message["message"], message
        await ws.close()

    run(check)


def test_the_speed_slider_reaches_the_servers_limit():
    html = resources.files("fastca").joinpath("assets", "play", "index.html").read_text()
    assert re.search(r'id="speed"[^>]*max="(\d+)"', html).group(1) == str(MAX_STEPS_PER_FRAME)

    async def check(server, client):
        ws = await client.ws_connect("/ws")
        await paused(ws)
        await ws.send_json({"type": "speed", "steps_per_frame": MAX_STEPS_PER_FRAME})
        await ws.send_json({"type": "pause", "paused": False})
        steps = [(await next_frame(ws))[0] for _ in range(4)]
        assert steps[-1] - steps[-2] == MAX_STEPS_PER_FRAME
        await ws.close()

    run(check)


def test_a_swap_keeps_the_squares_the_reader_drew_in_and_says_so():
    async def check(server, client):
        ws = await client.ws_connect("/ws")
        await paused(ws)
        await ws.send_json({"type": "stroke", "points": [[4, 4], [20, 8]], "width": 3})
        drawn = (await next_frame(ws))[2]
        await ws.send_json({"type": "mutate"})
        message, frame = await reply(ws, "info")
        assert message["message"] == "swapped 3 test digits; kept the 1 square you drew in", message
        np.testing.assert_array_equal(frame[2][:28, :28], drawn[:28, :28])  # the square drawn in: untouched
        assert not np.array_equal(frame[2], drawn)  # the others swapped (3 fresh test digits)
        await ws.send_json({"type": "clear"})
        await ws.send_json({"type": "mutate"})
        message, frame = await reply(ws, "info")
        assert message["message"].startswith("nothing to swap") and not frame[2].any()
        await ws.close()

    run(check)


def test_presets_show_their_figure_large_and_many_respects_the_cell_budget():
    async def check(server, client):
        ws = await client.ws_connect("/ws")
        await paused(ws)
        await ws.send_json({"type": "size", "size": 128})
        assert (await next_frame(ws))[2].shape == (128, 128)
        for name in ("swing", "cut"):  # one figure: a 56x56 world, the figure half of it
            await ws.send_json({"type": "preset", "name": name})
            gray = (await next_frame(ws))[2]
            rows = np.nonzero(gray.any(1))[0]
            assert gray.shape == (56, 56) and rows.max() - rows.min() >= 14, name
        await ws.send_json({"type": "size", "size": 128})
        before = (await next_frame(ws))[2]
        await ws.send_json({"type": "preset", "name": "many"})
        after = (await next_frame(ws))[2]
        assert not np.array_equal(after, before)  # new digits
        assert after.shape == (128, 128)  # 256^2 does not fit the budget: the current size
        assert sum(server.sessions.values()) == 128 * 128
        await ws.close()

    run(check, max_cells=128 * 128)

    async def many(server, client):
        ws = await client.ws_connect("/ws")
        await paused(ws)
        await ws.send_json({"type": "preset", "name": "many"})
        gray = (await next_frame(ws))[2]
        assert gray.shape == (256, 256) and sum(server.sessions.values()) == 256 * 256
        await ws.close()

    run(many)


def test_the_favicon_is_served_and_guarded():
    async def check(server, client):
        for path in ("/favicon.ico", "/favicon.svg", "/play.css"):
            response = await client.get(path)
            assert response.status == 200, path
        assert (await client.get("/favicon.ico")).headers["Content-Type"] == "image/svg+xml"
        refused = await client.get("/favicon.ico", headers={"Host": "evil.example", "Origin": "http://evil.example"})
        assert refused.status == 403

    run(check)
