"""The `fastca play` server without a browser: protocol, edits exactly where asked, bad messages,
independent sessions, a closed tab freeing its simulation, and the guards against other web
pages (Origin, Host), against too many or too big worlds, and for a clean Ctrl-C."""

import asyncio
import json

import numpy as np
import pytest

pytest.importorskip("aiohttp")
from aiohttp import WSMsgType  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

import fastca.play  # noqa: E402
from fastca.play import MAX_MESSAGE, PlayServer, decode_frame  # noqa: E402
from fastca.simulation import stroke_mask  # noqa: E402


def run(coro_fn, size=56, **options):
    async def main():
        server = PlayServer(size=size, backend="numba-cpu", **options)
        async with TestClient(TestServer(server.app)) as client:
            return await coro_fn(server, client)

    return asyncio.run(main())


async def next_frame(ws, errors=None, timeout=120):  # a first Numba compile can take a minute
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


BAD_MESSAGES = {  # id: (message, fragment of the error)
    "not-json": ("not json", "not JSON"),
    "not-object": ("[1, 2]", "JSON object with a 'type'"),
    "unknown-type": ('{"type": "teleport"}', "unknown message type"),
    "point-outside": ('{"type": "stroke", "points": [[1, 999]]}', "inside the 56x56 world"),
    "width": ('{"type": "stroke", "points": [[1, 1]], "width": 1e9}', "width must be"),
    "no-points": ('{"type": "stroke", "points": []}', "points must be a list"),
    "speed": ('{"type": "speed", "steps_per_frame": 0}', "steps_per_frame must be"),
    "size": ('{"type": "size", "size": 100}', "size must be one of"),
    "size-list": ('{"type": "size", "size": [1024]}', "size must be"),
    "model-path": ('{"type": "model", "name": "../../etc/passwd"}', "model must be one of"),
    "model-list": ('{"type": "model", "name": ["fastca-mnist"]}', "model must be one of"),  # was a TypeError
    "preset": ('{"type": "preset", "name": 7}', "preset must be"),
    "too-long": ('{"type": "x", "pad": "' + "a" * MAX_MESSAGE + '"}', "refused"),
    "1mb": ('{"type": "stroke", "pad": "' + "a" * 2**20 + '"}', "refused"),  # closed the tab before
}


async def expect_error(ws, fragment):
    """Read frames until the server's error message arrives (other messages, such as stats, may come
    first: a first compile is slow); it must say ``fragment``."""
    messages = []
    for _ in range(100):
        await next_frame(ws, messages)
        errors = [m for m in messages if m["type"] == "error"]
        if errors:
            break
    assert errors and fragment in errors[0]["message"], messages


@pytest.mark.parametrize("raw, fragment", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
def test_bad_messages_get_an_error_frame_and_the_session_goes_on(raw, fragment, caplog):
    async def check(server, client):
        ws = await client.ws_connect("/ws")
        await next_frame(ws)
        await ws.send_str(raw)
        await expect_error(ws, fragment)
        frame = await paused(ws)  # still served
        assert frame[1]
        await ws.close()

    run(check)
    assert not [r for r in caplog.records if r.exc_info], "a bad message is not a bug: no traceback in the log"


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
                        msg = await asyncio.wait_for(ws.receive(), 120)
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


# --- guards: other web pages, DNS rebinding, too many or too big worlds, Ctrl-C ---------------


async def refused_status(client, path, headers):
    """The HTTP status of a GET (the websocket route: of the upgrade request) with ``headers``."""
    if path == "/ws":
        from aiohttp import WSServerHandshakeError

        try:
            ws = await client.ws_connect(path, headers=headers)
        except WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101
    return (await client.get(path, headers=headers)).status


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:1", "null", "https://{host}",
                                    "http://{host}.evil.example"])
def test_a_cross_site_origin_is_refused_before_the_upgrade(origin):
    async def check(server, client):
        host = f"127.0.0.1:{client.port}"
        for path in ("/ws", "/", "/play.js"):
            assert await refused_status(client, path, {"Origin": origin.format(host=host)}) == 403, path
        assert not server.sessions  # no world was built

    run(check)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "localhost.evil.example:{port}", "",
                                  "127.0.0.1.evil.example"])
def test_a_foreign_host_is_refused_on_every_route(host):
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 is same-origin
    with itself, so its Origin matches its Host; the Host names no name of this server."""
    async def check(server, client):
        name = host.format(port=client.port)
        for path in ("/ws", "/", "/play.js"):
            headers = {"Host": name, "Origin": f"http://{name}"}
            assert await refused_status(client, path, headers) == 403, (path, headers)
        assert not server.sessions

    run(check)


def test_the_own_origin_and_loopback_names_are_accepted():
    async def check(server, client):
        for name in (f"127.0.0.1:{client.port}", f"localhost:{client.port}", f"LocalHost:{client.port}",
                     f"[::1]:{client.port}"):
            headers = {"Host": name, "Origin": f"http://{name}"}
            assert await refused_status(client, "/", headers) == 200, headers
        ws = await client.ws_connect("/ws", headers={"Origin": f"http://127.0.0.1:{client.port}"})
        assert (await next_frame(ws))[2].shape == (56, 56)
        await ws.close()
        ws = await client.ws_connect("/ws")  # no Origin: not a browser (curl, scripts, these tests)
        await next_frame(ws)
        await ws.close()

    run(check)


def test_hosts_a_server_answers_to():
    local = PlayServer(size=28, host="127.0.0.1")
    assert local.refusal({"Host": "127.0.0.1:8765", "Origin": "http://127.0.0.1:8765"}) is None
    assert "Host" in local.refusal({"Host": "192.168.1.5:8765"})
    assert "Origin" in local.refusal({"Host": "localhost:8765", "Origin": "http://localhost:9000"})
    named = PlayServer(size=28, host="MyBox.lan")  # the name the user gave is the server's too
    assert named.refusal({"Host": "mybox.lan:8765", "Origin": "http://mybox.lan:8765"}) is None
    everywhere = PlayServer(size=28, host="0.0.0.0")  # reached by any of the machine's addresses
    assert everywhere.refusal({"Host": "192.168.1.5:8765", "Origin": "http://192.168.1.5:8765"}) is None
    assert everywhere.refusal({"Host": "[fe80::1]:8765"}) is None
    assert "Host" in everywhere.refusal({"Host": "evil.example:8765", "Origin": "http://evil.example:8765"})


async def refusal(ws):
    """The refusal message of a session the server does not start (then closed with 1013)."""
    msg = await asyncio.wait_for(ws.receive(), 20)
    assert msg.type == WSMsgType.TEXT, msg
    body = json.loads(msg.data)
    assert body["type"] == "refused", body
    msg = await asyncio.wait_for(ws.receive(), 20)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED) and ws.close_code == 1013, (msg, ws.close_code)
    return body["message"]


async def wait_for_sessions(server, n):
    for _ in range(200):
        if len(server.sessions) == n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(server.sessions)} sessions open, expected {n}")


def test_the_session_cap_refuses_the_next_tab_and_a_closed_tab_frees_its_slot(monkeypatch):
    built = []

    class CountedSession(fastca.play.Session):
        def __init__(self, *args, **kwargs):
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(fastca.play, "Session", CountedSession)

    async def check(server, client):
        a = await client.ws_connect("/ws")
        b = await client.ws_connect("/ws")
        await next_frame(a)
        await next_frame(b)
        assert "at most 2" in await refusal(await client.ws_connect("/ws"))
        assert len(built) == 2  # refused before any world was built for it
        await a.close()
        await wait_for_sessions(server, 1)
        c = await client.ws_connect("/ws")  # a's slot is free again
        await next_frame(c)
        assert len(server.sessions) == 2
        await b.close()
        await c.close()

    run(check, max_sessions=2)


def test_the_cell_budget_refuses_a_world_that_does_not_fit():
    async def check(server, client):
        a = await client.ws_connect("/ws")
        b = await client.ws_connect("/ws")
        await paused(a)
        await next_frame(b)
        assert "does not fit" in await refusal(await client.ws_connect("/ws"))  # 3 x 56^2 > the budget
        await a.send_json({"type": "size", "size": 128})
        errors = []
        await a.send_json({"type": "step"})
        frame = await next_frame(a, errors)
        assert errors and "does not fit" in errors[0]["message"], errors
        assert frame[2].shape == (56, 56)  # the session goes on with its world
        assert sum(server.sessions.values()) == 2 * 56 * 56
        await b.close()
        await wait_for_sessions(server, 1)
        c = await client.ws_connect("/ws")  # b's cells are free again
        await next_frame(c)
        await a.close()
        await c.close()

    run(check, max_cells=2 * 56 * 56)


def test_server_limits_are_checked():
    with pytest.raises(ValueError, match="max_sessions"):
        PlayServer(size=28, max_sessions=0)
    with pytest.raises(ValueError, match="max_cells"):
        PlayServer(size=256, max_cells=256 * 256 - 1)


@pytest.mark.parametrize("argv, fragment", [(["--max-sessions", "0"], "--max-sessions must be >= 1"),
                                            (["--size", "1024", "--max-cells", "1000"], "--max-cells must hold")])
def test_play_options_are_validated(argv, fragment, capsys):
    from fastca.cli import main

    assert main(["play", *argv]) == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize("host, warned", [("0.0.0.0", True), ("192.168.1.5", True), ("", True), ("example.lan", True),
                                          ("127.0.0.1", False), ("localhost", False), ("::1", False)])
def test_a_non_loopback_host_is_warned_about(host, warned, monkeypatch, capsys, caplog):
    from aiohttp import web

    monkeypatch.setattr(web, "run_app", lambda *args, **kwargs: None)
    fastca.play.serve(host=host, port=8765, size=28)
    err = capsys.readouterr().err
    assert ("WARNING" in err and "anyone" in err) == warned, err
    assert any("not a loopback address" in r.getMessage() for r in caplog.records) == warned


@pytest.mark.parametrize("where", ["run_app", "PlayServer"])
def test_serve_returns_cleanly_on_ctrl_c(where, monkeypatch, capsys):
    """Ctrl-C before the server is up, or a second one while it stops: one line, no traceback."""
    from aiohttp import web

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(*((web, "run_app") if where == "run_app" else (fastca.play, "PlayServer")), interrupted)
    try:
        fastca.play.serve(port=8765, size=28)
    except KeyboardInterrupt:  # (not raised on: it would stop pytest itself)
        pytest.fail("serve let Ctrl-C through: a traceback")
    assert capsys.readouterr().out.strip().splitlines()[-1] == "fastca play: stopped"


def test_fastca_play_stops_cleanly_on_ctrl_c_before_serving(monkeypatch, capsys):
    import fastca.cli

    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(fastca.backends, "resolve", interrupted)  # Ctrl-C while the backend is probed
    try:
        assert fastca.cli.main(["play", "--size", "28"]) == 0
    except KeyboardInterrupt:
        pytest.fail("fastca play let Ctrl-C through: a traceback")
    assert capsys.readouterr().out.strip() == "fastca play: stopped"


SLOW_SECOND_FRAME = """
import sys, time
import fastca.play as play
frame = play.Session.frame
def slow(self, calls=[]):
    calls.append(1)
    if len(calls) > 1:  # a long step or compile in flight once the page is open
        time.sleep(8)
    return frame(self)
play.Session.frame = slow
from fastca.cli import main
sys.exit(main(["play", "--port", sys.argv[1], "--size", "28", "--backend", "numba-cpu"]))
"""


def test_ctrl_c_twice_while_a_step_runs_stops_at_once_without_a_traceback():
    import signal
    import socket
    import subprocess
    import sys
    import time

    import aiohttp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-c", SLOW_SECOND_FRAME, str(port)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        async def interrupt_twice():
            for _ in range(300):
                try:
                    async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                        await next_frame(ws)  # acknowledged: the slow second frame starts
                        await asyncio.sleep(0.5)
                        p.send_signal(signal.SIGINT)
                        t0 = time.perf_counter()
                        await asyncio.sleep(0.5)
                        if p.poll() is None:
                            p.send_signal(signal.SIGINT)
                        return t0
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.1)

        t0 = asyncio.run(interrupt_twice())
        out, err = p.communicate(timeout=30)
        waited = time.perf_counter() - t0
    finally:
        if p.poll() is None:
            p.kill()
    # 0, or killed by the second SIGINT during the interpreter's last tenths of a second (silently)
    assert p.returncode in (0, -signal.SIGINT) and "Traceback" not in err, err[-2000:]
    assert out.strip().splitlines()[-1] == "fastca play: stopped"
    assert waited < 6, f"the exit waited {waited:.1f} s for the step in flight"
