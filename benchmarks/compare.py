"""Print cell-steps/s of each backend on a registry workload and the speed ratio, measured in one run.

    python -m benchmarks.compare --size 1024 --steps 20 [--workload mnist-pretrained]
"""

import argparse
import platform
import time

import numba
import numpy as np
import torch

import fastca
from benchmarks import registry


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="world side in cells (default 1024)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--backends", default=",".join(registry.backends("all")),
                        help="comma-separated backends (default: every backend usable here)")
    parser.add_argument("--workload", default=registry.MNIST_PRETRAINED, choices=registry.workloads(),
                        help=f"a registry workload (default {registry.MNIST_PRETRAINED})")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per backend; the best is kept")
    args = parser.parse_args(argv)
    names = args.backends.split(",")
    print(f"machine: {platform.processor() or platform.machine()}, {numba.config.NUMBA_NUM_THREADS} threads; "
          f"fastca {fastca.__version__}, numba {numba.__version__}, torch {torch.__version__}")
    frac, updates = registry.updated_cells(args.workload, args.size, args.steps)
    description = registry.WORKLOADS[args.workload].description
    print(f"world {args.size}x{args.size} ({frac:.1%} alive), {args.steps} steps, seed 0")
    rates, results = {}, {}
    for name in names:
        run = registry.setup(args.workload, name, args.size, args.steps)
        best = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = run()
            wall = time.perf_counter() - t0
            best = wall if best is None else min(best, wall)
        rates[name] = args.size * args.size * args.steps / best
        results[name] = res
        gflops = updates * description.flop_per_cell / best / 1e9
        print(f"{name:>10}: {rates[name]:.3e} cell-steps/s ({best:.2f} s; {gflops:.1f} GFLOP/s on updated cells)")
    a = names[0]
    for b in names[1:]:
        print(f"ratio {a}/{b}: {rates[a] / rates[b]:.2f}x  ({agreement(results[a], results[b])})")


def agreement(a, b):
    """How far two backends' results agree: identical final labels (a model with a readout), else close cells."""
    if a.labels is not None:
        return f"final labels identical on {(a.labels == b.labels).mean():.4%} of cells"
    close = np.isclose(a.state, b.state, rtol=1e-3, atol=1e-3).all(-1).mean()
    return f"final states within 1e-3 on {close:.4%} of cells"


if __name__ == "__main__":
    main()
