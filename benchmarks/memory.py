"""Resident memory of one simulate() call, measured in a fresh process.

    python -m benchmarks.memory --backend numba-cpu --size 4096 --steps 3

Prints one JSON line: the process's resident memory before the state exists (after
imports, the world's gray image and a tiny warm-up run), its high-water mark after
the run, and their difference as a multiple of the state (20 float32 per cell); and
the throughput of the step loop (``seconds``; ``wall_seconds`` adds building the state).
``--limit-gib`` caps the address space so that a backend that needs more fails with an
error instead of waking the kernel's OOM killer.
"""

import argparse
import json
import resource
import time


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="numba-cpu")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--world", default="dense", choices=["dense", "sparse", "blank"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--limit-gib", type=float, default=None)
    parser.add_argument("--storage", default="float32", choices=["float32", "float16"])
    args = parser.parse_args(argv)
    import fastca
    from benchmarks.registry import world_of_kind

    model = fastca.pretrained()
    gray = world_of_kind(args.world, args.size)
    fastca.simulate(model, gray[:32, :32], 1, backend=args.backend)  # warm-up: compile, load libraries
    if args.limit_gib:
        cap = int(args.limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    state_bytes = args.size * args.size * 20 * 4  # the float32 state, also the yardstick for float16
    before = _status("VmRSS")
    row = {"backend": args.backend, "size": args.size, "world": args.world, "steps": args.steps,
           "threads": args.threads, "storage": args.storage, "state_bytes": state_bytes, "rss_before": before}
    try:
        t0 = time.perf_counter()
        res = fastca.simulate(model, gray, args.steps, backend=args.backend, threads=args.threads,
                              storage=args.storage)
        row["wall_seconds"] = time.perf_counter() - t0  # with the state's creation and first touch
        row["seconds"] = res.seconds  # the step loop alone
        row["cell_steps_per_s"] = args.size * args.size * args.steps / row["seconds"]
        del res
        row["peak_rss"] = _status("VmHWM")
        row["growth_x_state"] = (row["peak_rss"] - before) / state_bytes
    except (MemoryError, RuntimeError) as exc:
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
