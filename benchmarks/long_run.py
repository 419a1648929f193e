"""Long-run behaviour of the embedded models: does the state stay finite and the vote stable?

    python -m benchmarks.long_run --digits 500 --steps 5000 --seeds 0,1 [--out FILE.json]

Runs each embedded model on the first N MNIST test digits ($FASTCA_MNIST_DIR, else the
embedded 256) with numba-cpu, warning (not stopping) when a state becomes non-finite, and
records every 100 steps: accuracy, agreement, the largest |hidden| and |class| values and
the share of non-finite cells. Prints one summary line per model and seed.
"""

import argparse
import json
import platform
import time
import warnings

import numpy as np

import fastca
from fastca import spec


def run(model, images, labels, steps, seed, every=100):
    sim = fastca.Simulation(model, images, backend="numba-cpu", seed=seed, on_nonfinite="warn")
    rows = []
    first_bad = None
    for t in range(every, steps + 1, every):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            counts = sim.run(every, targets=labels)
        acc, agr = fastca.metrics.from_counts(counts[-1])
        state = sim.state(copy=False)
        alive = state[..., 0] > np.float32(model.alive_threshold)
        cells = state[alive]
        finite = np.isfinite(cells[:, 1:]).all(axis=1)
        if first_bad is None and not finite.all():
            first_bad = t
        with np.errstate(invalid="ignore"):
            hidden = float(np.nanmax(np.abs(cells[finite, 1 : spec.CLASS_START]))) if finite.any() else float("nan")
            klass = float(np.nanmax(np.abs(cells[finite, spec.CLASS_START :]))) if finite.any() else float("nan")
        rows.append({"step": t, "accuracy": acc, "agreement": agr, "max_abs_hidden": hidden, "max_abs_class": klass,
                     "nonfinite_share": float(1 - finite.mean())})
    return rows, first_bad


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=int, default=500)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--models", default=",".join(fastca.PRETRAINED))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    try:
        images, labels = fastca.data.load_mnist("test")
    except FileNotFoundError:
        images, labels = fastca.data.sample_digits()
    images, labels = images[: args.digits], labels[: args.digits]
    result = {"machine": platform.processor() or platform.machine(), "digits": len(images), "steps": args.steps,
              "runs": []}
    for name in args.models.split(","):
        model = fastca.pretrained(name)
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.perf_counter()
            rows, first_bad = run(model, images, labels, args.steps, seed)
            late = [r for r in rows if r["step"] >= 500 and np.isfinite(r["accuracy"])]
            acc = [r["accuracy"] for r in late]
            summary = {"model": name, "seed": seed, "first_nonfinite_step_within": first_bad,
                       "accuracy_after_500": [min(acc), max(acc)] if acc else None,
                       "max_abs_hidden": max((r["max_abs_hidden"] for r in rows), default=None),
                       "final": rows[-1], "seconds": time.perf_counter() - t0, "curve": rows}
            result["runs"].append(summary)
            print(f"{name} seed {seed}: non-finite by step {first_bad}; accuracy after step 500 "
                  f"{summary['accuracy_after_500']}; max |hidden| {summary['max_abs_hidden']:.3g}; "
                  f"final accuracy {rows[-1]['accuracy']:.2f}, non-finite share {rows[-1]['nonfinite_share']:.4f} "
                  f"({summary['seconds']:.0f} s)", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
