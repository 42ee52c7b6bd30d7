"""A host is never a zombie: after nats-server closes its connection, it is back on the lattice.

nats-server drops a client's connection, after an `-ERR`, over one protocol line it refuses (a
subject longer than `max_control_line`). nats-py treats that as final, so the host used to keep
serving HTTP while answering no ping, inventory or stop. Each test runs its own nats-server (its
config is the test's to change and reload) and a real host process, and asserts that within a few
seconds the host answers `host.ping` with the same ID, reports its component and still serves HTTP,
or else has exited with an error status.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest

from tests.support.lattice import HTTP_SERVER, http_link
from tests.support.processes import free_port, host_cmd
from wasmlattice.client.ctl import CtlClient
from wasmlattice.nats_server import find_nats_server
from wasmlattice.protocol import subjects as sj
from wasmlattice.protocol.subjects import CtlOperation

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

# How long the host may take to be visible again (or gone) after the server dropped it.
RECOVERY_S = 15.0
# Users of the test's server when it requires authentication: the host's and the test's.
HOST_USER, TEST_USER = "host:host-password", "tester:tester-password"


class OwnNats:
    """A nats-server of this test's own, with a monitoring port and a config it may reload."""

    def __init__(self, tmp: Path, users: tuple[str, ...] = ()) -> None:
        self.tmp, self.users = tmp, users
        self.port, self.http_port = free_port(), free_port()
        self.conf = tmp / "nats.conf"
        self.log = tmp / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, user: str | None = None) -> str:
        """The server's URL, with `user:password` in it if given."""
        return f"nats://{user + '@' if user else ''}127.0.0.1:{self.port}"

    def write_config(self, extra: str = "") -> None:
        pairs = [u.split(":") for u in self.users]
        users = ", ".join(f"{{user: {json.dumps(n)}, password: {json.dumps(p)}}}" for n, p in pairs)
        self.conf.write_text(
            "\n".join(
                [
                    "host: 127.0.0.1",
                    f"port: {self.port}",
                    "http: " + json.dumps(f"127.0.0.1:{self.http_port}"),
                    "jetstream { store_dir: " + json.dumps(str(self.tmp / "js")) + " }",
                    f"authorization {{ users = [{users}] }}" if self.users else "",
                    extra,
                    "",
                ]
            )
        )

    async def start(self) -> None:
        self.write_config()
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(find_nats_server()), "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while await self._monitor("/healthz?js-enabled-only=true") is None:
            assert time.monotonic() < deadline, self.log.read_text(errors="replace")
            await asyncio.sleep(0.1)

    async def reload(self, extra: str = "") -> None:
        """Rewrite the config and have the server apply it (SIGHUP) to every connection, returning
        once it has: a client that speaks before that would still meet the old limits."""
        assert self.proc is not None
        before = (await self._monitor("/varz") or {}).get("config_load_time")
        self.write_config(extra)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while (await self._monitor("/varz") or {}).get("config_load_time") == before:
            assert time.monotonic() < deadline, f"the server did not reload\n{self.log.read_text()}"
            await asyncio.sleep(0.05)

    async def closed_connections(self) -> list[dict[str, Any]]:
        """The connections the server has closed, with the reason it gives for each."""
        found = await self._monitor("/connz?state=closed")
        return list(found.get("connections") or []) if found else []

    async def _monitor(self, path: str) -> Any:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s,
                s.get(f"http://127.0.0.1:{self.http_port}{path}") as r,
            ):
                return await r.json() if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Setup:
    """One host process serving an echo component over HTTP, on the test's own nats-server."""

    def __init__(self, tmp: Path, lattice: str, env: dict[str, str], *, auth: bool = False) -> None:
        self.tmp, self.lattice, self.env = tmp, lattice, env
        self.nats = OwnNats(tmp, (HOST_USER, TEST_USER) if auth else ())
        self.auth = auth
        self.host_log = tmp / "host.log"
        self.host: subprocess.Popen[bytes] | None = None
        self.nc: Any = None
        self.ctl: CtlClient
        self.host_id = ""
        self.url = ""

    async def start(self, echo_ref: str) -> None:
        await self.nats.start()
        # The test's client reconnects on its own: a config reload may drop it too.
        self.nc = await nats.connect(
            self.nats.url(TEST_USER if self.auth else None),
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
        )
        self.ctl = CtlClient(self.nc, self.lattice, timeout=3.0)
        url = self.nats.url(HOST_USER if self.auth else None)
        cmd = host_cmd(url, self.lattice, "--heartbeat-interval", "1")
        with self.host_log.open("wb") as out:
            self.host = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        hosts = await self._poll(lambda: self.ctl.ping_hosts(wait=0.5), bool, 30.0, "the host's first ping")
        self.host_id = hosts[0].id
        await self.ctl.scale_component(self.host_id, echo_ref, "web", 1)
        await self._poll(
            lambda: self.ctl.get_host_inventory(self.host_id),
            lambda inv: [c.id for c in inv.components] == ["web"],
            60.0,
            "web in the inventory",
        )
        port = free_port()
        await self.ctl.put_config("http", {"address": f"127.0.0.1:{port}"})
        await self.ctl.start_provider(self.host_id, HTTP_SERVER, "http-server")
        await self.ctl.put_link(http_link("http-server", "web", ["http"]))
        self.url = f"http://127.0.0.1:{port}/echo"
        await self._poll(lambda: http_status(self.url), lambda s: s == 200, 30.0, "HTTP 200 from web")

    async def assert_visible_again_or_exited(self) -> None:
        """Within RECOVERY_S: the same host answers ping and inventory and serves HTTP, or it exited
        with an error status. Never: running, serving HTTP, and invisible."""
        assert self.host is not None
        deadline = time.monotonic() + RECOVERY_S
        while time.monotonic() < deadline:
            code = self.host.poll()
            if code is not None:
                assert code != 0, f"the host exited with status 0\n{self.log_text()}"
                assert "closed for good" in self.log_text(), self.log_text()
                # It stopped its components on the way out: nothing serves while invisible.
                assert await http_status(self.url) == 0
                return
            try:
                hosts = await self.ctl.ping_hosts(wait=0.5)
            except Exception:  # the test's own client may still be reconnecting
                hosts = []
            if [h.id for h in hosts] == [self.host_id]:
                inv = await self.ctl.get_host_inventory(self.host_id)
                assert [c.id for c in inv.components] == ["web"]
                assert await http_status(self.url) == 200
                return
        raise AssertionError(
            f"{RECOVERY_S}s after its connection was closed the host still runs (HTTP "
            f"{await http_status(self.url)}) but answers no ping\n{self.log_text()}"
        )

    async def wait_dropped(self, reason: str) -> None:
        """Until the server has closed a connection for a reason containing `reason`."""
        deadline = time.monotonic() + 10
        while not any(
            reason in (c.get("reason") or "").lower() for c in await self.nats.closed_connections()
        ):
            assert time.monotonic() < deadline, f"the server did not drop the host\n{self.log_text()}"
            await asyncio.sleep(0.1)

    def log_text(self) -> str:
        return self.host_log.read_text(errors="replace")[-6000:]

    async def _poll(self, probe: Any, ok: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await probe()
                if ok(last):
                    return last
            except Exception as e:  # not there yet
                last = e
            await asyncio.sleep(0.1)
        raise AssertionError(f"{what} not within {timeout}s; last: {last!r}\n{self.log_text()}")

    async def close(self) -> None:
        if self.host is not None and self.host.poll() is None:
            self.host.kill()
            self.host.wait(5)
        if self.nc is not None:
            await self.nc.close()
        self.nats.stop()


async def http_status(url: str) -> int:
    """The status of GET `url`, or 0 if nothing answers."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s,
            s.get(url) as r,
        ):
            await r.read()
            return r.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return 0


@pytest.fixture
async def setup(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    lattice_name: str,
    wasmlattice_env: dict[str, str],
    echo_ref: str,
) -> AsyncIterator[Setup]:
    auth = bool(getattr(request, "param", False))
    s = Setup(tmp_path, lattice_name, wasmlattice_env, auth=auth)
    try:
        await s.start(echo_ref)
        yield s
    finally:
        await s.close()


async def test_host_is_back_after_the_server_drops_it_over_max_control_line(setup: Setup) -> None:
    """The server applies a tiny `max_control_line` to live connections: the host's next heartbeat
    is refused and its connection closed, whatever the control messages said."""
    await setup.ctl.ping_hosts(wait=0.2)  # the test's client speaks before the limit, not after
    await setup.nats.reload("max_control_line: 32")
    await setup.wait_dropped("control line")
    await setup.nats.reload()
    await setup.assert_visible_again_or_exited()
    # The host said why in its own log, naming the server's error.
    assert "maximum control line exceeded" in setup.log_text().lower(), setup.log_text()

    # While it cannot reach NATS at all, its log says within seconds what the lattice misses.
    setup.nats.stop()
    deadline = time.monotonic() + 5
    needle = f"cannot answer {sj.ctl_subject(CtlOperation.HOST_PING, setup.lattice)} nor publish"
    while needle not in setup.log_text():
        assert time.monotonic() < deadline, f"no warning naming {needle!r}\n{setup.log_text()}"
        await asyncio.sleep(0.1)
    assert sj.event_subject("host_heartbeat", setup.lattice) in setup.log_text()


async def test_a_5000_character_link_id_does_not_make_the_host_a_zombie(setup: Setup) -> None:
    """The attack of issue 12: a `link.put` whose source ID is 5,000 characters. Sent raw, so that
    no client-side check stops it; the host may refuse it or lose its connection over it, but it is
    visible again (or gone) within seconds."""
    body = json.dumps(
        {
            "source_id": "a" * 5000,
            "target": "kv",
            "name": "default",
            "wit_namespace": "wasi",
            "wit_package": "keyvalue",
            "interfaces": ["store"],
            "source_config": [],
            "target_config": [],
        }
    ).encode()
    subject = sj.ctl_subject(CtlOperation.LINK_PUT, setup.lattice)
    try:
        await setup.nc.request(subject, body, timeout=3.0)
    except nats.errors.TimeoutError:
        pass  # the host lost its connection before it could answer
    await setup.assert_visible_again_or_exited()


@pytest.mark.parametrize("setup", [True], indirect=True, ids=["auth"])
async def test_a_host_whose_credentials_are_revoked_exits_with_an_error(setup: Setup) -> None:
    """The one case nothing reconnects: the server stops accepting the host's user (here by a config
    reload without it) and drops it with `Authorization Violation`. The host must not stay up,
    serving HTTP while invisible: it stops its components and exits non-zero, saying why."""
    assert setup.host is not None
    setup.nats.users = (TEST_USER,)
    await setup.nats.reload()
    await setup.wait_dropped("auth")
    await setup.assert_visible_again_or_exited()
    assert setup.host.poll() not in (None, 0), setup.log_text()


@pytest.mark.parametrize("setup", [True], indirect=True, ids=["auth"])
async def test_a_password_in_the_nats_url_reaches_neither_ping_nor_log(setup: Setup) -> None:
    """`host.ping` replies carry the host's NATS URL (`ctl_host`, `rpc_host`) to anyone on the
    lattice, and the log names it: a password in `--nats-url` must appear in neither."""
    password = HOST_USER.partition(":")[2]
    (host,) = [h for h in await setup.ctl.ping_hosts(wait=0.5) if h.id == setup.host_id]
    described = json.dumps(host.model_dump(mode="json"))
    assert f"127.0.0.1:{setup.nats.port}" in described
    assert password not in described
    assert password not in setup.log_text()
