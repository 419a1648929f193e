"""Mutation check: plant known bugs in a copy of the package and show that the suite fails for each.

    python -m tests.mutants                 # every mutant (CPU ones, then the CUDA ones under the simulator)
    python -m tests.mutants --quick         # the CPU mutants only (what CI runs, a few minutes)
    python -m tests.mutants --list          # list the mutants
    python -m tests.mutants cpu-band-halo   # only the named mutants

    python -m tests.mutants --guards        # the safety guards' mutants only (tests/mutants_*.py)

Each mutant is one exact text substitution in one file of a temporary copy of the
repository (the original must occur exactly once, so a mutant cannot silently stop
applying after a refactor). The tests named for the mutant then run on the copy, in a
fresh process, and stop at the first failure: the mutant is caught if any test fails, and
the run reports which test and how long it took. Exit status 1 if any mutant survives.

A mutant of a file that holds compiled code gets a Numba cache folder of its own (Numba
keys a cached function on its own file only, so machine code compiled from unmutated
sources could otherwise be reused). Mutants of pure-Python files (the safety guards)
share one cache folder for the run, keyed by the hash of the compiled sources, and the copy
always sits at the same path with the original modification times: only the first of them
compiles.

The kernel and metric mutants are listed here; the safety guards' mutants live beside this
file in mutants_<area>.py (play server, Zarr stores, training runs, files and numbers, CLI).
"""

import argparse
import importlib
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
CUDA_TESTS = ["tests/cuda/test_cuda_kernel.py", "tests/cuda/test_cuda_described.py"]
DESC_TESTS = ["tests/test_descriptions.py", "tests/test_descriptions_torch.py"]

# name: (file, original text, mutated text, tests to run, what the bug is)
MUTANTS = {
    "cpu-band-halo": (
        "kernels/cpu.py", "            _load_read(rows, r1, halo[k, 1], ptr, runs)\n", "            pass\n", CPU_TESTS,
        "CPU: the row below each band is never saved (read as whatever the halo buffer holds)"),
    "cpu-right-pad-not-zeroed": (
        "kernels/cpu.py", "        row[row.shape[0] - 1, c] = 0.0\n", "        pass\n", CPU_TESTS,
        "CPU: the padding column right of a ring row is never zeroed (the last column reads stale values)"),
    "cpu-run-off-by-one": (
        "kernels/cpu.py", "                offset = x * (C * 4)\n", "                offset = (x + 1) * (C * 4)\n",
        CPU_TESTS, "CPU: off-by-one column in the cell's input runs"),
    "cpu-ring-reused-too-early": (
        "kernels/cpu.py", "ys[0] + RING <= r + 2:", "ys[0] + RING <= r + 1:", CPU_TESTS,
        "CPU: a block is flushed one row too late, after the ring reused a row that one of its cells reads"),
    "cpu-channel-offset": (
        "kernels/cpu.py",
        "        stored = store(load(cell[R0 + o]) + d, cell[R0 + o])\n        cell[R0 + o] = stored\n",
        "        stored = store(load(cell[R0 - 1 + o]) + d, cell[R0 - 1 + o])\n        cell[R0 - 1 + o] = stored\n",
        CPU_TESTS,
        "CPU: update written one channel too low (the gray channel changes)"),
    "cpu-fire-strict": (
        "kernels/cpu.py", "fires[j] = rng.fire_uniform(key) <= fire_rate",
        "fires[j] = rng.fire_uniform(key) < fire_rate", CPU_TESTS,
        "CPU: `<` instead of `<=` in the fire rule"),
    "cpu-noise-pair-swapped": (
        "kernels/cpu.py", "            z0, z1 = rng.normal_from_fields(U[i], Q[i], A[i])\n",
        "            z1, z0 = rng.normal_from_fields(U[i], Q[i], A[i])\n", CPU_TESTS,
        "CPU: the two normals of a pair swapped"),
    "cpu-float16-rounded-twice": (
        "kernels/cpu.py",
        "        stored = store(load(cell[R0 + o]) + d, cell[R0 + o])\n",
        "        stored = store(load(cell[R0 + o]) + load(store(d, cell[R0 + o])), cell[R0 + o])\n", CPU_TESTS, "CPU: float16 storage rounds the update, then the sum (twice)"),
    "cpu-wrong-bias": (
        "kernels/cpu_shape.py", "w + {4 * x.w_off}, w + {4 * x.b_off}, {target}",
        "w + {4 * x.w_off}, w + {4 * layers[min(i + 1, len(layers) - 1)].b_off}, {target}", CPU_TESTS,
        "CPU: the first layer adds the second layer's bias"),
    "cpu-block-flushed-early": (
        "kernels/cpu.py",
        "                if n == BLOCK:\n                    _flush(rows, n, ",
        "                if n == BLOCK:\n                    _flush(rows, n - 1, ",
        CPU_TESTS, "CPU: a full block is flushed without its last cell"),
    "desc-dask-maxpool-reach-one": (
        "fastca/distributed/rounds.py", '    return 2 if description.alive.rule == "maxpool" else 1\n', "    return 1\n",
        ["tests/test_distributed_descriptions.py"],
        "Dask, max-pool rule: rounds widened by one cell per step (a cell's survival reads two cells away)"),
    "desc-layer-width-off-by-one": (
        "kernels/cpu_shape.py", "        block[:w.shape[0], :x.out] = w\n",
        "        block[:w.shape[0], :x.out - (i == 1)] = w[:, :x.out - (i == 1)]\n", CPU_TESTS + DESC_TESTS,
        "CPU, any description: the second learned layer computes one output too few (its last unit is zero)"),
    "desc-filter-wrong-channel": (
        "kernels/cpu_shape.py", "f32_at(runs[{i}], {j * d.channels} + c)",
        "f32_at(runs[{i}], {j * d.channels} + (c + 1) % {d.channels})", DESC_TESTS,
        "CPU, depthwise perception: each filter reads the next channel"),
    "desc-depthwise-rows-not-permuted": (
        "kernels/cpu_shape.py", "w = w.reshape(c, n_f, -1).transpose(1, 0, 2).reshape(n_f * c, -1)",
        "w = w.reshape(n_f * c, -1)", DESC_TESTS,
        "CPU, depthwise perception: the first layer's rows left channel-major while P is filter-major"),
    "desc-maxpool-post-mask-skipped": (
        "fastca/backends/numba_cpu.py",
        "                self._k.maxpool_keep(self._height, self._rows.shape[1], m)\n",
        "                m[4] = m[1]\n", DESC_TESTS,
        "CPU, max-pool rule: the alive test after the update skipped (cells alive before are kept)"),
    "desc-maxpool-not-dilated": (
        "kernels/cpu.py", "            act[r, k] = _box(hot, r, k, height, width, 2)\n",
        "            act[r, k] = _box(hot, r, k, height, width, 1)\n", DESC_TESTS,
        "CPU, max-pool rule: only cells alive before update; their dead neighbours' updates are lost"),
    "desc-wrap-pad-zero": (
        "kernels/cpu.py", "            dst[0, c] = dst[last - 1, c]\n", "            dst[0, c] = 0.0\n", DESC_TESTS,
        "CPU, wrap boundary: the left padding column is zero instead of the row's last column"),
    "desc-wrap-edges-unsaved": (
        "kernels/cpu.py", "                _load_read(rows, b * height + height - 1, edges[b, 1], ptr, runs)\n", "", DESC_TESTS,
        "CPU, wrap boundary: a sample's last row is not saved for its first row's neighbours"),
    "desc-residual-start": (
        "kernels/cpu_shape.py", 'f"R0 = {d.residual[0]}",', 'f"R0 = {max(d.residual[0] - 1, 0)}",', DESC_TESTS,
        "CPU, any description: the update written one channel too low when the residual does not start at 0"),
    "cpu-last-tile-dropped": (
        "kernels/dense.py", "tiles = builder.udiv(builder.add(n, const(mr - 1)), const(mr))",
        "tiles = builder.udiv(n, const(mr))", CPU_TESTS,
        "CPU: a block's last, partial tile of cells is not computed (they keep stale MLP outputs)"),
    "cpu-input-run-short": (
        "kernels/dense.py", "with cgutils.for_range(builder, const(length)) as kloop:",
        "with cgutils.for_range(builder, const(length - 1)) as kloop:", CPU_TESTS,
        "CPU: each dense layer skips the last input of every run"),
    "cpu-avx2-runs-reordered": (
        "kernels/dense.py", "[[s] for s in range(len(runs))]",
        "[[s] for s in (range(len(runs)) if VL == 16 else reversed(range(len(runs))))]",
        ["tests/test_vector_width.py"], "CPU: the 256-bit code adds the input runs in another order (other rounding)"),
    "rng-log-step-dropped": (
        "fastca/rng.py", "    f, e = _halve_down(f, e, 2)\n", "", ["tests/test_rng.py"] + CPU_TESTS,
        "generator: one step of the logarithm's exponent search dropped (noise not normal; shared by every backend)"),
    "cpu-index-reads-not-dilated": (
        "kernels/cpu.py", "        out |= (w << t) | (w >> t) | (left >> np.uint64(64 - s)) | (right << np.uint64(64 - s))\n",
        "        out |= np.uint64(0)\n",
        CPU_TESTS, "CPU: the alive index loads only alive columns, not their dead neighbours (stale reads)"),
    "cpu-index-reads-own-row": (
        "kernels/cpu.py", "    for d in range(-radius, radius + 1):\n        yy = y + d\n", "    for d in range(0, 1):\n        yy = y + d\n",
        CPU_TESTS, "CPU: a row's loads ignore the alive cells of the rows above and below"),
    "cpu-index-stale-after-mutate": (
        "fastca/backends/base.py",
        "        mutate_host(window, gray, self.params.alive_threshold, self.description)\n        self.state_written()\n",
        "        mutate_host(window, gray, self.params.alive_threshold, self.description)\n", CPU_TESTS,
        "CPU: the alive index is kept after a mutation or an edit changed which cells are alive"),
    "cpu-index-stale-after-live-write": (
        "fastca/simulation.py", "                self._runner.state_written()  # the caller may write it\n",
        "                pass\n", CPU_TESTS,
        "CPU: the alive index is kept after the live state was handed out writable"),
    "metrics-index-run-short": (
        "kernels/metrics.py", "                for x in range(x0, x1):\n", "                for x in range(x0, x1 - 1):\n",
        CPU_TESTS, "metrics: counts from the alive index miss the last cell of every run"),
    "metrics-count-dead": (
        "kernels/metrics.py", "        if _alive(row[x, 0], alive_thr):\n            _count_cell(",
        "        if True:\n            _count_cell(", CPU_TESTS, "metrics: dead cells counted"),
    "metrics-minus-one-counted-wrong": (
        "kernels/metrics.py", "    if target >= 0:\n", "    if target >= -1:\n",
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
    # one set of run options (fastca.RunOptions): an entry point that drops one runs another automaton
    "run-world-drops-storage": (
        "fastca/world.py", "                     storage=storage, on_nonfinite=on_nonfinite)",
        "                     on_nonfinite=on_nonfinite)",
        ["tests/test_run_options.py::test_run_world_honours_storage_fire_rate_and_noise"],
        "run_world takes storage but runs float32"),
    "rounds-drop-fire-rate": (
        "fastca/distributed/rounds.py", "fire_rate=self.fire_rate, noise=self.noise, on_nonfinite",
        "noise=self.noise, on_nonfinite",
        ["tests/test_run_options.py::test_one_object_runs_simulate_and_the_distributed_rounds_alike"],
        "distributed.simulate takes fire_rate but its tasks run the model's"),
    "run-options-threads-unchecked": (
        "fastca/run_options.py", '        object.__setattr__(self, "threads", check_threads(self.threads))\n', "",
        ["tests/test_run_options.py::test_bad_options_are_refused_when_made_and_by_every_entry_point"],
        "RunOptions accepts any thread count (0, True)"),
}


GUARD_AREAS = ("play", "distributed", "train", "files", "cli")
GUARDS = {}
for _area in GUARD_AREAS:
    for _name, _mutant in importlib.import_module(f"tests.mutants_{_area}").MUTANTS.items():
        if _name in MUTANTS or _name in GUARDS:
            raise RuntimeError(f"mutant {_name} is defined twice")
        GUARDS[_name] = _mutant
MUTANTS.update(GUARDS)

# Files whose functions Numba compiles (a mutant there needs a cache folder of its own).
COMPILED = ("kernels/", "fastca/kernels/", "fastca/spec.py", "fastca/rng.py", "fastca/metrics.py", "fastca/world.py")


def compiled(path):
    return path.startswith(COMPILED)


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


def run_tests(dst, tests, cuda, cache):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}
    # the copy does not sit beside ../shared: point its tests at the one this repository sees
    shared = Path(os.environ.get("FASTCA_SHARED", ROOT.parent / "shared"))
    if shared.is_dir():
        env.setdefault("FASTCA_SHARED", str(shared.resolve()))
        if (shared / "data" / "mnist").is_dir():
            env.setdefault("FASTCA_MNIST_DIR", str((shared / "data" / "mnist").resolve()))
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
    parser.add_argument("--guards", action="store_true", help="the safety guards' mutants only")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    names = args.names or [n for n in (GUARDS if args.guards else MUTANTS)
                           if not (args.quick and n.startswith("cuda-"))]
    if args.list:
        for n in names:
            print(f"{n:34} {MUTANTS[n][4]}")
        return 0
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        parser.error(f"unknown mutants: {', '.join(unknown)}")
    survivors = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fastca-mutants-") as tmp:
        work = Path(tmp)
        for name in names:
            t0 = time.perf_counter()
            dst = work / "repo"  # one path for every mutant, so the shared cache applies
            shutil.rmtree(dst, ignore_errors=True)
            copy_repo(dst)
            apply(dst, name)
            path = MUTANTS[name][0]
            cache = dst / ".numba-cache" if compiled(path) else work / "shared-cache"
            rc, failed, tail = run_tests(dst, MUTANTS[name][3], name.startswith("cuda-"), cache)
            seconds = time.perf_counter() - t0
            report(name, rc, failed, tail, seconds, survivors)
    print(f"{len(names) - len(survivors)}/{len(names)} mutants caught in {time.perf_counter() - start:.0f} s"
          + (f"; survived: {survivors}" if survivors else ""))
    return 1 if survivors else 0


def report(name, rc, failed, tail, seconds, survivors):
    """Print one mutant's outcome; a survivor (or a run whose tests did not start) joins `survivors`."""
    if rc == 0:
        survivors.append(name)
        print(f"SURVIVED {name:34} ({seconds:.0f} s): {MUTANTS[name][4]}", flush=True)
    elif not failed:
        survivors.append(name)
        print(f"BROKEN   {name:34} ({seconds:.0f} s): the tests did not run\n{tail}", flush=True)
    else:
        print(f"caught   {name:34} by {failed[0]} ({seconds:.0f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
