"""`app-manager --health-listen`: a real app manager process answers `/livez` and `/readyz` truly.

The test runs its own nats-server (killed and restarted on the same port) and one
`wasmlattice app-manager` process: ready after start (and its wadm API answers); not ready, naming
NATS, while the server is down, alive all along; ready again once the server is back. A bad or
taken address is refused with the flag and the cause. `wasmlattice up` serves one listener whose
`/readyz` names the in-process app manager's reasons too.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.integration.test_host_connection import OwnNats
from tests.support.http import get_json
from tests.support.lattice import eventually
from tests.support.processes import free_port, wasmlattice_cmd

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


async def _probe(port: int, path: str) -> tuple[int, Any]:
    """(status, JSON body) of a probe, or (0, the error) when nothing answers."""
    try:
        return await get_json(f"http://127.0.0.1:{port}{path}", timeout=5.0)
    except (OSError, TimeoutError) as e:  # aiohttp's connection errors are OSErrors
        return 0, repr(e)


def _answers(port: int, path: str, status: int, needle: str = "") -> Any:
    """A check for `eventually`: the probe answers `status`, with `needle` in one of its reasons."""

    async def check() -> Any:
        got, body = await _probe(port, path)
        reasons = body.get("reasons", []) if isinstance(body, dict) else []
        assert got == status and (not needle or any(needle in r for r in reasons)), (got, body)
        return body

    return check


class Probed:
    """A nats-server of the test's own and one `wasmlattice` process with `--health-listen`."""

    def __init__(self, tmp: Path, lattice: str, env: dict[str, str]) -> None:
        self.tmp, self.lattice, self.env = tmp, lattice, env
        self.nats = OwnNats(tmp)
        self.probe_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "wasmlattice.log"

    async def start(self, *args: str) -> None:
        """Start the server, then `wasmlattice ARGS... --nats-url URL --lattice L --health-listen ADDR`."""
        await self.nats.start()
        cmd = wasmlattice_cmd(*args, "--nats-url", self.nats.url(), "--lattice", self.lattice)
        cmd += ["--health-listen", f"127.0.0.1:{self.probe_port}"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.nats.stop()

    async def restart_nats(self, while_down: Callable[[], Awaitable[None]]) -> None:
        """Kill the server, await `while_down()`, then start it again on the same port and store."""
        assert self.nats.proc is not None
        self.nats.proc.kill()
        self.nats.proc.wait(10)
        await while_down()
        await self.nats.start()


@pytest.fixture
async def probed(tmp_path: Path, lattice_name: str, wasmlattice_env: dict[str, str]) -> AsyncIterator[Probed]:
    setup = Probed(tmp_path, lattice_name, wasmlattice_env)
    try:
        yield setup
    finally:
        setup.stop()


async def test_ready_after_start_and_not_while_nats_is_down(probed: Probed) -> None:
    """Ready once started (and the API answers); 503 naming NATS while it is down; ready again."""
    await probed.start("app-manager")
    port = probed.probe_port
    body = await eventually(_answers(port, "/readyz", 200), timeout=60, what="ready after start")
    assert body == {"status": "ready", "reasons": []}
    assert (await _probe(port, "/livez")) == (200, {"status": "alive"})
    # Ready means the API answers.
    nc = await nats.connect(probed.nats.url())
    try:
        reply = await nc.request(f"wadm.api.{probed.lattice}.model.get", b"", timeout=10)
        assert json.loads(reply.data)["result"] == "success", reply.data
    finally:
        await nc.close()

    async def while_down() -> None:
        body = await eventually(_answers(port, "/readyz", 503, "nats:"), timeout=60, what="503 naming nats")
        assert body["status"] == "not ready"
        assert all(r.startswith("nats: ") for r in body["reasons"]), body
        # The process is alive (its loop answers) even though it is not ready.
        assert (await _probe(port, "/livez")) == (200, {"status": "alive"})

    await probed.restart_nats(while_down)
    await eventually(_answers(port, "/readyz", 200), timeout=90, what="ready after NATS is back")
    assert probed.proc is not None and probed.proc.poll() is None


async def test_up_reports_its_app_manager_on_the_host_probe(probed: Probed, tmp_path: Path) -> None:
    """`up --health-listen`: one listener; while NATS is down both the host and the app manager say so."""
    await probed.start("up", "--no-ui", "--data-dir", str(tmp_path / "up"))
    port = probed.probe_port
    await eventually(_answers(port, "/readyz", 200), timeout=120, what="up ready after start")

    async def while_down() -> None:
        body = await eventually(
            _answers(port, "/readyz", 503, "app manager: nats:"),
            timeout=60,
            what="503 naming both",
        )
        assert any(r.startswith("nats: ") for r in body["reasons"]), body  # the host's own
        assert (await _probe(port, "/livez"))[0] == 200

    await probed.restart_nats(while_down)
    await eventually(_answers(port, "/readyz", 200), timeout=90, what="up ready after NATS is back")
    assert probed.proc is not None and probed.proc.poll() is None


def test_refuses_an_address_that_is_not_host_port(wasmlattice_env: dict[str, str]) -> None:
    """`app-manager --health-listen` with no port is a usage error naming the flag."""
    r = subprocess.run(
        wasmlattice_cmd("app-manager", "--health-listen", "localhost"),
        capture_output=True,
        text=True,
        timeout=60,
        env=wasmlattice_env,
    )
    assert r.returncode == 2, r
    assert "--health-listen" in r.stderr and "HOST:PORT" in r.stderr, r.stderr


def test_refuses_a_taken_address(wasmlattice_env: dict[str, str]) -> None:
    """The probe address is bound before connecting: a taken one fails at once, naming it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        r = subprocess.run(
            wasmlattice_cmd(
                "app-manager", "--nats-url", f"nats://127.0.0.1:{free_port()}", "--health-listen", addr
            ),
            capture_output=True,
            text=True,
            timeout=60,
            env=wasmlattice_env,
        )
    assert r.returncode == 1, r
    assert f"--health-listen {addr}: cannot listen" in r.stderr, r.stderr
