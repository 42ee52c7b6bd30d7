"""Hardened HTTP ingress: idle, slow and malformed clients cannot starve or flood the server.

Real sockets on loopback against a real `wasmlattice run` process whose file-descriptor limit is
1,024 (a common default, and the limit under which idle connections starved the server before),
and against the lattice's http-server provider with limits in a link's config.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.lattice import HTTP_SERVER, LatticeEnv, http_link
from tests.support.processes import ServerProcess, free_port, wasmlattice_cmd

pytestmark = pytest.mark.slow

SERVER_NOFILE = 1024
IDLE_CONNECTIONS = 1100
LEGIT_REQUESTS = 40
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0


def _limited(cmd: list[str], nofile: int) -> list[str]:
    """`cmd` run with its soft and hard file-descriptor limits set to `nofile`."""
    return ["sh", "-c", f'ulimit -n {nofile} && exec "$@"', "sh", *cmd]


@pytest.fixture(scope="module")
def start_limited(
    tmp_path_factory: pytest.TempPathFactory, wasmlattice_env: dict[str, str]
) -> Iterator[Callable[..., ServerProcess]]:
    """Start `wasmlattice run` (debug log) with a 1,024 file-descriptor limit; stopped at the end."""
    servers: list[ServerProcess] = []

    def start(component: Path, *args: str) -> ServerProcess:
        port = free_port()
        cmd = wasmlattice_cmd(
            "run", str(component), "--listen", f"127.0.0.1:{port}", "--log-level", "debug", *args
        )
        server = ServerProcess(
            name="wasmlattice",
            cmd=_limited(cmd, SERVER_NOFILE),
            port=port,
            log_path=tmp_path_factory.mktemp("ingress-log") / "server.log",
            env=wasmlattice_env,
        )
        servers.append(server)
        return server.start("/echo", 180.0)

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def server(http_echo_wasm: Path, start_limited: Callable[..., ServerProcess]) -> ServerProcess:
    """A server with the default limits (its connection cap follows from its 1,024 descriptors)."""
    return start_limited(http_echo_wasm)


@pytest.fixture(scope="module")
def quick(http_echo_wasm: Path, start_limited: Callable[..., ServerProcess]) -> ServerProcess:
    """A server with short header and body timeouts."""
    return start_limited(
        http_echo_wasm, "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT)
    )


def _raise_nofile(need: int) -> None:
    """Raise this process's soft descriptor limit to `need` (within the hard limit) for the clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if target < need:
            pytest.skip(f"needs {need} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _exchange(port: int, data: bytes, timeout: float) -> bytes:
    """Send `data` on a new connection and read until the server closes it (bounded by `timeout`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def _legit_request(port: int, deadline: float) -> tuple[int, int]:
    """GET /echo until it is answered 200 (honouring 503's Retry-After); (status, 503s seen)."""
    busy = 0
    while True:
        assert time.monotonic() < deadline, f"not answered in time ({busy} times 503)"
        try:
            reply = await _exchange(
                port, b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", timeout=10
            )
        except OSError:  # TimeoutError included
            await asyncio.sleep(0.2)
            continue
        head = reply.partition(b"\r\n\r\n")[0].decode("latin-1")
        if head.startswith("HTTP/1.1 503"):
            busy += 1
            retry = [ln for ln in head.split("\r\n") if ln.lower().startswith("retry-after:")]
            assert retry, head
            await asyncio.sleep(float(retry[0].split(":", 1)[1]))
            continue
        if not head:
            await asyncio.sleep(0.2)  # closed without an answer (e.g. while refusing): try again
            continue
        return int(head.split()[1]), busy


async def test_idle_connections_do_not_starve_legitimate_requests(server: ServerProcess) -> None:
    _raise_nofile(IDLE_CONNECTIONS + LEGIT_REQUESTS + 200)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            idle.append(await asyncio.open_connection("127.0.0.1", server.port))
        # The default header timeout is 10 s: every request is answered well within 40 s.
        deadline = time.monotonic() + 40
        results = await asyncio.gather(
            *(_legit_request(server.port, deadline) for _ in range(LEGIT_REQUESTS))
        )
        assert [status for status, _ in results] == [200] * LEGIT_REQUESTS
        # The idle connections were answered 503 with Retry-After past the cap, or closed by the
        # header timeout: none is still held open by the server.
        busy = closed = 0
        for reader, _ in idle:
            data = await asyncio.wait_for(reader.read(), 15)
            if data.startswith(b"HTTP/1.1 503"):
                assert b"\r\nRetry-After: " in data, data
                busy += 1
            else:
                assert data == b"", data
                closed += 1
        assert busy > 0 and closed > 0, (busy, closed)
        assert busy + closed == IDLE_CONNECTIONS
    finally:
        for _, writer in idle:
            writer.close()
    log = server.log_text()
    assert "Traceback" not in log, log[-4000:]
    assert "refused" in log and "max_connections" in log
    # Still serving afterwards.
    status, _ = await _legit_request(server.port, time.monotonic() + 10)
    assert status == 200


async def test_http09_request_is_refused(server: ServerProcess) -> None:
    reply = await _exchange(server.port, b"GET /echo\r\n\r\n", timeout=10)
    assert reply.startswith(b"HTTP/1.1 505 "), reply
    assert b"HTTP/0.9 is not supported" in reply
    server.wait_for_log("refused an HTTP/0.9 request")
    status, _ = await _legit_request(server.port, time.monotonic() + 10)
    assert status == 200


@pytest.mark.parametrize(
    "data",
    [
        b"GET /echo HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n",  # a bad header line
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS on the plain port
    ],
    ids=["bad-header", "not-http"],
)
async def test_malformed_request_is_one_debug_line_without_traceback(
    server: ServerProcess, data: bytes
) -> None:
    before = len(server.log_text())
    reply = await _exchange(server.port, data, timeout=10)
    assert reply.startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 ")), reply
    deadline = time.monotonic() + 10
    while "malformed request from" not in server.log_text()[before:] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # anything else it would log comes with the same request
    new = server.log_text()[before:]
    assert "Traceback" not in new and "Error handling request" not in new, new
    lines = [ln for ln in new.splitlines() if "malformed request from" in ln]
    assert len(lines) == 1 and " DEBUG " in lines[0], new


async def test_stalled_request_head_is_disconnected_after_the_header_timeout(quick: ServerProcess) -> None:
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", quick.port)
    try:
        writer.write(b"GET /echo HTTP/1.1\r\nHost: t\r\n")  # the head never ends
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), HEADER_TIMEOUT + 5)
    finally:
        writer.close()
    elapsed = time.monotonic() - start
    assert data == b""
    assert HEADER_TIMEOUT * 0.8 <= elapsed < HEADER_TIMEOUT + 3, elapsed
    quick.wait_for_log("no complete request head within")


async def test_stalled_request_body_fails_after_the_body_timeout(quick: ServerProcess) -> None:
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", quick.port)
    try:
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        await writer.drain()
        with contextlib.suppress(ConnectionResetError):
            await asyncio.wait_for(reader.read(), BODY_TIMEOUT + 10)
    finally:
        writer.close()
    elapsed = time.monotonic() - start
    assert BODY_TIMEOUT * 0.8 <= elapsed < BODY_TIMEOUT + 5, elapsed
    quick.wait_for_log(f"stalled for {BODY_TIMEOUT}s")
    status, _ = await _legit_request(quick.port, time.monotonic() + 10)
    assert status == 200


async def test_lattice_listener_takes_its_limits_from_link_config(env: LatticeEnv, echo_ref: str) -> None:
    env.start_host()
    (host,) = await env.host_ids(1)
    ctl = env.ctl
    port, bad_port = free_port(), free_port()
    limits = {"header_timeout": "1", "max_connections": "2"}
    await ctl.put_config("lim-addr", {"address": f"127.0.0.1:{port}", **limits})
    await ctl.put_config("bad-addr", {"address": f"127.0.0.1:{bad_port}", "header_timeout": "soon"})
    assert await ctl.scale_component(host, echo_ref, "echo", 4) == ""
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "echo")
    await ctl.start_provider(host, HTTP_SERVER, "ingress")
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "ingress")
    await ctl.put_link(http_link("ingress", "echo", ["lim-addr"]))
    await ctl.put_link(http_link("ingress", "echo", ["bad-addr"]).model_copy(update={"name": "bad"}))
    status, _ = await _legit_request(port, time.monotonic() + 30)
    assert status == 200
    await env.wait_log("sets `header_timeout` to 'soon'; it must be a positive number")

    # Two idle connections fill the cap: a third is answered 503 with Retry-After.
    start = time.monotonic()
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    try:
        await asyncio.sleep(0.2)
        reply = await _exchange(port, b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n", timeout=10)
        assert reply.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in reply, reply
        # The header timeout of the link's config closes the idle ones.
        for reader, _ in idle:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        assert time.monotonic() - start < 4
    finally:
        for _, writer in idle:
            writer.close()
    status, busy = await _legit_request(port, time.monotonic() + 10)
    assert (status, busy) == (200, 0)
