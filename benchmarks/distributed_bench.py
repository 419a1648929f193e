"""Overhead of fastca.distributed against fastca.simulate on the same cores, and peak memory per worker.

    python -m benchmarks.distributed_bench --size 8192 --steps 16 --halos 1,4,16 --chunks 2048,4096 [--out F.json]

For each (chunk size, halo, layout): "1x2" is one Dask worker process with two threads (one
kernel at a time, each using both cores), "2x1" two worker processes with one thread each
(Numba limited to one thread per task). The world is built chunk by chunk on the workers,
the state persisted between rounds; the time counts the whole run (graph building,
scheduling, halo exchange, compute) after a warm-up that compiles the kernels on every
worker. The baseline is fastca.simulate on the same world in this process. Every run's final
state is checked equal (bit for bit) to the baseline's on a few windows.
"""

import argparse
import json
import resource
import time

import numpy as np

import fastca
from benchmarks.machine import metadata
from fastca import distributed as fd


def run(model, size, steps, chunk, halo, layout, ref_windows, windows, memory_gib=20):
    import distributed

    workers, threads = (1, 2) if layout == "1x2" else (2, 1)
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=threads, dashboard_address=None,
                                  memory_limit=f"{memory_gib // workers}GiB") as cluster, \
            distributed.Client(cluster) as client:
        gray, _, _ = fd.mnist_world(size, size, (chunk, chunk), seed=0)
        warm, _, _ = fd.mnist_world(2 * halo + 64, 2 * halo + 64, (halo + 32, halo + 32), seed=0)
        fd.simulate(model, warm, halo, halo=halo, threads=1 if threads == 1 else None).compute()  # compile everywhere
        t0 = time.perf_counter()
        state = fd.simulate(model, gray, steps, halo=halo, threads=1 if threads == 1 else None)
        distributed.wait(state)
        seconds = time.perf_counter() - t0
        same = all(np.array_equal(state[y:y + 64, x:x + 64].compute(), ref) for (y, x), ref in zip(windows, ref_windows))
        rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        del state
    return {"chunk": chunk, "halo": halo, "layout": layout, "seconds": seconds, "identical": same,
            "peak_rss_per_worker_gib": round(max(rss.values()) / 2**30, 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--halos", default="1,4,16")
    parser.add_argument("--chunks", default="2048,4096")
    parser.add_argument("--layouts", default="1x2,2x1")
    parser.add_argument("--memory-gib", type=int, default=20, help="memory for all Dask workers together")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    model = fastca.pretrained()
    gray, _, _ = fd.mnist_world(args.size, args.size, (args.size, args.size), seed=0)
    gray = gray.compute()
    fastca.simulate(model, gray[:64, :64], 2)
    t0 = time.perf_counter()
    ref = fastca.simulate(model, gray, args.steps, progress=False).state
    base = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    windows = [tuple(rng.integers(0, args.size - 64, 2)) for _ in range(4)]
    ref_windows = [ref[y:y + 64, x:x + 64].copy() for y, x in windows]
    del ref
    print(json.dumps({"baseline_seconds": base, "size": args.size, "steps": args.steps}), flush=True)
    rows = []
    for chunk in (int(c) for c in args.chunks.split(",")):
        for halo in (int(h) for h in args.halos.split(",")):
            for layout in args.layouts.split(","):
                try:
                    row = run(model, args.size, args.steps, chunk, halo, layout, ref_windows, windows, args.memory_gib)
                    row["overhead"] = row["seconds"] / base - 1
                except Exception as exc:  # a configuration that does not fit is a result
                    row = {"chunk": chunk, "halo": halo, "layout": layout, "error": f"{type(exc).__name__}: {exc}"[:300]}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "w") as f:
                        json.dump({"meta": metadata(), "baseline_seconds": base, "size": args.size,
                                   "steps": args.steps, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
