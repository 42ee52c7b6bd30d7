"""`wasmlattice new` then `wasmlattice build` as a user runs them, then the built component served."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.cli import cli, deployed_on_up, exports_of
from tests.support.http import request_blocking as request
from tests.support.processes import ServerProcess, free_port, wasmlattice_cmd

BUILD_TIMEOUT = 900  # componentize-py on a busy 2-core machine


def new_and_build(tmp_path: Path, name: str, template: str) -> tuple[Path, str]:
    """`new NAME --template T` in tmp_path, then `build --path`; the project folder and build output."""
    project = tmp_path / name
    r = cli("new", name, "--template", template, "--path", str(project))
    assert r.returncode == 0, r.stderr
    assert (project / "wasmlattice.toml").is_file() and (project / "wadm.yaml").is_file()
    r = cli("build", "--path", str(project), timeout=BUILD_TIMEOUT)
    assert r.returncode == 0, f"stdout: {r.stdout}\nstderr: {r.stderr}"
    assert (project / "build" / f"{name}.wasm").is_file()
    return project, r.stdout


@pytest.mark.slow
def test_new_python_http_builds_and_serves(tmp_path: Path) -> None:
    project, out = new_and_build(tmp_path, "hello", "python-http")
    assert "wasi:http/incoming-handler@0.2.6" in exports_of(out)
    port = free_port()
    server = ServerProcess(
        "hello",
        wasmlattice_cmd("run", str(project / "build" / "hello.wasm"), "--listen", f"127.0.0.1:{port}"),
        port,
        tmp_path / "run.log",
        env=dict(os.environ),
    )
    server.start(ready_path="/", timeout=180)
    try:
        with urllib.request.urlopen(f"{server.base_url}/greet?x=1", timeout=30) as resp:
            assert resp.status == 200
            assert resp.read() == b"hello from hello at /greet?x=1\n"
    finally:
        server.stop()


@pytest.mark.slow
def test_new_python_kv_builds_and_its_manifest_deploys(tmp_path: Path) -> None:
    project, out = new_and_build(tmp_path, "kv-demo", "python-kv")
    imports = out.split("imports:", 1)[1].split("exports:", 1)[0]
    # Our WIT package (shipped inside wasmlattice) was found and the world imports it.
    assert "wasi:keyvalue/store@0.2.0-draft2" in imports
    assert "wasi:keyvalue/atomics@0.2.0-draft2" in imports
    manifest = project / "wadm.yaml"
    r = cli("app", "validate", str(manifest))
    assert r.returncode == 0, r.stderr
    assert "valid manifest for app kv-demo" in r.stdout
    # Deployed as written, on ports of our own, with `up` (NATS KV behind builtin://keyvalue-nats).
    with deployed_on_up(project, tmp_path, "kv-demo") as http_port:
        base = f"http://127.0.0.1:{http_port}"
        assert request("GET", f"{base}/") == (200, b"hello from kv-demo, visit 1\n")
        assert request("GET", f"{base}/") == (200, b"hello from kv-demo, visit 2\n")
        assert request("GET", f"{base}/greeting") == (404, b"no such key\n")
        assert request("PUT", f"{base}/greeting", b"hi there") == (201, b"stored 8 bytes\n")
        assert request("GET", f"{base}/greeting") == (200, b"hi there")


@pytest.mark.slow
def test_new_python_messaging_builds_and_answers_a_request(tmp_path: Path) -> None:
    project, out = new_and_build(tmp_path, "msg-demo", "python-messaging")
    assert "wasmcloud:messaging/handler@0.2.0" in exports_of(out)
    assert "wasmcloud:messaging/consumer@0.2.0" in out.split("imports:", 1)[1].split("exports:", 1)[0]
    manifest = project / "wadm.yaml"
    r = cli("app", "validate", str(manifest))
    assert r.returncode == 0, r.stderr
    assert "valid manifest for app msg-demo" in r.stdout
    data_dir = tmp_path / "up"
    up = cli("up", "--detach", "--data-dir", str(data_dir), "--nats-port", str(free_port()),
             "--allow-dir", str(tmp_path), "-o", "json", timeout=120)  # fmt: skip
    assert up.returncode == 0, up.stderr
    nats_url = json.loads(up.stdout)["nats_url"]
    try:
        r = cli("app", "deploy", str(manifest), "--nats-url", nats_url, "--data-dir", str(data_dir),
                "--timeout", "120", timeout=180)  # fmt: skip
        assert r.returncode == 0 and "Deployed msg-demo version v1" in r.stdout, r.stderr
        assert asyncio.run(request_reply(nats_url, data_dir / "nats-user.nk")) == b"HELLO"
    finally:
        cli("down", "--data-dir", str(data_dir))


async def request_reply(nats_url: str, creds: Path) -> bytes:
    """`msg-demo.in` with body `hello`, as a NATS request (retried while the subscription comes up)."""
    from wasmlattice.protocol.connection import NatsOptions, connect

    nc = await connect(NatsOptions(url=nats_url, name="test-project-cli", creds_file=creds))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                msg = await nc.request("msg-demo.in", b"hello", timeout=5)
                return bytes(msg.data)
            except Exception:  # no responders yet, or a time-out while the link is applied
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await nc.close()


@pytest.mark.slow
def test_new_python_custom_builds_both_and_one_calls_the_other(tmp_path: Path) -> None:
    project = tmp_path / "duo"
    assert cli("new", "duo", "--template", "python-custom", "--path", str(project)).returncode == 0
    # The project folder holds two components; `build` there builds each.
    r = cli("build", "--path", str(project), timeout=BUILD_TIMEOUT)
    assert r.returncode == 0, f"stdout: {r.stdout}\nstderr: {r.stderr}"
    front, greeter = r.stdout.split("built ")[1:]
    assert "example:duo/greet" in front.split("exports:")[0]
    assert "example:duo/greet" in exports_of(greeter)
    with deployed_on_up(project, tmp_path, "duo") as http_port:
        got = request("GET", f"http://127.0.0.1:{http_port}/?name=you")
        assert got == (200, b"hello you, from duo-greeter\n")


@pytest.mark.slow
def test_build_without_the_toolchain_names_the_extra(tmp_path: Path) -> None:
    project = tmp_path / "hello"
    assert cli("new", "hello", "--path", str(project)).returncode == 0
    # A package earlier on the path that fails to import, as an absent componentize-py does.
    shadow = tmp_path / "shadow" / "componentize_py"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named componentize_py')\n")
    path = os.pathsep.join([str(shadow.parent), *sys.path])
    r = cli("build", "--path", str(project), env={"PYTHONPATH": path}, timeout=120)
    assert r.returncode == 1
    assert "pip install 'wasmlattice[build]'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (project / "build").exists()


@pytest.mark.slow
def test_build_error_shows_the_toolchains_message(tmp_path: Path) -> None:
    project = tmp_path / "broken"
    assert cli("new", "broken", "--path", str(project)).returncode == 0
    with open(project / "app.py", "a") as f:
        f.write("\ndef oops(:\n")
    r = cli("build", "--path", str(project), timeout=BUILD_TIMEOUT)
    assert r.returncode == 1, r.stdout
    assert "SyntaxError" in r.stderr and "def oops(:" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert not (project / "build" / "broken.wasm").exists()
