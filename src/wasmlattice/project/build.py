"""Build the component of a project described by its `wasmlattice.toml` (docs/dev.md).

JavaScript guests are built with jco (`jsbuild.py`). Python guests are built with componentize-py,
an optional extra (`pip install 'wasmlattice[build]'`).
The standard WASI WIT comes from the installed spin-sdk wheel (no PyPI package ships it alone) and
our own WIT packages (key-value draft, messaging, ...) from `wasmlattice/wit/`, both added as
dependencies of the project's own `wit/` folder when it has one.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from wasmlattice import devbuild
from wasmlattice.project import jsbuild
from wasmlattice.project.config import CONFIG_FILE as CONFIG_FILE
from wasmlattice.project.config import BuildError as BuildError
from wasmlattice.project.config import BuildResult as BuildResult
from wasmlattice.project.config import ProjectConfig as ProjectConfig
from wasmlattice.project.config import ToolchainMissing as ToolchainMissing

LANGUAGES = ("python", "javascript")
# The guest source a language's toolchain takes (the first is the default's suffix: app.py, app.js).
SOURCE_SUFFIXES = {"python": (".py",), "javascript": (".js", ".mjs")}
# The world of a project without `component.world` or `component.wit`: the WASI HTTP proxy, at the
# release whose WIT the toolchain's WIT source has (spin-sdk's newest; jco 1.34's bundled one).
DEFAULT_WORLD = {"python": devbuild.HTTP_WORLD, "javascript": "wasi:http/proxy@0.2.12"}
# A world name: a bare WIT identifier (the project's own world) or `ns:pkg/world[@version]`.
_WIT_ID = r"[a-z][a-z0-9]*(?:-[a-z][a-z0-9]*)*"
WORLD_RE = re.compile(rf"^(?:{_WIT_ID}:{_WIT_ID}/)?{_WIT_ID}(?:@[0-9A-Za-z.+-]+)?$")
NAME_RE = re.compile(rf"^{_WIT_ID}$")
MAX_NAME = 63
# Longest a guest build may take; componentize-py takes a few seconds, a cold one under a minute.
BUILD_TIMEOUT = 600.0


def check_name(name: str, what: str = "name") -> str:
    """A project or component name: a WIT identifier (lowercase words joined by '-'), 63 chars at most."""
    if not NAME_RE.match(name) or len(name) > MAX_NAME:
        raise BuildError(
            f"{what} {name!r} is not valid: use lowercase letters, digits and '-' (each word starting "
            f"with a letter, as in WIT), at most {MAX_NAME} characters"
        )
    return name


def _inside(root: Path, rel: object, field: str) -> Path:
    if not isinstance(rel, str) or not rel:
        raise BuildError(f"{CONFIG_FILE}: `{field}` must be a non-empty string")
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise BuildError(f"{CONFIG_FILE}: `{field}` ({rel}) points outside the project folder")
    return path


def project_roots(root: Path) -> list[Path]:
    """The component folders of a project: `root` when it has a wasmlattice.toml, else each direct
    subfolder that has one (a project of several components, like the python-custom template)."""
    if (root / CONFIG_FILE).is_file():
        return [root]
    subs = sorted(p.parent for p in root.glob(f"*/{CONFIG_FILE}") if p.is_file())
    return subs or [root]  # none: load_config(root) says what is missing


def load_config(root: Path) -> ProjectConfig:
    """Read and check `root/wasmlattice.toml`; every error names the file and the field."""
    root = root.resolve()
    path = root / CONFIG_FILE
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BuildError(
            f"{path} does not exist: run `wasmlattice build` in a project folder "
            "(one made by `wasmlattice new`), or pass --path"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BuildError(f"{path}: not valid TOML: {e}") from None
    comp = doc.get("component")
    if not isinstance(comp, dict):
        raise BuildError(f"{CONFIG_FILE}: a [component] table is required")
    unknown = set(comp) - {"name", "language", "source", "world", "wit"}
    if unknown:
        raise BuildError(f"{CONFIG_FILE}: unknown key(s) in [component]: {', '.join(sorted(unknown))}")
    name = comp.get("name")
    if not isinstance(name, str):
        raise BuildError(f"{CONFIG_FILE}: `component.name` must be a string")
    check_name(name, f"{CONFIG_FILE}: `component.name`")
    language = comp.get("language", "python")
    if language not in LANGUAGES:
        raise BuildError(
            f"{CONFIG_FILE}: `component.language` {language!r} is not supported; use one of: "
            + ", ".join(LANGUAGES)
        )
    suffixes = SOURCE_SUFFIXES[language]
    source = _inside(root, comp.get("source", f"app{suffixes[0]}"), "component.source")
    if source.suffix not in suffixes or not source.is_file():
        raise BuildError(
            f"{CONFIG_FILE}: `component.source` ({source}) must be an existing {' or '.join(suffixes)} file"
        )
    wit = None
    if "wit" in comp:
        wit = _inside(root, comp["wit"], "component.wit")
        if not (wit / "world.wit").is_file():
            raise BuildError(f"{CONFIG_FILE}: `component.wit` ({wit}) must be a folder with a world.wit")
    if wit is not None and language == "javascript":
        raise BuildError(
            f"{CONFIG_FILE}: `component.wit` is not supported yet for javascript; "
            "give a standard world in `component.world`, e.g. wasi:http/proxy@0.2.12"
        )
    world = comp.get("world", DEFAULT_WORLD[language] if wit is None else name)
    if not isinstance(world, str) or not WORLD_RE.match(world):
        raise BuildError(
            f"{CONFIG_FILE}: `component.world` {world!r} is not a world name "
            "(`ns:pkg/world@version`, or the name of a world in the project's wit/world.wit)"
        )
    if wit is None and ":" not in world:
        raise BuildError(
            f"{CONFIG_FILE}: `component.world` {world!r} names no package; without `component.wit` "
            "give a standard world in full, e.g. wasi:http/proxy@0.2.6"
        )
    build = doc.get("build", {})
    if not isinstance(build, dict):
        raise BuildError(f"{CONFIG_FILE}: [build] must be a table")
    output = _inside(root, build.get("output", f"build/{name}.wasm"), "build.output")
    if output.suffix != ".wasm":
        raise BuildError(f"{CONFIG_FILE}: `build.output` ({output}) must end in .wasm")
    return ProjectConfig(root, name, language, source, world, wit, output)


def check_toolchain() -> None:
    """Raise ToolchainMissing (with the exact install command) unless the build extra imports."""
    try:
        for module in ("componentize_py", "spin_sdk"):
            importlib.import_module(module)
    except ImportError as e:
        raise ToolchainMissing(
            f"the Python guest toolchain is missing ({e.msg}); install it with: {devbuild.BUILD_HINT}"
        ) from None


def _stage_wit(cfg: ProjectConfig, build_dir: Path) -> Path:
    """A WIT folder for componentize-py: the project's own `wit/`, standard and our packages as deps."""
    assert cfg.wit is not None
    stage = build_dir / ".wit"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "deps").mkdir(parents=True)
    for f in cfg.wit.glob("*.wit"):
        shutil.copyfile(f, stage / f.name)
    # The project's own deps win over ours, ours over the toolchain's (same folder name).
    sources = [devbuild.spin_sdk_wit() / "deps", devbuild.PROJECT_WIT, cfg.wit / "deps"]
    for src in sources:
        if not src.is_dir():
            continue
        for dep in src.iterdir():
            if dep.is_dir() or dep.suffix == ".wit":
                link = stage / "deps" / dep.name
                if link.is_symlink():
                    link.unlink()
                link.symlink_to(dep.resolve())
    return stage


def build_project(root: Path, note: Callable[[str], None] | None = None) -> BuildResult:
    """Build the project in `root` to its `build.output`; BuildError carries the toolchain's message.

    `note` is told about slow steps before they start (`npm install` of a JavaScript project).
    """
    cfg = load_config(root)
    tmp_out = cfg.output.with_name(f".tmp-{os.getpid()}-{cfg.output.name}")
    if cfg.language == "javascript":
        tool = "jco"
        env = jsbuild.build_env()
        node, jco = jsbuild.ensure_jco(cfg, env, note)
        cfg.output.parent.mkdir(parents=True, exist_ok=True)
        wit, world = jsbuild.stage_wit(cfg, jco, cfg.output.parent)
        cmd = jsbuild.componentize_cmd(cfg, node, jco, wit, world, tmp_out)
    else:
        tool = "componentize-py"
        cmd, env = _componentize_py_cmd(cfg, tmp_out)
    started = time.monotonic()
    try:
        res = subprocess.run(
            cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd=cfg.root, env=env
        )
    except subprocess.TimeoutExpired:
        tmp_out.unlink(missing_ok=True)
        raise BuildError(f"{tool} did not finish within {BUILD_TIMEOUT:.0f} s") from None
    seconds = time.monotonic() - started
    if res.returncode != 0 or not tmp_out.is_file():
        tmp_out.unlink(missing_ok=True)
        # The toolchain's own words: what it printed, not a traceback of ours.
        output = "\n".join(s.strip() for s in (res.stderr, res.stdout) if s.strip())
        message = jsbuild.jco_message(output) if tool == "jco" else _toolchain_message(output)
        if tool == "jco" and "failed to parse JS source" in message:
            message += "\n" + jsbuild.syntax_error(cmd[0], cfg.source, env)
        raise BuildError(f"{tool} failed (exit {res.returncode}):\n{message}")
    os.replace(tmp_out, cfg.output)
    return BuildResult(cfg, cfg.output, seconds, tool)


def _componentize_py_cmd(cfg: ProjectConfig, tmp_out: Path) -> tuple[list[str], dict[str, str]]:
    """componentize-py's command line and environment for a Python project."""
    check_toolchain()
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    wit = str(devbuild.spin_sdk_wit()) if cfg.wit is None else str(_stage_wit(cfg, cfg.output.parent))
    try:
        tool = devbuild.find_tool("componentize-py")
    except FileNotFoundError as e:
        raise ToolchainMissing(str(e)) from None
    cmd = [tool, "-d", wit, "-w", cfg.world, "componentize"]
    cmd += ["-p", str(cfg.source.parent), cfg.source.stem, "-o", str(tmp_out)]
    return cmd, devbuild.componentize_py_env(cfg.output.parent)


def _toolchain_message(text: str) -> str:
    """componentize-py's error without the three-line Python traceback of its console script.

    Its `script()` raises AssertionError carrying the real message (a guest SyntaxError with file,
    line and caret, a WIT error, ...); the lines above it only say that the script failed.
    """
    marker = "AssertionError: "
    if text.startswith("Traceback (most recent call last):") and marker in text:
        return text.split(marker, 1)[1].strip()
    return text
