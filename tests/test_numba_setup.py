"""The Numba cache folder is named by the sources that are really compiled (issue 22, item 16)."""

import shutil
import sys
from pathlib import Path

import pytest

import fastca  # noqa: F401  (configures the cache and imports the kernels)
from fastca import _numba_setup


def test_hashed_files_are_the_imported_modules():
    files = {f.resolve() for f in _numba_setup.source_files()}
    for name in ("fastca.spec", "fastca.rng", "fastca.metrics", "fastca.world", "fastca.kernels.cell",
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
