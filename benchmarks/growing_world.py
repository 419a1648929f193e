"""Many creatures grown from seeds on one large world with the shipped Growing NCA (numba-cpu).

    python -m benchmarks.growing_world --size 10000 --spacing 100 --steps 96 [--storage float16] [--out DIR]

Plants one seed (:func:`fastca.growing.seed_state`'s cell: channels 3.. = 1) every ``spacing``
cells on a size x size world, runs ``steps`` steps of ``fastca.pretrained("growing-gecko")``
and reports the throughput (cell-steps/s over the whole world), the process's peak resident
memory against the state's size, and how many creatures grew: a creature is counted when its
``spacing``^2 tile holds at least 90% as many cells with alpha > 0.1 as the target has.
"""

import argparse
import json
import os
import resource
import time

import numpy as np

import fastca
from benchmarks.machine import metadata


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--spacing", type=int, default=100)
    parser.add_argument("--steps", type=int, default=96)
    parser.add_argument("--storage", default="float16", choices=("float32", "float16"))
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args(argv)
    from fastca import growing

    net = fastca.pretrained("growing-gecko")
    target_cells = int((np.asarray(growing.gecko_target())[..., 3] > 0.1).sum())
    n, s = args.size, args.spacing
    dtype = np.float16 if args.storage == "float16" else np.float32
    state = np.zeros((1, n, n, 16), dtype)
    centres = np.arange(s // 2, n - s // 2 + 1, s)
    for y in centres:
        state[0, y, centres, 3:] = 1
    seeds = len(centres) ** 2
    fastca.Simulation(net, state[:, :s, :s].copy(), backend="numba-cpu", input="state",
                      storage=args.storage).run(2)  # compile / load the cache
    t0 = time.perf_counter()
    sim = fastca.Simulation(net, state, backend="numba-cpu", input="state", storage=args.storage)
    del state
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim.run(args.steps, progress=False)
    seconds = time.perf_counter() - t0
    final = sim.view()[0]
    grown = 0
    alive_cells = 0
    for y in centres:
        for x in centres:
            live = int((final[y - s // 2:y + s // 2, x - s // 2:x + s // 2, 3] > 0.1).sum())
            alive_cells += live
            grown += live >= 0.9 * target_cells
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    row = {"size": n, "seeds": seeds, "steps": args.steps, "storage": args.storage, "seconds": seconds,
           "build_seconds": build, "cell_steps_per_s": n * n * args.steps / seconds,
           "state_bytes": n * n * 16 * np.dtype(dtype).itemsize, "peak_rss_bytes": peak,
           "creatures_with_90pct_of_the_target_cells": grown, "cells_with_alpha_above_0.1": alive_cells,
           "target_cells": target_cells, "meta": metadata()}
    print(json.dumps(row))
    print(f"{n}x{n} world ({args.storage}), {seeds} seeds, {args.steps} steps on numba-cpu: {seconds:.1f} s, "
          f"{row['cell_steps_per_s']:.3e} cell-steps/s; peak RSS {peak / 2**30:.2f} GiB for a "
          f"{row['state_bytes'] / 2**30:.2f} GiB state; {grown} of {seeds} creatures grown to >= 90% of the "
          f"target's live cells; {row['meta']['cpu']}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"growing_world_{n}.json"), "w") as f:
            json.dump(row, f, indent=1)


if __name__ == "__main__":
    main()
