"""``fastca simulate`` for models that grow from seeds (no static gray channel, e.g. growing-gecko): seeds
planted on a world (:mod:`fastca.seeds`), the run drawn as RGBA on white, alive cells per step."""

import os
from dataclasses import dataclass

import numpy as np

from .options import MAX_SIDE, CLIError, _check_out, require_mnist, resolve_backend
from .outputs import CHECKPOINTS, _Animations, _check_memory, _check_size, _write_json

OUTPUTS = ("final.png", "metrics.json")  #: written next to the animations
DEFAULT_SPACING = 40  #: a grown gecko's side: creatures this far apart barely touch


def add_arguments(p):
    """simulate's options of a run on seeds."""
    g = p.add_argument_group("seeds (models that grow from seeds, e.g. --model growing-gecko)")
    g.add_argument("--seeds", type=int, metavar="N",
                   help="plant N seeds at random cells of --world H W (drawn from --seed), at least --spacing apart")
    g.add_argument("--seeds-image", metavar="PNG",
                   help="a seed under each marked pixel of a picture stretched over --world H W (default: the "
                        "picture's size): its opaque pixels if it has transparent ones, else its dark ones")
    g.add_argument("--spacing", type=int, default=DEFAULT_SPACING,
                   help=f"--seeds: cells between two seeds at least, along a row or a column (default {DEFAULT_SPACING})")


@dataclass
class Grown:
    """What a run on seeds measured: per step (0..steps) the alive cells and whether the state is finite."""

    alive: list
    finite: list
    frame_steps: list
    last_frame: np.ndarray
    backend: str


def run(args, model):
    """Plant the seeds, run, write the animations, final.png and metrics.json."""
    from fastca import viz

    channels = model.description.channels
    _check_options(args, model)
    picture = None if args.seeds_image is None else _picture_size(args.seeds_image)
    h, w = args.world if args.world is not None else picture
    _check_size(h, w, args, channels)
    if picture is not None:
        _check_memory(*picture, 1)  # the picture decoded (RGBA, its levels, the mask): less than a cell's share
    resolve_backend(args.backend)
    positions, what = _positions(args, h, w)
    animations = _Animations(args.out, args.scale, args.fps, (h, w), args.steps, others=OUTPUTS, channels=channels)
    _check_out(args.out, animations.names)
    print(f"fastca simulate: {what}; model {model.name!r}; {args.steps} steps; backend {args.backend}, seed {args.seed}")
    for note in animations.notes:
        print(note)
    with animations:
        grown = _grow(model, h, w, positions, args, animations.add)
    _print_alive(grown, args.steps)
    final = os.path.join(args.out, "final.png")
    viz.save_png(viz.upscale(grown.last_frame, args.scale), final)
    metrics = {"model": model.name, "input": what, "world": [h, w], "seeds": len(positions),
               "spacing": args.spacing if args.seeds is not None else None, "steps": args.steps, "seed": args.seed,
               "backend": grown.backend, "alive_cells": grown.alive, "finite": grown.finite,
               "frame_steps": grown.frame_steps, "seed_positions": positions.tolist()}
    written = animations.paths + [final, _write_json(os.path.join(args.out, "metrics.json"), metrics)]
    print("wrote: " + ", ".join(written))
    return 0


def _check_options(args, model):
    """The options of a run on seeds, before anything is read or written."""
    grows = f"model {model.name!r} grows from seeds (it has no static gray channel)"
    mnist_only = [f"--{k.replace('_', '-')}" for k in ("image", "mnist_index", "label", "events")
                  if getattr(args, k) is not None]
    if mnist_only:
        require_mnist(model, " and ".join(mnist_only))  # refused, naming what the model lacks
    if (args.seeds is None) == (args.seeds_image is None):
        raise CLIError(f"{grows}: give one of --seeds N (with --world H W) or --seeds-image PNG")
    if model.description.channels < 4:
        raise CLIError(f"model {model.name!r} has {model.description.channels} channels; simulate draws channels "
                       "0..3 as RGBA (premultiplied, as the Growing NCA's) and needs 4 at least")
    if args.seeds is not None:
        if args.world is None:
            raise CLIError("--seeds N plants seeds on a world: give --world H W")
        if args.seeds < 1 or args.spacing < 1:
            raise CLIError(f"--seeds and --spacing must be >= 1, got {args.seeds} and {args.spacing}")
    if args.world is not None and not all(1 <= side <= MAX_SIDE for side in args.world):
        raise CLIError(f"--world H W must be in 1..{MAX_SIDE}, got {args.world[0]} {args.world[1]}")


def _picture_size(path):
    """The seeds picture's (height, width), from its header: nothing decoded yet."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise CLIError(f"seeds picture not found: {path}")
    try:
        with Image.open(path) as im:
            h, w = im.height, im.width
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise CLIError(f"not a readable picture: {path} ({type(exc).__name__})") from None
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise CLIError(f"seeds picture {path} is {w}x{h}; at most {MAX_SIDE}x{MAX_SIDE} pixels")
    return h, w


def _positions(args, h, w):
    """(the seeds' (N, 2) cells, the banner's words for them); too many seeds is refused, saying how many fit."""
    from fastca import seeds
    from fastca.errors import InputError

    if args.seeds is None:
        positions = seeds.positions_from_image(args.seeds_image, h, w)  # its InputError names the picture
        return positions, f"{_count(len(positions))} from {args.seeds_image} on a {h}x{w} world"
    try:
        positions = seeds.random_positions(h, w, args.seeds, args.spacing, args.seed)
    except InputError as exc:
        raise CLIError(f"--seeds {args.seeds}: {exc}; plant fewer, lower --spacing or enlarge --world") from None
    return positions, f"{_count(args.seeds)} at random cells of a {h}x{w} world, at least {args.spacing} apart"


def _count(n):
    return f"{n} seed{'' if n == 1 else 's'}"


def _alive_cells(description, state):
    """Cells whose alive channel is above the threshold (alpha > 0.1 for the Growing NCA; a model
    without an alive rule: every cell). NaN cells are not alive."""
    if description.alive.rule == "none":
        return int(state.shape[0] * state.shape[1])
    return int(np.count_nonzero(state[..., description.alive.channel] > np.float32(description.alive.threshold)))


def _finite(state):
    """Whether every value is finite: one float64 sum (finite float32 values cannot overflow it; any
    NaN or inf makes it NaN or inf), without a mask the size of the state."""
    return bool(np.isfinite(state.sum(dtype=np.float64)))


def _grow(model, h, w, positions, args, on_frame):
    """Run the planted world ``args.steps`` steps, measuring every step and drawing a frame at step 0,
    every ``args.frame_every`` steps and at the end; returns a :class:`Grown`."""
    import sys
    import warnings

    from fastca import growing, seeds
    from fastca.simulation import Simulation

    # a model that diverges is measured (``finite`` per step), not stopped: the run's files say so
    sim = Simulation(model, seeds.plant_seeds(model.description, h, w, positions), backend=args.backend,
                     seed=args.seed, input="state", on_nonfinite="warn")
    grown = Grown([], [], [], None, sim.backend)
    bar = None
    if h * w * args.steps > 2e8 and sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=args.steps, desc=f"fastca[{sim.backend}]", unit="step")

    def take(t):
        view = sim.view()[0]
        grown.alive.append(_alive_cells(model.description, view))
        grown.finite.append(_finite(view))
        if t % args.frame_every == 0 or t == args.steps:
            grown.last_frame = growing.to_rgb(view)
            on_frame(grown.last_frame)
            grown.frame_steps.append(t)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # Simulation's warning: recorded in ``finite`` instead
            take(0)
            for t in range(1, args.steps + 1):
                sim.run(1, progress=False)
                take(t)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return grown


def _print_alive(grown, steps):
    print(f"{'step':>6} {'alive cells':>12}")
    for step in sorted({c for c in (0, *CHECKPOINTS, steps) if c <= steps}):
        print(f"{step:>6} {grown.alive[step]:>12}")
    if not all(grown.finite):
        print(f"the state became non-finite (NaN or inf) at step {grown.finite.index(False)}: the model grows "
              "without bound there (see 'finite' in metrics.json)")
