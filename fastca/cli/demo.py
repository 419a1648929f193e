"""``fastca demo``: the embedded model on an MNIST world of embedded digits, offline."""

import sys
import time

from .options import CLIError, _check_out, _model, add_run_options, require_mnist, resolve_backend
from .outputs import _Animations, _check_size, _metrics_json, _print_checkpoints, _write_outputs


def add_parser(subparsers):
    demo = subparsers.add_parser("demo", help="run the embedded model on an MNIST world of embedded digits, offline")
    add_run_options(demo, 200, "fastca-out")
    demo.add_argument("--rows", type=int, default=6, help="digit rows of the world (default 6)")
    demo.add_argument("--cols", type=int, default=10, help="digit columns of the world (default 10)")
    demo.set_defaults(steps=None)  # per model: 200 (MNIST), 400 (growing)


def _is_growing(model):
    """Whether ``model`` grows as the Growing NCA does: RGBA channels and the max-pool alive rule."""
    return model.description.alive.rule == "maxpool" and model.description.channels >= 4


def _run_growing(args, model):
    from fastca import growing

    steps = 400 if args.steps is None else args.steps
    if steps < 2:
        raise CLIError(f"--steps must be >= 2, got {steps}")
    backend = resolve_backend(args.backend).name
    _check_out(args.out, ("animation.gif", "strip.png", "curve.png", "metrics.json"))
    print(f"fastca demo: model {model.name!r}; one creature grown from one cell on a 72x72 grid, a disc cut out "
          f"at step {steps // 2}, {steps} steps; backend {backend}, seed {args.seed}")
    t0 = time.perf_counter()
    paths, curve, m = growing.demo(model, args.out, steps=steps, backend=backend, seed=args.seed,
                                   scale=args.scale, fps=args.fps,
                                   frame_every=args.frame_every, progress=print)
    back = m["steps_back_to_0.01"]
    print(f"MSE per RGBA value against the target: {m['mse_before_cut']:.4f} before the cut, {m['mse_after_cut']:.4f} "
          f"after it, {m['mse_end']:.4f} at step {steps}"
          + (f"; back to <= 0.01 {back} steps after the cut" if back else ""))
    print(f"simulated in {time.perf_counter() - t0:.1f} s; wrote: " + ", ".join(paths))
    return 0


def run(args):
    import fastca
    from fastca.world import World, run_world

    model = _model(args.model)
    if _is_growing(model):
        return _run_growing(args, model)
    require_mnist(model, "fastca demo of a model that does not grow (RGBA channels and the max-pool alive rule)")
    args.steps = 200 if args.steps is None else args.steps
    if not 1 <= args.rows <= 16 or not 1 <= args.cols <= 16:
        raise CLIError(f"--rows and --cols must be in 1..16, got {args.rows} and {args.cols}")
    if args.steps < 2:
        raise CLIError(f"--steps must be >= 2, got {args.steps}")
    resolve_backend(args.backend)
    _check_size(28 * args.rows, 28 * args.cols, args)
    animations = _Animations(args.out, args.scale, args.fps, (28 * args.rows, 28 * args.cols), args.steps)
    _check_out(args.out, animations.names)
    images, labels = fastca.data.sample_digits()
    world = World.from_digits(images, labels, 28 * args.rows, 28 * args.cols, seed=args.seed)
    half = args.steps // 2
    print(f"fastca demo: model {model.name!r}; a {args.rows}x{args.cols}-digit MNIST world "
          f"({28 * args.rows}x{28 * args.cols} cells) of embedded test digits; {args.steps} steps, every digit "
          f"replaced at step {half}; backend {args.backend}, seed {args.seed}")
    for note in animations.notes:
        print(note)
    t0 = time.perf_counter()
    with animations:
        run = run_world(model, world, args.steps, events=[{"step": half, "type": "replace_all"}], seed=args.seed,
                        backend=args.backend, frame_every=args.frame_every, progress=sys.stderr.isatty(),
                        on_frame=animations.add)
    elapsed = time.perf_counter() - t0
    _print_checkpoints(run, args.steps, (half, half + 1, half + 25, half + 50))
    written = animations.paths + _write_outputs(
        args.out, run, args.scale, _metrics_json(run, args, {"model": model.name, "mutation_step": half,
                                                             "world": [28 * args.rows, 28 * args.cols]}))
    print(f"simulated in {elapsed:.1f} s; wrote: " + ", ".join(written))
    return 0
