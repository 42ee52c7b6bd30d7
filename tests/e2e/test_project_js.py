"""The `js-http` template as a user runs it: `new`, `build` (npm install + jco), deployed and served.

npm's own cache (~/.npm) is reused across test sessions; `prefer-offline` keeps a warm run from
asking the registry again, so only the first session on a machine downloads jco.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.support.cli import cli, exports_of
from tests.support.http import request_blocking as request
from tests.support.processes import free_port

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
    manifest = project / "wadm.yaml"
    assert cli("app", "validate", str(manifest)).returncode == 0
    http_port = free_port()
    manifest.write_text(manifest.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{http_port}"))
    data_dir = tmp_path / "up"
    up = cli("up", "--detach", "--data-dir", str(data_dir), "--nats-port", str(free_port()),
             "--allow-dir", str(tmp_path), "-o", "json", timeout=120)  # fmt: skip
    assert up.returncode == 0, up.stderr
    nats = ["--nats-url", json.loads(up.stdout)["nats_url"], "--data-dir", str(data_dir)]
    try:
        r = cli("app", "deploy", str(manifest), *nats, "--timeout", "120", timeout=180)
        assert r.returncode == 0 and "Deployed web version v1" in r.stdout, r.stderr
        got = request("GET", f"http://127.0.0.1:{http_port}/greet?x=1")
        assert got == (200, b"hello from web at /greet?x=1\n")
    finally:
        cli("down", "--data-dir", str(data_dir))

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
