"""A huge MNIST world on the CPU, with a progress bar: time, throughput, peak memory, accuracy.

    python -m benchmarks.big_world --size 10000 --steps 200 [--out DIR]
"""

import argparse
import json
import os
import time

import fastca
from benchmarks.machine import metadata
from benchmarks.memory import _status
from benchmarks.registry import mnist_world


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default=os.environ.get("OUT"))
    parser.add_argument("--storage", default="float32", choices=["float32", "float16"])
    args = parser.parse_args(argv)
    model = fastca.pretrained()
    gray, targets = mnist_world(args.size)
    fastca.simulate(model, gray[:64, :64], 1)
    before = _status("VmRSS")
    t0 = time.perf_counter()
    res = fastca.simulate(model, gray, args.steps, labels=targets, progress=True, storage=args.storage)
    wall = time.perf_counter() - t0
    row = {**metadata(), "size": args.size, "cells": args.size**2, "steps": args.steps, "seconds": wall,
           "kernel_seconds": res.seconds, "cell_steps_per_s": args.size**2 * args.steps / wall,
           "storage": args.storage, "state_bytes": res.state.nbytes, "rss_before": before, "peak_rss": _status("VmHWM"),
           "accuracy_last": float(res.accuracy[-1]), "accuracy_top": float(res.accuracy.max()),
           "alive_fraction": float(fastca.data.alive_mask(gray).mean())}
    row["growth_x_state"] = (row["peak_rss"] - before) / row["state_bytes"]
    print(json.dumps(row), flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"big_world_{args.size}_{args.storage}.json"), "w") as f:
            json.dump(row, f, indent=1)


if __name__ == "__main__":
    main()
