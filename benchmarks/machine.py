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


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def metadata():
    """Machine and package versions (plus the git commit when run from a checkout)."""
    import torch

    meta = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__,
        "fastca": fastca.__version__,
    }
    try:
        meta["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        cwd=HERE, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        meta["commit"] = None
    return meta


def fma_peak(threads):
    """fp32 GFLOP/s of an AVX2 FMA loop on ``threads`` threads (benchmarks/peak_fma.c), or None
    when no C compiler with OpenMP is available."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "peak_fma")
        build = subprocess.run([cc, "-O3", "-mavx2", "-mfma", "-fopenmp", os.path.join(HERE, "peak_fma.c"), "-o", exe],
                               capture_output=True, text=True)
        if build.returncode != 0:
            return None
        out = subprocess.run([exe, str(threads)], capture_output=True, text=True, timeout=300)
        return float(out.stdout.split()[-1])
