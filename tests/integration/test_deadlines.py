"""Deadlines, interruption, the host's concurrency cap and drain, on real host processes.

A looping guest (`http_echo`'s `/loop`) burns a core until it is interrupted; each test checks
the host process's CPU time (`/proc/<pid>/stat`) stops growing once it should be (docs/limits.md).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.http import get
from tests.support.lattice import LatticeEnv, serve_http
from tests.support.processes import free_port, wait_gone

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

_TICK = os.sysconf("SC_CLK_TCK")
# CPU seconds per wall second that count as "a guest is spinning" and as "nothing spins any more"
# (generous both ways: two cores, and other tests run meanwhile).
BURNING = 0.5
IDLE = 0.3


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid`, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of stat(5)


async def cpu_rate(pid: int, window: float = 1.0) -> float:
    """CPU seconds per second process `pid` used over the next `window` seconds."""
    before = cpu_seconds(pid)
    await asyncio.sleep(window)
    return (cpu_seconds(pid) - before) / window


async def wait_burning(pid: int, timeout: float = 30.0) -> None:
    """Until `pid` spins (a guest loops in it); fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cpu_rate(pid) >= BURNING:
            return
    raise AssertionError(f"pid {pid} never used a core: the looping guest did not run")


async def wait_idle(pid: int, timeout: float) -> float:
    """Until `pid` stops spinning; seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await cpu_rate(pid) < IDLE:
            return time.monotonic() - start
    raise AssertionError(f"pid {pid} still spins {timeout}s later: the guest was not interrupted")


async def host_with_echo(
    env: LatticeEnv, echo_ref: str, *flags: str, max_instances: int = 4
) -> tuple[str, int, str]:
    """One host (with `flags`) serving the echo guest over HTTP: (host id, pid, base URL)."""
    env.start_host(*flags)
    (host,) = await env.host_ids(1)
    url = await serve_http(
        env, host, "echo", echo_ref, port=free_port(), max_instances=max_instances, ready_path="/echo"
    )
    pid = env.process_of(host).pid
    return host, pid, url


async def loop_request(url: str, timeout: float = 120.0) -> tuple[int, str]:
    """GET /loop; (status, body)."""
    return await get(f"{url}/loop", timeout=timeout)


async def test_loop_is_interrupted_at_the_host_deadline(env: LatticeEnv, echo_ref: str) -> None:
    _host, pid, url = await host_with_echo(env, echo_ref, "--max-execution-time", "3")
    start = time.monotonic()
    status, body = await loop_request(url)
    assert status == 504, body
    assert "did not answer within 3.0s" in body
    assert time.monotonic() - start < 60
    await wait_idle(pid, 10.0)
    await env.wait_log("exceeded its 3.0s deadline and was interrupted")
    assert (await get(f"{url}/echo"))[0] == 200  # the host keeps serving


async def test_component_limit_overrides_the_host_deadline(env: LatticeEnv, echo_ref: str) -> None:
    host, _pid, url = await host_with_echo(env, echo_ref, "--max-execution-time", "600")
    # A rescale carrying `component_limits` (as a manifest's limits do) sets this component's.
    await env.ctl.scale_component(host, echo_ref, "echo", 3, limits={"max_execution_time": "2"})
    await env.wait_event(
        "component_scaled",
        lambda e: e["data"]["component_id"] == "echo" and e["data"]["max_instances"] == 3,
    )
    status, body = await loop_request(url)
    assert status == 504, body
    assert "within 2.0s" in body


async def test_loop_is_interrupted_when_the_client_disconnects(env: LatticeEnv, echo_ref: str) -> None:
    _host, pid, url = await host_with_echo(env, echo_ref)  # the default deadline: 30 s
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.sendall(b"GET /loop HTTP/1.1\r\nHost: x\r\n\r\n")
        await wait_burning(pid)
    finally:
        sock.close()
    took = await wait_idle(pid, 10.0)
    assert took < 10.0
    await env.wait_log("the HTTP client disconnected")
    assert (await get(f"{url}/echo"))[0] == 200


async def test_loop_is_gone_after_scale_to_zero_and_update(
    env: LatticeEnv, echo_ref: str, tmp_path: Path
) -> None:
    host, pid, url = await host_with_echo(env, echo_ref)
    pending = asyncio.create_task(loop_request(url))
    await wait_burning(pid)
    await env.ctl.scale_component(host, echo_ref, "echo", 0)
    await wait_idle(pid, 10.0)
    await env.wait_log("its component was stopped")
    status, _ = await pending
    assert status == 503

    # Running again, then updated to another file of the same bytes while a request loops.
    other = tmp_path / "echo2.wasm"
    shutil.copyfile(echo_ref.removeprefix("file://"), other)
    await env.ctl.scale_component(host, echo_ref, "echo", 4)
    deadline = time.monotonic() + 60
    while (await get(f"{url}/echo"))[0] != 200:
        assert time.monotonic() < deadline, "the component did not serve again"
        await asyncio.sleep(0.2)
    pending = asyncio.create_task(loop_request(url))
    await wait_burning(pid)
    await env.ctl.update_component(host, "echo", f"file://{other}")
    await wait_idle(pid, 20.0)  # after the update's 5 s grace
    await env.wait_log("its component was updated")
    assert (await pending)[0] == 503
    assert (await get(f"{url}/echo"))[0] == 200


async def test_host_cap_refuses_with_retry_after(env: LatticeEnv, echo_ref: str) -> None:
    _host, _pid, url = await host_with_echo(
        env, echo_ref, "--max-concurrent-invocations", "2", "--max-execution-time", "8"
    )
    first = asyncio.create_task(loop_request(url))
    await asyncio.sleep(1.0)
    # One slot left: other requests still complete.
    assert (await get(f"{url}/echo"))[0] == 200
    second = asyncio.create_task(loop_request(url))
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 6
        while True:
            async with session.get(f"{url}/echo") as resp:
                body = await resp.text()
                if resp.status == 503:
                    assert resp.headers.get("Retry-After") == "1"
                    assert "--max-concurrent-invocations" in body
                    break
                assert resp.status == 200
            assert time.monotonic() < deadline, "the host never refused past its cap"
            await asyncio.sleep(0.2)
    assert [s for s, _ in await asyncio.gather(first, second)] == [504, 504]
    assert (await get(f"{url}/echo"))[0] == 200


async def test_sigterm_drains_then_interrupts_and_exits(env: LatticeEnv, echo_ref: str) -> None:
    _host, pid, url = await host_with_echo(env, echo_ref, "--drain-timeout", "2")
    pending = asyncio.create_task(loop_request(url))
    await wait_burning(pid)
    os.kill(pid, signal.SIGTERM)
    await asyncio.to_thread(wait_gone, pid, 2 + 20.0)
    log = await env.wait_log("interrupted")
    assert "GET /loop" in log
    assert "the host is stopping" in log
    pending.cancel()
