"""Hardware/software metadata and the AVX2 FMA peak, recorded next to every CPU number."""

import os
import platform
import shutil
import subprocess
import tempfile

import numba
import numpy as np

import fastca

HERE = os.path.dirname(os.path.abspath(__file__))


def cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo ("model name", "vendor_id", "cpu family", "model", ...);
    empty where there is none."""
    fields: dict = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model():
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_id():
    """The CPU's vendor, family and model numbers (e.g. "AuthenticAMD family 25 model 1"), from /proc/cpuinfo."""
    f = cpuinfo()
    return f"{f.get('vendor_id', '?')} family {f.get('cpu family', '?')} model {f.get('model', '?')}"


def metadata():
    """Machine and package versions (plus the git commit when run from a checkout)."""
    import torch

    meta = {
        "cpu": cpu_model(),
        "cpu_id": cpu_id(),
        "cores": os.cpu_count(),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__,
        "fastca": fastca.__version__,
        "cpu_flags": cpu_flags(),
        "kernel": kernel_info(),
        "numba_threading_layer": numba.config.THREADING_LAYER,
    }
    try:
        meta["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        cwd=HERE, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        meta["commit"] = None
    return meta


CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512_bf16", "amx_tile")


def cpu_flags():
    """The vector-unit flags of this CPU that matter for the kernels' speed (from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in CPU_FLAGS if flag in present]
    except OSError:
        pass
    return []


def kernel_info():
    """How the numba-cpu kernel's MLP is generated here: vector width and register tiles (kernels/dense.py)."""
    from fastca.kernels import dense

    return {"vector_bits": dense.VL * 32, "registers": dense.REGISTERS, "isa": dense.isa(), "tiles": dense.tiles()}


def fma_peak(threads, width=256):
    """fp32 GFLOP/s of an FMA loop with ``width``-bit vectors (256: AVX2, 512: AVX-512) on
    ``threads`` threads (benchmarks/peak_fma.c), or None when it cannot be built or run here."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None or (width == 512 and "avx512f" not in cpu_flags()):
        return None
    flags = ["-mavx512f", "-DWIDTH512"] if width == 512 else ["-mavx2", "-mfma"]
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "peak_fma")
        build = subprocess.run([cc, "-O3", *flags, "-fopenmp", os.path.join(HERE, "peak_fma.c"), "-o", exe],
                               capture_output=True, text=True)
        if build.returncode != 0:
            return None
        out = subprocess.run([exe, str(threads)], capture_output=True, text=True, timeout=300)
        return float(out.stdout.split()[-1]) if out.returncode == 0 else None


def widest_width(peaks_by_width):
    """The vector width (256 or 512) whose measured 2-thread FMA peak is the larger: the honest limit.

    ``peaks_by_width``: {256: {threads: GFLOP/s}, 512: {...}} from :func:`fma_peak`. On CPUs
    whose 512-bit FMAs run at the 256-bit rate (some AMD EPYC) both are about equal.
    """
    p256, p512 = peaks_by_width[256].get(2), peaks_by_width[512].get(2)
    return 512 if p512 is not None and (p256 is None or p512 > p256) else 256
