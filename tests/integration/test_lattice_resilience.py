"""Resilience of a lattice of real host processes: NATS restarts, a killed host, a lost KV bucket.

Each test starts its own nats-server (`EmbeddedNats` on a fixed free port with its own store dir, so
it can be stopped and started again in place) and its own `python -m wasmlattice.lattice.run`
processes, and drives them with `CtlClient`. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import nats
import pytest

from tests.support.lattice import HTTP_SERVER, http_link, kv_link
from tests.support.processes import free_port, host_cmd
from wasmlattice.client.ctl import CtlClient, CtlError
from wasmlattice.nats_server import EmbeddedNats
from wasmlattice.protocol import subjects as sj
from wasmlattice.protocol.kv import open_bucket
from wasmlattice.protocol.models import Link

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

T = TypeVar("T")


async def poll_until(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float, what: str
) -> T:
    """Call `probe` until `ok(result)`, at most `timeout` seconds; errors count as 'not yet'."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = await probe()
            last = result
            if ok(result):
                return result
        except (CtlError, nats.errors.Error, aiohttp.ClientError, TimeoutError, OSError) as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout}s; last: {last!r}")
        await asyncio.sleep(0.1)


class Lattice:
    """A nats-server we own, host processes on it, and a control client."""

    def __init__(self, tmp: Path, name: str, env: dict[str, str]) -> None:
        self.tmp, self.name, self.env = tmp, name, env
        self.port = free_port()
        self.data_dir = tmp / "nats"
        self.nats: EmbeddedNats | None = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.nc: Any = None
        self.ctl: CtlClient

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start_nats(self) -> None:
        self.nats = EmbeddedNats(host="127.0.0.1", port=self.port, data_dir=self.data_dir)
        await self.nats.start()

    async def stop_nats(self) -> None:
        if self.nats is not None:
            await self.nats.stop()
            self.nats = None

    async def connect(self) -> None:
        self.nc = await nats.connect(
            self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2
        )
        self.ctl = CtlClient(self.nc, self.name, timeout=3.0)

    def log(self, i: int) -> Path:
        return self.tmp / f"host{i}.log"

    def logs(self) -> str:
        return "\n".join(
            f"--- host{i}\n" + self.log(i).read_text(errors="replace")[-3000:] for i in range(len(self.procs))
        )

    def start_host(self) -> None:
        cmd = host_cmd(self.url, self.name, "--friendly-name", f"host{len(self.procs)}")
        with self.log(len(self.procs)).open("wb") as out:
            self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env))

    async def host_ids(self, count: int, timeout: float = 30.0) -> dict[str, str]:
        """Wait until `count` hosts answer ping; friendly name -> host ID."""
        try:
            hosts = await poll_until(
                lambda: self.ctl.ping_hosts(wait=0.5), lambda h: len(h) == count, timeout, f"{count} hosts"
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.logs()}") from None
        return {h.friendly_name: h.id for h in hosts}

    async def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        if self.nc is not None:
            await self.nc.close()
        await self.stop_nats()


@pytest.fixture
async def lattice(
    tmp_path: Path, lattice_name: str, wasmlattice_env: dict[str, str]
) -> AsyncIterator[Lattice]:
    lat = Lattice(tmp_path, lattice_name, wasmlattice_env)
    await lat.start_nats()
    await lat.connect()
    try:
        yield lat
    finally:
        await lat.close()


async def http_get(url: str) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
        s.get(url) as r,
    ):
        await r.read()
        return r.status


async def scale_and_wait(lat: Lattice, host_id: str, ref: str, cid: str, count: int = 1) -> None:
    await lat.ctl.scale_component(host_id, ref, cid, count)
    await poll_until(
        lambda: lat.ctl.get_host_inventory(host_id),
        lambda inv: any(c.id == cid for c in inv.components),
        60.0,
        f"{cid} in the inventory of {host_id}",
    )


async def links_on_every_answer(lat: Lattice, expect: list[Link], tries: int = 20) -> bool:
    """`link.get` is a queue-group request: ask repeatedly so every host's view is sampled."""
    want = sorted(link.model_dump_json() for link in expect)
    for _ in range(tries):
        got = sorted(link.model_dump_json() for link in await lat.ctl.get_links())
        if got != want:
            return False
    return True


async def test_hosts_survive_a_nats_restart(lattice: Lattice, echo_ref: str) -> None:
    lat = lattice
    for _ in range(3):
        lat.start_host()
    ids = await lat.host_ids(3)
    ctl = lat.ctl
    await ctl.put_config("cfg", {"a": "1", "b": "2"})
    link = kv_link("echo", "kv", interfaces=("store",))
    await ctl.put_link(link)
    await scale_and_wait(lat, ids["host0"], echo_ref, "echo", 3)
    # HTTP ingress on another host, routed to a component there: it must work again after the
    # restart without anyone touching it.
    await scale_and_wait(lat, ids["host1"], echo_ref, "web")
    port = free_port()
    await ctl.put_config("http", {"address": f"127.0.0.1:{port}"})
    assert (
        await ctl.start_provider(ids["host1"], HTTP_SERVER, "http-server") == "successfully started provider"
    )
    http = http_link("http-server", "web", ["http"])
    await ctl.put_link(http)
    url = f"http://127.0.0.1:{port}/echo"
    await poll_until(lambda: http_get(url), lambda s: s == 200, 30.0, "HTTP 200 from web")
    assert await links_on_every_answer(lat, [link, http])

    # Stop the server (SIGTERM: JetStream flushes its store) and start it again in place.
    await lat.stop_nats()
    await asyncio.sleep(1.0)  # the hosts notice the disconnect and start reconnecting
    t0 = time.monotonic()
    await lat.start_nats()

    # Every host answers again within a bounded time (nats-py reconnects every 0.5 s).
    again = await lat.host_ids(3, timeout=30.0)
    assert again == ids
    recovered = time.monotonic() - t0
    assert recovered < 30.0

    # State kept: JetStream (links, config) and the host (its component).
    await poll_until(
        lambda: ctl.get_config("cfg"), lambda c: c == {"a": "1", "b": "2"}, 15.0, "config after restart"
    )
    await poll_until(
        ctl.get_links,
        lambda got: (
            sorted(x.model_dump_json() for x in got)
            == sorted([link.model_dump_json(), http.model_dump_json()])
        ),
        15.0,
        "links after restart",
    )
    inv = await ctl.get_host_inventory(ids["host0"])
    assert [(c.id, c.image_ref, c.max_instances) for c in inv.components] == [("echo", echo_ref, 3)]

    # Writes after the restart: config is read from KV by whichever host answers; links are served
    # from each host's watched view, so a new link on every answer shows both KV watches resumed.
    await ctl.put_config("cfg2", {"after": "restart"})
    assert await ctl.get_config("cfg2") == {"after": "restart"}
    link2 = kv_link("echo", "kv2", name="second", interfaces=("store",))
    await ctl.put_link(link2)

    await poll_until(
        lambda: links_on_every_answer(lat, [link, http, link2], tries=10),
        bool,
        15.0,
        "new link in every view",
    )
    for _ in range(5):
        assert await http_get(url) == 200
    for i in range(3):
        text = lat.log(i).read_text(errors="replace")
        assert "reconnected to NATS" in text, text[-3000:]
        assert f"KV watch on {sj.lattice_data_bucket(lat.name)}" in text, text[-3000:]
    # The component still serves work: scaling it again on the same host is acknowledged.
    await scale_and_wait(lat, ids["host0"], echo_ref, "echo2")


async def test_kill_9_of_one_host(lattice: Lattice, echo_ref: str) -> None:
    lat = lattice
    for _ in range(3):
        lat.start_host()
    ids = await lat.host_ids(3)
    ctl = lat.ctl
    for i in range(3):
        await scale_and_wait(lat, ids[f"host{i}"], echo_ref, f"echo{i}")
    port = free_port()
    await ctl.put_config("http", {"address": f"127.0.0.1:{port}"})
    assert (
        await ctl.start_provider(ids["host0"], HTTP_SERVER, "http-server") == "successfully started provider"
    )
    await ctl.put_link(http_link("http-server", "echo0", ["http"]))
    url = f"http://127.0.0.1:{port}/echo"
    await poll_until(lambda: http_get(url), lambda s: s == 200, 30.0, "HTTP 200 from echo0")

    victim = lat.procs[2]
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(5) == -signal.SIGKILL

    hosts = await ctl.ping_hosts(wait=1.0)
    assert sorted(h.id for h in hosts) == sorted([ids["host0"], ids["host1"]])
    for i in range(2):
        inv = await ctl.get_host_inventory(ids[f"host{i}"])
        assert [c.id for c in inv.components] == [f"echo{i}"]
    with pytest.raises(CtlError):
        await ctl.get_host_inventory(ids["host2"])
    for _ in range(5):
        assert await http_get(url) == 200
    # The lattice still takes new work on the survivors.
    await scale_and_wait(lat, ids["host1"], echo_ref, "late")
    assert [p.poll() for p in lat.procs[:2]] == [None, None]


async def test_lattice_bucket_deleted_and_recreated(lattice: Lattice) -> None:
    """Deleting LATTICEDATA under running hosts makes their KV watch fail: the supervisor logs the
    cause and restarts it with backoff; once the bucket exists again, the hosts follow it."""
    lat = lattice
    lat.start_host()
    ids = await lat.host_ids(1)
    ctl = lat.ctl
    old = kv_link("echo", "kv", interfaces=("store",))
    await ctl.put_link(old)
    await poll_until(ctl.get_links, lambda got: got == [old], 10.0, "link before")

    bucket = sj.lattice_data_bucket(lat.name)
    js = lat.nc.jetstream()
    await js.delete_key_value(bucket)
    # The watch's consumer is gone with the stream: heartbeats stop, the resubscribe finds no
    # stream, and the supervised task fails with the reason.
    deadline = time.monotonic() + 30.0
    while "kv-watch failed" not in lat.log(0).read_text(errors="replace"):
        assert time.monotonic() < deadline, lat.logs()
        await asyncio.sleep(0.1)
    text = lat.log(0).read_text(errors="replace")
    assert f"cannot watch KV bucket {bucket}: it does not exist" in text, text[-3000:]

    await open_bucket(js, bucket)
    new = kv_link("echo", "kv2", name="second", interfaces=("store",))
    await poll_until(lambda: ctl.put_link(new), lambda _: True, 20.0, "link put after re-create")
    # The restarted watch replays the new bucket: the deleted link is gone, the new one is seen.
    await poll_until(ctl.get_links, lambda got: got == [new], 20.0, "links after re-create")
    hosts = await ctl.ping_hosts(wait=0.5)
    assert [h.id for h in hosts] == [ids["host0"]]
    assert lat.procs[0].poll() is None
