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
"""

import dataclasses
import json
import os
import sys

import numba
import numpy as np

from . import _checks, data, spec
from .simulation import Simulation, stroke_mask

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


@numba.njit(cache=True)
def _components(alive, out):
    """8-connected components of ``alive`` (H, W) bool into ``out`` (H, W) int32 (0 = none)."""
    h, w = alive.shape
    stack = np.empty((h * w, 2), np.int64)
    n = 0
    for y0 in range(h):
        for x0 in range(w):
            if alive[y0, x0] and out[y0, x0] == 0:
                n += 1
                out[y0, x0] = n
                top = 0
                stack[0, 0], stack[0, 1] = y0, x0
                top = 1
                while top > 0:
                    top -= 1
                    y, x = stack[top, 0], stack[top, 1]
                    for dy in range(-1, 2):
                        for dx in range(-1, 2):
                            yy, xx = y + dy, x + dx
                            if 0 <= yy < h and 0 <= xx < w and alive[yy, xx] and out[yy, xx] == 0:
                                out[yy, xx] = n
                                stack[top, 0], stack[top, 1] = yy, xx
                                top += 1
    return n


def components(alive):
    """Label the 8-connected components of an (H, W) bool map: (labels int32 (H, W), count)."""
    out = np.zeros(alive.shape, np.int32)
    n = _components(np.ascontiguousarray(alive, dtype=np.bool_), out)
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


def load_events(source):
    """Events from a list of dicts, a JSON string, or a path to a JSON file; checked for form.

    :func:`validate_events` checks them against a world (positions, tiles, steps).
    """
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        if os.path.exists(text):
            with open(text, encoding="utf-8") as f:
                text = f.read()
        elif not text.lstrip().startswith(("[", "{")):
            raise ValueError(f"events: no such file {text!r} (and not a JSON list either)")
        try:
            source = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"events: not valid JSON ({exc})") from exc
    if not isinstance(source, list):
        raise ValueError("events must be a list of objects")
    events = []
    for i, ev in enumerate(source):
        if not isinstance(ev, dict) or ev.get("type") not in EVENT_TYPES:
            raise ValueError(f"event {i}: needs a 'type' among {', '.join(EVENT_TYPES)}, got {ev!r}")
        step = ev.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"event {i}: 'step' must be an int >= 0, got {step!r}")
        count = ev.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_EVENT_COUNT:
            raise ValueError(f"event {i}: 'count' must be an int in 1..{MAX_EVENT_COUNT}, got {count!r}")
        events.append(dict(ev, index=i))
    return sorted(events, key=lambda e: e["step"])


def _number(i, ev, key, lo, hi):
    value = ev[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (lo <= value <= hi):
        raise ValueError(f"event {i} ({ev['type']}): {key!r} must be a number in [{lo}, {hi}], got {value!r}")


def _point(i, ev, key, value, h, w):
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not (0 <= value[0] < h and 0 <= value[1] < w)):
        raise ValueError(f"event {i} ({ev['type']}): {key} must be [row, column] inside the {h}x{w} world, got {value!r}")


def validate_events(events, world, steps):
    """Check every event against the world and the run length before the first step.

    Raises ValueError naming the event (its index in the list) and what is wrong.
    """
    h, w = world.gray.shape
    rows, cols = world.index.shape
    for ev in events:
        i = ev.get("index", "?")
        if ev["step"] >= steps:
            raise ValueError(f"event {i} ({ev['type']}): step {ev['step']} is not before the end of the run ({steps})")
        if ev["type"] == "erase":
            if "center" in ev:
                _point(i, ev, "center", ev["center"], h, w)
            if "radius" in ev:
                _number(i, ev, "radius", 0, max(h, w))
        elif ev["type"] == "stroke":
            if "points" in ev:
                pts = ev["points"]
                if not isinstance(pts, list) or not 1 <= len(pts) <= 10_000:
                    raise ValueError(f"event {i} (stroke): 'points' must be a list of 1..10000 [row, column]")
                for p in pts:
                    _point(i, ev, "points", p, h, w)
            if "width" in ev:
                _number(i, ev, "width", 0, max(h, w))
        elif ev["type"] == "replace" and "tile" in ev:
            tile = ev["tile"]
            if (not isinstance(tile, (list, tuple)) or len(tile) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in tile)
                    or not (0 <= tile[0] < rows and 0 <= tile[1] < cols)):
                raise ValueError(f"event {i} (replace): 'tile' must be [row, col] in the {rows}x{cols} tile grid, "
                                 f"got {tile!r}")


def apply_event(sim, world, event, rng):
    """Apply one event to a running :class:`fastca.Simulation` of ``world`` (in place, on its
    backend); returns the resolved events (random choices filled in).

    The new gray is computed on the host world and only the changed window is sent to the
    simulation (``Simulation.edit("set")``: the article's mutation on that window).
    """
    h, w = world.gray.shape
    kind = event["type"]
    resolved = []
    count = int(event.get("count", 1))
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
        gray = world.gray.copy()
        if kind == "replace":
            row, col = ev.get("tile") or (int(rng.integers(world.index.shape[0])), int(rng.integers(world.index.shape[1])))
            if not (0 <= row < world.index.shape[0] and 0 <= col < world.index.shape[1]):
                raise ValueError(f"replace: tile {[row, col]} outside the {world.index.shape} tile grid")
            new = int(rng.integers(len(world.images)))
            ev["tile"], ev["image"] = [int(row), int(col)], new
            ys, xs = slice(row * data.DIGIT, (row + 1) * data.DIGIT), slice(col * data.DIGIT, (col + 1) * data.DIGIT)
            gray[ys, xs] = world.images[new][: gray[ys, xs].shape[0], : gray[ys, xs].shape[1]]
            world.targets[ys, xs] = world.labels[new]
            world.index[row, col] = new
        elif kind == "erase":
            cy, cx = ev.get("center") or (int(rng.integers(h)), int(rng.integers(w)))
            radius = float(ev.get("radius", 6))
            ev["center"], ev["radius"] = [int(cy), int(cx)], radius
            yy, xx = np.ogrid[:h, :w]
            gray[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 0
        else:  # stroke
            pts = ev.get("points") or rng.integers(0, [h, w], (2, 2)).tolist()
            width = float(ev.get("width", 2))
            ev["points"], ev["width"] = [[int(p[0]), int(p[1])] for p in pts], width
            gray = np.maximum(gray, np.where(stroke_mask(h, w, ev["points"], width), 255, 0).astype(np.uint8))
        changed = np.nonzero(gray != world.gray)
        if len(changed[0]):
            y0, y1, x0, x1 = changed[0].min(), changed[0].max() + 1, changed[1].min(), changed[1].max() + 1
            sim.edit("set", gray=gray[y0:y1, x0:x1], at=(int(y0), int(x0)))
        world.gray = gray
        resolved.append(ev)
    return resolved


def run_world(model, world, steps, *, events=(), seed=0, backend="auto", frame_every=5, progress=None,
              frame_fn=None, threads=None, on_frame=None):
    """Run a world for ``steps`` steps, applying ``events`` between steps and collecting frames.

    One resident :class:`fastca.Simulation` runs the whole world; events edit it in place
    and each step brings back only the (H, W) int8 label map for the per-digit metrics
    (the state itself only for frames). frame_fn(state (H, W, 20)) -> picture, default
    :func:`fastca.viz.colorize`; a frame is taken at step 0, every ``frame_every`` steps,
    and at the end. Events at step s are applied after step s (before step s+1).
    ``on_frame(picture)`` receives each frame as it is taken (e.g. an
    :class:`fastca.viz.AnimationWriter`'s ``add``); then the run keeps only the last frame, so
    memory does not grow with the number of frames. Returns a :class:`WorldRun`.
    """
    from .viz import colorize

    steps = _checks.check_steps(steps)
    if not isinstance(frame_every, int) or frame_every < 1:
        raise ValueError(f"frame_every must be an int >= 1, got {frame_every!r}")
    frame_fn = frame_fn or colorize
    events = load_events(list(events)) if not isinstance(events, (str, os.PathLike)) else load_events(events)
    validate_events(events, world, steps)
    rng = np.random.default_rng([seed, 0xE7E27])  # a stream of its own: not the world layout's draws
    world = dataclasses.replace(world, targets=world.targets.copy(), index=world.index.copy())
    sim = Simulation(model, world.gray, backend=backend, seed=seed, threads=threads)
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
    history = []  # per step: agree-on-own-digit flags of the components
    applied = []
    comp, n_comp = components(data.alive_mask(world.gray, model.alive_threshold))
    bar = None
    if progress or (progress is None and world.gray.size * steps > 2e8 and sys.stderr.isatty()):
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"fastca[{sim.backend}]", unit="step")
    for ev in [e for e in events if e["step"] == 0]:
        applied += apply_event(sim, world, ev, rng)
        comp, n_comp = components(data.alive_mask(world.gray, model.alive_threshold))
    for t in range(1, steps + 1):
        sim.run(1, progress=False)
        digit, cells, correct, agree = digit_metrics(sim.labels(), comp, n_comp, world.targets)
        scored = digit >= 0
        acc[t - 1] = 100.0 * correct[scored].sum() / cells[scored].sum() if scored.any() else float("nan")
        agr[t - 1] = 100.0 * agree.mean() if n_comp else float("nan")
        history.append(agree & (correct == cells))
        if t % frame_every == 0 or t == steps:
            take(t)
        if bar is not None:
            bar.update(1)
        for ev in [e for e in events if e["step"] == t and t < steps]:
            applied += apply_event(sim, world, ev, rng)
            comp, n_comp = components(data.alive_mask(world.gray, model.alive_threshold))
            history = [np.zeros(n_comp, bool) for _ in history]  # components changed: restart the clock
    if bar is not None:
        bar.close()
    digit, cells, correct, agree = digit_metrics(sim.labels(), comp, n_comp, world.targets)
    hist = np.array(history) if history else np.zeros((0, n_comp), bool)
    digits = []
    for k in range(n_comp):
        settled = None
        if len(hist) and hist[-1, k]:
            not_ok = np.nonzero(~hist[:, k])[0]
            settled = int(not_ok[-1] + 2) if len(not_ok) else 1
        digits.append(dict(component=k + 1, digit=int(digit[k]) if digit[k] >= 0 else None, cells=int(cells[k]),
                           accuracy=100.0 * correct[k] / max(cells[k], 1) if digit[k] >= 0 else None,
                           agreement=bool(agree[k]), steps_to_consensus=settled))
    return WorldRun(sim.state(), frames, frame_steps, acc, agr, digits, applied)
