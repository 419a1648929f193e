"""Time numba-cuda against torch CUDA and torch.compile on MNIST worlds; table + JSON under $OUT.

    python -m benchmarks.gpu_bench --sizes 1024,4096,8192,16384 --steps 20 --big 32768
    NUMBA_ENABLE_CUDASIM=1 python -m benchmarks.gpu_bench --smoke     # CUDA path end to end, no GPU

numba-cuda is timed on a state already on the device (built there from the uint8 world:
no host copy of the state), after two warm-up steps (JIT compilation excluded), with the
device synchronised before the clock is read. Its device memory is the drop in free
memory once the state and the run's buffers exist (a step allocates nothing; checked
again after the timed steps), as a multiple of the state (20 values per cell in the
storage type). torch CUDA runs the reference module (cuDNN, channels_last view, the
defaults a user has) with its own device RNG, eagerly and under torch.compile; its peak
is torch.cuda.max_memory_allocated. FLOP/s count 44,640 FLOP per updated cell (alive
cells x fire rate x steps) against the card's fp32 peak (SMs x 128 lanes x 2 x clock).
``--big N`` runs one N x N world with float16 storage on numba-cuda only.
Every row is written to $OUT/gpu_results.json as soon as it is measured.
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np

import fastca
from benchmarks.registry import kernel_resources, mnist_world


def device_info(cuda):
    dev = cuda.get_current_device()
    try:
        sms = dev.MULTIPROCESSOR_COUNT
        clock_khz = dev.CLOCK_RATE
        peak = sms * 128 * 2 * clock_khz * 1e3
    except Exception:  # the simulator has no such attributes
        sms, clock_khz, peak = None, None, None
    name = getattr(dev, "name", "CUDA simulator")
    name = name.decode() if isinstance(name, bytes) else str(name)
    return {"card": name, "sms": sms, "clock_mhz": clock_khz and clock_khz / 1e3, "fp32_peak_flops": peak}


def free_memory(cuda):
    try:
        return cuda.current_context().get_memory_info()[0]
    except Exception:
        return None


def release_memory(cuda):
    """Free what the last measurement left: Numba's deferred deallocations and torch's cache."""
    import gc

    gc.collect()
    try:
        ctx = cuda.current_context()
        getattr(ctx, "memory_manager", ctx).deallocations.clear()
    except Exception:
        pass
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def warm_up(cuda, model, layouts, side=48):
    """Compile and load every kernel the timed runs use, so module loading is not counted as their memory."""
    gray, _ = mnist_world(side)
    for storage in ("float32", "float16"):
        for layout in layouts:
            time_numba_cuda(cuda, model, gray, 1, storage, layout)
    release_memory(cuda)


def time_numba_cuda(cuda, model, gray, steps, storage="float32", layout=None, mode=0):
    """Time ``steps`` steps of a numba-cuda Simulation built on the device from the uint8 world.

    ``Simulation.run`` launches the step kernels and reads one device word at the end (the
    non-finite flag), so its time is the kernels' once the device is synchronised.
    """
    dtype = np.float16 if storage == "float16" else np.float32
    state_bytes = gray.size * 20 * np.dtype(dtype).itemsize
    d_gray = cuda.to_device(gray)
    cuda.synchronize()
    free0 = free_memory(cuda)
    sim = fastca.Simulation(model, d_gray, backend="numba-cuda", input="gray", storage=storage,
                            options={"layout": layout, "mode": mode})
    del d_gray
    sim.run(2)  # JIT compile outside the timing
    cuda.synchronize()
    free1 = free_memory(cuda)
    t0 = time.perf_counter()
    sim.run(steps)
    cuda.synchronize()
    seconds = time.perf_counter() - t0
    free2 = free_memory(cuda)
    row = {"seconds": seconds, "resources": kernel_resources(sim)}
    if isinstance(free0, int) and isinstance(free1, int):
        used = max(free0 - free1, free0 - free2)
        row["device_bytes"] = used
        row["device_mem_over_state"] = used / state_bytes
        row["grew_during_steps_bytes"] = free1 - free2
    labels = sim.labels("device")
    row["alive_after"] = float(np.mean(labels.copy_to_host() >= 0))
    del sim, labels
    return row


def time_torch_cuda(model, gray, steps, compile_):
    import torch

    from fastca.torch_model import TorchNCA

    dev = torch.device("cuda")
    net = TorchNCA.from_weights(model).to(dev).eval()
    fn = torch.compile(net) if compile_ else net
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t_compile = time.perf_counter()
    with torch.no_grad():
        state = torch.zeros((1,) + gray.shape + (20,), device=dev)
        state[..., 0] = torch.from_numpy(gray).to(dev).float() / 255
        gen = torch.Generator(device=dev).manual_seed(0)
        state = fn(state, generator=gen)  # warm-up (cuDNN, compilation)
        state = fn(state, generator=gen)
        torch.cuda.synchronize()
        t_compile = time.perf_counter() - t_compile
        t0 = time.perf_counter()
        for _ in range(steps):
            state = fn(state, generator=gen)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated()
    del state
    torch.cuda.empty_cache()
    return {"seconds": seconds, "device_bytes": peak, "device_mem_over_state": peak / (gray.size * 20 * 4),
            "warmup_seconds": t_compile}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1024,4096,8192,16384")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--layouts", default="64,128", help="numba-cuda thread layouts to time")
    parser.add_argument("--big", type=int, default=0, help="side of a float16 world run on numba-cuda only (0: none)")
    parser.add_argument("--big-steps", type=int, default=100)
    parser.add_argument("--breakdown", type=int, default=0,
                        help="also time the kernel without its MLP and without gather+MLP on this side (0: none)")
    parser.add_argument("--smoke", action="store_true", help="16x16 world, 2 steps, numba-cuda only (simulator)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--budget", type=float, default=1e9, help="skip torch rows once this many seconds have passed")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for gpu_results.json (default $OUT)")
    args = parser.parse_args(argv)
    from fastca._compat import numba_cuda

    t_start = time.perf_counter()
    cuda = numba_cuda()
    sizes = [16] if args.smoke else [int(s) for s in args.sizes.split(",")]
    steps = 2 if args.smoke else args.steps
    layouts = args.layouts.split(",")
    info = device_info(cuda)
    meta = {**info, "date": datetime.date.today().isoformat(), "host": platform.node(),
            "python": platform.python_version(), "fastca": fastca.__version__,
            "numba": __import__("numba").__version__, "steps": steps,
            "simulator": os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
            "torch_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "default"),
            "command": "python -m benchmarks.gpu_bench " + " ".join(sys.argv[1:] if argv is None else argv)}
    try:
        import numba_cuda as _nc

        meta["numba_cuda"] = getattr(_nc, "__version__", "?")
    except ImportError:
        pass
    try:
        import torch

        meta["torch"] = torch.__version__
        use_torch = torch.cuda.is_available() and not args.no_torch and not args.smoke
    except ImportError:
        use_torch = False
    print(json.dumps(meta), flush=True)
    model = fastca.pretrained()
    rows = []

    def record(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, "gpu_results.json"), "w") as f:
                json.dump({**meta, "rows": rows}, f, indent=1)

    def measure(side, backend, storage, fn, gray, n_steps, **extra):
        alive = float(np.mean(fastca.data.alive_mask(gray)))
        row = {"side": side, "backend": backend, "storage": storage, "steps": n_steps, "alive_fraction": alive, **extra}
        try:
            row.update(fn())
            row["cell_steps_per_s"] = gray.size * n_steps / row["seconds"]
            updates = gray.size * alive * model.fire_rate * n_steps
            row["gflops_updated"] = updates * fastca.spec.FLOP_PER_CELL / row["seconds"] / 1e9
            if info["fp32_peak_flops"]:
                row["fraction_of_peak"] = row["gflops_updated"] * 1e9 / info["fp32_peak_flops"]
        except Exception as exc:  # OOM at the largest sizes is a result, not a crash
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        release_memory(cuda)
        record(row)

    t0 = time.perf_counter()
    warm_up(cuda, model, layouts, 4 if args.smoke else 48)
    print(f"kernels compiled and loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    for size in sizes:
        gray, _ = mnist_world(size)
        for layout in layouts:
            measure(size, "numba-cuda", "float32", lambda: time_numba_cuda(cuda, model, gray, steps, layout=layout),
                    gray, steps, layout=layout)
    if args.breakdown:
        gray, _ = mnist_world(args.breakdown)
        for mode, name in ((1, "numba-cuda:no-mlp"), (2, "numba-cuda:loads+compaction")):
            measure(args.breakdown, name, "float32",
                    lambda: time_numba_cuda(cuda, model, gray, steps, layout=layouts[0], mode=mode), gray, steps,
                    layout=layouts[0])
    if args.big:
        gray, _ = mnist_world(args.big)
        measure(args.big, "numba-cuda", "float16",
                lambda: time_numba_cuda(cuda, model, gray, args.big_steps, "float16", layout=layouts[0]),
                gray, args.big_steps, layout=layouts[0])
        del gray
    # torch rows last, the target size first, so a time budget cuts the least important rows
    torch_sizes = sorted(sizes, key=lambda n: (n != 8192, n))
    for size in torch_sizes if use_torch else []:
        gray, _ = mnist_world(size)
        for compile_ in [False] if args.no_compile else [False, True]:
            if time.perf_counter() - t_start > args.budget:
                print(f"budget of {args.budget} s spent: skipping torch at {size}", flush=True)
                break
            import torch._dynamo

            torch._dynamo.reset()  # one static compilation per world size, as a user with one size gets
            name = "torch-compile" if compile_ else "torch-cuda"
            measure(size, name, "float32", lambda: time_torch_cuda(model, gray, steps, compile_), gray, steps)
    summarize(rows, info, steps)
    return rows


def summarize(rows, info, steps):
    best = {}
    for r in rows:
        if "error" not in r:
            key = (r["side"], r["backend"], r["storage"])
            if key not in best or r["cell_steps_per_s"] > best[key]["cell_steps_per_s"]:
                best[key] = r
    print(f"\n{info['card']}, {steps} steps per run (float16 world: its own step count)")
    print(f"{'side':>6} {'backend':>14} {'layout':>6} {'storage':>8} {'cell-steps/s':>13} {'GFLOP/s upd':>12} "
          f"{'%peak':>6} {'mem/state':>9} {'vs torch':>9} {'vs compile':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['side']:>6} {r['backend']:>14} {r.get('layout', '-'):>6} {r['storage']:>8}  ERROR {r['error']}")
            continue
        pct = f"{100 * r['fraction_of_peak']:.1f}" if r.get("fraction_of_peak") else "-"
        mem = f"{r['device_mem_over_state']:.3f}" if r.get("device_mem_over_state") else "-"
        ratios = []
        for ref in ("torch-cuda", "torch-compile"):
            base = best.get((r["side"], ref, "float32"))
            ratios.append(f"{r['cell_steps_per_s'] / base['cell_steps_per_s']:.2f}x" if base else "-")
        print(f"{r['side']:>6} {r['backend']:>14} {r.get('layout', '-'):>6} {r['storage']:>8} {r['cell_steps_per_s']:>13.3e} "
              f"{r['gflops_updated']:>12.1f} {pct:>6} {mem:>9} {ratios[0]:>9} {ratios[1]:>10}")
    if any("error" in r for r in rows):
        print("SOME ROWS FAILED (see ERROR above)")


if __name__ == "__main__":
    rows = main()
    sys.exit(1 if any("error" in r and r["backend"] == "numba-cuda" for r in rows) else 0)
