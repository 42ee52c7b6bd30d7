"""Processes the tests run: free ports, HTTP hosts, lattice hosts, redis-server, a nats-server."""

from __future__ import annotations

import asyncio
import http.client
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_PORT_RANDOM = random.SystemRandom()
_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    """The first port the kernel gives outgoing connections (ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1, below the kernel's ephemeral range.

    A port the kernel picks for `bind(0)` is an ephemeral one: until the test's server binds it,
    any outgoing connection (the suite runs two workers, each with many) may take it as its source
    port, and the server then fails with "address in use". Ports below that range are only ever
    taken by a bind, so a random free one there stays free in practice.
    """
    low = _ephemeral_low()
    if low > 12000:
        for _ in range(200):
            port = _PORT_RANDOM.randrange(10000, low)
            if port in _HANDED_OUT:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wasmlattice_cmd(*args: str) -> list[str]:
    """The command line of `wasmlattice ARGS...` with this interpreter."""
    return [sys.executable, "-m", "wasmlattice.cli.main", *args]


def test_file_args() -> list[str]:
    """Host flags that let the tests' components load and blob roots work: `--allow-file-load`, and
    `--allow-dir` for the build directories of test and example components and the temporary
    directory (`tmp_path`)."""
    from tests.support.components import BUILD_DIR, EXAMPLES

    args = ["--allow-file-load", "--allow-dir", tempfile.gettempdir()]
    for build in (BUILD_DIR, EXAMPLES / ".build"):
        build.mkdir(parents=True, exist_ok=True)
        args += ["--allow-dir", str(build)]
    return args


def host_cmd(nats_url: str, lattice: str, *args: str, files: bool = True) -> list[str]:
    """The command line of one lattice host (`python -m wasmlattice.lattice.run`) on `lattice`.

    `files`: add `test_file_args()` (a host loads no `file://` component and allows no blob root
    without them); False for tests that choose the host's file policy themselves.
    """
    return [
        sys.executable,
        "-m",
        "wasmlattice.lattice.run",
        "--nats-url",
        nats_url,
        "--lattice",
        lattice,
        *(test_file_args() if files else []),
        *args,
    ]


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False


def wait_gone(pid: int, timeout: float = 15.0) -> None:
    """Fail unless process `pid` exits (or is a zombie) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running(pid):
            return
        time.sleep(0.1)
    pytest.fail(f"pid {pid} still running {timeout}s after being told to stop")


@dataclass
class ServerProcess:
    """An HTTP host running as a subprocess, with its output captured in a file."""

    name: str
    cmd: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/echo", timeout: float = 180.0) -> ServerProcess:
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the child's lifetime
        try:
            self.proc = subprocess.Popen(
                self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env
            )
        finally:
            log.close()
        self.wait_ready(ready_path, timeout)
        return self

    def log_text(self) -> str:
        """Everything the process has written so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 10.0) -> str:
        """Wait until `needle` shows up in the log; the log text (asserting it did)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if needle in text or time.monotonic() > deadline:
                assert needle in text, f"{needle!r} not in the {self.name} log:\n{text[-4000:]}"
                return text
            time.sleep(0.05)

    def wait_ready(self, path: str, timeout: float) -> None:
        """Poll with HTTP until the server answers `path` with any status."""
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before answering:\n{self.log_text()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer within {timeout}s:\n{self.log_text()}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", path)
                conn.getresponse().read()
                return
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)
            finally:
                conn.close()

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a grace period; the exit code."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        return p.returncode


@contextmanager
def redis_server(data_dir: Path) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 and a free port (no persistence); yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; `make test` installs it (make system-deps)")
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [binary, *args, "--dir", str(data_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


class BackgroundNats:
    """An `EmbeddedNats` run on its own event loop in a thread, so that its supervisor keeps running
    while tests use their own loops."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1") -> None:
        from wasmlattice.nats_server import EmbeddedNats

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="nats-server-loop", daemon=True)
        self.thread.start()
        self.server = EmbeddedNats(host=host, port=0, data_dir=data_dir)

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


class Output:
    """The merged stdout/stderr of a long-running CLI process (`dev`), read by a thread so the pipe
    never fills."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        assert proc.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._lock:
                self.lines.append(line)

    def text(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float, proc: subprocess.Popen[str]) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.text())
            if m:
                return m
            assert proc.poll() is None, f"dev exited with {proc.returncode}:\n{self.text()}"
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not in dev's output within {timeout}s:\n{self.text()}")
