"""`wasmlattice dev` as a user runs it: serve, edit, hot-swap without a failed request, survive a
syntax error, stop everything on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.cli import cli
from tests.support.processes import Output, free_port, wasmlattice_cmd

START_TIMEOUT = 600  # a cold componentize-py build plus the lattice on a busy 2-core machine
# Issue 16 asks for 15 s from save to new response; this machine is shared, so the test allows
# more and prints what it measured.
RELOAD_TIMEOUT = 60


class Client:
    """Sends GET requests one after another until stopped; records every answer and failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.bodies: list[tuple[float, bytes]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=30) as resp:
                    body = resp.read()
                    if resp.status != 200:
                        self.failures.append(f"status {resp.status}: {body!r}")
                    self.bodies.append((time.monotonic(), body))
            except Exception as e:
                self.failures.append(f"{type(e).__name__}: {e}")
            time.sleep(0.02)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def first_since(self, t0: float, body: bytes) -> float | None:
        return next((t for t, b in list(self.bodies) if t >= t0 and b == body), None)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_dev_reloads_without_failed_requests(tmp_path: Path) -> None:
    project = tmp_path / "hello"
    r = cli("new", "hello", "--template", "python-http", "--path", str(project))
    assert r.returncode == 0, r.stderr
    http_port = free_port()
    manifest = project / "wadm.yaml"
    manifest.write_text(manifest.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{http_port}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WASMLATTICE_", "WASMCLOUD_"))}
    proc = subprocess.Popen(
        wasmlattice_cmd("dev", "--path", str(project)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    out = Output(proc)
    client: Client | None = None
    try:
        nats_port = int(out.wait_for(r"NATS nats://127\.0\.0\.1:(\d+)", START_TIMEOUT, proc).group(1))
        url = out.wait_for(r"serving: (http://\S+)", START_TIMEOUT, proc).group(1)
        assert url == f"http://127.0.0.1:{http_port}/"
        client = Client(url + "dev")
        client.start()
        time.sleep(1)
        assert client.bodies and client.bodies[-1][1] == b"hello from hello at /dev\n", client.failures

        app = project / "app.py"
        saved = time.monotonic()
        app.write_text(app.read_text().replace("hello from", "howdy from"))
        new_body = b"howdy from hello at /dev\n"
        deadline = saved + RELOAD_TIMEOUT
        while client.first_since(saved, new_body) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        seen = client.first_since(saved, new_body)
        assert seen is not None, f"no new response within {RELOAD_TIMEOUT}s:\n{out.text()}"
        print(f"save to new response: {seen - saved:.1f} s")
        out.wait_for(r"reloaded in [\d.]+ s", 30, proc)
        # After the swap, only the new version answers.
        time.sleep(1)
        assert client.bodies[-1][1] == new_body

        broken = time.monotonic()
        app.write_text(app.read_text() + "\ndef (\n")
        out.wait_for(r"build failed; the previous version keeps serving", RELOAD_TIMEOUT * 2, proc)
        assert "SyntaxError" in out.text()
        time.sleep(1)
        after = [b for t, b in list(client.bodies) if t >= broken]
        assert after and all(b == new_body for b in after)

        client.stop()
        assert client.failures == [], client.failures[:5]
        assert len(client.bodies) > 10

        assert port_open(nats_port)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0, out.text()
        assert "undeploying hello" in out.text()
        assert not port_open(nats_port), "the NATS server dev started is still listening"
        assert not port_open(http_port), "the app still serves after dev stopped"
    finally:
        if client is not None:
            client.stop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        # Whatever the outcome, leave no lattice behind.
        cli("down", "--data-dir", str(project / ".wasmlattice"))
