"""Any model description on the CPU: numba-cpu against dense torch baselines, and the FMA peak.

    python -m benchmarks.description_bench --model growing --size 1024 --steps 10 [--out DIR]

``--model``: a workload of benchmarks/registry.py (one per description of
:data:`fastca.model.KNOWN`, random weights: speed does not depend on their values) or a model
file (:func:`fastca.nca.load_model`). The world
(:func:`benchmarks.registry.described_world`): MNIST digits for a static-alive model,
grown patterns (discs of live cells, one per 64x64 tile) for a max-pool model, every cell
for a model without an alive rule. Baselines: :class:`fastca.torch_model.DescribedNCA`
(dense, its own torch RNG) eager and under ``torch.compile``. FLOP/s count the learned
layers (``ModelSpec.flop_per_cell``) of the cells that update and may survive: alive (under
max-pool: alive before the step) and firing, counted exactly from the shared generator for
the numba-cpu run. The FMA peak is measured in the same run (benchmarks/peak_fma.c).
"""

import argparse
import json
import os
import time

import numpy as np

import fastca
from benchmarks import registry
from benchmarks.machine import fma_peak, metadata, widest_width


def run_numba(work, size, steps):
    """Seconds of numba-cpu's step loop (compilation excluded: :func:`benchmarks.registry.setup`) and
    the useful updates it performs (:func:`benchmarks.registry.updated_cells`)."""
    res = registry.setup(work, "numba-cpu", size, steps)()
    _, updates = registry.updated_cells(work, size, steps)
    return res.seconds, updates


def run_torch(net, state, steps, compile_):
    """Seconds of ``steps`` dense steps of the torch reference (its own RNG for masks and noise)."""
    import torch

    from fastca.torch_model import DescribedNCA

    module = DescribedNCA(net.description, net.arrays()).eval()
    gen = torch.Generator().manual_seed(0)
    d = net.description

    def step(s):
        fire = torch.rand(s.shape[:3], generator=gen) <= d.fire_rate
        noise = torch.randn(s.shape[:3] + (d.n_updated,), generator=gen) if d.noise_std > 0 else None
        return module(s, fire, noise)

    fn = torch.compile(step) if compile_ else step
    with torch.no_grad():
        s = torch.from_numpy(np.ascontiguousarray(state))
        fn(s[:, :64, :64].contiguous())  # warm-up / compile
        fn(s)
        t0 = time.perf_counter()
        for _ in range(steps):
            s = fn(s)
        return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="growing")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--baselines", default="torch,torch-compile")
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args(argv)
    work = registry.lookup(args.model)
    net = work.model()
    d = net.description
    state = work.world(args.size, 0)
    if work.input == "gray":  # the baselines take a state: the same digits as the description's world
        state = registry.described_world(d, args.size)
    meta = metadata()
    peaks = {w: {t: fma_peak(t, w) for t in (1, 2)} for w in (256, 512)}
    width = widest_width(peaks)
    peak = peaks[width].get(2)
    cells = args.size * args.size * args.steps
    rows = []
    seconds, updates = run_numba(work, args.size, args.steps)

    def record(name, secs):
        row = {"backend": name, "seconds": secs, "cell_steps_per_s": cells / secs,
               "gflops_updated": updates * d.flop_per_cell / secs / 1e9}
        if peak:
            row["fraction_of_peak"] = row["gflops_updated"] / peak
        rows.append(row)
        print(json.dumps(row), flush=True)

    record("numba-cpu", seconds)
    for name in filter(None, args.baselines.split(",")):
        try:
            record(name, run_torch(net, state, args.steps, name == "torch-compile"))
        except Exception as exc:  # a failing baseline is reported, not fatal
            print(json.dumps({"backend": name, "error": f"{type(exc).__name__}: {exc}"[:300]}), flush=True)
    live = float(np.mean(fastca.model.alive_mask(d, state)))
    print(f"\nmodel {d.name} ({d.flop_per_cell} FLOP per updated cell), world {args.size}x{args.size} "
          f"({live:.1%} alive at the start), {args.steps} steps; {meta['cpu']}, {meta['numba_threads']} threads; "
          f"peak ({width}-bit FMA) {peak} GFLOP/s (2 threads); kernel {meta['kernel']}")
    print(f"{'backend':>14} {'cell-steps/s':>13} {'wall s':>8} {'GFLOP/s upd':>12} {'%peak':>6}")
    for r in rows:
        pct = f"{100 * r['fraction_of_peak']:.1f}" if "fraction_of_peak" in r else "-"
        print(f"{r['backend']:>14} {r['cell_steps_per_s']:>13.3e} {r['seconds']:>8.2f} {r['gflops_updated']:>12.1f} {pct:>6}")
    base = [r for r in rows[1:]]
    if base:
        best = min(base, key=lambda r: r["seconds"])
        print(f"numba-cpu / best baseline ({best['backend']}): {best['seconds'] / rows[0]['seconds']:.1f}x")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"description_bench_{d.name}_{args.size}.json"), "w") as f:
            json.dump({"meta": meta, "fma_peak_by_width": peaks, "peak_width_bits": width, "model": d.to_dict(),
                       "size": args.size, "steps": args.steps, "updates": updates, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
