"""Seconds per step of this checkout's numba-cpu kernel on the canonical 1024^2 MNIST world, and a hash of
the final state: run it alternately in two checkouts (A/B) to compare kernels' speed and bits.

    python -m benchmarks.step_time [--size 1024] [--steps 20] [--repeats 3]

Prints ``SEC <best seconds per step> HASH <sha256 prefix of the final state>``; compile and the first
step are excluded from the timing.
"""

import argparse
import hashlib
import time

import fastca
from benchmarks.registry import mnist_world


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    gray = mnist_world(args.size)[0]
    model = fastca.pretrained()
    fastca.Simulation(model, gray[:64, :64], backend="numba-cpu").run(2)  # compile / load the cache
    best, sim = float("inf"), None
    for _ in range(args.repeats):
        sim = fastca.Simulation(model, gray, backend="numba-cpu", seed=0)
        sim.run(1)
        t0 = time.perf_counter()
        sim.run(args.steps)
        best = min(best, (time.perf_counter() - t0) / args.steps)
    print("SEC", best, "HASH", hashlib.sha256(sim.state().tobytes()).hexdigest()[:16])


if __name__ == "__main__":
    main()
