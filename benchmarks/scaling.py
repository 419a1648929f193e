"""Scaling study: throughput and memory against grid size, threads, backend and world kind.

    python -m benchmarks.scaling --out benchmarks/scaling_results [--max-size 8192] [--slow-max 2048]

Each point runs in a fresh process (benchmarks/memory.py) so its memory high-water mark
is its own. Worlds: "dense" (a digit in every tile), "sparse" (one tile in four),
"blank" (no alive cell). Writes scaling.json / scaling.csv (with hardware and software
metadata) and PNG plots: throughput vs cells, memory vs cells, speedup vs torch.
"""

import argparse
import csv
import json
import os
import subprocess
import sys

from benchmarks import registry
from benchmarks.machine import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def point(backend, size, world, threads, steps, limit_gib):
    cmd = [sys.executable, "-m", "benchmarks.memory", "--backend", backend, "--size", str(size), "--world", world,
           "--threads", str(threads), "--steps", str(steps)]
    if limit_gib:
        cmd += ["--limit-gib", str(limit_gib)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"backend": backend, "size": size, "world": world, "threads": threads,
                "error": f"exit {p.returncode}: {(p.stderr.strip().splitlines() or ['?'])[-1][:200]}"}
    return json.loads(lines[-1])


def plots(rows, out, fast, reference):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    series = sorted({(r["backend"], r["world"], r["threads"]) for r in ok})
    for backend, world, threads in series:
        pts = sorted((r["size"] ** 2, r) for r in ok if (r["backend"], r["world"], r["threads"]) == (backend, world, threads))
        cells = [c for c, _ in pts]
        style = "-" if backend == fast else "--"
        label = f"{backend} {world} {threads}t"
        axes[0].plot(cells, [r["cell_steps_per_s"] for _, r in pts], style, marker="o", label=label)
        axes[1].plot(cells, [r["peak_rss"] - r["rss_before"] for _, r in pts], style, marker="o", label=label)
    cells = sorted({r["size"] ** 2 for r in ok})
    axes[1].plot(cells, [c * 80 for c in cells], "k:", label="state (20 float32/cell)")
    for world in sorted({r["world"] for r in ok}):
        for threads in sorted({r["threads"] for r in ok}):
            pairs = []
            for r in ok:
                if (r["backend"], r["world"], r["threads"]) == (fast, world, threads):
                    t = [q for q in ok if (q["backend"], q["world"], q["threads"], q["size"]) ==
                         (reference, world, threads, r["size"])]
                    if t:
                        pairs.append((r["size"] ** 2, r["cell_steps_per_s"] / t[0]["cell_steps_per_s"]))
            if pairs:
                pairs.sort()
                axes[2].plot(*zip(*pairs), marker="o", label=f"{world} {threads}t")
    titles = ("throughput (cell-steps/s)", "resident memory growth (bytes)", f"{fast} speedup vs {reference}")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("cells")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.savefig(os.path.join(out, "scaling.png"), dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/scaling_results")
    parser.add_argument("--min-size", type=int, default=256)
    parser.add_argument("--max-size", type=int, default=8192)
    parser.add_argument("--backends", default=",".join(registry.backends("all")),
                        help="backends to time, fastest first (default: every backend usable here)")
    parser.add_argument("--slow-max", type=int, default=2048,
                        help="largest side timed on the backends after the first (the slow references)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--worlds", default="dense,sparse,blank")
    parser.add_argument("--limit-gib", type=float, default=21.0)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    meta = metadata()
    sizes = []
    s = args.min_size
    while s <= args.max_size:
        sizes.append(s)
        s *= 2
    names = args.backends.split(",")
    rows = []
    for size in sizes:
        for world in args.worlds.split(","):
            for threads in (1, 2):
                for i, backend in enumerate(names):
                    if i > 0 and size > args.slow_max:
                        continue
                    steps = args.steps if i == 0 else max(1, min(args.steps, 2))
                    row = point(backend, size, world, threads, steps, args.limit_gib)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    with open(os.path.join(args.out, "scaling.json"), "w") as f:
        json.dump({"meta": meta, "command": " ".join(["python -m benchmarks.scaling"] + (argv or sys.argv[1:])),
                   "rows": rows}, f, indent=1)
    keys = sorted({k for r in rows for k in r})
    with open(os.path.join(args.out, "scaling.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    plots(rows, args.out, names[0], names[-1])
    print(f"wrote {args.out}/scaling.json, scaling.csv, scaling.png")


if __name__ == "__main__":
    main()
