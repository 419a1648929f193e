"""Command line: ``fastca demo`` (also ``python -m fastca demo``)."""

import argparse
import sys
import time


def _demo(args):
    import numpy as np

    import fastca

    model = fastca.pretrained()
    images, labels = fastca.data.sample_digits()
    images, labels = images[: args.digits], labels[: args.digits]
    half = args.steps // 2
    print(f"fastca demo: model {model.name!r}, {len(images)} embedded MNIST test digits, "
          f"{args.steps} steps (mutation at step {half}), backend {args.backend}, seed {args.seed}")
    t0 = time.perf_counter()
    first = fastca.simulate(model, images, half, labels=labels, backend=args.backend, seed=args.seed, progress=True)
    perm = np.random.default_rng(args.seed).permutation(len(images))
    mutated = fastca.mutate(first.state, images[perm])
    second = fastca.simulate(model, mutated, args.steps - half, labels=labels[perm], backend=args.backend,
                             seed=args.seed, start_step=half, progress=True)
    acc = np.concatenate([first.accuracy, second.accuracy])
    agr = np.concatenate([first.agreement, second.agreement])
    print(f"{'step':>6} {'accuracy %':>11} {'agreement %':>12}")
    for step in sorted({1, 10, 25, 50, half, half + 1, half + 25, half + 50, args.steps} - {0}):
        if step <= args.steps:
            print(f"{step:>6} {acc[step - 1]:>11.1f} {agr[step - 1]:>12.1f}")
    print(f"done in {time.perf_counter() - t0:.1f} s (compilation included on the first run)")
    return 0


def main(argv=None):
    """Entry point of the ``fastca`` console script."""
    parser = argparse.ArgumentParser(prog="fastca", description="Fast neural cellular automata (self-classifying MNIST).")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the embedded model on embedded MNIST digits, offline")
    demo.add_argument("--steps", type=int, default=200, help="total steps (mutation halfway), default 200")
    demo.add_argument("--digits", type=int, default=64, help="how many embedded test digits (1..256), default 64")
    demo.add_argument("--backend", default="auto", help="auto, numba-cpu or torch")
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            if not 1 <= args.digits <= 256:
                raise ValueError(f"--digits must be in 1..256, got {args.digits}")
            if args.steps < 2:
                raise ValueError(f"--steps must be >= 2, got {args.steps}")
            return _demo(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"fastca: error: {exc}", file=sys.stderr)
        return 2
    return 0
