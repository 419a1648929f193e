"""The `fastca play` server without a browser: protocol, edits exactly where asked, bad messages,
independent sessions, and a closed tab freeing its simulation."""

import asyncio
import json

import numpy as np
import pytest

pytest.importorskip("aiohttp")
from aiohttp import WSMsgType  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from fastca.play import MAX_MESSAGE, PlayServer, decode_frame  # noqa: E402
from fastca.simulation import stroke_mask  # noqa: E402


def run(coro_fn, size=56):
    async def main():
        server = PlayServer(size=size, backend="numba-cpu")
        async with TestClient(TestServer(server.app)) as client:
            return await coro_fn(server, client)

    return asyncio.run(main())


async def next_frame(ws, errors=None, timeout=20):
    """The next binary frame (acknowledging it), collecting JSON messages on the way."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type == WSMsgType.BINARY:
            await ws.send_json({"type": "ack"})
            return decode_frame(msg.data)
        if msg.type == WSMsgType.TEXT and errors is not None:
            errors.append(json.loads(msg.data))
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
            raise ConnectionError("closed")


async def paused(ws):
    await ws.send_json({"type": "pause", "paused": True})
    for _ in range(50):
        frame = await next_frame(ws)
        if frame[1]:
            return frame
    raise AssertionError("never paused")


def test_page_and_first_frame():
    async def check(server, client):
        page = await client.get("/")
        assert page.status == 200 and "fastca play" in await page.text()
        assert (await client.get("/play.js")).status == 200
        ws = await client.ws_connect("/ws")
        step, is_paused, gray, label = await next_frame(ws)
        assert gray.shape == label.shape == (56, 56) and not is_paused
        alive = gray > 25
        assert alive.any() and np.all((label == 255) == ~alive)  # dead cells are 255, alive ones a class
        assert label[alive].max() <= 10
        later = [await next_frame(ws) for _ in range(3)]
        assert later[-1][0] > step  # it runs
        await ws.close()

    run(check)


def test_stroke_erase_and_digit_land_exactly_where_asked():
    async def check(server, client):
        ws = await client.ws_connect("/ws")
        await paused(ws)
        await ws.send_json({"type": "clear"})
        await ws.send_json({"type": "stroke", "points": [[10, 5], [40, 30]], "width": 3})
        gray = (await next_frame(ws))[2]
        expected = stroke_mask(56, 56, [(10, 5), (40, 30)], 3)
        np.testing.assert_array_equal(gray == 255, expected)
        assert not gray[~expected].any()
        await ws.send_json({"type": "stroke", "points": [[10, 5], [25, 17]], "width": 6, "erase": True})
        gray = (await next_frame(ws))[2]
        erased = stroke_mask(56, 56, [(10, 5), (25, 17)], 6)
        np.testing.assert_array_equal(gray == 255, expected & ~erased)
        await ws.send_json({"type": "step"})
        step_before = (await next_frame(ws))[0]
        await ws.send_json({"type": "digit", "at": [28, 28]})
        errors = []
        frame = await next_frame(ws, errors)
        assert frame[2][14:42, 14:42].any() and frame[0] >= step_before
        await ws.close()

    run(check)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object with a 'type'"),
        ('{"type": "teleport"}', "unknown message type"),
        ('{"type": "stroke", "points": [[1, 999]]}', "inside the 56x56 world"),
        ('{"type": "stroke", "points": [[1, 1]], "width": 1e9}', "width must be"),
        ('{"type": "stroke", "points": []}', "points must be a list"),
        ('{"type": "speed", "steps_per_frame": 0}', "steps_per_frame must be"),
        ('{"type": "size", "size": 100}', "size must be one of"),
        ('{"type": "model", "name": "../../etc/passwd"}', "model must be one of"),
        ('{"type": "preset", "name": 7}', "preset must be"),
        ('{"type": "x", "pad": "' + "a" * MAX_MESSAGE + '"}', "refused"),
    ],
)
def test_bad_messages_get_an_error_frame_and_the_session_goes_on(raw, fragment):
    async def check(server, client):
        ws = await client.ws_connect("/ws")
        await next_frame(ws)
        await ws.send_str(raw)
        errors = []
        for _ in range(100):
            await next_frame(ws, errors)
            if errors:
                break
        assert errors and errors[0]["type"] == "error" and fragment in errors[0]["message"], errors
        frame = await paused(ws)  # still served
        assert frame[1]
        await ws.close()

    run(check)


def test_sessions_are_independent_and_closing_frees_them():
    async def check(server, client):
        a = await client.ws_connect("/ws")
        b = await client.ws_connect("/ws")
        await paused(a)
        await paused(b)
        assert len(server.sessions) == 2
        await a.send_json({"type": "clear"})
        gray_a = (await next_frame(a))[2]
        await b.send_json({"type": "step"})
        gray_b = (await next_frame(b))[2]
        assert not gray_a.any() and gray_b.any()
        await a.close()
        for _ in range(100):
            if len(server.sessions) == 1:
                break
            await asyncio.sleep(0.05)
        assert len(server.sessions) == 1
        await b.close()

    run(check)


def test_controls_change_the_world():
    async def check(server, client):
        ws = await client.ws_connect("/ws")
        await paused(ws)
        for msg, check_frame in [
            ({"type": "size", "size": 28}, lambda f: f[2].shape == (28, 28)),
            ({"type": "preset", "name": "swing"}, lambda f: f[2][:, :].any()),
            ({"type": "model", "name": "distill-2020"}, lambda f: f[0] == 0),
            ({"type": "mutate"}, lambda f: f[2].any()),
        ]:
            await ws.send_json(msg)
            frame = await next_frame(ws)
            assert check_frame(frame), msg
        await ws.close()

    run(check)


def test_ctrl_c_stops_the_server_cleanly(tmp_path):
    import signal
    import socket
    import subprocess
    import sys
    import time

    import aiohttp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-m", "fastca", "play", "--port", str(port), "--size", "56",
                          "--backend", "numba-cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        async def connect():
            for _ in range(200):
                try:
                    async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                        msg = await asyncio.wait_for(ws.receive(), 30)
                        return msg.type
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.1)

        assert asyncio.run(connect()) == WSMsgType.BINARY
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err[-2000:]
    assert f"http://127.0.0.1:{port}/" in out and "stopped" in out and "Traceback" not in err
    time.sleep(0.2)
    with socket.socket() as s:  # the port is free again (no listener left; TIME_WAIT is normal)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
