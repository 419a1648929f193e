"""``fastca play``: a local web page where you draw digits and watch the cells classify them.

The server (aiohttp) owns one resident :class:`fastca.Simulation` per browser tab (one
websocket each), steps it in a worker thread, applies the tab's edits between steps and
streams compact frames: a 16-byte header, then the gray value (uint8) and the cell class
(uint8: 0..9, 10 undecided, 255 dead) of every cell, row by row. The page colours them.
A frame is sent only when the page has acknowledged the previous one, so a slow page
gets fewer frames (the others are dropped), never a queue.

Messages from the page are JSON objects with a ``type``:

=================  ==========================================================================
``stroke``         ``points`` [[row, col], ...] (1..2000), ``width`` (0.5..32), ``erase`` (bool)
``digit``          ``at`` [row, col]: a random test digit centred there (added to what is drawn)
``clear``          every cell dead
``mutate``         every 28x28 tile gets another test digit (the article's mutation experiment)
``pause``          ``paused`` (bool)
``step``           one step (while paused)
``speed``          ``steps_per_frame`` (1..50)
``model``          ``name``: an embedded model; the world restarts from its current picture
``preset``         ``name``: "digits", "swing" (a 4 over a 2), "cut" (a digit cut in half), "many"
``size``           ``size`` (28..1024): a new world of test digits
``ack``            the page has drawn the last frame
=================  ==========================================================================

A malformed or oversized message gets an error frame (``{"type": "error", ...}``) and a log
line; it never ends the session or the server.
"""

import asyncio
import json
import logging
import os
import struct
import time
import webbrowser
from importlib import resources

import numpy as np

from . import data, metrics, spec
from .simulation import Simulation, stroke_mask
from .world import World, apply_event

log = logging.getLogger("fastca.play")

MAGIC = b"FCA1"
HEADER = struct.Struct("<4sIHHI")  # magic, step, height, width, flags (bit 0: paused)
MAX_MESSAGE = 64 * 1024  #: bytes; longer messages are refused
MAX_POINTS = 2000
SIZES = (28, 56, 128, 256, 512, 1024)
DEAD = 255
UNDECIDED = spec.N_CLASSES
MAX_FPS = 60


class BadMessage(ValueError):
    """A message the session refuses (answered with an error frame)."""


def frame_arrays(state, alive_threshold):
    """(gray uint8 (H, W), class uint8 (H, W): 0..9, 10 undecided, 255 dead) of an (H, W, 20) state."""
    gray, classes = metrics.picture_maps(np.asarray(state)[None], alive_threshold)
    return gray[0], classes[0]


def encode_frame(step, gray, label, paused):
    """The binary frame the page decodes (see the module docstring)."""
    h, w = gray.shape
    return HEADER.pack(MAGIC, step % 2**32, h, w, int(paused)) + gray.tobytes() + label.tobytes()


def decode_frame(buf):
    """(step, paused, gray (H, W) uint8, class (H, W) uint8) of an encoded frame (tests, tools)."""
    magic, step, h, w, flags = HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise ValueError("not a fastca frame")
    body = np.frombuffer(buf, np.uint8, offset=HEADER.size)
    return step, bool(flags & 1), body[: h * w].reshape(h, w), body[h * w : 2 * h * w].reshape(h, w)


class Session:
    """One tab's world: a resident Simulation, its host gray picture and its controls."""

    def __init__(self, size, model_name, backend, seed=0):
        self.backend = backend
        self.rng = np.random.default_rng(seed)
        self.images, self.labels = data.sample_digits()
        self.model_name = model_name
        self.paused = False
        self.steps_per_frame = 1
        self.pending_steps = 0
        self.dirty = True
        self.lock = asyncio.Lock()
        self.new_world(size, "digits")

    # --- worlds -------------------------------------------------------------------------
    def new_world(self, size, preset):
        size = int(size)
        if size not in SIZES:
            raise BadMessage(f"size must be one of {SIZES}, got {size}")
        self.world = self._preset(size, preset)
        self.new_sim()

    def new_sim(self):
        """A fresh simulation of the current picture with the current model (hidden state zero)."""
        from . import pretrained

        self.model = pretrained(self.model_name)
        self.sim = Simulation(self.model, self.world.gray, backend=self.backend, seed=int(self.rng.integers(2**31)),
                              on_nonfinite="warn")
        self.dirty = True

    def _preset(self, size, name):
        if name in ("digits", "many"):
            return World.from_digits(self.images, self.labels, size, size, seed=int(self.rng.integers(2**31)))
        world = World(np.zeros((size, size), np.uint8), np.full((size, size), -1, np.int16),
                      np.zeros((max(1, size // 28), max(1, size // 28)), np.int64), self.images, self.labels)
        c = size // 2
        if name == "swing":  # a 4 drawn over a 2: cells that see both argue
            four = self.images[np.nonzero(self.labels == 4)[0][0]]
            two = self.images[np.nonzero(self.labels == 2)[0][0]]
            self._paste(world.gray, np.maximum(four, two), c - 14, c - 14)
        elif name == "cut":  # a digit cut in half: the right half is erased
            digit = self.images[np.nonzero(self.labels == 3)[0][0]].copy()
            digit[:, 14:] = 0
            self._paste(world.gray, digit, c - 14, c - 14)
        else:
            raise BadMessage(f"preset must be digits, swing, cut or many, got {name!r}")
        return world

    @staticmethod
    def _paste(gray, patch, y0, x0):
        """Add ``patch`` onto ``gray`` at (y0, x0) (clipped to the grid): gray = max(gray, patch)."""
        h, w = gray.shape
        ys, xs = slice(max(0, y0), min(h, y0 + patch.shape[0])), slice(max(0, x0), min(w, x0 + patch.shape[1]))
        if ys.start < ys.stop and xs.start < xs.stop:
            sub = patch[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
            gray[ys, xs] = np.maximum(gray[ys, xs], sub)
        return ys, xs

    # --- edits (all under the session lock, between steps) ------------------------------
    def _push(self, before):
        """Send the window where the host gray changed to the simulation."""
        changed = np.nonzero(self.world.gray != before)
        if len(changed[0]):
            y0, y1, x0, x1 = changed[0].min(), changed[0].max() + 1, changed[1].min(), changed[1].max() + 1
            self.sim.edit("set", gray=self.world.gray[y0:y1, x0:x1], at=(int(y0), int(x0)))
        self.dirty = True

    def apply(self, msg):
        """Apply one validated message; returns a reply dict to send, or None."""
        kind = msg["type"]
        h, w = self.world.gray.shape
        if kind == "stroke":
            pts = _points(msg.get("points"), h, w)
            width = _number(msg.get("width", 2.0), "width", 0.5, 32.0)
            before = self.world.gray.copy()
            y0, x0 = max(0, int(pts[:, 0].min() - width)), max(0, int(pts[:, 1].min() - width))
            y1, x1 = min(h, int(pts[:, 0].max() + width) + 2), min(w, int(pts[:, 1].max() + width) + 2)
            on = stroke_mask(y1 - y0, x1 - x0, pts - [y0, x0], width)
            window = self.world.gray[y0:y1, x0:x1]
            window[on] = 0 if msg.get("erase") else 255
            self._push(before)
        elif kind == "digit":
            y, x = _points([msg.get("at")], h, w)[0].astype(int)
            k = int(self.rng.integers(len(self.images)))
            before = self.world.gray.copy()
            ys, xs = self._paste(self.world.gray, self.images[k], y - 14, x - 14)
            self.world.targets[ys, xs] = self.labels[k]
            self._push(before)
            return {"type": "digit", "label": int(self.labels[k])}
        elif kind == "clear":
            self.world.gray[:] = 0
            self.sim.mutate(self.world.gray)
            self.dirty = True
        elif kind == "mutate":
            apply_event(self.sim, self.world, {"type": "replace_all"}, self.rng)
            self.dirty = True
        elif kind == "pause":
            self.paused = bool(msg.get("paused", not self.paused))
            self.dirty = True
        elif kind == "step":
            self.pending_steps += 1
        elif kind == "speed":
            self.steps_per_frame = int(_number(msg.get("steps_per_frame"), "steps_per_frame", 1, 50))
        elif kind == "model":
            from . import PRETRAINED

            name = msg.get("name")
            if name not in PRETRAINED:
                raise BadMessage(f"model must be one of {list(PRETRAINED)}, got {name!r}")
            self.model_name = name
            self.new_sim()
        elif kind == "preset":
            self.new_world(self.world.gray.shape[0], msg.get("name"))
        elif kind == "size":
            self.new_world(_number(msg.get("size"), "size", 1, 4096), "digits")
        else:
            raise BadMessage(f"unknown message type {kind!r}")
        return None

    def frame(self):
        gray, label = frame_arrays(self.sim.view(), self.model.alive_threshold)
        return encode_frame(self.sim.t, gray, label, self.paused)


def _number(value, name, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (lo <= value <= hi):
        raise BadMessage(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def _points(points, h, w):
    if not isinstance(points, list) or not 1 <= len(points) <= MAX_POINTS:
        raise BadMessage(f"points must be a list of 1..{MAX_POINTS} [row, col] pairs")
    out = []
    for p in points:
        if (not isinstance(p, (list, tuple)) or len(p) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in p)
                or not (0 <= p[0] < h and 0 <= p[1] < w)):
            raise BadMessage(f"every point must be [row, col] inside the {h}x{w} world, got {p!r}")
        out.append((float(p[0]), float(p[1])))
    return np.asarray(out)


def parse_message(raw):
    """The message as a dict with a string ``type``; BadMessage for anything else."""
    if len(raw) > MAX_MESSAGE:
        raise BadMessage(f"message of {len(raw)} bytes refused (at most {MAX_MESSAGE})")
    try:
        msg = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise BadMessage("a message is a JSON object with a 'type'")
    return msg


class PlayServer:
    """The aiohttp application: the page, its assets, and one websocket session per tab."""

    def __init__(self, size=256, model="fastca-mnist", backend="auto"):
        from aiohttp import web

        self.size, self.model_name, self.backend = size, model, backend
        self.sessions = set()
        self.app = web.Application()
        self.app.router.add_get("/", self.index)
        self.app.router.add_get("/play.js", self.script)
        self.app.router.add_get("/ws", self.websocket)
        self.app.on_shutdown.append(self._close_all)

    def _asset(self, name):
        return resources.files("fastca").joinpath("assets", "play", name).read_bytes()

    async def index(self, request):
        from aiohttp import web

        return web.Response(body=self._asset("index.html"), content_type="text/html")

    async def script(self, request):
        from aiohttp import web

        return web.Response(body=self._asset("play.js"), content_type="application/javascript")

    async def _close_all(self, app):
        for ws in list(self.sessions):
            await ws.close()

    async def websocket(self, request):
        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse(max_msg_size=4 * MAX_MESSAGE, heartbeat=30, compress=False)  # local: CPU over bytes
        await ws.prepare(request)
        try:
            session = await asyncio.to_thread(Session, self.size, self.model_name, self.backend)
        except Exception as exc:  # e.g. an unusable backend: tell the page, keep the server
            log.warning("session refused: %s", exc)
            await ws.send_json({"type": "error", "message": str(exc)})
            await ws.close()
            return ws
        self.sessions.add(ws)
        log.info("session opened (%d open)", len(self.sessions))
        state = {"acked": True, "closed": False, "frames": 0, "steps": 0, "t0": time.perf_counter()}
        loop_task = asyncio.create_task(self._run(ws, session, state))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._handle(ws, session, state, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._error(ws, "binary messages are not understood")
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            state["closed"] = True
            loop_task.cancel()
            try:
                await loop_task
            except (asyncio.CancelledError, Exception):
                pass
            self.sessions.discard(ws)
            del session  # the simulation goes with the tab
            log.info("session closed (%d open)", len(self.sessions))
        return ws

    async def _error(self, ws, message):
        log.warning("bad message: %s", message)
        if not ws.closed:
            await ws.send_json({"type": "error", "message": message})

    async def _handle(self, ws, session, state, raw):
        try:
            msg = parse_message(raw)
            if msg["type"] == "ack":
                state["acked"] = True
                return
            async with session.lock:
                reply = await asyncio.to_thread(session.apply, msg)
            if reply:
                await ws.send_json(reply)
        except BadMessage as exc:
            await self._error(ws, str(exc))
        except Exception as exc:  # a bug in one session must not take the server down
            log.exception("session error")
            await self._error(ws, f"{type(exc).__name__}: {exc}")

    async def _run(self, ws, session, state):
        """Step the world and send frames (only when the page has drawn the last one)."""
        while not state["closed"] and not ws.closed:
            t0 = time.perf_counter()
            async with session.lock:
                steps = session.pending_steps if session.paused else session.steps_per_frame
                session.pending_steps = 0
                if steps:
                    await asyncio.to_thread(session.sim.run, steps, progress=False)
                    state["steps"] += steps
                    session.dirty = True
                frame = None
                if state["acked"] and session.dirty:
                    frame = await asyncio.to_thread(session.frame)
                    session.dirty = False
            if frame is not None:
                state["acked"] = False
                state["frames"] += 1
                await ws.send_bytes(frame)
                elapsed = time.perf_counter() - state["t0"]
                if elapsed > 1.0:
                    await ws.send_json({"type": "stats", "steps_per_s": state["steps"] / elapsed,
                                        "frames_per_s": state["frames"] / elapsed, "backend": session.sim.backend,
                                        "model": session.model_name})
                    state.update(steps=0, frames=0, t0=time.perf_counter())
            await asyncio.sleep(max(0.0, 1 / MAX_FPS - (time.perf_counter() - t0)))


def start_in_thread(size=256, model="fastca-mnist", backend="auto", host="127.0.0.1"):
    """Run a server on a free port in a daemon thread (tests, benchmarks, notebooks).

    Returns (url, stop): ``stop()`` closes the sessions and the port.
    """
    import socket
    import threading

    from aiohttp import web

    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(PlayServer(size=size, model=model, backend=backend).app)
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, host, port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True, name="fastca-play")
    thread.start()
    if not ready.wait(120):
        raise RuntimeError("the play server did not start")

    def stop():
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return f"http://{host}:{port}/", stop


def serve(host="127.0.0.1", port=8765, size=256, model="fastca-mnist", backend="auto", open_browser=False):
    """Run the server until Ctrl-C (a clean shutdown: sessions closed, port released)."""
    from aiohttp import web

    server = PlayServer(size=size, model=model, backend=backend)
    url = f"http://{host}:{port}/"
    print(f"fastca play: {url}  (Ctrl-C to stop)", flush=True)
    if open_browser:
        webbrowser.open(url)
    web.run_app(server.app, host=host, port=port, print=None, handle_signals=True)
    print("fastca play: stopped", flush=True)


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=os.environ.get("FASTCA_LOG", "INFO"))
    serve()
