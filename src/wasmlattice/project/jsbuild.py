"""Build a JavaScript component with jco (`jco componentize`, StarlingMonkey via componentize-js).

The toolchain is the project's own npm dev dependencies (`package.json`: `@bytecodealliance/jco`
and `@bytecodealliance/componentize-js`), installed into `node_modules/` by `npm install`; the build
runs that when `node_modules/` has no jco. Node.js and npm themselves must be on PATH.

The standard WASI WIT comes from the installed jco package, which ships the WASI 0.2 packages at
one release (`lib/wit/builtin/<version>/wasi-*/package.wit`, derived from WebAssembly/WASI, see its
README there). The build stages a WIT folder under `build/.wit/` (a build output) with copies of
those as `deps/`; nothing third-party is committed in the project. A world of the project's own
(`component.wit`) is not supported yet for JavaScript.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from wasmlattice.project.config import BuildError, ProjectConfig, ToolchainMissing

JCO_PACKAGE = "@bytecodealliance/jco"
# (The template pins jco 1.34.0: 1.35.0's WIT parser, wasm-tools on preview2-shim 0.26, has no
# preopened folder and fails on every path with "failed to get path metadata".)
# Where jco keeps its bundled WASI WIT, relative to the package folder (one folder per release).
JCO_WIT = Path("lib") / "wit" / "builtin"
# jco imports `styleText` from node:util, which Node.js has since 20.12.
MIN_NODE = (20, 12)
# Debian 12's and Ubuntu 24.04's own nodejs packages are 18.x, too old; Debian 13's is 20.19.
NODE_HINT = (
    "install Node.js 20.12 or later with npm: https://nodejs.org/en/download "
    "(or `apt-get install nodejs npm` on Debian 13 and later)"
)
# `npm install` of jco downloads ~150 packages (~400 MB unpacked) on a cold npm cache.
NPM_TIMEOUT = 900.0
# A standard world in full: `ns:pkg/world@version`.
_STD_WORLD = re.compile(r"^([a-z][a-z0-9-]*):([a-z][a-z0-9-]*)/([a-z][a-z0-9-]*)@([0-9A-Za-z.+-]+)$")
# The world of the staged root package, which includes the standard world the project names.
STAGED_PACKAGE = "wasmlattice:staged"
STAGED_WORLD = "component"


def node_tools() -> tuple[str, str]:
    """`node` and `npm` from PATH; ToolchainMissing saying what to install when either is absent."""
    node, npm = shutil.which("node"), shutil.which("npm")
    missing = [name for name, path in (("node", node), ("npm", npm)) if path is None]
    if node is None or npm is None:
        raise ToolchainMissing(
            f"building a JavaScript component needs Node.js, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not on PATH; {NODE_HINT}"
        )
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolchainMissing(f"{node} --version failed ({e}); {NODE_HINT}") from None
    m = re.match(r"v(\d+)\.(\d+)", out.strip())
    if m is None or (int(m[1]), int(m[2])) < MIN_NODE:
        raise ToolchainMissing(
            f"{node} is Node.js {out.strip() or '(no version)'}, too old for jco; {NODE_HINT}"
        )
    return node, npm


def jco_dir(root: Path) -> Path:
    """The installed jco package of the project (`node_modules/@bytecodealliance/jco`)."""
    return root / "node_modules" / JCO_PACKAGE


def npm_install(root: Path, npm: str, env: dict[str, str]) -> None:
    """`npm install` in the project, for its dev dependencies (jco); BuildError with npm's words."""
    if not (root / "package.json").is_file():
        raise BuildError(
            f"{root / 'package.json'} does not exist: a JavaScript project lists jco in its package.json "
            f"(`wasmlattice new NAME --template js-http` writes one)"
        )
    cmd = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=NPM_TIMEOUT, cwd=root, env=env)
    except subprocess.TimeoutExpired:
        raise BuildError(f"`npm install` in {root} did not finish within {NPM_TIMEOUT:.0f} s") from None
    if res.returncode != 0:
        out = "\n".join(s.strip() for s in (res.stderr, res.stdout) if s.strip())
        raise BuildError(f"`npm install` in {root} failed (exit {res.returncode}):\n{out}")


def ensure_jco(
    cfg: ProjectConfig, env: dict[str, str], note: Callable[[str], None] | None = None
) -> tuple[str, Path]:
    """node, and the project's jco package folder, running `npm install` first if jco is missing."""
    node, npm = node_tools()
    jco = jco_dir(cfg.root)
    if not (jco / "package.json").is_file():
        if note is not None:
            note(f"{jco} is missing: running `npm install` in {cfg.root} (the first time downloads jco)")
        npm_install(cfg.root, npm, env)
        if not (jco / "package.json").is_file():
            raise BuildError(
                f"`npm install` in {cfg.root} did not install {JCO_PACKAGE}: add it to the "
                "devDependencies of package.json"
            )
    return node, jco


def _wasi_versions(jco: Path) -> list[str]:
    base = jco / JCO_WIT
    return (
        sorted(p.name for p in base.iterdir() if p.is_dir() and p.name[:1].isdigit()) if base.is_dir() else []
    )


def stage_wit(cfg: ProjectConfig, jco: Path, build_dir: Path) -> tuple[Path, str]:
    """A WIT folder for jco and the world to build in it, with jco's WASI packages as deps.

    The project's standard world (`wasi:http/proxy@0.2.12`) becomes a root package whose world
    includes it, with the packages of the WASI release of that version that jco ships. Only those:
    wasm-tools resolves every package in `deps/`, and ours (key-value draft, ...) need WASI 0.2.0.
    """
    m = _STD_WORLD.match(cfg.world)
    if m is None:  # load_config lets only full names through for javascript
        raise BuildError(f"`component.world` {cfg.world!r} must be `ns:pkg/world@version`")
    version = m[4]
    versions = _wasi_versions(jco)
    if m[1] != "wasi" or version not in versions:
        raise BuildError(
            f"`component.world` {cfg.world!r}: the installed jco ({jco}) ships the WASI WIT at "
            f"{', '.join(versions) or 'no version'}; name a wasi world at one of those versions"
        )
    stage = build_dir / ".wit"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "deps").mkdir(parents=True)
    (stage / "world.wit").write_text(
        f"package {STAGED_PACKAGE};\n\nworld {STAGED_WORLD} {{\n  include {cfg.world};\n}}\n"
    )
    # Copies, not symlinks: jco parses WIT with wasm-tools compiled to WASI, whose file system does
    # not follow symlinks out of the folder; these are a few small text files.
    for dep in (jco / JCO_WIT / version).iterdir():
        if dep.is_dir():
            shutil.copytree(dep, stage / "deps" / dep.name)
    return stage, STAGED_WORLD


def jco_message(text: str) -> str:
    """jco's error without the Node.js stack trace under it (`    at fn (file:///...)` lines)."""
    lines = [line for line in text.splitlines() if not re.match(r"^\s+at \S", line)]
    return "\n".join(line for line in lines if not re.match(r"^Node\.js v\d", line)).strip()


def syntax_error(node: str, source: Path, env: dict[str, str]) -> str:
    """Where the syntax error is, from `node --check` (jco says only "failed to parse JS source")."""
    try:
        res = subprocess.run(
            [node, "--check", str(source)], capture_output=True, text=True, timeout=60, env=env
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = jco_message(res.stderr)
    return re.sub(r"\n{2,}", "\n", text) if res.returncode != 0 else ""


def componentize_cmd(cfg: ProjectConfig, node: str, jco: Path, wit: Path, world: str, out: Path) -> list[str]:
    """`jco componentize SOURCE --wit WIT --world-name WORLD -o OUT`, run with the project's node."""
    cli = jco / "dist" / "jco.js"
    if not cli.is_file():
        raise BuildError(f"{cli} is missing: the installed {JCO_PACKAGE} is incomplete; run `npm install`")
    return [node, str(cli), "componentize", str(cfg.source), "--wit", str(wit), "--world-name", world,
            "-o", str(out)]  # fmt: skip


def build_env() -> dict[str, str]:
    """The environment of npm and jco: no colour codes in the messages we show."""
    return {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0", "npm_config_update_notifier": "false"}
