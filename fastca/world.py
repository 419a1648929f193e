"""MNIST worlds with events: per-digit metrics and scripted changes between steps.

A world is one canvas of tiled digits (:func:`fastca.data.mnist_world`). Its digits are
the connected components (8-neighbourhood) of alive cells; each gets metrics per
step: accuracy (share of its cells labelled with its digit), agreement (all its cells
give one label) and steps to consensus (the first step from which it agrees on its
own digit until the end of the run).

Events change the world between steps; a list of dicts (or a JSON file of one):

- ``{"step": 50, "type": "erase", "center": [y, x], "radius": 6}``: kill a disk of cells;
- ``{"step": 60, "type": "stroke", "points": [[y0, x0], [y1, x1], ...], "width": 2}``:
  draw a white stroke (new cells start with zero hidden state);
- ``{"step": 100, "type": "replace", "tile": [row, col]}``: replace one digit by another
  test digit (a mutation restricted to that tile);
- ``{"step": 100, "type": "replace_all"}``: mutate every digit (the article's experiment).

``center``, ``points`` and ``tile`` may be left out: they are then drawn at random
from the run's seed (``"count": n`` repeats the event at n random places), so a run
is reproducible from its seed and event list.

An event's work is proportional to the cells it touches, not to the world: an erase
visits the disk's bounding square, a stroke the cells near each of its segments (row by
row), a replace its 28x28 tile; only ``replace_all`` visits the whole world. Before
step 1, :func:`validate_events` adds these areas up (times the counts, plus a fixed
cost per repeat, :func:`event_cost`) and refuses events that would visit more than
``max(EVENT_WORK_FLOOR, world cells x steps)`` cells: events never cost much more
than the run they are part of.
"""

import dataclasses
import json
import math
import os
import sys

import numpy as np

from . import _checks, data, spec
from .backends import host
from .simulation import Simulation
from .weights import open_regular_file
from .errors import InputError

EVENT_TYPES = ("erase", "stroke", "replace", "replace_all")


@dataclasses.dataclass
class World:
    """A canvas of tiled digits. gray: (H, W) uint8; targets: (H, W) int16 digit of each cell;
    index: (rows, cols) image index per 28x28 tile; images/labels: the digit pool used."""

    gray: np.ndarray
    targets: np.ndarray
    index: np.ndarray
    images: np.ndarray
    labels: np.ndarray

    @classmethod
    def from_digits(cls, images, labels, height, width, seed=None):
        """Tile ``images`` into a height x width world (random order when ``seed`` is given)."""
        gray, targets, index = data.mnist_world(images, labels, height, width, seed=seed)
        return cls(gray, targets, index, np.asarray(images), np.asarray(labels))


@dataclasses.dataclass
class WorldRun:
    """Result of :func:`run_world`.

    state: (H, W, 20) float32 final state. frames: list of (H, W, 3) uint8 pictures (only
    the last one when the run streamed them to ``on_frame``).
    accuracy: (steps,) per-cell accuracy %; digit_agreement: (steps,) % of digits whose
    cells all agree; digits: one dict per digit of the final world (component id,
    digit, cells, accuracy, agreement, steps_to_consensus); events: the applied events
    with their random choices filled in.
    """

    state: np.ndarray
    frames: list
    frame_steps: list
    accuracy: np.ndarray
    digit_agreement: np.ndarray
    digits: list
    events: list


def components(alive):
    """Label the 8-connected components of an (H, W) bool map: (labels int32 (H, W), count)."""
    out = np.zeros(alive.shape, np.int32)
    n = host.components(np.ascontiguousarray(alive, dtype=np.bool_), out)
    return out, n


def digit_metrics(labels, comp, n_comp, targets):
    """Per component: (digit (n,), cells (n,), correct (n,), agree (n,) bool).

    labels: (H, W) int8 label map (-1 dead); comp: (H, W) component ids (0 = none). A
    component's digit is the most common target among its cells, -1 when none of its cells
    has a target (it then has no correct cells and is left out of accuracies).
    """
    ids = comp.ravel()
    keep = ids > 0
    ids, lab, tgt = ids[keep] - 1, labels.ravel()[keep].astype(np.int64), targets.ravel()[keep].astype(np.int64)
    votes = np.zeros((n_comp, spec.N_CLASSES), np.int64)
    has = tgt >= 0
    np.add.at(votes, (ids[has], tgt[has]), 1)
    digit = np.where(votes.sum(1) > 0, votes.argmax(1), -1)
    cells = np.bincount(ids, minlength=n_comp).astype(np.int64)
    correct = np.bincount(ids, weights=(lab == digit[ids]), minlength=n_comp).astype(np.int64)
    per_label = np.zeros((n_comp, spec.N_CLASSES), np.int64)
    np.add.at(per_label, (ids, np.clip(lab, 0, 9)), 1)
    agree = per_label.max(1) == cells
    return digit, cells, correct, agree


MAX_EVENT_COUNT = 10_000  #: "count" above this is refused (each repeat edits the world)
MAX_STROKE_POINTS = 10_000  #: points of one stroke
MAX_EVENTS_FILE = 64 << 20  #: bytes of an events JSON file
EVENT_WORK_FLOOR = 10**9  #: cells that events may always visit in total, however small the run
EVENT_OVERHEAD = 4096  #: each repeat of an event is counted as this many cells on top of its area (its fixed cost)
EDIT_BAND = 16  #: a stroke reaches the simulation as windows of at most this many rows


def _read_events_file(path):
    """The text of an events file: a regular file of at most MAX_EVENTS_FILE bytes of UTF-8."""
    try:
        with open_regular_file(path, MAX_EVENTS_FILE) as f:
            data = f.read()
    except ValueError as exc:  # a folder, device or pipe, or too large: refused before reading
        raise InputError(f"events: {exc}") from None
    except OSError as exc:
        raise InputError(f"events: cannot read {path!r} ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"events: {path!r} is not UTF-8 text") from None


def load_events(source):
    """Events from a list of dicts, a JSON string, or a path to a JSON file; checked for form.

    :func:`validate_events` checks them against a world (positions, tiles, steps).
    """
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if isinstance(source, os.PathLike) or os.path.lexists(text):
            text = _read_events_file(text)
        elif not text.lstrip().startswith(("[", "{")):
            raise InputError(f"events: no such file {text!r} (and not a JSON list either)")
        try:
            source = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"events: not valid JSON ({exc})") from exc
        except RecursionError:
            raise InputError("events: JSON nested too deeply") from None
    if not isinstance(source, list):
        raise InputError("events must be a list of objects")
    events = []
    for i, ev in enumerate(source):
        if not isinstance(ev, dict) or ev.get("type") not in EVENT_TYPES:
            raise InputError(f"event {i}: needs a 'type' among {', '.join(EVENT_TYPES)}, got {ev!r}")
        step = ev.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise InputError(f"event {i}: 'step' must be an int >= 0, got {step!r}")
        count = ev.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_EVENT_COUNT:
            raise InputError(f"event {i}: 'count' must be an int in 1..{MAX_EVENT_COUNT}, got {count!r}")
        events.append(dict(ev, index=i))
    return sorted(events, key=lambda e: e["step"])


def _number(i, ev, key, lo, hi):
    value = ev[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (lo <= value <= hi):
        raise InputError(f"event {i} ({ev['type']}): {key!r} must be a number in [{lo}, {hi}], got {value!r}")


def _point(i, ev, key, value, h, w):
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not (0 <= value[0] < h and 0 <= value[1] < w)):
        raise InputError(f"event {i} ({ev['type']}): {key} must be [row, column] inside the {h}x{w} world, got {value!r}")


def validate_events(events, world, steps):
    """Check every event against the world and the run length before the first step.

    Raises ValueError naming the event (its index in the list) and what is wrong.
    """
    h, w = world.gray.shape
    rows, cols = world.index.shape
    for ev in events:
        i = ev.get("index", "?")
        if ev["step"] >= steps:
            raise InputError(f"event {i} ({ev['type']}): step {ev['step']} is not before the end of the run ({steps})")
        if ev["type"] == "erase":
            if "center" in ev:
                _point(i, ev, "center", ev["center"], h, w)
            if "radius" in ev:
                _number(i, ev, "radius", 0, max(h, w))
        elif ev["type"] == "stroke":
            if "points" in ev:
                pts = ev["points"]
                if not isinstance(pts, list) or not 1 <= len(pts) <= MAX_STROKE_POINTS:
                    raise InputError(f"event {i} (stroke): 'points' must be a list of 1..{MAX_STROKE_POINTS} "
                                     "[row, column]")
                for p in pts:
                    _point(i, ev, "points", p, h, w)
            if "width" in ev:
                _number(i, ev, "width", 0, max(h, w))
        elif ev["type"] == "replace" and "tile" in ev:
            tile = ev["tile"]
            if (not isinstance(tile, (list, tuple)) or len(tile) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in tile)
                    or not (0 <= tile[0] < rows and 0 <= tile[1] < cols)):
                raise InputError(f"event {i} (replace): 'tile' must be [row, col] in the {rows}x{cols} tile grid, "
                                 f"got {tile!r}")
    costs = [event_cost(ev, h, w) for ev in events]
    total, limit = sum(costs), max(EVENT_WORK_FLOOR, h * w * steps)
    if total > limit:
        worst = max(range(len(events)), key=costs.__getitem__)
        ev = events[worst]
        raise InputError(f"events would visit about {total:.3g} cells (the areas they touch times their counts), "
                         f"more than this run allows ({limit:.3g}: the {h}x{w} world's cells x {steps} steps, at least "
                         f"{EVENT_WORK_FLOOR:.0e}); the costliest is event {ev.get('index', worst)} ({ev['type']}, "
                         f"count {ev.get('count', 1)}, about {costs[worst]:.3g} cells): use fewer or smaller events")


def event_cost(event, h, w):
    """About how many cells one event (all its repeats) visits in an h x w world, plus EVENT_OVERHEAD a
    repeat: an erase its disk's bounding square, a stroke the cells near its segments and the windows
    it sends (at most), a replace its tile, a replace_all the world. Events left to chance count at
    their worst (a stroke across the world's diagonal). The event is expected to be valid
    (:func:`validate_events`)."""
    kind = event["type"]
    if kind == "erase":
        side = 2 * (math.floor(float(event.get("radius", 6))) + 1) + 1
        each = 2 * min(side, h) * min(side, w)  # the square, and the window sent
    elif kind == "stroke":
        visited, windows = _stroke(event.get("points") or [[0, 0], [h - 1, w - 1]], float(event.get("width", 2)), h, w)
        each = visited + sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in windows)
    elif kind == "replace":
        each = data.DIGIT * data.DIGIT
    else:  # replace_all: a new world, its conversion and a mutation of the whole state (several visits a cell)
        each = 4 * h * w
    return int(event.get("count", 1)) * (int(each) + EVENT_OVERHEAD)


def _stroke(points, width, h, w, gray=None):
    """(cells visited, windows) of a stroke: with ``gray``, drawn into it (see :func:`stroke_into`);
    without, the candidate cells and the windows that could at most be sent (for :func:`event_cost`)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    half = width / 2
    row0 = max(0, math.floor(pts[:, 0].min() - half - 1))
    row1 = min(h, math.ceil(pts[:, 0].max() + half + 1) + 1)
    if row0 >= row1:
        return 0, []
    lo = np.full(row1 - row0, w, np.int64)
    hi = np.full(row1 - row0, -1, np.int64)
    canvas = gray if gray is not None else np.zeros((1, 1), np.uint8)
    visited = host.stroke_rows(canvas, h, w, pts, half, (width / 2) ** 2, row0, lo, hi, gray is not None)
    rows = np.flatnonzero(hi >= 0)
    windows = []
    for band in np.split(rows, np.flatnonzero(np.diff(rows // EDIT_BAND)) + 1) if len(rows) else ():
        windows.append((row0 + int(band[0]), row0 + int(band[-1]) + 1, int(lo[band].min()), int(hi[band].max()) + 1))
    return int(visited), windows


def stroke_into(gray, points, width):
    """Draw a white stroke into ``gray`` (H, W) uint8, in place: the cells within width/2 of the
    polyline ``points`` ((n, 2) row, column) become 255, exactly as
    ``gray = max(gray, 255 * stroke_mask(H, W, points, width))``, visiting only the cells near its
    segments. Returns (cells evaluated, windows): the bounding boxes (y0, y1, x0, x1) of the changed
    cells, one per band of at most EDIT_BAND rows."""
    return _stroke(points, width, *gray.shape, gray=gray)


def apply_event(sim, world, event, rng, *, in_place=False):
    """Apply one event to a running :class:`fastca.Simulation` of ``world`` (in place, on its
    backend); returns the resolved events (random choices filled in).

    The new gray is computed on the host world and only the changed windows are sent to the
    simulation (``Simulation.edit("set")``: the article's mutation on that window). Each repeat
    visits only the cells it touches (see the module's docstring). ``world.gray`` is replaced by an
    edited copy, or edited in place with ``in_place=True`` (what :func:`run_world` does with its
    own copy: no whole-world copy per event).
    """
    h, w = world.gray.shape
    kind = event["type"]
    resolved = []
    count = int(event.get("count", 1))
    if not in_place and kind != "replace_all":
        world.gray = world.gray.copy()
    for _ in range(count):
        ev = {k: v for k, v in event.items() if k != "index"}
        ev["count"] = 1
        if kind == "replace_all":
            pick = rng.integers(0, len(world.images), world.index.shape)
            gray, targets, _ = data.mnist_world(world.images[pick.ravel()], world.labels[pick.ravel()], h, w)
            sim.mutate(gray)
            world.gray, world.targets, world.index = gray, targets, pick
            resolved.append(ev)
            continue
        gray = world.gray
        windows = []
        if kind == "replace":
            row, col = ev.get("tile") or (int(rng.integers(world.index.shape[0])), int(rng.integers(world.index.shape[1])))
            if not (0 <= row < world.index.shape[0] and 0 <= col < world.index.shape[1]):
                raise InputError(f"replace: tile {[row, col]} outside the {world.index.shape} tile grid")
            new = int(rng.integers(len(world.images)))
            ev["tile"], ev["image"] = [int(row), int(col)], new
            ys, xs = slice(row * data.DIGIT, (row + 1) * data.DIGIT), slice(col * data.DIGIT, (col + 1) * data.DIGIT)
            old = gray[ys, xs].copy()
            gray[ys, xs] = world.images[new][: old.shape[0], : old.shape[1]]
            windows = [_changed_box(gray[ys, xs] != old, ys.start, xs.start)]
            world.targets[ys, xs] = world.labels[new]
            world.index[row, col] = new
        elif kind == "erase":
            cy, cx = ev.get("center") or (int(rng.integers(h)), int(rng.integers(w)))
            radius = float(ev.get("radius", 6))
            ev["center"], ev["radius"] = [int(cy), int(cx)], radius
            k = math.floor(radius) + 1  # the disk's bounding square, with a cell to spare
            y0, y1, x0, x1 = max(0, cy - k), min(h, cy + k + 1), max(0, cx - k), min(w, cx + k + 1)
            yy, xx = np.ogrid[y0:y1, x0:x1]
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            window = gray[y0:y1, x0:x1]
            windows = [_changed_box(disk & (window != 0), y0, x0)]
            window[disk] = 0
        else:  # stroke
            pts = ev.get("points") or rng.integers(0, [h, w], (2, 2)).tolist()
            width = float(ev.get("width", 2))
            ev["points"], ev["width"] = [[int(p[0]), int(p[1])] for p in pts], width
            windows = stroke_into(gray, ev["points"], width)[1]
        for box in windows:
            if box is not None:
                y0, y1, x0, x1 = box
                sim.edit("set", gray=gray[y0:y1, x0:x1], at=(y0, x0))
        resolved.append(ev)
    return resolved


def _changed_box(changed, y0, x0):
    """Bounding box (y0, y1, x0, x1) of the True cells of a window at (y0, x0), or None."""
    ys, xs = np.nonzero(changed)
    if not len(ys):
        return None
    return y0 + int(ys.min()), y0 + int(ys.max()) + 1, x0 + int(xs.min()), x0 + int(xs.max()) + 1


def run_world(model, world, steps, *, events=(), seed=0, backend="auto", frame_every=5, progress=None,
              frame_fn=None, threads=None, on_frame=None, fire_rate=None, noise=None, storage="float32",
              on_nonfinite="raise"):
    """Run a world for ``steps`` steps, applying ``events`` between steps and collecting frames.

    One resident :class:`fastca.Simulation` runs the whole world; events edit it in place
    and each step brings back only the (H, W) int8 label map for the per-digit metrics
    (the state itself only for frames). frame_fn(state (H, W, 20)) -> picture, default
    :func:`fastca.viz.colorize`; a frame is taken at step 0, every ``frame_every`` steps,
    and at the end. Events at step s are applied after step s (before step s+1).
    ``on_frame(picture)`` receives each frame as it is taken (e.g. an
    :class:`fastca.viz.AnimationWriter`'s ``add``); then the run keeps only the last frame, so
    memory does not grow with the number of frames. Run options (``backend``, ``seed``,
    ``fire_rate``, ``noise``, ``storage``, ``threads``, ``on_nonfinite``) as :class:`fastca.RunOptions`.
    Returns a :class:`WorldRun`.
    """
    from .viz import colorize

    steps = _checks.check_steps(steps)
    if not isinstance(frame_every, int) or frame_every < 1:
        raise InputError(f"frame_every must be an int >= 1, got {frame_every!r}")
    frame_fn = frame_fn or colorize
    events = load_events(list(events)) if not isinstance(events, (str, os.PathLike)) else load_events(events)
    validate_events(events, world, steps)
    rng = np.random.default_rng([seed, 0xE7E27])  # a stream of its own: not the world layout's draws
    # the run's own copy, edited in place by the events (the caller's world is left as it was)
    world = dataclasses.replace(world, gray=world.gray.copy(), targets=world.targets.copy(), index=world.index.copy())
    sim = Simulation(model, world.gray, backend=backend, seed=seed, threads=threads, fire_rate=fire_rate, noise=noise,
                     storage=storage, on_nonfinite=on_nonfinite)
    frames, frame_steps = [], []

    def take(t):
        frame = frame_fn(sim.view())
        if on_frame is not None:
            on_frame(frame)
            frames.clear()
        frames.append(frame)
        frame_steps.append(t)

    take(0)
    acc = np.full(steps, np.nan)
    agr = np.full(steps, np.nan)
    # steps to consensus without a per-step history (memory does not grow with the steps): per
    # component, the last step (0-based) at which it did not agree on its own digit (-1: none), and
    # whether it agreed at the last step
    applied = []
    comp, n_comp = components(data.alive_mask(world.gray, model.alive_threshold))
    last_bad, last_ok = np.full(n_comp, -1), np.zeros(n_comp, bool)
    bar = None
    if progress or (progress is None and world.gray.size * steps > 2e8 and sys.stderr.isatty()):
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"fastca[{sim.backend}]", unit="step")
    first = [e for e in events if e["step"] == 0]
    for ev in first:
        applied += apply_event(sim, world, ev, rng, in_place=True)
    if first:  # components once per step with events, not once per event
        comp, n_comp = components(data.alive_mask(world.gray, model.alive_threshold))
        last_bad, last_ok = np.full(n_comp, -1), np.zeros(n_comp, bool)
    for t in range(1, steps + 1):
        sim.run(1, progress=False)
        digit, cells, correct, agree = digit_metrics(sim.labels(), comp, n_comp, world.targets)
        scored = digit >= 0
        acc[t - 1] = 100.0 * correct[scored].sum() / cells[scored].sum() if scored.any() else float("nan")
        agr[t - 1] = 100.0 * agree.mean() if n_comp else float("nan")
        last_ok = agree & (correct == cells)
        last_bad[~last_ok] = t - 1
        if t % frame_every == 0 or t == steps:
            take(t)
        if bar is not None:
            bar.update(1)
        now = [e for e in events if e["step"] == t and t < steps]
        for ev in now:
            applied += apply_event(sim, world, ev, rng, in_place=True)
        if now:  # components changed: restart every clock (as if no step so far agreed)
            comp, n_comp = components(data.alive_mask(world.gray, model.alive_threshold))
            last_bad, last_ok = np.full(n_comp, t - 1), np.zeros(n_comp, bool)
    if bar is not None:
        bar.close()
    digit, cells, correct, agree = digit_metrics(sim.labels(), comp, n_comp, world.targets)
    digits = []
    for k in range(n_comp):
        settled = None
        if steps and last_ok[k]:
            settled = int(last_bad[k] + 2) if last_bad[k] >= 0 else 1
        digits.append(dict(component=k + 1, digit=int(digit[k]) if digit[k] >= 0 else None, cells=int(cells[k]),
                           accuracy=100.0 * correct[k] / max(cells[k], 1) if digit[k] >= 0 else None,
                           agreement=bool(agree[k]), steps_to_consensus=settled))
    return WorldRun(sim.state(), frames, frame_steps, acc, agr, digits, applied)
