"""``fastca simulate``: a run on an image, an MNIST digit or an MNIST world (the MNIST models), or on
seeds planted on a world (models that grow from seeds); writes an animation and metrics."""

import numpy as np

from .seeded import add_arguments as add_seed_arguments
from .seeded import run as run_seeded
from .options import (MAX_SIDE, CLIError, _check_out, _digits, _model, add_run_options, require_mnist,
                      resolve_backend, user_input)
from .outputs import _Animations, _check_size, _load_image, _metrics_json, _print_checkpoints, _write_outputs


def add_parser(subparsers):
    sim = subparsers.add_parser(
        "simulate", help="run on an image, an MNIST digit or an MNIST world, or grow seeds; write animation + metrics")
    add_run_options(sim, 100, "fastca-out")
    sim.add_argument("--image", help="PNG/JPEG/TIFF of any size, 8- or 16-bit or float (converted to gray, scaled by "
                                     "its own depth or range; light backgrounds inverted)")
    sim.add_argument("--label", type=int, default=None, help="the digit drawn in --image, for accuracy")
    sim.add_argument("--mnist-index", type=int, help="index of an MNIST test digit")
    sim.add_argument("--world", type=int, nargs=2, metavar=("H", "W"),
                     help="a canvas of test digits (MNIST models), or the world seeds are planted on")
    sim.add_argument("--events", help="JSON event list or file (see fastca.world)")
    add_seed_arguments(sim)


def run(args):
    if args.steps < 1:
        raise CLIError(f"--steps must be >= 1, got {args.steps}")
    model = _model(args.model)
    if model.description.alive.rule != "static":
        return run_seeded(args, model)  # no static gray channel: the model grows from seeds
    if args.seeds is not None or args.seeds_image is not None:
        raise CLIError(f"--seeds and --seeds-image plant seeds for models that grow (no static gray channel); "
                       f"model {model.name!r} reads a picture: give --image, --mnist-index or --world")
    return _run_mnist(args, model)


def _run_mnist(args, model):
    """An image, an MNIST test digit or a world of test digits, with per-digit metrics."""
    from fastca.world import World, load_events, run_world, validate_events

    sources = [args.image is not None, args.mnist_index is not None, args.world is not None]
    if sum(sources) != 1:
        raise CLIError("give exactly one of --image FILE, --mnist-index N, --world H W")
    require_mnist(model, "--image" if args.image is not None else "--mnist-index" if sources[1] else "--world")
    if args.label is not None and (args.image is None or not 0 <= args.label <= 9):
        raise CLIError(f"--label is the digit 0..9 drawn in --image, got {args.label}"
                       + ("" if args.image is not None else " without --image"))
    if args.world is not None:
        h, w = args.world
        if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
            raise CLIError(f"--world H W must be in 1..{MAX_SIDE}, got {h} {w}")
        _check_size(h, w, args)
    if args.mnist_index is not None:
        images, labels = _digits()
        if not 0 <= args.mnist_index < len(images):
            raise CLIError(f"--mnist-index must be in 0..{len(images) - 1}, got {args.mnist_index}")
        _check_size(28, 28, args)
    resolve_backend(args.backend)  # an unknown or unusable backend fails before any output
    with user_input():
        events = load_events(args.events) if args.events else []
    if args.image is not None:  # memory and frame size from the header, before the pixels are decoded
        gray = _load_image(args.image, check=lambda h, w: _check_size(h, w, args))
    if args.image is not None:
        targets = np.full(gray.shape, -1 if args.label is None else args.label, np.int16)  # -1: no target
        world = World(gray, targets, np.zeros((1, 1), np.int64), *_digits())
        what = f"image {args.image} ({gray.shape[0]}x{gray.shape[1]})"
    elif args.mnist_index is not None:
        world = World.from_digits(images[args.mnist_index: args.mnist_index + 1],
                                  labels[args.mnist_index: args.mnist_index + 1], 28, 28)
        world.images, world.labels = images, labels
        what = f"MNIST test digit {args.mnist_index} (label {labels[args.mnist_index]})"
    else:
        images, labels = _digits()
        world = World.from_digits(images, labels, h, w, seed=args.seed)
        what = f"MNIST world {h}x{w}"
    with user_input():
        validate_events(events, world, args.steps)  # every event checked (and its cost bounded) before step 1
    animations = _Animations(args.out, args.scale, args.fps, world.gray.shape, args.steps)
    _check_out(args.out, animations.names)
    print(f"fastca simulate: {what}; model {model.name!r}; {args.steps} steps; backend {args.backend}, seed {args.seed}")
    for note in animations.notes:
        print(note)
    with animations:
        run = run_world(model, world, args.steps, events=events, seed=args.seed, backend=args.backend,
                        frame_every=args.frame_every, progress=None, on_frame=animations.add)
    _print_checkpoints(run, args.steps)
    written = animations.paths + _write_outputs(args.out, run, args.scale,
                                                _metrics_json(run, args, {"model": model.name, "input": what}))
    print("wrote: " + ", ".join(written))
    return 0
