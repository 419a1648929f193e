"""The canonical CPU workload: numba-cpu against torch eager, torch.compile and JAX, and the FMA peak.

    python -m benchmarks.cpu_bench --size 1024 --steps 100 [--out DIR]

A size^2 MNIST world of tiled test digits, fire rate 0.5, noise 0.02, ``steps`` steps.
Every backend runs the same world after a warm-up (compilation excluded). Baselines use
their own device RNG (the cheapest way for them to draw masks and noise):
torch eager on a channels_last view, the same module under torch.compile, and a JAX
``jit`` of a ``fori_loop`` over the steps (buffers reused). FLOP/s count 44,640 FLOP
per updated cell (exact count from the shared generator); the peak is the widest FMA loop
the CPU runs (AVX-512 where present and faster, else AVX2; benchmarks/peak_fma.c), measured
in the same run on the same thread counts; both widths are recorded, with the CPU flags and
the vector width and register tiles the numba-cpu kernel was generated with.
"""

import argparse
import json
import os
import time


import fastca
from benchmarks import registry
from benchmarks.machine import fma_peak, metadata, widest_width
from benchmarks.registry import MNIST_PRETRAINED, mnist_world


def run_numba(size, steps, threads=None):
    """Seconds of the step loop (``SimResult.seconds``: like the baselines, without building the state)."""
    res = registry.setup(MNIST_PRETRAINED, "numba-cpu", size, steps, threads=threads)()
    return res.seconds, res


def run_torch(model, gray, steps, compile_):
    import torch

    from fastca.torch_model import TorchNCA

    net = TorchNCA.from_weights(model).eval()
    fn = torch.compile(net) if compile_ else net
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        state = torch.from_numpy(fastca.initial_state(gray)[None])
        fn(state[:, :64, :64].contiguous(), generator=gen)  # warm-up / compile
        t0 = time.perf_counter()
        for _ in range(steps):
            state = fn(state, generator=gen)
        return time.perf_counter() - t0


def run_jax(model, gray, steps):
    import jax
    import jax.numpy as jnp

    w = {k: jnp.asarray(v) for k, v in model.arrays().items()}

    def step(state, key):
        k1, k2 = jax.random.split(key)
        p = jax.lax.conv_general_dilated(state, w["w1"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = jax.nn.relu(jax.nn.relu(p + w["b1"]) @ w["w2"] + w["b2"])
        ds = h @ w["w3"] + w["b3"] + model.noise_std * jax.random.normal(k1, h.shape[:-1] + (19,))
        fire = jax.random.uniform(k2, state.shape[:-1] + (1,)) <= model.fire_rate
        mask = (fire & (state[..., :1] > model.alive_threshold)).astype(state.dtype)
        return state.at[..., 1:].add(ds * mask)

    @jax.jit
    def run(state, key):
        def body(i, s):
            return step(s, jax.random.fold_in(key, i))

        return jax.lax.fori_loop(0, steps, body, state)

    state = jnp.asarray(fastca.initial_state(gray)[None])
    key = jax.random.PRNGKey(0)
    run(state, key).block_until_ready()  # compile (same shapes)
    t0 = time.perf_counter()
    run(state, key).block_until_ready()
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--baselines", default="torch,torch-compile,jax")
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args(argv)
    model = fastca.pretrained()
    gray, _ = mnist_world(args.size)
    alive, updates = registry.updated_cells(MNIST_PRETRAINED, args.size, args.steps)
    meta = metadata()
    peaks_by_width = {w: {t: fma_peak(t, w) for t in (1, 2)} for w in (256, 512)}
    width = widest_width(peaks_by_width)
    peak = peaks_by_width[width]
    print(json.dumps({**meta, "fma_peak_gflops": peak, "peak_width_bits": width,
                      "fma_peak_by_width": peaks_by_width}), flush=True)
    cells = args.size * args.size * args.steps
    rows = []

    def record(name, seconds, **extra):
        row = {"backend": name, "seconds": seconds, "cell_steps_per_s": cells / seconds,
               "gflops_updated": updates * fastca.spec.FLOP_PER_CELL / seconds / 1e9, **extra}
        if peak.get(2):
            row["fraction_of_peak"] = row["gflops_updated"] / peak[2]
        rows.append(row)
        print(json.dumps(row), flush=True)

    seconds, _ = run_numba(args.size, args.steps)
    record("numba-cpu", seconds)
    for name in args.baselines.split(","):
        try:
            if name == "torch":
                record(name, run_torch(model, gray, args.steps, False))
            elif name == "torch-compile":
                record(name, run_torch(model, gray, args.steps, True))
            elif name == "jax":
                record(name, run_jax(model, gray, args.steps))
        except Exception as exc:  # a missing or failing baseline is reported, not fatal
            print(json.dumps({"backend": name, "error": f"{type(exc).__name__}: {exc}"[:300]}), flush=True)
    base = [r for r in rows if r["backend"] != "numba-cpu"]
    best = min(base, key=lambda r: r["seconds"]) if base else None
    numba_row = rows[0]
    print(f"\nworld {args.size}x{args.size} ({alive:.1%} alive), {args.steps} steps, fire rate 0.5, noise 0.02; "
          f"{meta['cpu']} ({meta['cpu_id']}), {meta['numba_threads']} threads; peak ({width}-bit FMA, the widest here) {peak[2]} GFLOP/s "
          f"(2 threads), {peak[1]} (1 thread); AVX2 {peaks_by_width[256][2]}, AVX-512 {peaks_by_width[512][2]}; "
          f"kernel: {meta['kernel']['isa']}, tiles {meta['kernel']['tiles']}")
    print(f"{'backend':>14} {'cell-steps/s':>13} {'wall s':>8} {'GFLOP/s upd':>12} {'%peak':>6}")
    for r in rows:
        pct = f"{100 * r['fraction_of_peak']:.1f}" if "fraction_of_peak" in r else "-"
        print(f"{r['backend']:>14} {r['cell_steps_per_s']:>13.3e} {r['seconds']:>8.2f} {r['gflops_updated']:>12.1f} {pct:>6}")
    if best:
        print(f"numba-cpu / best baseline ({best['backend']}): {numba_row['cell_steps_per_s'] / best['cell_steps_per_s']:.1f}x")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"cpu_bench_{args.size}.json"), "w") as f:
            json.dump({"meta": meta, "fma_peak_gflops": peak, "peak_width_bits": width,
                       "fma_peak_by_width": peaks_by_width, "size": args.size, "steps": args.steps,
                       "alive_fraction": alive, "updates": updates, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
