"""The wheel carries every subpackage: setup.py's list against the folders the import system finds."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_lists_every_subpackage():
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    listed = set(ast.literal_eval(next(k.value for k in call.keywords if k.arg == "packages")))
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "fastca").rglob("__init__.py")
             if "__pycache__" not in p.parts}
    found |= {"fastca.kernels"}  # the top-level kernels/ folder, mapped by package_dir
    assert found <= listed, f"setup.py's packages lack {sorted(found - listed)}: a wheel would leave them out"
