"""``fastca play``: a local web page where you draw digits and watch the cells classify them, or
plant seeds of the Growing NCA, cut them and watch them regrow.

The server (aiohttp) owns one resident :class:`fastca.Simulation` per browser tab (one
websocket each), steps it in a worker thread, applies the tab's edits between steps and
streams compact frames: a 16-byte header (magic ``FCA1``, step u32, height u16, width u16,
flags u32: bit 0 paused, bit 1 RGBA), then, row by row,

* the digit models (``flags & 2 == 0``): the gray value (uint8) of every cell, then its class
  (uint8: 0..9, 10 undecided, 255 dead). The page colours them;
* the growing model (``flags & 2``): every cell's RGBA (uint8, premultiplied: the state's
  channels 0..3 clipped to [0, 1]). The page composites them on its white background
  (``1 - alpha + rgb``, as the Distill article shows them).

A frame is sent only when the page has acknowledged the previous one, so a slow page
gets fewer frames (the others are dropped), never a queue. A tab runs one model at a time
(:data:`MODELS`); switching to a model of the other kind starts a new world.

Messages from the page are JSON objects with a ``type``:

=================  ==========================================================================
``stroke``         ``points`` [[row, col], ...] (1..2000), ``width`` (0.5..32), ``erase`` (bool)
``digit``          ``at`` [row, col]: a random test digit centred there (added to what is drawn)
``clear``          every cell dead
``reset``          a new world of random test digits (same size); growing: one seed in the middle
``mutate``         every 28x28 square holding a test digit gets another one (the article's mutation
                   experiment); squares the reader drew in are kept (an ``info`` reply says so)
``noise``          ``amount`` (0..4): Gaussian noise of that std added to channels 1..19 of every
                   alive cell (the robustness experiment: watch them recover)
``damage``         ``at`` [row, col], ``radius`` (1..64): the cells in that disc forget their state
                   (channels 1..19 zeroed; the digit stays) and relearn it from their neighbours
``seed``           growing: ``at`` [row, col]: that cell becomes the model's seed
``erase``          growing: ``points`` [[row, col], ...] (1..2000), ``radius`` (0.5..64): every
                   channel of the cells within ``radius`` of the polyline zeroed (the cut)
``pause``          ``paused`` (bool)
``step``           one step (while paused)
``speed``          ``steps_per_frame`` (1..MAX_STEPS_PER_FRAME)
``model``          ``name`` (a key of MODELS, nothing else): another digit model restarts from the
                   current picture; a model of the other kind starts its own world (its default
                   size when the cell budget allows, else the current size)
``preset``         ``name``: "digits" (new test digits, same size), "swing" (a 4 over a 2) and
                   "cut" (a digit cut in half), each in a 56x56 world so that the figure fills
                   half the view, "many" (a world of at least 256x256 test digits, when the cell
                   budget allows; else the current size)
``size``           ``size`` (one of SIZES): a new world of test digits (growing: a new seed)
``ack``            the page has drawn the last frame
=================  ==========================================================================

``stroke``, ``digit``, ``mutate``, ``noise``, ``damage`` and ``preset`` apply to the digit
models, ``seed`` and ``erase`` to the growing model; the others to both. A message that does
not apply to the tab's model gets an error frame.

Replies (JSON): ``stats`` (about once a second: steps and frames per second, backend, model and
its kind), ``info`` (what a swap, noise, damage, reset or model switch did), ``digit``, ``error``,
``refused``.

A malformed or oversized message gets an error frame (``{"type": "error", ...}``) and a log
line; it never ends the session or the server. (Only a websocket message over
``MAX_WS_MESSAGE`` (4 MiB), which the page never sends, closes the connection, with code 1009.)

Any web page the user visits could try to drive a local server, so the server:

* answers only requests whose ``Host`` names it (the loopback names, the ``host`` it was given,
  and any IP address when bound to all interfaces): a DNS-rebinding page's Host is its own domain;
* refuses, before the websocket upgrade, an ``Origin`` other than its own page's
  (``http://`` + that Host, port included). Browsers always send Origin on a websocket; a
  request without one comes from a program (curl, tests) that could send any header anyway;
* runs at most ``max_sessions`` tabs and ``max_cells`` cells in all: the next tab gets a
  ``{"type": "refused", "message": ...}`` frame (the page shows it) and is closed (code 1013),
  and a ``size`` beyond the cell budget gets an error frame. Closing a tab frees its share;
* takes model names from :data:`MODELS` only (never a path from the page).
"""

import asyncio
import concurrent.futures
import ipaddress
import json
import logging
import os
import queue
import struct
import sys
import threading
import time
import webbrowser
from importlib import resources

import numpy as np

from . import data, metrics, spec
from .simulation import Simulation, stroke_mask
from .world import World
from .errors import InputError, RunError

log = logging.getLogger("fastca.play")

MAGIC = b"FCA1"
HEADER = struct.Struct("<4sIHHI")  # magic, step, height, width, flags (PAUSED, RGBA)
PAUSED = 1  #: frame flag: the world is paused
RGBA = 2  #: frame flag: the body is RGBA per cell (the growing model), else gray then class
MAX_MESSAGE = 64 * 1024  #: bytes; longer messages are refused with an error frame
MAX_WS_MESSAGE = 4 * 1024 * 1024  #: bytes; aiohttp closes the connection (1009) above this
MAX_SESSIONS = 4  #: tabs served at once (default)
MAX_CELLS = 2 * 1024 * 1024  #: cells of all the tabs' worlds together (default: two 1024x1024 worlds)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MAX_POINTS = 2000
#: The models the page offers (the only names a page may send): name -> the kind of world,
#: "digits" (draw MNIST digits, the cells classify them) or "growing" (plant seeds, cut, regrow).
MODELS = {"fastca-mnist": "digits", "distill-2020": "digits", "growing-gecko": "growing"}
SIZES = (28, 56, 72, 96, 128, 256, 512, 1024)
#: The default world: 56x56 cells (four test digits). Fitted to the view, a digit drawn a
#: quarter to half of the view tall is 14..28 cells, the MNIST scale the model was trained on
#: (28x28 digits, about 20 cells tall); in a 256x256 world the same stroke was 60..130 cells
#: and its parts voted for different digits (issue 28).
DEFAULT_SIZE = 56
#: The growing model's default world: the gecko (40x40 cells, trained on a 72x72 grid) grows in
#: the middle with room around it for a few more seeds.
GROWING_SIZE = 96
DEFAULT_SIZES = {"digits": DEFAULT_SIZE, "growing": GROWING_SIZE}
MAX_STEPS_PER_FRAME = 50  #: the page's steps-per-frame slider reaches this
PRESET_SIZES = {"swing": 56, "cut": 56}  #: a preset's world side (others keep the current size)
MANY_SIZE = 256  #: the "many" preset's world side, at least (when the cell budget allows)
DEAD = 255
UNDECIDED = spec.N_CLASSES
MAX_FPS = 60
CUT_RADIUS = 6.0  #: cells: an ``erase`` message's default radius
#: the messages that apply to one kind of world only (the others apply to both)
ONLY = {"digits": ("stroke", "digit", "mutate", "noise", "damage", "preset"), "growing": ("seed", "erase")}
MESSAGES = ("clear", "reset", "pause", "step", "speed", "model", "size") + ONLY["digits"] + ONLY["growing"]
#: what a world of each kind is for (said when a model starts, or a message does not apply)
KIND_HELP = {"digits": "draw digits and the cells classify them",
             "growing": "click to plant a seed, drag the eraser (or the right button) to cut: the cut regrows"}


class BadMessage(InputError):
    """A message the session refuses (answered with an error frame)."""


def frame_arrays(state, alive_threshold):
    """(gray uint8 (H, W), class uint8 (H, W): 0..9, 10 undecided, 255 dead) of an (H, W, 20) state."""
    gray, classes = metrics.picture_maps(np.asarray(state)[None], alive_threshold)
    return gray[0], classes[0]


def rgba_pixels(state):
    """(H, W, 4) uint8 premultiplied RGBA of an (H, W, C) growing state: channels 0..3 clipped to [0, 1]."""
    rgba = np.nan_to_num(np.asarray(state[..., :4], np.float32), nan=0.0)
    return np.round(np.clip(rgba, 0, 1) * 255).astype(np.uint8)


def encode_frame(step, gray, label, paused):
    """The binary frame of a digit world the page decodes (see the module docstring)."""
    h, w = gray.shape
    return HEADER.pack(MAGIC, step % 2**32, h, w, int(paused)) + gray.tobytes() + label.tobytes()


def encode_rgba_frame(step, rgba, paused):
    """The binary frame of a growing world: (H, W, 4) uint8 RGBA (see the module docstring)."""
    h, w = rgba.shape[:2]
    return HEADER.pack(MAGIC, step % 2**32, h, w, RGBA | int(paused)) + np.ascontiguousarray(rgba).tobytes()


def decode_frame(buf):
    """(step, paused, gray (H, W) uint8, class (H, W) uint8) of an encoded digit frame, or
    (step, paused, rgba (H, W, 4) uint8, None) of an RGBA frame (tests, tools)."""
    magic, step, h, w, flags = HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise InputError("not a fastca frame")
    body = np.frombuffer(buf, np.uint8, offset=HEADER.size)
    if flags & RGBA:
        return step, bool(flags & PAUSED), body[: h * w * 4].reshape(h, w, 4), None
    return step, bool(flags & PAUSED), body[: h * w].reshape(h, w), body[h * w : 2 * h * w].reshape(h, w)


class Session:
    """One tab's world: a resident Simulation and its controls; for a digit model also the host
    gray picture (what was drawn), for the growing model the state alone (seeds and cuts)."""

    def __init__(self, size, model_name, backend, seed=0):
        self.backend = backend
        self.rng = np.random.default_rng(seed)
        self.sim_seed = 0
        self.images, self.labels = data.sample_digits()
        self.model_name = model_name
        self.kind = model_kind(model_name)
        self.paused = False
        self.steps_per_frame = 1
        self.pending_steps = 0
        self.dirty = True
        self.lock = asyncio.Lock()
        self.new_world(size, "digits")

    @property
    def side(self):
        """The world's side in cells."""
        return self.sim.shape[1]

    # --- worlds -------------------------------------------------------------------------
    def new_world(self, size, preset):
        size = int(size)
        if size not in SIZES:
            raise BadMessage(f"size must be one of {SIZES}, got {size}")
        if self.kind == "growing":
            self.grow_world(size)
            return
        self.world = self._preset(size, preset)
        tiles = -(-size // data.DIGIT)
        self.drawn = np.zeros((size, size), bool)  # cells the reader drew (kept by a swap)
        self.test_tiles = np.full((tiles, tiles), preset in ("digits", "many"))  # squares holding a test digit
        self.new_sim()

    def new_sim(self):
        """A fresh simulation of the current picture with the current model (hidden state zero)."""
        from . import pretrained

        self.model = pretrained(self.model_name)
        self.sim_seed = int(self.rng.integers(2**31))
        self.sim = Simulation(self.model, self.world.gray, backend=self.backend, seed=self.sim_seed,
                              on_nonfinite="warn")
        self.dirty = True

    def grow_world(self, size, seeded=True):
        """A size x size world of dead cells for the growing model, its seed in the middle when ``seeded``."""
        from . import pretrained

        self.model = pretrained(self.model_name)
        self.world = None  # no picture: the state is the world
        self.sim_seed = int(self.rng.integers(2**31))
        dead = np.zeros((size, size, self.model.description.channels), np.float32)
        self.sim = Simulation(self.model, dead, backend=self.backend, seed=self.sim_seed, input="state",
                              on_nonfinite="warn")
        if seeded:
            self.sim.edit("seed", center=(size // 2, size // 2))
        self.dirty = True

    def _restart(self, state):
        """Go on from an edited full state (same model, seed and step): what noise and damage need."""
        self.sim = Simulation(self.model, state, backend=self.backend, seed=self.sim_seed, input="state",
                              start_step=self.sim.t, on_nonfinite="warn")
        self.dirty = True

    def _tile_slices(self, row, col):
        h, w = self.world.gray.shape
        d = data.DIGIT
        return slice(row * d, min(h, (row + 1) * d)), slice(col * d, min(w, (col + 1) * d))

    def swap(self):
        """The mutation experiment: every square holding a test digit gets another one, except the
        squares the reader drew in (kept, and said so). Channels 1..19 are kept under alive cells."""
        h, w = self.world.gray.shape
        rows, cols = self.test_tiles.shape
        pick = self.rng.integers(0, len(self.images), (rows, cols))
        gray, targets, _ = data.mnist_world(self.images[pick.ravel()], self.labels[pick.ravel()], h, w)
        new = self.world.gray.copy()
        swapped = kept = 0
        for row in range(rows):
            for col in range(cols):
                ys, xs = self._tile_slices(row, col)
                if self.drawn[ys, xs].any():
                    kept += 1
                elif self.test_tiles[row, col]:
                    new[ys, xs] = gray[ys, xs]
                    self.world.targets[ys, xs] = targets[ys, xs]
                    swapped += 1
        self.world.gray = new
        self.sim.mutate(new)
        self.dirty = True
        if not swapped:
            text = "nothing to swap: no square holds a test digit (new digits makes some)"
        else:
            text = f"swapped {swapped} test digit{'s' * (swapped != 1)}"
        if kept:
            text += f"; kept the {kept} square{'s' * (kept != 1)} you drew in"
        return {"type": "info", "message": text}

    def _alive(self, state):
        return state[..., spec.GRAY] > self.model.alive_threshold

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
        if kind not in MESSAGES:
            raise BadMessage(f"unknown message type {kind!r}")
        other = "growing" if self.kind == "digits" else "digits"
        if kind in ONLY[other]:
            raise BadMessage(f"{kind!r} does not apply to the {self.model_name} model ({KIND_HELP[self.kind]})")
        return getattr(self, f"_on_{kind}")(msg)

    def _on_stroke(self, msg):
        h, w = self.world.gray.shape
        pts = _points(msg.get("points"), h, w)
        width = _number(msg.get("width", 2.0), "width", 0.5, 32.0)
        before = self.world.gray.copy()
        y0, x0 = max(0, int(pts[:, 0].min() - width)), max(0, int(pts[:, 1].min() - width))
        y1, x1 = min(h, int(pts[:, 0].max() + width) + 2), min(w, int(pts[:, 1].max() + width) + 2)
        on = stroke_mask(y1 - y0, x1 - x0, pts - [y0, x0], width)
        window = self.world.gray[y0:y1, x0:x1]
        window[on] = 0 if msg.get("erase") else 255
        self.drawn[y0:y1, x0:x1][on] = not msg.get("erase")
        self._push(before)

    def _on_digit(self, msg):
        y, x = _points([msg.get("at")], *self.world.gray.shape)[0].astype(int)
        k = int(self.rng.integers(len(self.images)))
        before = self.world.gray.copy()
        ys, xs = self._paste(self.world.gray, self.images[k], y - 14, x - 14)
        self.world.targets[ys, xs] = self.labels[k]
        self.drawn[ys, xs] |= self.world.gray[ys, xs] != before[ys, xs]  # the reader put it there
        self._push(before)
        return {"type": "digit", "label": int(self.labels[k])}

    def _on_clear(self, msg):
        if self.kind == "growing":
            self.grow_world(self.side, seeded=False)
            return
        self.world.gray[:] = 0
        self.drawn[:] = False
        self.test_tiles[:] = False
        self.sim.mutate(self.world.gray)
        self.dirty = True

    def _on_reset(self, msg):
        n = self.side
        self.new_world(n, "digits")
        if self.kind == "growing":
            return {"type": "info", "message": f"a new seed in the middle ({n}x{n} world)"}
        return {"type": "info", "message": f"new test digits ({n}x{n} world)"}

    def _on_mutate(self, msg):
        return self.swap()

    def _on_noise(self, msg):
        amount = _number(msg.get("amount", 1.0), "amount", 0.0, 4.0)
        state = np.array(self.sim.state(), np.float32)
        alive = self._alive(state)
        n = int(alive.sum())
        state[alive, 1:] += amount * self.rng.standard_normal((n, state.shape[-1] - 1), np.float32)
        self._restart(state)
        return {"type": "info", "message": f"noise (std {amount:g}) added to the state of {n} cells: "
                                           "watch them recover"}

    def _on_damage(self, msg):
        h, w = self.world.gray.shape
        y, x = _points([msg.get("at")], h, w)[0]
        radius = _number(msg.get("radius", 7.0), "radius", 1.0, 64.0)
        state = np.array(self.sim.state(), np.float32)
        yy, xx = np.ogrid[:h, :w]
        disc = ((yy - y) ** 2 + (xx - x) ** 2 <= radius**2) & self._alive(state)
        state[disc, 1:] = 0
        self._restart(state)
        return {"type": "info", "message": f"{int(disc.sum())} cells forgot their state: they relearn it "
                                           "from their neighbours"}

    def _on_seed(self, msg):
        y, x = _points([msg.get("at")], self.side, self.side)[0]
        self.sim.edit("seed", center=(y, x))
        self.dirty = True

    def _on_erase(self, msg):
        pts = _points(msg.get("points"), self.side, self.side)
        radius = _number(msg.get("radius", CUT_RADIUS), "radius", 0.5, 64.0)
        self.sim.edit("erase", points=pts, width=2 * radius)
        self.dirty = True

    def _on_pause(self, msg):
        self.paused = bool(msg.get("paused", not self.paused))
        self.dirty = True

    def _on_step(self, msg):
        self.pending_steps += 1

    def _on_speed(self, msg):
        self.steps_per_frame = int(_number(msg.get("steps_per_frame"), "steps_per_frame", 1, MAX_STEPS_PER_FRAME))

    def _on_model(self, msg):
        """Another digit model restarts from the current picture; any other switch starts a new world."""
        name = msg.get("name")
        kind = model_kind(name)
        # the size is set by the server once the cell budget is checked (PlayServer._handle)
        size = world_size(msg["size"]) if "size" in msg else model_size(name, self.kind, self.side)
        same_picture = kind == self.kind == "digits"
        before = self.model_name, self.kind
        self.model_name, self.kind = name, kind
        try:
            if same_picture:
                self.new_sim()
                return None
            self.new_world(size, "digits")
        except BaseException:  # the tab keeps the model of the world it still runs
            self.model_name, self.kind = before
            raise
        return {"type": "info", "message": f"{name} on a {size}x{size} world: {KIND_HELP[kind]}"}

    def _on_preset(self, msg):
        name = msg.get("name")
        size = preset_size(name, self.side)
        if "size" in msg:  # set by the server once the cell budget is checked (PlayServer._handle)
            size = world_size(msg["size"])
        self.new_world(size, name)

    def _on_size(self, msg):
        self.new_world(world_size(msg.get("size")), "digits")

    def frame(self):
        if self.kind == "growing":
            return encode_rgba_frame(self.sim.t, rgba_pixels(self.sim.view()), self.paused)
        gray, label = frame_arrays(self.sim.view(), self.model.alive_threshold)
        return encode_frame(self.sim.t, gray, label, self.paused)


def model_kind(name):
    """The kind of world ("digits" or "growing") of model ``name``; BadMessage for anything but a
    name of :data:`MODELS` (a page never names a file)."""
    if not isinstance(name, str) or name not in MODELS:
        raise BadMessage(f"model must be one of {list(MODELS)}, got {name!r}")
    return MODELS[name]


def model_size(name, kind, current, fits=None):
    """The world side after switching to model ``name`` from a world of ``kind`` and side ``current``:
    the same side for a model of the same kind, else the new kind's default (when ``fits``, the
    cell budget, allows it; else the current side). BadMessage for an unknown model."""
    new = model_kind(name)
    if new == kind:
        return current
    want = DEFAULT_SIZES[new]
    return want if fits is None or fits(want) else current


def preset_size(name, current, fits=None):
    """The world side of preset ``name`` from a world of side ``current``; BadMessage for an unknown
    preset. ``fits``: the side "many" may take (the cell budget), default any."""
    if name not in ("digits", "swing", "cut", "many"):
        raise BadMessage(f"preset must be digits, swing, cut or many, got {name!r}")
    if name == "many":
        want = max(MANY_SIZE, current)
        return want if fits is None or fits(want) else current
    return PRESET_SIZES.get(name, current)


def world_size(value):
    """``value`` as a world side (one of SIZES); BadMessage for anything else."""
    size = int(_number(value, "size", 1, 4096))
    if size not in SIZES:
        raise BadMessage(f"size must be one of {SIZES}, got {size}")
    return size


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


def _hostname(authority):
    """The host name of a Host header or an origin's authority: '[::1]:8765' -> '::1', 'LocalHost:80' -> 'localhost'."""
    name = authority.strip().lower()
    if name.startswith("["):
        return name[1 : name.find("]")] if "]" in name else ""
    return name.rsplit(":", 1)[0]


def _is_ip(name):
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def is_loopback(host):
    """Whether ``host`` (a --host value) only listens on this machine."""
    host = host.strip().strip("[]").lower()
    return host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)


def warn_if_exposed(host, port):
    """Say loudly (stderr and the log) that a server bound beyond loopback can be driven by anyone."""
    if is_loopback(host):
        return
    text = (f"fastca play: WARNING: listening on {host or 'every address'}:{port}, not a loopback address: anyone "
            f"who can reach this machine can open the page, draw and run simulations on its CPU/GPU and memory "
            f"(there is no login). Use --host 127.0.0.1 unless that is what you want.")
    print(text, file=sys.stderr, flush=True)
    if log.hasHandlers():  # without handlers, logging's last resort would print it a second time
        log.warning(text)


class _Worker:
    """A daemon thread running one session's blocking calls (world building, steps, frames) in order.

    Daemon, unlike asyncio.to_thread's pool, so that Ctrl-C never waits at exit for a step or a
    first Numba compile in flight (and a second Ctrl-C during that wait printed a traceback).
    """

    def __init__(self):
        self.jobs = queue.SimpleQueue()
        threading.Thread(target=self._serve, daemon=True, name="fastca-play-session").start()

    def _serve(self):
        while (job := self.jobs.get()) is not None:
            future, fn, args = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # handed to the awaiting coroutine
                    future.set_exception(exc)

    async def call(self, fn, *args):
        future = concurrent.futures.Future()
        self.jobs.put((future, fn, args))
        return await asyncio.wrap_future(future)

    def close(self):
        self.jobs.put(None)


class PlayServer:
    """The aiohttp application: the page, its assets, and one websocket session per tab.

    ``model``: a key of :data:`MODELS`, the model a new tab starts with; ``size``: its world's
    side (None: the model's default, :data:`DEFAULT_SIZES`). ``host`` is the address the
    server is bound to (it names the server in Host headers); ``max_sessions`` and
    ``max_cells`` cap the tabs and the cells of their worlds together.
    """

    def __init__(self, size=None, model="fastca-mnist", backend="auto", host="127.0.0.1", max_sessions=MAX_SESSIONS,
                 max_cells=MAX_CELLS):
        from aiohttp import web

        size = DEFAULT_SIZES[model_kind(model)] if size is None else size  # BadMessage (a ValueError): not a model
        if int(max_sessions) < 1:
            raise InputError(f"max_sessions must be >= 1, got {max_sessions}")
        if size * size > max_cells:
            raise InputError(f"max_cells must hold at least one {size}x{size} world ({size * size} cells), "
                             f"got {max_cells}")
        self.size, self.model_name, self.backend = size, model, backend
        self.max_sessions, self.max_cells = int(max_sessions), int(max_cells)
        self.hosts = {*LOOPBACK_NAMES, host.strip("[]").lower()} - {""}  # the names a Host header may give
        self.any_ip = host.strip("[]") in ("", "0.0.0.0", "::")  # bound to every address: reached by any of its IPs
        self.sessions = {}  # websocket -> cells of its world (reserved before the world is built)

        @web.middleware
        async def guard(request, handler):
            reason = self.refusal(request.headers)
            if reason:
                log.warning("request refused: %s", reason)
                return web.Response(status=403, text=f"fastca play: {reason}\n")
            return await handler(request)

        self.app = web.Application(middlewares=[guard])
        self.app.router.add_get("/", self.index)
        self.app.router.add_get("/play.js", self.script)
        self.app.router.add_get("/play.css", self.style)
        self.app.router.add_get("/favicon.svg", self.favicon)
        self.app.router.add_get("/favicon.ico", self.favicon)  # what browsers ask for without a <link>
        self.app.router.add_get("/ws", self.websocket)
        self.app.on_shutdown.append(self._close_all)

    def refusal(self, headers):
        """Why a request is refused, or None: its Host must name this server (against DNS
        rebinding) and its Origin, when there is one, must be this server's page."""
        host = headers.get("Host", "")
        name = _hostname(host)
        if name not in self.hosts and not (self.any_ip and _is_ip(name)):
            return f"Host {host!r} does not name this server"
        origin = headers.get("Origin")
        if origin is not None and origin.lower() != f"http://{host}".lower():
            return f"Origin {origin!r} is not this server's page (cross-site requests are refused)"
        return None

    def _asset(self, name):
        return resources.files("fastca").joinpath("assets", "play", name).read_bytes()

    async def index(self, request):
        from aiohttp import web

        return web.Response(body=self._asset("index.html"), content_type="text/html")

    async def script(self, request):
        from aiohttp import web

        return web.Response(body=self._asset("play.js"), content_type="application/javascript")

    async def style(self, request):
        from aiohttp import web

        return web.Response(body=self._asset("play.css"), content_type="text/css")

    async def favicon(self, request):
        from aiohttp import web

        return web.Response(body=self._asset("favicon.svg"), content_type="image/svg+xml",
                            headers={"Cache-Control": "max-age=86400"})

    async def _close_all(self, app):
        for ws in list(self.sessions):
            await ws.close()

    def _reserve(self, ws):
        """Take a slot and the cells of a new tab's world; the reason when the server is full."""
        if len(self.sessions) >= self.max_sessions:
            return (f"the server already runs {len(self.sessions)} sessions (at most {self.max_sessions}, "
                    f"fastca play --max-sessions): close another tab and reload")
        cells = self.size * self.size
        if sum(self.sessions.values()) + cells > self.max_cells:
            return (f"a {self.size}x{self.size} world does not fit in the cells the other tabs leave (at most "
                    f"{self.max_cells} in all, fastca play --max-cells): close another tab or make its world smaller")
        self.sessions[ws] = cells
        return None

    def _fits(self, ws):
        """Whether a world of a given side fits in the cells the other tabs leave to tab ``ws``."""
        others = sum(self.sessions.values()) - self.sessions[ws]
        return lambda side: others + side * side <= self.max_cells

    def _resize(self, ws, size):
        """Take the cells of a ``size`` world in place of the tab's current one, or BadMessage."""
        others = sum(self.sessions.values()) - self.sessions[ws]
        if others + size * size > self.max_cells:
            raise BadMessage(f"a {size}x{size} world does not fit in the cells the other tabs leave "
                             f"({self.max_cells - others} of {self.max_cells}, fastca play --max-cells)")
        self.sessions[ws] = size * size

    async def _refuse(self, ws, reason):
        from aiohttp import WSCloseCode

        log.warning("session refused: %s", reason)
        await ws.send_json({"type": "refused", "message": reason})
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"refused")
        return ws

    async def websocket(self, request):
        from aiohttp import WSMsgType, web

        # the cap on message size is generous so that an oversized message gets an error frame
        # (parse_message) instead of closing the tab
        ws = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE, heartbeat=30, compress=False)  # local: CPU over bytes
        await ws.prepare(request)
        reason = self._reserve(ws)  # before any world is built: a refused tab costs nothing
        if reason:
            return await self._refuse(ws, reason)
        worker = _Worker()
        try:
            session = await worker.call(Session, self.size, self.model_name, self.backend)
        except Exception as exc:  # e.g. an unusable backend: tell the page, keep the server
            worker.close()
            self.sessions.pop(ws, None)
            return await self._refuse(ws, str(exc))
        log.info("session opened (%d open)", len(self.sessions))
        state = {"acked": True, "closed": False, "frames": 0, "steps": 0, "t0": time.perf_counter(), "worker": worker}
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
            worker.close()
            self.sessions.pop(ws, None)  # frees the tab's slot and cells
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
                if msg["type"] == "size":
                    self._resize(ws, world_size(msg.get("size")))  # before the world is built
                elif msg["type"] == "preset":  # a preset may change the world's size: the same check
                    size = preset_size(msg.get("name"), session.side, fits=self._fits(ws))
                    self._resize(ws, size)
                    msg = {**msg, "size": size}
                elif msg["type"] == "model":  # a model of another kind starts its own world: the same check
                    size = model_size(msg.get("name"), session.kind, session.side, fits=self._fits(ws))
                    self._resize(ws, size)
                    msg = {**msg, "size": size}
                try:
                    reply = await state["worker"].call(session.apply, msg)
                finally:
                    self.sessions[ws] = session.side**2  # what the tab really holds
            if reply:
                await ws.send_json(reply)
        except BadMessage as exc:
            await self._error(ws, str(exc))
        except Exception as exc:  # a bug in one session must not take the server down
            log.exception("session error")
            await self._error(ws, f"{type(exc).__name__}: {exc}")

    async def _run(self, ws, session, state):
        """Step the world and send frames (only when the page has drawn the last one)."""
        call = state["worker"].call
        while not state["closed"] and not ws.closed:
            t0 = time.perf_counter()
            async with session.lock:
                steps = session.pending_steps if session.paused else session.steps_per_frame
                session.pending_steps = 0
                if steps:
                    await call(lambda: session.sim.run(steps, progress=False))
                    state["steps"] += steps
                    session.dirty = True
                frame = None
                if state["acked"] and session.dirty:
                    frame = await call(session.frame)
                    session.dirty = False
            if frame is not None:
                state["acked"] = False
                state["frames"] += 1
                await ws.send_bytes(frame)
                elapsed = time.perf_counter() - state["t0"]
                if elapsed > 1.0:
                    await ws.send_json({"type": "stats", "steps_per_s": state["steps"] / elapsed,
                                        "frames_per_s": state["frames"] / elapsed, "backend": session.sim.backend,
                                        "model": session.model_name, "kind": session.kind})
                    state.update(steps=0, frames=0, t0=time.perf_counter())
            await asyncio.sleep(max(0.0, 1 / MAX_FPS - (time.perf_counter() - t0)))


def start_in_thread(size=None, model="fastca-mnist", backend="auto", host="127.0.0.1", port=0, **limits):
    """Run a server in a daemon thread (tests, benchmarks, notebooks), on ``port`` (0: a free one;
    a port again after ``stop()`` is a restarted server, as the page sees it).

    ``limits``: ``max_sessions``, ``max_cells`` (see PlayServer). Returns (url, stop):
    ``stop()`` closes the sessions and the port.
    """
    import socket

    from aiohttp import web

    if not port:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    warn_if_exposed(host, port)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(PlayServer(size=size, model=model, backend=backend, host=host, **limits).app)
    ready = threading.Event()
    failed = []

    def run():
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, host, port).start())
        except OSError as exc:  # e.g. the port is taken: said by start_in_thread, not lost in this thread
            failed.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True, name="fastca-play")
    thread.start()
    if not ready.wait(120) or failed:
        raise RunError(f"the play server did not start{f': {failed[0]}' if failed else ''}")

    def stop():
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    netloc = f"[{host}]" if ":" in host else host
    return f"http://{netloc}:{port}/", stop


def serve(host="127.0.0.1", port=8765, size=None, model="fastca-mnist", backend="auto", open_browser=False,
          max_sessions=MAX_SESSIONS, max_cells=MAX_CELLS):
    """Run the server until Ctrl-C: a clean shutdown (sessions closed, port released) and one
    line, whenever Ctrl-C comes (also before the server is up, or a second time while it stops)."""
    try:
        from aiohttp import web
        from aiohttp.web_runner import GracefulExit

        server = PlayServer(size=size, model=model, backend=backend, host=host, max_sessions=max_sessions,
                            max_cells=max_cells)
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
        warn_if_exposed(host, port)
        print(f"fastca play: {url}  (Ctrl-C to stop)", flush=True)
        if open_browser:
            webbrowser.open(url)
        try:
            web.run_app(server.app, host=host, port=port, print=None, handle_signals=True)
        except GracefulExit:  # a second Ctrl-C while the server shuts down
            pass
    except KeyboardInterrupt:
        pass
    print("fastca play: stopped", flush=True)


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=os.environ.get("FASTCA_LOG", "INFO"))
    serve()
