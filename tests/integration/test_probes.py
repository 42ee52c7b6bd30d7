"""`--health-listen`: a real host process answers `/livez` and `/readyz` with the truth.

The test runs its own nats-server (it is killed and restarted) and one host process: ready after
start; not ready, naming NATS, while the server is down; ready again once it is back; not ready,
naming the http-server provider and the address, while a link's listener cannot bind; ready again
once the port is free.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest

from tests.integration.test_host_connection import OwnNats
from tests.support.http import wait_status
from tests.support.lattice import HTTP_SERVER, http_link
from tests.support.processes import free_port, host_cmd, wasmlattice_cmd
from wasmlattice.client.ctl import CtlClient

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


async def _probe(port: int, path: str) -> tuple[int, Any]:
    """(status, JSON body) of a probe, or (0, error text) when nothing answers."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s,
            s.get(f"http://127.0.0.1:{port}{path}") as r,
        ):
            return r.status, await r.json()
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        return 0, repr(e)


async def _until(port: int, path: str, status: int, needle: str = "", timeout: float = 60.0) -> Any:
    """Poll a probe until it answers `status` (with `needle` in one of its reasons); its body."""
    deadline = time.monotonic() + timeout
    while True:
        got, body = await _probe(port, path)
        reasons = body.get("reasons", []) if isinstance(body, dict) else []
        if got == status and (not needle or any(needle in r for r in reasons)):
            return body
        assert time.monotonic() < deadline, f"{path}: wanted {status} {needle!r}, got {got} {body}"
        await asyncio.sleep(0.2)


class ProbedHost:
    """A nats-server of the test's own and one host process with `--health-listen`."""

    def __init__(self, tmp: Path, lattice: str, env: dict[str, str]) -> None:
        self.tmp, self.lattice, self.env = tmp, lattice, env
        self.nats = OwnNats(tmp)
        self.probe_port = free_port()
        self.host: subprocess.Popen[bytes] | None = None
        self.log = tmp / "host.log"

    async def start(self) -> None:
        await self.nats.start()
        cmd = host_cmd(self.nats.url(), self.lattice, "--health-listen", f"127.0.0.1:{self.probe_port}")
        with self.log.open("wb") as out:
            self.host = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)

    def stop(self) -> None:
        if self.host is not None and self.host.poll() is None:
            self.host.kill()
            self.host.wait(10)
        self.nats.stop()


@pytest.fixture
async def probed(
    tmp_path: Path, lattice_name: str, wasmlattice_env: dict[str, str]
) -> AsyncIterator[ProbedHost]:
    setup = ProbedHost(tmp_path, lattice_name, wasmlattice_env)
    try:
        await setup.start()
        yield setup
    finally:
        setup.stop()


async def test_ready_after_start_and_not_while_nats_is_down(probed: ProbedHost) -> None:
    """Ready once started; 503 naming NATS while the server is killed (alive all along); ready again."""
    port = probed.probe_port
    body = await _until(port, "/readyz", 200)
    assert body == {"status": "ready", "reasons": []}
    assert (await _probe(port, "/livez")) == (200, {"status": "alive"})

    assert probed.nats.proc is not None
    probed.nats.proc.kill()
    probed.nats.proc.wait(10)
    body = await _until(port, "/readyz", 503, "nats:")
    assert body["status"] == "not ready"
    # The process is alive (its loop answers) even though it is not ready.
    assert (await _probe(port, "/livez"))[0] == 200

    await probed.nats.start()  # same port, same JetStream store
    await _until(port, "/readyz", 200, timeout=90)
    assert probed.host is not None and probed.host.poll() is None


async def test_not_ready_while_a_listener_cannot_bind(probed: ProbedHost, echo_ref: str) -> None:
    """A link's address held by another socket: 503 naming the provider; ready once it is free."""
    port = probed.probe_port
    await _until(port, "/readyz", 200)
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    busy_port = busy.getsockname()[1]
    nc = await nats.connect(probed.nats.url())
    try:
        ctl = CtlClient(nc, probed.lattice, timeout=5.0)
        (host,) = await ctl.ping_hosts(wait=2.0)
        assert await ctl.scale_component(host.id, echo_ref, "echo", 1) == ""
        await ctl.start_provider(host.id, HTTP_SERVER, "web")
        await ctl.put_config("web-addr", {"address": f"127.0.0.1:{busy_port}"})
        await ctl.put_link(http_link("web", "echo", ["web-addr"]))
        body = await _until(port, "/readyz", 503, "http-server web:")
        reason = next(r for r in body["reasons"] if r.startswith("http-server web:"))
        assert str(busy_port) in reason, reason
        assert (await _probe(port, "/livez"))[0] == 200

        busy.close()
        await _until(port, "/readyz", 200, timeout=90)
        # The listener is bound now: the component answers there (once it has compiled).
        await wait_status(f"http://127.0.0.1:{busy_port}/echo", 200, timeout=120)
    finally:
        busy.close()
        await nc.close()


def test_cli_refuses_a_bad_address() -> None:
    """`host --health-listen` with no port is a usage error naming the flag."""
    r = subprocess.run(
        wasmlattice_cmd("host", "--health-listen", "localhost"), capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, r
    assert "--health-listen" in r.stderr and "HOST:PORT" in r.stderr


def test_run_module_refuses_an_unbindable_address(tmp_path: Path) -> None:
    """The host module fails at start with the address when the probe port is taken."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        nats_dir = tmp_path / "n"
        nats_dir.mkdir()
        own = OwnNats(nats_dir)
        asyncio.run(own.start())
        try:
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "wasmlattice.lattice.run",
                    "--nats-url",
                    own.url(),
                    "--health-listen",
                    addr,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            own.stop()
    assert r.returncode == 1, r
    assert f"--health-listen {addr}: cannot listen" in r.stderr
