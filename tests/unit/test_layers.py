"""The import-layer check (`tools/check_layers.py`) passes on the package and catches violations."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "tools" / "check_layers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = module
    spec.loader.exec_module(module)
    return module


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    for name, text in files.items():
        path = src / "wasmlattice" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return src


def test_the_package_keeps_its_layers() -> None:
    assert _checker().check(ROOT / "src") == []


def test_upward_imports_are_caught_wherever_they_stand(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "host/__init__.py": "",
            "host/registry.py": "X = 1\n",
            "runtime/__init__.py": "",
            "runtime/engine.py": "def f():\n    from wasmlattice.host import registry\n",
            "capabilities/__init__.py": "",
            "capabilities/base.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                "    from wasmlattice.host.registry import X\n"
            ),
        },
    )
    problems = _checker().check(src)
    assert any("runtime/engine.py:2: `runtime` imports `wasmlattice.host.registry`" in p for p in problems)
    assert any(
        "capabilities/base.py:3: `capabilities` imports `wasmlattice.host.registry`" in p for p in problems
    )


def test_cycles_inside_a_package_are_caught(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "lattice/__init__.py": "",
            "lattice/a.py": "from wasmlattice.lattice import b\n",
            "lattice/b.py": "def f():\n    from wasmlattice.lattice.a import g\n",
        },
    )
    assert _checker().check(src) == [
        "import cycle between modules: wasmlattice.lattice.a -> wasmlattice.lattice.b"
    ]


def test_an_unknown_package_must_be_placed_in_the_layers(tmp_path: Path) -> None:
    src = _tree(tmp_path, {"__init__.py": "", "unplaced/__init__.py": ""})
    assert any("package `unplaced` is not in the layer list" in p for p in _checker().check(src))
