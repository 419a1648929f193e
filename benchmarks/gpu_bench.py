"""Time numba-cuda against torch CUDA on MNIST worlds; print a table, write JSON/CSV under $OUT.

    python -m benchmarks.gpu_bench --sizes 1024,4096,8192,16384 --steps 20
    NUMBA_ENABLE_CUDASIM=1 python -m benchmarks.gpu_bench --smoke     # CUDA path end to end, no GPU

numba-cuda is timed step by step on a state already on the device (transfers and JIT
compilation excluded, synchronised). Its device memory is the drop in free memory once
the run's buffers exist (a step allocates nothing), as a multiple of the state size
(20 float32 per cell). torch CUDA runs the reference module on a channels_last view
with its own device RNG (no host work), optionally under torch.compile; its peak is
torch.cuda.max_memory_allocated. FLOP/s count 44,640 FLOP per updated cell (expected
count: alive cells x fire rate x steps) against the card's fp32 peak (SMs x 128 lanes x
2 x clock).
"""

import argparse
import csv
import json
import os
import platform
import time

import numpy as np

import fastca
from benchmarks.registry import mnist_world


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
    return {"gpu": name, "sms": sms, "clock_mhz": clock_khz and clock_khz / 1e3, "fp32_peak_flops": peak}


def free_memory(cuda):
    try:
        return cuda.current_context().get_memory_info()[0]
    except Exception:
        return None


def time_numba_cuda(cuda, model, gray, steps):
    from fastca.backends import NumbaCUDA

    state_bytes = gray.size * 20 * 4
    free0 = free_memory(cuda)
    state, _, _ = NumbaCUDA.to_device_state(gray, "gray")
    runner = NumbaCUDA(model, state, 0, model.fire_rate, model.noise_std, model.alive_threshold)
    runner.step(0)  # JIT compile outside the timing
    cuda.synchronize()
    free1 = free_memory(cuda)
    t0 = time.perf_counter()
    for t in range(1, steps + 1):
        runner.step(t)
    cuda.synchronize()
    seconds = time.perf_counter() - t0
    used = None if not (isinstance(free0, int) and isinstance(free1, int)) else free0 - free1
    return {"seconds": seconds, "device_bytes": used, "memory_x_state": used and used / state_bytes}


def time_torch_cuda(model, gray, steps, compile_):
    import torch

    from fastca.torch_model import TorchNCA

    dev = torch.device("cuda")
    net = TorchNCA.from_weights(model).to(dev).eval()
    fn = net
    if compile_:
        fn = torch.compile(net)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        state = torch.zeros((1,) + gray.shape + (20,), device=dev)
        state[..., 0] = torch.from_numpy(gray).to(dev).float() / 255
        gen = torch.Generator(device=dev).manual_seed(0)
        state = fn(state, generator=gen)  # warm-up (cuDNN autotune, compile)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            state = fn(state, generator=gen)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated()
    del state
    torch.cuda.empty_cache()
    return {"seconds": seconds, "device_bytes": peak, "memory_x_state": peak / (gray.size * 20 * 4)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1024,4096,8192,16384")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="16x16 world, 2 steps, numba-cuda only (simulator)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for results.json/.csv (default $OUT)")
    args = parser.parse_args(argv)
    from fastca._compat import numba_cuda

    cuda = numba_cuda()

    sizes = [16] if args.smoke else [int(s) for s in args.sizes.split(",")]
    steps = 2 if args.smoke else args.steps
    info = device_info(cuda)
    meta = {**info, "host": platform.node(), "python": platform.python_version(), "fastca": fastca.__version__,
            "numba": __import__("numba").__version__, "steps": steps, "simulator": os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"}
    try:
        import torch

        meta["torch"] = torch.__version__
        use_torch = torch.cuda.is_available() and not args.no_torch and not args.smoke
    except ImportError:
        use_torch = False
    print(json.dumps(meta), flush=True)
    model = fastca.pretrained()
    rows = []
    for size in sizes:
        gray, _ = mnist_world(size)
        alive = float(np.mean(fastca.data.alive_mask(gray)))
        updates = gray.size * alive * model.fire_rate * steps
        runs = {"numba-cuda": lambda: time_numba_cuda(cuda, model, gray, steps)}
        if use_torch:
            runs["torch-cuda"] = lambda: time_torch_cuda(model, gray, steps, False)
            if not args.no_compile:
                runs["torch-cuda-compile"] = lambda: time_torch_cuda(model, gray, steps, True)
        for name, fn in runs.items():
            row = {"size": size, "backend": name, "alive_fraction": alive}
            try:
                row.update(fn())
                row["cell_steps_per_s"] = gray.size * steps / row["seconds"]
                row["gflops_updated"] = updates * fastca.spec.FLOP_PER_CELL / row["seconds"] / 1e9
                if info["fp32_peak_flops"]:
                    row["fraction_of_peak"] = row["gflops_updated"] * 1e9 / info["fp32_peak_flops"]
            except Exception as exc:  # OOM at the largest sizes is a result, not a crash
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
    for size in sizes:
        ref = [r for r in rows if r["size"] == size and r["backend"] == "torch-cuda" and "seconds" in r]
        for r in rows:
            if r["size"] == size and r["backend"] == "numba-cuda" and ref and "seconds" in r:
                r["speedup_vs_torch"] = ref[0]["seconds"] / r["seconds"]
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "gpu_results.json"), "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
        keys = sorted({k for r in rows for k in r})
        with open(os.path.join(args.out, "gpu_results.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, keys)
            w.writeheader()
            w.writerows(rows)
    print(f"\n{info['gpu']}, {steps} steps per run")
    print(f"{'size':>6} {'backend':>19} {'cell-steps/s':>13} {'GFLOP/s upd':>12} {'%peak':>6} {'mem/state':>9} {'speedup':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['size']:>6} {r['backend']:>19}  {r['error']}")
            continue
        pct = f"{100 * r['fraction_of_peak']:.1f}" if r.get("fraction_of_peak") else "-"
        mem = f"{r['memory_x_state']:.3f}" if r.get("memory_x_state") else "-"
        sp = f"{r['speedup_vs_torch']:.2f}x" if r.get("speedup_vs_torch") else "-"
        print(f"{r['size']:>6} {r['backend']:>19} {r['cell_steps_per_s']:>13.3e} {r['gflops_updated']:>12.1f} "
              f"{pct:>6} {mem:>9} {sp:>8}")


if __name__ == "__main__":
    main()
