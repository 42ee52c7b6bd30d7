"""What a new user does, in a fresh venv: `pip install 'wasmlattice[build]'`, then `new` and `build`
for every Python template, `run`, and `dev`.

The package is installed for real (its dependencies from the package index; pip's own cache makes
a second session quicker) from a copy of this checkout, so the test also catches package data the
wheel leaves out (templates, WIT) and a `build` extra that does not build.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import Output, ServerProcess, free_port

REPO = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 1500  # every dependency downloaded and unpacked on a busy 2-core machine


def _user_env(venv: Path) -> dict[str, str]:
    """A shell with the venv activated and nothing of the test run's own Python set up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "WASMLATTICE_"))}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(venv)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (
        f"{cmd} -> {r.returncode}\nstdout: {r.stdout[-4000:]}\nstderr: {r.stderr[-4000:]}"
    )
    return r.stdout


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT + 600)
def test_fresh_venv_install_new_build_and_serve(tmp_path: Path) -> None:
    # The checkout as pip sees it: the project file, the readme and the sources, nothing built.
    src = tmp_path / "wasmlattice-src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = _user_env(venv)
    started = time.monotonic()
    _run([str(venv / "bin" / "pip"), "install", "--quiet", f"{src}[build]"], tmp_path, env, INSTALL_TIMEOUT)
    print(f"pip install '[build]' into a fresh venv: {time.monotonic() - started:.0f} s")
    wasmlattice = str(venv / "bin" / "wasmlattice")

    # From an empty folder, as docs/dev.md tells a user.
    work = tmp_path / "work"
    work.mkdir()
    _run([wasmlattice, "new", "hello"], work, env, 120)
    project = work / "hello"
    out = _run([wasmlattice, "build"], project, env, 900)
    assert "wasi:http/incoming-handler@0.2.6" in out.split("exports:", 1)[1], out

    # Every other Python template builds in the same venv.
    for template in ("python-kv", "python-messaging", "python-custom"):
        _run([wasmlattice, "new", template.replace("python-", "t"), "--template", template], work, env, 120)
        out = _run([wasmlattice, "build"], work / template.replace("python-", "t"), env, 900)
        assert "exports:" in out, (template, out)

    port = free_port()
    server = ServerProcess(
        "hello",
        [wasmlattice, "run", str(project / "build" / "hello.wasm"), "--listen", f"127.0.0.1:{port}"],
        port,
        tmp_path / "run.log",
        env=env,
    )
    try:
        server.start(ready_path="/", timeout=180)
        with urllib.request.urlopen(f"{server.base_url}/hi", timeout=30) as resp:
            assert resp.status == 200
            assert resp.read() == b"hello from hello at /hi\n"
    finally:
        server.stop()

    # `dev` from the venv: its own lattice, the project's manifest deployed, answers over HTTP,
    # Ctrl-C takes it all down.
    http_port = free_port()
    manifest = project / "wadm.yaml"
    manifest.write_text(manifest.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{http_port}"))
    proc = subprocess.Popen(
        [wasmlattice, "dev"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out_dev = Output(proc)
    try:
        url = out_dev.wait_for(r"serving: (http://\S+)", 600, proc).group(1)
        with urllib.request.urlopen(f"{url}dev", timeout=30) as resp:
            assert resp.status == 200
            assert resp.read() == b"hello from hello at /dev\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0, out_dev.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        subprocess.run(
            [wasmlattice, "down", "--data-dir", str(project / ".wasmlattice")], env=env, timeout=120
        )
