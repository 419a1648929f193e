"""Kernels generated for a model description: a template module with its shape block rewritten.

A kernel template (``cpu.py``, ``cuda.py``) is an ordinary module whose sizes live in one
block of generated code between the lines ``# <generated>`` and ``# </generated>`` (as
shipped, the block holds the MNIST model's, so the template reads and lints as plain
code). :func:`load` writes a copy of the template with the block rendered for a
description into the kernel cache folder and imports it. The copy's file name carries a
hash of its text, so

- every kernel shape gets its own module, whose constants Numba compiles in (no shape is a
  run-time argument, so loops over channels and widths unroll and vectorise as for MNIST);
  descriptions whose sizes differ only within the padding to whole vectors share one;
- Numba caches each module's machine code across processes like any other source file
  (the file is written once, atomically, and never rewritten: its time stamp stays valid);
- an edit of the template, or another vector width, yields another file, never stale code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

BEGIN = "# <generated>"
END = "# </generated>"
_PACKAGE = "fastca_generated"  #: the generated modules are imported as fastca_generated.<name>
_LOADED: dict = {}


def template_source(template: str) -> str:
    """The text of kernel template ``template`` (a module name in this package, e.g. "cpu")."""
    return (Path(__file__).resolve().parent / f"{template}.py").read_text()


def render(template: str, block: str) -> str:
    """The template's text with its generated block replaced by ``block`` (lines, no markers)."""
    text = template_source(template)
    start, stop = text.index(BEGIN), text.index(END)
    head = text[:start].rstrip("\n") + "\n"
    return f"{head}{BEGIN} (rendered by fastca.kernels.generate; do not edit)\n{block.strip()}\n{text[stop:]}"


def folder() -> Path:
    """Where generated modules are written: ``generated/`` in fastca's kernel cache folder."""
    from fastca import _numba_setup

    base = _numba_setup.cache_dir or os.environ.get("NUMBA_CACHE_DIR") or tempfile.gettempdir()
    return Path(base) / "generated"


def load(template: str, block: str, label: str = "model"):
    """Import (writing it first if new) the module of ``template`` with ``block`` as its shape block.

    ``label`` goes into the file name to help a reader of the cache folder (a description's
    name); the module is keyed by the hash of its whole text. Returns the module; the same
    text gives the same module object for the life of the process.
    """
    text = render(template, block)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    safe = "".join(ch if ch.isalnum() else "_" for ch in label)[:40]
    name = f"{template}_{safe}_{digest}"
    if name in _LOADED:
        return _LOADED[name]
    out = folder()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.py"
    if not path.is_file() or path.read_text() != text:
        fd, tmp = tempfile.mkstemp(dir=out, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # atomic: a concurrent process sees the old file or the whole new one
    modname = f"{_PACKAGE}.{name}"
    if _PACKAGE not in sys.modules:  # a namespace for the generated modules (Numba's cache re-imports by name)
        pkg = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(_PACKAGE, None, is_package=True))
        pkg.__path__ = []
        sys.modules[_PACKAGE] = pkg
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the generated kernel {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[modname]
        raise
    _LOADED[name] = module
    return module


def is_cached(module, function: str = "step_inplace") -> bool:
    """Whether Numba's cache holds an index for ``function`` of ``module`` (its compiled code is there:
    Numba names an index ``<file stem>.<function>-<line>.py<version>.nbi``)."""
    from fastca import _numba_setup

    stem = Path(module.__file__).stem
    base = Path(_numba_setup.cache_dir or os.environ.get("NUMBA_CACHE_DIR") or "")
    return base.is_dir() and any(base.rglob(f"{stem}.{function}-*.nbi"))
