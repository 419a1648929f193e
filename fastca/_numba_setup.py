"""Numba set-up done once, before any kernel is compiled: the cache folder and the threading layer.

Cache: Numba keys a cached kernel on its own source file only, so after an edit of a
file it inlines (dense.py, storage.py, rng.py, spec.py) it would load stale machine code.
fastca caches into a folder named by a hash of every source that its compiled functions
use, so any change compiles afresh. When that folder cannot be written (a read-only
home), a temporary folder is used for this process and a warning says so.
``$NUMBA_CACHE_DIR`` set by the user is left alone.

Threading: the default GNU OpenMP layer breaks ``fork()`` after a parallel kernel ran
(a forked child prints "fork() called from a process already using GNU OpenMP" and a
``multiprocessing`` pool hangs). fastca selects Intel TBB's layer, fork- and thread-safe,
where it loads (the ``tbb`` wheel, a dependency on x86-64 Linux and Windows), else Numba's
fork-safe "workqueue" layer, unless ``$NUMBA_THREADING_LAYER`` says otherwise. TBB is the
faster of the two: on a 2-vCPU AMD EPYC the canonical MNIST step took about 6% less time
with it, alternated over six process pairs (benchmarks/RESULTS.md); workqueue's steps were
also the more uneven. Kernel calls from several Python threads are serialised by
:data:`KERNEL_LOCK` (workqueue runs one parallel region at a time).
"""

import ctypes
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path

KERNEL_LOCK = threading.RLock()
_PKG = Path(__file__).resolve().parent
_SOURCES = ("spec.py", "rng.py", "metrics.py", "world.py")
# generated kernels carry their own text hash
_KERNEL_SOURCES = ("cpu.py", "dense.py", "storage.py", "metrics.py", "world.py", "rng_grid.py")

fresh_cache = False  #: True when this process compiles into a new cache folder (the first run)
cache_dir = None


def source_files():
    """The files whose functions are compiled with cache=True, where the import system really finds them.

    ``fastca.kernels`` is the repository's top-level ``kernels/`` folder in an editable
    install and ``fastca/kernels`` in a wheel, so its folder is asked of the import system
    (without importing it). A missing file is an error, never hashed as empty.
    """
    spec = importlib.util.find_spec("fastca.kernels")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("fastca: cannot locate the fastca.kernels package")
    kernels = Path(list(spec.submodule_search_locations)[0]).resolve()
    files = [_PKG / name for name in _SOURCES] + [kernels / name for name in _KERNEL_SOURCES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ImportError(f"fastca: kernel sources missing: {', '.join(missing)}")
    return files


def source_hash(files=None):
    """Hash of every source file whose functions are compiled with cache=True (and of the forced vector width)."""
    h = hashlib.sha256()
    h.update(os.environ.get("FASTCA_VECTOR_BITS", "").encode())  # read by kernels/dense.py when it generates code
    for path in source_files() if files is None else files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _writable(folder):
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def tbb_loads():
    """Whether Numba's TBB layer can load. pip's ``tbb`` wheel puts ``libtbb.so.12`` in the
    environment's ``lib`` folder (or the user base's), which the loader does not search: it is
    loaded from there first."""
    def loads():
        try:
            import numba.np.ufunc.tbbpool  # noqa: F401
            from numba.np.ufunc.parallel import _check_tbb_version_compatible

            _check_tbb_version_compatible()  # Numba's own check (TBB 2021.6 or later): ImportError if not
            return True
        except Exception:  # ImportError, or a Numba without that check: the layer stays off
            return False

    if loads():
        return True
    import site

    folders = [Path(sys.prefix) / "lib", Path(site.USER_BASE or sys.prefix) / "lib"]  # a venv, or pip --user
    names = ("libtbb.so.12*", "libtbb.12*.dylib")  # Linux, macOS
    for lib in [lib for folder in folders for name in names for lib in sorted(folder.glob(name))]:
        try:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        return loads()
    return False


def configure():
    """Point Numba's cache and threading layer as described above (idempotent)."""
    global fresh_cache, cache_dir
    import numba

    tbb = tbb_loads()  # loads the wheel's library also when the user asks for "tbb" (or "safe") by name
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "tbb" if tbb else "workqueue"
    if os.environ.get("NUMBA_CACHE_DIR"):
        cache_dir = os.environ["NUMBA_CACHE_DIR"]
        return
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastca"
    folder = base / f"numba-{source_hash()}"
    # A folder can exist and hold nothing for this install (an interrupted first run): look for Numba's indexes.
    existed = folder.is_dir() and any(folder.rglob("*.nbi"))
    if not _writable(folder):
        folder = Path(tempfile.mkdtemp(prefix="fastca-numba-"))
        warnings.warn(f"fastca: no writable cache folder under {base}; compiled kernels are cached in {folder} "
                      "for this process only (set NUMBA_CACHE_DIR to keep them)", RuntimeWarning, stacklevel=3)
        existed = False
    fresh_cache = not existed
    cache_dir = str(folder)
    numba.config.CACHE_DIR = cache_dir
