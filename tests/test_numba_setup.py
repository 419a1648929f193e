"""The Numba cache folder is named by the sources that are really compiled (issue 22, item 16)."""

import shutil
import sys
from pathlib import Path

import pytest

import fastca  # noqa: F401  (configures the cache and imports the kernels)
from fastca import _numba_setup


def test_hashed_files_are_the_imported_modules():
    files = {f.resolve() for f in _numba_setup.source_files()}
    for name in ("fastca.spec", "fastca.rng", "fastca.metrics", "fastca.world",
                 "fastca.kernels.cpu", "fastca.kernels.dense", "fastca.kernels.storage"):
        __import__(name)
        assert Path(sys.modules[name].__file__).resolve() in files, name
    assert all(f.stat().st_size > 0 for f in files)


def test_an_edit_of_each_source_changes_the_folder(tmp_path):
    copies = []
    for f in _numba_setup.source_files():
        dst = tmp_path / f.parent.name / f.name
        dst.parent.mkdir(exist_ok=True)
        shutil.copy(f, dst)
        copies.append(dst)
    before = _numba_setup.source_hash(copies)
    assert before == _numba_setup.source_hash()
    for f in copies:
        text = f.read_bytes()
        f.write_bytes(text + b"\n# edited\n")
        assert _numba_setup.source_hash(copies) != before, f.name
        f.write_bytes(text)
    assert _numba_setup.source_hash(copies) == before


def test_a_missing_source_is_an_error(monkeypatch):
    monkeypatch.setattr(_numba_setup, "_KERNEL_SOURCES", _numba_setup._KERNEL_SOURCES + ("gone.py",))
    with pytest.raises(ImportError, match="gone.py"):
        _numba_setup.source_hash()


def test_an_existing_but_empty_cache_folder_still_counts_as_a_first_run(tmp_path):
    """The 'compiling' message keys on cached kernels being there, not on the folder existing."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    folder = tmp_path / "fastca" / f"numba-{_numba_setup.source_hash()}"
    folder.mkdir(parents=True)
    code = "import fastca; from fastca import _numba_setup as s; print(s.fresh_cache, s.cache_dir)"

    def fresh():
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr
        flag, where = p.stdout.split()
        assert where == str(folder)
        return flag == "True"

    assert fresh()
    (folder / "sub").mkdir()
    (folder / "sub" / "kernel.nbi").write_bytes(b"")
    assert not fresh()


_LAYER_SCRIPT = """
import numpy as np, numba, fastca
from fastca import _numba_setup
x = np.zeros((1, 28, 28), np.float32); x[0, 10:18, 10:18] = 1
fastca.simulate(fastca.pretrained("fastca-mnist"), x, 2, backend="numba-cpu", threads=2, progress=False)
print(numba.threading_layer(), _numba_setup.tbb_loads())
"""


@pytest.mark.parametrize("env", [None, "workqueue", "tbb"])
def test_the_threading_layer_is_tbb_where_it_loads_else_workqueue_and_the_user_decides(env, monkeypatch):
    import os
    import subprocess

    monkeypatch.delenv("NUMBA_THREADING_LAYER", raising=False)
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)  # the wheel's library must be found without it
    if env:
        monkeypatch.setenv("NUMBA_THREADING_LAYER", env)
    p = subprocess.run([sys.executable, "-c", _LAYER_SCRIPT], capture_output=True, text=True, env=dict(os.environ),
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    if env == "tbb" and "True" not in p.stdout:
        pytest.skip("TBB does not load here")
    layer, tbb = p.stdout.split()[-2:]
    assert layer == (env or ("tbb" if tbb == "True" else "workqueue")), p.stdout
    if sys.platform == "linux" and os.uname().machine == "x86_64":
        assert tbb == "True", "the tbb wheel is a dependency here: its library must load"
