"""Shared fixtures; the helpers they use live in `tests/support/`.

- `build_component(name)` builds `tests/components/<name>` once per session (see
  `support.components`).
- `start_wasmlattice(...)` / `start_wasmtime_serve(...)` start the two HTTP hosts as subprocesses on
  free loopback ports, wait until they answer, and stop them at the end of the session.
- `upstream` is a small HTTP server on loopback for the guests' outgoing requests.
- `nats_server`, `redis_url`: real servers shared by the session; `lattice_env` a lattice per test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support import components
from tests.support.http import HttpClient, Upstream, upstream_server
from tests.support.lattice import LatticeEnv
from tests.support.processes import (
    BackgroundNats,
    ServerProcess,
    free_port,
    host_cmd,
    redis_server,
    wasmlattice_cmd,
)
from wasmlattice.runtime.engine import HostEngine

# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def build_component() -> Callable[[str], Path]:
    """Build `tests/components/<name>` (once per session; reused across sessions by content hash)."""
    cache: dict[str, Path] = {}

    def build(name: str) -> Path:
        if name not in cache:
            cache[name] = components.build_component(name)
        return cache[name]

    return build


@pytest.fixture(scope="session")
def http_echo_wasm(build_component: Callable[[str], Path]) -> Path:
    """The multi-route `wasi:http/proxy` test guest."""
    return build_component("http_echo")


@pytest.fixture
def echo_ref(http_echo_wasm: Path) -> str:
    """A file:// reference to the HTTP echo guest."""
    return "file://" + str(http_echo_wasm.resolve())


@pytest.fixture(scope="session")
def hostcall_wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """`components/wat/hostcall.wat` (a guest that calls one host function) assembled."""
    out = tmp_path_factory.mktemp("wat") / "hostcall.wasm"
    return components.parse_wat(components.WAT_DIR / "hostcall.wat", out).read_bytes()


@pytest.fixture(scope="module")
def engine() -> Iterator[HostEngine]:
    """A wasmtime engine for one test module's in-process components."""
    e = HostEngine()
    yield e
    e.close()


# ---------------------------------------------------------------------------------------------
# Server processes
# ---------------------------------------------------------------------------------------------


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
    # Hosts compile with Cranelift only, into the shared cache: a background compile would keep a
    # host busy (tests measuring its CPU would see it) and be cut short when the test ends, so
    # the next test would compile again. tests/integration/test_tiered_compile_hosts.py turns it on.
    env["WASMLATTICE_TIERED_COMPILE"] = "0"
    return env


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
    binary = components.wasmtime_cli_path()

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


@pytest.fixture
def start_host(
    nats_url: str, lattice_name: str, tmp_path: Path, wasmlattice_env: dict[str, str]
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start lattice host processes with the given `--label`s on the test lattice (SIGTERM at the end,
    then SIGKILL for any that do not stop)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*labels: str) -> subprocess.Popen[bytes]:
        cmd = host_cmd(nats_url, lattice_name, *[a for lb in labels for a in ("--label", lb)])
        log = (tmp_path / f"host{len(procs)}.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=wasmlattice_env)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    """An HTTP/1.1 server on 127.0.0.1 (in a thread)."""
    with upstream_server() as server:
        yield server


@pytest.fixture
async def http_client() -> AsyncIterator[HttpClient]:
    """An `HttpClient` for one test."""
    connector = aiohttp.TCPConnector(limit_per_host=1, force_close=False)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        yield HttpClient(session)


# ---------------------------------------------------------------------------------------------
# NATS, lattices, Redis
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real nats-server with JetStream (wasmlattice's `EmbeddedNats`) on 127.0.0.1 and a random
    port, data in a temporary directory; yields its URL. Shared by the whole session: tests that need
    isolation use their own lattice or bucket names (see `lattice_name`)."""
    bg = BackgroundNats(tmp_path_factory.mktemp("nats"))
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
    base = re.sub(r"[^a-zA-Z0-9]+", "_", request.node.name)[:40].strip("_")
    return f"{base}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def lattice_env(
    nats_url: str, lattice_name: str, tmp_path: Path, wasmlattice_env: dict[str, str]
) -> AsyncIterator[LatticeEnv]:
    """A `LatticeEnv` on the shared nats-server and a lattice of this test's own."""
    e = LatticeEnv(nats_url, lattice_name, tmp_path, wasmlattice_env)
    await e.connect()
    try:
        yield e
    finally:
        e.close()
        await e.nc.close()


@pytest.fixture
def env(lattice_env: LatticeEnv) -> LatticeEnv:
    """Alias of `lattice_env`."""
    return lattice_env


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 and a free port (no persistence); yields its URL."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url
