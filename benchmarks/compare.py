"""Print cell-steps/s of each backend on an MNIST world and the speed ratio, measured in one run.

    python -m benchmarks.compare --size 1024 --steps 20
"""

import argparse
import platform
import time

import numba
import torch

import fastca
from benchmarks.registry import setup_simulate, updated_cells


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="world side in cells (default 1024)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--backends", default=",".join(fastca.available_backends()),
                        help="comma-separated backends (default: every backend usable here)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per backend; the best is kept")
    args = parser.parse_args(argv)
    names = args.backends.split(",")
    print(f"machine: {platform.processor() or platform.machine()}, {numba.config.NUMBA_NUM_THREADS} threads; "
          f"fastca {fastca.__version__}, numba {numba.__version__}, torch {torch.__version__}")
    frac, updates = updated_cells(args.size, args.steps)
    print(f"world {args.size}x{args.size} ({frac:.1%} alive), {args.steps} steps, seed 0")
    rates, states = {}, {}
    for name in names:
        run = setup_simulate(name, args.size, args.steps)
        best = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = run()
            wall = time.perf_counter() - t0
            best = wall if best is None else min(best, wall)
        rates[name] = args.size * args.size * args.steps / best
        states[name] = res.state
        gflops = updates * fastca.spec.FLOP_PER_CELL / best / 1e9
        print(f"{name:>10}: {rates[name]:.3e} cell-steps/s ({best:.2f} s; {gflops:.1f} GFLOP/s on updated cells)")
    a = names[0]
    for b in names[1:]:
        same = (fastca.label_map(states[a][None]) == fastca.label_map(states[b][None])).mean()
        print(f"ratio {a}/{b}: {rates[a] / rates[b]:.2f}x  (final labels identical on {same:.4%} of cells)")


if __name__ == "__main__":
    main()
