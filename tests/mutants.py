"""Mutation check: plant known bugs in a copy of the package and show that the suite fails for each.

    python -m tests.mutants                 # every mutant (CPU ones, then the CUDA ones under the simulator)
    python -m tests.mutants --quick         # the CPU mutants only (what CI runs, a few minutes)
    python -m tests.mutants --list          # list the mutants
    python -m tests.mutants cpu-band-halo   # only the named mutants

Each mutant is one exact text substitution in one file of a temporary copy of the
repository (the original must occur exactly once, so a mutant cannot silently stop
applying after a refactor). The tests named for the mutant then run on the copy, in a
fresh process with its own Numba cache folder (so no machine code compiled from the
unmutated sources is reused), and stop at the first failure: the mutant is caught if any
test fails, and the run reports which. Exit status 1 if any mutant survives.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CPU_TESTS = ["tests/test_oracle.py", "tests/test_rules.py", "tests/test_equivalence.py", "tests/test_storage.py",
             "tests/test_engine.py", "tests/test_api.py"]
CUDA_TESTS = ["tests/cuda/test_cuda_kernel.py"]

# name: (file, original text, mutated text, tests to run, what the bug is)
MUTANTS = {
    "cpu-band-halo": (
        "kernels/cpu.py", "            load_row(rows[r1], halo[k, 1])\n", "            pass\n", CPU_TESTS,
        "CPU: the row below each band is never saved (read as whatever the halo buffer holds)"),
    "cpu-dead-neighbours-zero": (
        "kernels/cell.py", "            if valid and 0 <= xx < width:\n",
        "            if valid and 0 <= xx < width and row[xx, 0] > 0.1:\n", CPU_TESTS,
        "CPU: dead neighbours read as zero"),
    "cpu-gather-off-by-one": (
        "kernels/cell.py", "            xx = x + j - 1\n", "            xx = x + j - 2\n", CPU_TESTS,
        "CPU: off-by-one column in the 3x3 gather"),
    "cpu-channel-offset": (
        "kernels/cell.py",
        "            cell[1 + o] = store(load(cell[1 + o]) + ((d[o] + b3[o]) + z0 * noise_std), cell[1 + o])\n",
        "            cell[o] = store(load(cell[o]) + ((d[o] + b3[o]) + z0 * noise_std), cell[o])\n", CPU_TESTS,
        "CPU: update written one channel too low (the gray channel changes)"),
    "cpu-fire-strict": (
        "kernels/cpu.py", "if rng.fire_uniform(key) <= fire_rate:", "if rng.fire_uniform(key) < fire_rate:", CPU_TESTS,
        "CPU: `<` instead of `<=` in the fire rule"),
    "cpu-noise-pair-swapped": (
        "kernels/cell.py", "            z0, z1 = rng.normal_pair(key, pair)\n",
        "            z1, z0 = rng.normal_pair(key, pair)\n", CPU_TESTS, "CPU: the two normals of a pair swapped"),
    "cpu-float16-rounded-twice": (
        "kernels/cell.py",
        "            cell[1 + o] = store(load(cell[1 + o]) + ((d[o] + b3[o]) + z0 * noise_std), cell[1 + o])\n",
        "            cell[1 + o] = store(load(cell[1 + o]) + load(store((d[o] + b3[o]) + z0 * noise_std, cell[1 + o])),"
        " cell[1 + o])\n", CPU_TESTS, "CPU: float16 storage rounds the update, then the sum (twice)"),
    "cpu-dropped-bias": (
        "kernels/cell.py", "    bias_relu(H1, b1, BLOCK)\n", "    bias_relu(H1, b1 * 0, BLOCK)\n", CPU_TESTS,
        "CPU: the first layer's bias dropped"),
    "cpu-block-flushed-early": (
        "kernels/cpu.py",
        "                            _flush(rows, n, P, w1r, b1, w2, b2, w3, b3, H1, H2, D, ys, xs, keys, noise_std)\n",
        "                            _flush(rows, n - 1, P, w1r, b1, w2, b2, w3, b3, H1, H2, D, ys, xs, keys, noise_std)\n",
        CPU_TESTS, "CPU: a full block is flushed without its last cell"),
    "cpu-blas-partial-rows": (
        "kernels/cell.py", "    np.dot(P, w1r, H1)\n", "    np.dot(P[:BLOCK - 7], w1r, H1[:BLOCK - 7])\n", CPU_TESTS,
        "CPU: the first product on fewer rows than the block (rows past them keep stale values)"),
    "metrics-count-dead": (
        "fastca/metrics.py", "        if _alive(row[x, 0], alive_thr):\n            label, label11",
        "        if True:\n            label, label11", CPU_TESTS, "metrics: dead cells counted"),
    "metrics-minus-one-counted-wrong": (
        "fastca/metrics.py", "            if target_row[x] >= 0:\n", "            if target_row[x] >= -1:\n",
        CPU_TESTS, "metrics: a target of -1 counted as a wrong label"),
    "rng-origin-ignored": (
        "kernels/cpu.py", "rkey = rng.row_key(seed, step, origin[0] + b, origin[1] + y)",
        "rkey = rng.row_key(seed, step, b, y)", CPU_TESTS, "CPU: random keys in local, not global, coordinates"),
    "cuda-left-column-dropped": (
        "kernels/cuda.py", "                    if side == 0 and strip > 0:\n",
        "                    if side == 0 and strip > 0 and tid < 0:\n", CUDA_TESTS,
        "CUDA: the column left of a strip read as zero"),
    "cuda-row-below-from-live-state": (
        "kernels/cuda.py", "                src = rowhalo if above or below else state\n",
        "                src = rowhalo if above else state\n"
        "                if below:\n"
        "                    src = state\n", CUDA_TESTS,
        "CUDA: the row below a segment read from the live state (a race between blocks)"),
    "cuda-noise-pair-swapped": (
        "kernels/cuda.py", "                z0, z1 = rng.normal_pair(slot_key[m], pair)\n",
        "                z1, z0 = rng.normal_pair(slot_key[m], pair)\n", CUDA_TESTS,
        "CUDA: the two normals of a pair swapped"),
    "cuda-gather-off-by-one": (
        "kernels/cuda.py", "(ij - 3 * di - 1)) * C)", "(ij - 3 * di)) * C)", CUDA_TESTS,
        "CUDA: off-by-one column in the gather"),
    "cuda-chunk-last-cell": (
        "kernels/cuda.py", "                    flush(state, b * height, height, width, count, chunk,",
        "                    flush(state, b * height, height, width, count - 1, chunk,", CUDA_TESTS,
        "CUDA: a full chunk is flushed without its last cell"),
}


def copy_repo(dst):
    """A copy of the package, kernels, tests and benchmarks (no .git, caches or virtual environments)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".venv", ".git", "*.egg-info", ".pytest_cache",
                                    "fastca-out*", "*.nbi", "*.nbc")
    for name in ("fastca", "kernels", "tests", "benchmarks"):
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py"):
        shutil.copy(ROOT / name, dst / name)
    (dst / "fastca" / "kernels").symlink_to("../kernels")  # the installed layout


def apply(dst, name):
    path, old, new, _, _ = MUTANTS[name]
    text = (dst / path).read_text()
    if text.count(old) != 1:
        raise RuntimeError(f"mutant {name}: the original text occurs {text.count(old)} times in {path}")
    (dst / path).write_text(text.replace(old, new))


# Run pytest on the copy: drop the editable-install finder so `import fastca` finds the copy.
RUNNER = (
    "import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()"
    " and 'editable' not in type(f).__module__.lower()]; sys.path.insert(0, {root!r});"
    "import pytest; sys.exit(pytest.main({args!r}))"
)


def run_tests(dst, tests, cuda):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(dst / ".numba-cache"), "PYTHONDONTWRITEBYTECODE": "1"}
    if cuda:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    args = ["-x", "-q", "-p", "no:cacheprovider", "--benchmark-disable", "-o", "addopts="] + tests
    p = subprocess.run([sys.executable, "-c", RUNNER.format(root=str(dst), args=args)], cwd=dst, env=env,
                       capture_output=True, text=True, timeout=3600)
    failed = re.findall(r"^FAILED (\S+)", p.stdout, re.M) or re.findall(r"^ERROR (\S+)", p.stdout, re.M)
    return p.returncode, failed, p.stdout[-1500:] + p.stderr[-1500:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="CPU mutants only")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    names = args.names or [n for n in MUTANTS if not (args.quick and n.startswith("cuda-"))]
    if args.list:
        for n in names:
            print(f"{n:34} {MUTANTS[n][4]}")
        return 0
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        parser.error(f"unknown mutants: {', '.join(unknown)}")
    survivors = []
    for name in names:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="fastca-mutant-") as tmp:
            dst = Path(tmp)
            copy_repo(dst)
            apply(dst, name)
            rc, failed, tail = run_tests(dst, MUTANTS[name][3], name.startswith("cuda-"))
        seconds = time.perf_counter() - t0
        if rc == 0:
            survivors.append(name)
            print(f"SURVIVED {name:34} ({seconds:.0f} s): {MUTANTS[name][4]}", flush=True)
        elif not failed:
            survivors.append(name)
            print(f"BROKEN   {name:34} ({seconds:.0f} s): the tests did not run\n{tail}", flush=True)
        else:
            print(f"caught   {name:34} by {failed[0]} ({seconds:.0f} s)", flush=True)
    print(f"{len(names) - len(survivors)}/{len(names)} mutants caught" + (f"; survived: {survivors}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
