"""Faults: misbehaving guests and bad inputs are contained, reported, and the server keeps serving.

Runs against our host only: `wasmlattice run` with a 2 s deadline, a 128 MiB memory cap and a
1 MiB request-body cap (plus separate servers for `--reuse`, `--workers` and start-up errors).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.support.components import parse_wat
from tests.support.http import HttpClient, Upstream
from tests.support.processes import ServerProcess, free_port, wasmlattice_cmd

pytestmark = pytest.mark.slow

TIMEOUT = 2.0
MiB = 1 << 20


@pytest.fixture(scope="module")
def server(http_echo_wasm: Path, start_wasmlattice: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    """Our host with tight limits; outgoing requests are allowed to `localhost` only."""
    s = start_wasmlattice(
        http_echo_wasm,
        "--timeout",
        str(TIMEOUT),
        "--max-memory",
        "128MiB",
        "--max-body",
        "1MiB",
        "--max-header-size",
        "4096",
        "--allow-outgoing",
        "localhost",
    )
    yield s
    s.stop()


async def assert_healthy(client: HttpClient, server: ServerProcess) -> None:
    """The server still answers a healthy request, and the process is alive."""
    assert server.proc is not None and server.proc.poll() is None, server.log_text()[-4000:]
    reply = await client.request(server.base_url, "POST", "/echo?healthy=1", data=b"still alive")
    assert reply.status == 200, reply
    assert b'"body_length": 11' in reply.body


async def test_trap_is_a_500_and_logged(http_client: HttpClient, server: ServerProcess) -> None:
    reply = await http_client.request(server.base_url, "GET", "/trap")
    assert reply.status == 500
    assert b"unreachable" in reply.body
    # The guest's own reason (its Python traceback on stderr) and the host's trap report.
    server.wait_for_log("RuntimeError: deliberate trap from the /trap route")
    log = server.wait_for_log("trapped: wasm trap: wasm `unreachable` instruction executed")
    assert "http_echo" in log
    await assert_healthy(http_client, server)


async def test_infinite_loop_is_interrupted_at_the_deadline(
    http_client: HttpClient, server: ServerProcess
) -> None:
    start = time.monotonic()
    reply = await http_client.request(server.base_url, "GET", "/loop", timeout=30)
    elapsed = time.monotonic() - start
    assert reply.status == 504
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 3, elapsed
    server.wait_for_log("deadline and was interrupted")
    await assert_healthy(http_client, server)


async def test_unbounded_memory_growth_fails_the_request_only(
    http_client: HttpClient, server: ServerProcess
) -> None:
    start = time.monotonic()
    reply = await http_client.request(server.base_url, "GET", "/oom", timeout=30)
    assert 500 <= reply.status < 600
    assert reply.status != 504, "the 128 MiB cap should stop the guest well before its deadline"
    assert time.monotonic() - start < TIMEOUT + 3
    server.wait_for_log("MemoryError")
    await assert_healthy(http_client, server)
    await assert_healthy(http_client, server)


async def test_guest_stderr_is_logged_with_the_component_name(
    http_client: HttpClient, server: ServerProcess, http_echo_wasm: Path
) -> None:
    msg = f"stderr-probe-{os.getpid()}-{time.monotonic_ns()}"
    reply = await http_client.request(server.base_url, "GET", f"/stderr?msg={msg}")
    assert reply.status == 200
    assert reply.body == b"logged\n"
    server.wait_for_log(f"[{http_echo_wasm.stem} stderr] {msg}")
    await assert_healthy(http_client, server)


async def test_outgoing_to_a_destination_not_allowed_is_denied(
    http_client: HttpClient, server: ServerProcess, upstream: Upstream
) -> None:
    # Only `localhost` is allowed: 127.0.0.1 is another destination, even though it is the same machine.
    reply = await http_client.request(
        server.base_url, "GET", f"/outgoing?url=http://127.0.0.1:{upstream.port}/hello"
    )
    assert reply.status == 502
    assert b"refused" in reply.body
    assert b"HttpRequestDenied" in reply.body
    await assert_healthy(http_client, server)


async def test_outgoing_to_an_allowed_destination_works(
    http_client: HttpClient, server: ServerProcess, upstream: Upstream
) -> None:
    # The positive control for the test above: the allow-list is what decides.
    reply = await http_client.request(
        server.base_url, "GET", f"/outgoing?url=http://localhost:{upstream.port}/hello"
    )
    assert reply.status == 200, reply
    assert reply.body == b"hello from upstream\n"


async def test_request_body_over_max_body_is_413(http_client: HttpClient, server: ServerProcess) -> None:
    reply = await http_client.request(server.base_url, "POST", "/echo", data=os.urandom(2 * MiB))
    assert reply.status == 413
    # With Expect: 100-continue the refusal comes before the body is sent.
    reply = await http_client.request(
        server.base_url, "POST", "/echo", data=bytes(2 * MiB), expect100=True, timeout=10
    )
    assert reply.status == 413
    # Exactly at the limit is accepted.
    reply = await http_client.request(server.base_url, "POST", "/echo", data=bytes(MiB))
    assert reply.status == 200
    assert f'"body_length": {MiB}'.encode() in reply.body
    await assert_healthy(http_client, server)


async def test_chunked_request_body_over_max_body_is_413(
    http_client: HttpClient, server: ServerProcess
) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(32):
            yield bytes(65536)

    reply = await http_client.request(server.base_url, "POST", "/echo", data=body())
    assert reply.status == 413
    await assert_healthy(http_client, server)


async def test_oversized_headers_are_refused_and_the_server_keeps_serving(
    http_client: HttpClient, server: ServerProcess
) -> None:
    reply = await http_client.request(server.base_url, "GET", "/echo", headers={"x-big": "a" * 5000})
    assert reply.status in (400, 431), reply
    reply = await http_client.request(server.base_url, "GET", "/echo?" + "q" * 5000)
    assert reply.status in (400, 414), reply
    # Just under the limit is fine.
    reply = await http_client.request(server.base_url, "GET", "/echo", headers={"x-big": "a" * 3000})
    assert reply.status == 200
    assert b"a" * 3000 in reply.body
    await assert_healthy(http_client, server)


# ---------------------------------------------------------------------------------------------
# Start-up errors
# ---------------------------------------------------------------------------------------------


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    r = subprocess.run(
        wasmlattice_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    return r, time.monotonic() - start


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad-components")
    text = d / "notwasm.txt"
    text.write_text("this is plain text, not WebAssembly\n" * 10)
    random_bytes = d / "random.wasm"
    random_bytes.write_bytes(b"\x7fELF" + os.urandom(60))
    core = d / "core.wasm"
    core.write_bytes(b"\0asm\x01\0\0\0")  # the smallest valid core module: `(module)`
    return {"text": text, "random": random_bytes, "core": core}


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text", "is not a WebAssembly file"),
        ("random", "is not a WebAssembly file"),
        ("core", "is a core WebAssembly module, not a component"),
    ],
)
def test_not_a_component_is_refused_quickly(
    wasmlattice_env: dict[str, str], bad_files: dict[str, Path], kind: str, message: str
) -> None:
    path = bad_files[kind]
    r, elapsed = run_cli(wasmlattice_env, "run", str(path), "--listen", f"127.0.0.1:{free_port()}")
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert str(path) in r.stderr
    assert elapsed < 30


def test_core_module_built_by_wasm_tools_is_refused(wasmlattice_env: dict[str, str], tmp_path: Path) -> None:
    wat = tmp_path / "core.wat"
    wat.write_text('(module (func (export "f")))')
    wasm = tmp_path / "core.wasm"
    parse_wat(wat, wasm)
    r, _ = run_cli(wasmlattice_env, "run", str(wasm), "--listen", f"127.0.0.1:{free_port()}")
    assert r.returncode != 0
    assert "core WebAssembly module, not a component" in r.stderr, r.stderr


def test_component_without_the_http_export_is_refused(
    wasmlattice_env: dict[str, str], build_component: Callable[[str], Path]
) -> None:
    wasm = build_component("wat/no_export")
    r, elapsed = run_cli(wasmlattice_env, "run", str(wasm), "--listen", f"127.0.0.1:{free_port()}")
    assert r.returncode != 0
    assert "wasi:http/incoming-handler" in r.stderr, r.stderr
    assert "does not export" in r.stderr
    assert elapsed < 30


def test_missing_file_is_refused(wasmlattice_env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.wasm"
    r, _ = run_cli(wasmlattice_env, "run", str(missing), "--listen", f"127.0.0.1:{free_port()}")
    assert r.returncode != 0
    assert "does not exist" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------
# Instance reuse and worker processes
# ---------------------------------------------------------------------------------------------


async def test_reuse_mode_serves_and_discards_trapped_instances(
    http_client: HttpClient, http_echo_wasm: Path, start_wasmlattice: Callable[..., ServerProcess]
) -> None:
    s = start_wasmlattice(http_echo_wasm, "--reuse", "5", "--timeout", str(TIMEOUT), ready_path="/nowhere")
    try:
        counts = []
        for _ in range(20):
            reply = await http_client.request(s.base_url, "GET", "/count")
            assert reply.status == 200, reply
            counts.append(int(reply.body))
        # /count says how many requests the answering instance has handled: each instance serves
        # five requests, then a fresh one takes over.
        assert max(counts) == 5
        assert counts[-5:] == [1, 2, 3, 4, 5] or counts.count(5) >= 3, counts
        # A trapped instance is discarded: the next request gets a fresh one and succeeds.
        reply = await http_client.request(s.base_url, "GET", "/count")
        assert int(reply.body) >= 1
        trap = await http_client.request(s.base_url, "GET", "/trap")
        assert trap.status == 500
        reply = await http_client.request(s.base_url, "GET", "/count")
        assert reply.status == 200
        assert int(reply.body) == 1
        await assert_healthy(http_client, s)
    finally:
        s.stop()


async def test_default_is_a_fresh_instance_per_request(
    http_client: HttpClient, server: ServerProcess
) -> None:
    for _ in range(3):
        reply = await http_client.request(server.base_url, "GET", "/count")
        assert reply.status == 200
        assert reply.body == b"1\n"


def _spawned_workers(pid: int) -> list[int]:
    """Child processes of `pid` started by multiprocessing's spawn (not its resource tracker)."""
    out = []
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            out.append(int(child))
    return out


async def test_two_workers_share_the_port(
    http_client: HttpClient, http_echo_wasm: Path, start_wasmlattice: Callable[..., ServerProcess]
) -> None:
    s = start_wasmlattice(http_echo_wasm, "--workers", "2", ready_path="/nowhere")
    try:
        assert s.proc is not None
        assert len(_spawned_workers(s.proc.pid)) == 2
        # The supervisor announces the server once every worker is ready.
        s.wait_for_log("wasmlattice: serving")
        # New connections are spread over both processes by SO_REUSEPORT: each logs with its tag.
        log = ""
        for i in range(200):
            reply = await http_client.request(
                s.base_url, "GET", f"/stderr?msg=worker-probe-{i}", headers={"Connection": "close"}
            )
            assert reply.status == 200
            if i >= 10 and i % 10 == 0:
                log = s.wait_for_log(f"worker-probe-{i}")
                if "[w0]" in log and "[w1]" in log:
                    break
        assert "[w0]" in log and "[w1]" in log, log[-4000:]
        await assert_healthy(http_client, s)
    finally:
        s.stop()


# ---------------------------------------------------------------------------------------------
# What the guest is given: environment and read-only directories
# ---------------------------------------------------------------------------------------------


async def test_env_and_read_only_dir_grants_reach_the_guest(
    http_client: HttpClient,
    http_echo_wasm: Path,
    start_wasmlattice: Callable[..., ServerProcess],
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_bytes(b"from the host\n")
    (tmp_path / "secret.txt").write_bytes(b"outside the grant")
    s = start_wasmlattice(
        http_echo_wasm, "--env", "GREETING=hi there", "--dir", f"{shared}::/data", ready_path="/nowhere"
    )
    try:
        reply = await http_client.request(s.base_url, "GET", "/env?name=GREETING")
        assert (reply.status, reply.body) == (200, b"hi there\n")
        reply = await http_client.request(s.base_url, "GET", "/env?name=HOME")
        assert reply.status == 404  # the host's own environment is not passed through
        reply = await http_client.request(s.base_url, "GET", "/file?path=/data/hello.txt")
        assert (reply.status, reply.body) == (200, b"from the host\n")
        # Read-only: a write is refused and the file is unchanged.
        reply = await http_client.request(s.base_url, "GET", "/file?path=/data/hello.txt&write")
        assert reply.status == 403 and b"Read-only" in reply.body, reply
        assert (shared / "hello.txt").read_bytes() == b"from the host\n"
        # Confined: no way out of the grant.
        reply = await http_client.request(s.base_url, "GET", "/file?path=/data/../secret.txt")
        assert reply.status == 403, reply
    finally:
        s.stop()


async def test_no_files_without_a_grant(http_client: HttpClient, server: ServerProcess) -> None:
    reply = await http_client.request(server.base_url, "GET", "/file?path=/etc/hostname")
    assert reply.status == 403, reply
