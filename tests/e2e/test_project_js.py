"""The `js-http` template as a user runs it: `new`, `build` (npm install + jco), deployed and served.

npm's own cache (~/.npm) is reused across test sessions; `prefer-offline` keeps a warm run from
asking the registry again, so only the first session on a machine downloads jco.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.support.cli import cli, deployed_on_up, exports_of
from tests.support.http import request_blocking as request

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js (node and npm)")

BUILD_TIMEOUT = 900  # a cold npm install of jco, then jco, on a busy 2-core machine
NPM_ENV = {"npm_config_prefer_offline": "true"}


@pytest.mark.slow
def test_new_js_http_builds_deploys_and_serves(tmp_path: Path) -> None:
    project = tmp_path / "web"
    r = cli("new", "web", "--template", "js-http", "--path", str(project))
    assert r.returncode == 0, r.stderr
    started = time.monotonic()
    r = cli("build", "--path", str(project), env=NPM_ENV, timeout=BUILD_TIMEOUT)
    assert r.returncode == 0, f"stdout: {r.stdout}\nstderr: {r.stderr}"
    print(f"first js-http build (npm install + jco): {time.monotonic() - started:.1f} s")
    assert "running `npm install`" in r.stderr  # node_modules was missing, so the build installed it
    assert (project / "node_modules" / "@bytecodealliance" / "jco").is_dir()
    assert r.stdout.startswith("built ") and ", jco " in r.stdout.splitlines()[0]
    assert any(e.startswith("wasi:http/incoming-handler@0.2.") for e in exports_of(r.stdout)), r.stdout
    wasm = project / "build" / "web.wasm"
    built = wasm.read_bytes()

    # Its wadm.yaml, deployed as written (on ports of our own) on a lattice `up` started.
    assert cli("app", "validate", str(project / "wadm.yaml")).returncode == 0
    with deployed_on_up(project, tmp_path, "web") as http_port:
        got = request("GET", f"http://127.0.0.1:{http_port}/greet?x=1")
        assert got == (200, b"hello from web at /greet?x=1\n")

    # A syntax error: jco's own message, no npm install again, and the previous build kept.
    with open(project / "app.js", "a") as f:
        f.write("\nfunction oops( {\n")
    r = cli("build", "--path", str(project), env=NPM_ENV, timeout=BUILD_TIMEOUT)
    assert r.returncode == 1, r.stdout
    assert "jco failed (exit 1):\nError: failed to parse JS source" in r.stderr, r.stderr
    # ... and where: jco does not say, so the build adds `node --check`'s file, line and error.
    assert f"{project / 'app.js'}:" in r.stderr and "SyntaxError: Unexpected end of input" in r.stderr
    assert "    at " not in r.stderr, r.stderr  # no Node.js stack trace
    assert "npm install" not in r.stderr
    assert wasm.read_bytes() == built


@pytest.mark.slow
def test_js_build_without_node_says_what_to_install(tmp_path: Path) -> None:
    project = tmp_path / "web"
    assert cli("new", "web", "--template", "js-http", "--path", str(project)).returncode == 0
    # A PATH with everything but node and npm (the CLI runs with this interpreter, not from PATH).
    bare = tmp_path / "bin"
    bare.mkdir()
    r = cli("build", "--path", str(project), env={"PATH": str(bare)}, timeout=120)
    assert r.returncode == 1, r.stdout
    assert "node and npm are not on PATH" in r.stderr, r.stderr
    assert "apt-get install nodejs npm" in r.stderr and "https://nodejs.org" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (project / "node_modules").exists() and not (project / "build").exists()
