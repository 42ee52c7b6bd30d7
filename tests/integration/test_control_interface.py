"""The control interface v1 served by real host processes over a real nats-server.

Hosts run as `python -m wasmlattice.lattice.run` subprocesses; the test talks to them with plain nats-py
requests and checks the exact JSON of replies and events against docs/protocol.md (control
interface, events, links).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.lattice import gather
from tests.support.processes import free_port, host_cmd
from wasmlattice.client.ctl import CtlClient
from wasmlattice.host.identity import HostIdentity
from wasmlattice.protocol import subjects as sj

pytestmark = pytest.mark.timeout(60)

EVENT_KEYS = {"specversion", "id", "source", "type", "time", "datacontenttype", "data"}
PING_KEYS = {
    "id",
    "friendly_name",
    "labels",
    "lattice",
    "uptime_seconds",
    "uptime_human",
    "version",
    "ctl_host",
    "rpc_host",
}
INVENTORY_KEYS = {
    "host_id",
    "friendly_name",
    "labels",
    "version",
    "uptime_human",
    "uptime_seconds",
    "components",
    "providers",
}
LINK = {
    "source_id": "http-echo",
    "target": "kv-provider",
    "name": "default",
    "wit_namespace": "wasi",
    "wit_package": "keyvalue",
    "interfaces": ["store", "atomics"],
    "source_config": [],
    "target_config": ["kvcfg"],
}


class HostProcs:
    """Host subprocesses of one test; every one still running is killed at teardown."""

    def __init__(self, nats_url: str, lattice: str, log_dir: Path) -> None:
        self.nats_url = nats_url
        self.lattice = lattice
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, *labels: str, seed: str | None = None, heartbeat: float = 30.0
    ) -> subprocess.Popen[bytes]:
        cmd = host_cmd(self.nats_url, self.lattice, "--heartbeat-interval", str(heartbeat))
        for label in labels:
            cmd += ["--label", label]
        if seed:
            cmd += ["--host-seed", seed]
        log = (self.log_dir / f"host{len(self.procs)}.log").open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("WASMCLOUD_LABEL_")}
        env["WASMCLOUD_LABEL_from_env"] = "yes"
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


class Lattice:
    """A test client: requests, scatter-gather, and a record of every event of the lattice."""

    def __init__(self, nc: Any, lattice: str) -> None:
        self.nc = nc
        self.lattice = lattice
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    async def start(self) -> None:
        async def on_event(msg: Any) -> None:
            self.events.append(json.loads(msg.data))
            self._changed.set()

        await self.nc.subscribe(sj.events_wildcard(self.lattice), cb=on_event)
        await self.nc.flush()

    async def wait_event(
        self, event_type: str, where: Callable[[dict[str, Any]], bool] = lambda e: True, timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first recorded event of `event_type` matching `where`, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        full = "com.wasmcloud.lattice." + event_type
        while True:
            for event in self.events:
                if event["type"] == full and where(event):
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {event_type} event within {timeout}s; got {self.types()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    def types(self) -> list[str]:
        return [e["type"].rsplit(".", 1)[-1] for e in self.events]

    def of(self, event_type: str, source: str | None = None) -> list[dict[str, Any]]:
        full = "com.wasmcloud.lattice." + event_type
        return [e for e in self.events if e["type"] == full and (source is None or e["source"] == source)]

    async def request(self, subject: str, body: bytes | dict[str, Any] | list[Any] = b"") -> dict[str, Any]:
        data = json.dumps(body).encode() if isinstance(body, dict | list) else body
        msg = await self.nc.request(subject, data, timeout=5.0)
        reply: dict[str, Any] = json.loads(msg.data)
        return reply

    async def gather(self, subject: str, body: bytes = b"", wait: float = 1.0) -> list[dict[str, Any]]:
        """Publish with a fresh inbox and collect every reply for `wait` seconds (like `host ping`)."""
        return await gather(self.nc, subject, body, wait)

    def subj(self, op: str, target: str | None = None) -> str:
        return sj.ctl_subject(op, self.lattice, target)

    async def wait_hosts(self, count: int, timeout: float = 30.0) -> list[str]:
        """Wait for `count` distinct `host_started` events; their host IDs in order."""
        deadline = time.monotonic() + timeout
        while True:
            ids = list(dict.fromkeys(e["source"] for e in self.of("host_started")))
            if len(ids) >= count:
                return ids
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(ids)} of {count} hosts started within {timeout}s")
            await asyncio.sleep(0.05)


@pytest.fixture
def hosts(nats_url: str, lattice_name: str, tmp_path: Path) -> Iterator[HostProcs]:
    procs = HostProcs(nats_url, lattice_name, tmp_path)
    try:
        yield procs
    finally:
        procs.close()


@pytest.fixture
async def lattice(nats_url: str, lattice_name: str) -> AsyncIterator[Lattice]:
    import nats

    nc = await nats.connect(nats_url)
    client = Lattice(nc, lattice_name)
    await client.start()
    try:
        yield client
    finally:
        await nc.close()


def assert_event(event: dict[str, Any], event_type: str, source: str) -> None:
    """The CloudEvents envelope of docs/protocol.md#event-envelope, exactly."""
    assert set(event) == EVENT_KEYS
    assert event["specversion"] == "1.0"
    assert event["type"] == f"com.wasmcloud.lattice.{event_type}"
    assert event["source"] == source
    assert event["datacontenttype"] == "application/json"
    assert event["time"].endswith("Z")


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"host process {proc.pid} did not exit within {timeout}s")
        await asyncio.sleep(0.05)
    return proc.returncode


# Tests that start host processes take seconds each: they are marked slow.
@pytest.fixture
async def ids(hosts: HostProcs, lattice: Lattice) -> list[str]:
    """Three hosts (zones a, b and c, tier test) started and announced; their IDs in start order."""
    for zone in ("a", "b", "c"):
        hosts.start(f"zone={zone}", "tier=test")
    return await lattice.wait_hosts(3)


@pytest.mark.slow
async def test_host_started_and_ping(lattice: Lattice, ids: list[str]) -> None:
    # host_started: data fields of docs/protocol.md#event-catalogue exactly.
    started = lattice.of("host_started", ids[0])[0]
    assert_event(started, "host_started", ids[0])
    assert set(started["data"]) == {"friendly_name", "labels", "uptime_seconds", "version"}
    assert started["data"]["uptime_seconds"] == 0

    # host.ping: every host answers, exact envelope and Host shape (no js_domain configured).
    replies = await lattice.gather(lattice.subj("host.ping"))
    assert len(replies) == 3
    for reply in replies:
        assert set(reply) == {"success", "message", "response"}
        assert reply["success"] is True and reply["message"] == ""
        assert set(reply["response"]) == PING_KEYS
    by_id = {r["response"]["id"]: r["response"] for r in replies}
    assert set(by_id) == set(ids)
    pinged = by_id[ids[0]]
    assert pinged["lattice"] == lattice.lattice
    assert pinged["id"].startswith("N")
    labels = pinged["labels"]
    assert {"hostcore.arch", "hostcore.os", "hostcore.osfamily"} <= set(labels)
    assert labels["tier"] == "test" and labels["from_env"] == "yes"
    assert sorted(r["labels"]["zone"] for r in by_id.values()) == ["a", "b", "c"]
    assert pinged["ctl_host"].startswith("nats://")


@pytest.mark.slow
async def test_host_get_is_the_inventory_of_one_host(lattice: Lattice, ids: list[str]) -> None:
    host = ids[0]
    started = lattice.of("host_started", host)[0]
    # host.get: the inventory of one host.
    inv = await lattice.request(lattice.subj("host.get", host))
    assert set(inv) == {"success", "message", "response"} and inv["success"] is True
    assert set(inv["response"]) == INVENTORY_KEYS
    assert inv["response"]["host_id"] == host
    assert inv["response"]["components"] == [] and inv["response"]["providers"] == []
    assert inv["response"]["friendly_name"] == started["data"]["friendly_name"]


@pytest.mark.slow
async def test_labels_put_and_del(lattice: Lattice, ids: list[str]) -> None:
    host = ids[0]
    # label.put / label.del: reply texts, event, inventory.
    reply = await lattice.request(lattice.subj("label.put", host), {"key": "role", "value": "edge"})
    assert reply == {"success": True, "message": "successfully put label"}
    changed = await lattice.wait_event("labels_changed", lambda e: "role" in e["data"]["labels"])
    assert_event(changed, "labels_changed", host)
    assert set(changed["data"]) == {"host_id", "labels"} and changed["data"]["host_id"] == host
    inv = await lattice.request(lattice.subj("host.get", host))
    assert inv["response"]["labels"]["role"] == "edge"
    reply = await lattice.request(lattice.subj("label.put", host), {"key": "HostCore.os", "value": "x"})
    assert reply == {"success": False, "message": "hostcore.* labels cannot be set dynamically"}
    reply = await lattice.request(lattice.subj("label.del", host), {"key": "role"})
    assert reply == {"success": True, "message": "successfully deleted label"}
    await lattice.wait_event("labels_changed", lambda e: "role" not in e["data"]["labels"])
    reply = await lattice.request(lattice.subj("label.del", host), {"key": "role"})
    assert reply == {"success": True, "message": "successfully deleted label (no such label)"}
    inv = await lattice.request(lattice.subj("host.get", host))
    assert "role" not in inv["response"]["labels"]


@pytest.mark.slow
async def test_config_put_get_del(lattice: Lattice, ids: list[str]) -> None:
    # config put / get / del round trip, with events.
    reply = await lattice.request(lattice.subj("config.put", "kvcfg"), {"bucket": "b1", "ttl": "5"})
    assert reply == {"success": True, "message": "successfully put config"}
    ev = await lattice.wait_event("config_set")
    assert ev["data"] == {"config_name": "kvcfg"}
    reply = await lattice.request(lattice.subj("config.get", "kvcfg"))
    assert reply == {"success": True, "message": "", "response": {"bucket": "b1", "ttl": "5"}}
    # A put replaces the whole map.
    await lattice.request(lattice.subj("config.put", "tmp"), {"a": "1", "b": "2"})
    await lattice.request(lattice.subj("config.put", "tmp"), {"a": "3"})
    reply = await lattice.request(lattice.subj("config.get", "tmp"))
    assert reply["response"] == {"a": "3"}
    reply = await lattice.request(lattice.subj("config.del", "tmp"))
    assert reply == {"success": True, "message": "successfully deleted config"}
    ev = await lattice.wait_event("config_deleted")
    assert ev["data"] == {"config_name": "tmp"}
    reply = await lattice.request(lattice.subj("config.get", "tmp"))
    assert reply == {"success": True, "message": "Configuration not found"}
    reply = await lattice.request(lattice.subj("config.put", "bad"), {"n": 5})
    assert reply["success"] is False and set(reply) == {"success", "message"}
    assert reply["message"].startswith("config data should be a map of string -> string")
    assert "'n'" in reply["message"]


@pytest.mark.slow
async def test_link_put_get_and_del(lattice: Lattice, ids: list[str]) -> None:
    # LINK names `kvcfg` as its target config, which must exist first.
    reply = await lattice.request(lattice.subj("config.put", "kvcfg"), {"bucket": "b1", "ttl": "5"})
    assert reply == {"success": True, "message": "successfully put config"}
    # link.put: a missing config name is rejected with a linkdef_set_failed event.
    missing = dict(LINK, source_id="other", target_config=["nope"])
    reply = await lattice.request(lattice.subj("link.put"), missing)
    assert reply == {
        "success": False,
        "message": "Failed to validate configuration and secrets. "
        "Configuration nope not found in config store. ",
    }
    failed = await lattice.wait_event("linkdef_set_failed")
    assert failed["data"] == dict(missing, error=reply["message"])

    # link.put on one host, visible through link.get answered by whichever host the queue picks.
    reply = await lattice.request(lattice.subj("link.put"), LINK)
    assert reply == {"success": True, "message": "successfully set link"}
    linkdef = await lattice.wait_event("linkdef_set")
    assert linkdef["data"] == LINK and linkdef["source"] in ids
    deadline = time.monotonic() + 10
    agreed = 0
    while agreed < 9:
        got = await lattice.request(lattice.subj("link.get"))
        assert set(got) == {"success", "message", "response"}
        agreed = agreed + 1 if got["response"] == [LINK] else 0
        assert time.monotonic() < deadline, f"hosts do not agree on links: {got}"
    # Same slot, overlapping interface, different target: refused.
    reply = await lattice.request(lattice.subj("link.put"), dict(LINK, target="elsewhere"))
    assert reply["success"] is False and reply["message"].startswith("link already exists with different")

    # link.del: event with target/interfaces, then idempotent deletes.
    deleted_ends: list[str] = []

    async def on_del(msg: Any) -> None:
        deleted_ends.append(msg.subject)

    await lattice.nc.subscribe(f"wasmbus.rpc.{lattice.lattice}.*.linkdefs.del", cb=on_del)
    key = {"source_id": "http-echo", "wit_namespace": "wasi", "wit_package": "keyvalue"}
    reply = await lattice.request(lattice.subj("link.del"), key)
    assert reply == {"success": True, "message": "successfully deleted link"}
    gone = await lattice.wait_event("linkdef_deleted")
    assert gone["data"] == dict(key, name="default", target="kv-provider", interfaces=["store", "atomics"])
    reply = await lattice.request(lattice.subj("link.del"), key)
    assert reply == {"success": True, "message": "successfully deleted link"}
    await lattice.wait_event("linkdef_deleted", lambda e: "target" not in e["data"])
    reply = await lattice.request(lattice.subj("link.del"), dict(key, source_id="nobody"))
    assert reply == {"success": True, "message": "successfully deleted link (spec doesn't exist)"}
    assert sorted(s.split(".")[3] for s in deleted_ends) == ["http-echo", "kv-provider"]


@pytest.mark.slow
async def test_malformed_payloads_are_refused(lattice: Lattice, ids: list[str]) -> None:
    host = ids[0]
    # Malformed payloads: success false, the field named, nothing crashes.
    reply = await lattice.request(lattice.subj("link.put"), {k: v for k, v in LINK.items() if k != "target"})
    assert reply["success"] is False and set(reply) == {"success", "message"}
    assert reply["message"].startswith("failed to deserialize wrpc link definition")
    assert "'target'" in reply["message"]
    reply = await lattice.request(lattice.subj("label.put", host), {"key": "k", "value": 1})
    assert reply["success"] is False and "'value'" in reply["message"]
    reply = await lattice.request(lattice.subj("label.put", host), b"{not json")
    assert reply["success"] is False and "invalid JSON" in reply["message"]
    reply = await lattice.request(lattice.subj("component.scale", host), {"count": 1})
    assert reply["success"] is False and "'component_id'" in reply["message"]
    reply = await lattice.request(f"{sj.ctl_prefix(lattice.lattice)}.link.bogus", b"{}")
    assert reply == {"success": False, "message": "unsupported subject"}


@pytest.mark.slow
async def test_scale_failure_and_unmatched_auction(lattice: Lattice, ids: list[str]) -> None:
    host = ids[0]
    # Scale is acknowledged before loading; a missing file (in a directory the host allows) then
    # fails with an event.
    missing = f"file://{tempfile.gettempdir()}/{uuid.uuid4().hex}/x.wasm"
    scale = {"component_id": "echo", "component_ref": missing, "count": 1}
    reply = await lattice.request(lattice.subj("component.scale", host), scale)
    assert reply == {"success": True, "message": ""}
    failed = await lattice.wait_event("component_scale_failed", lambda e: e["data"]["component_id"] == "echo")
    assert "/x.wasm does not exist" in failed["data"]["error"]
    # Auctions: hosts whose labels match answer, others stay silent.
    auction = {"component_id": "echo", "component_ref": "x", "constraints": {"nope": "x"}}
    assert await lattice.gather(lattice.subj("component.auction"), json.dumps(auction).encode(), 0.5) == []


@pytest.mark.slow
async def test_a_component_file_is_read_again_once_it_changes(
    lattice: Lattice, ids: list[str], http_echo_wasm: Path
) -> None:
    """A host skips re-reading a component file it loaded before only while the file is unchanged
    (host/components.py): rewritten in place, it is read again, here refused as not WebAssembly."""
    host = ids[0]
    path = Path(tempfile.mkdtemp()) / "c.wasm"
    shutil.copyfile(http_echo_wasm, path)
    scaled: list[str] = []

    async def scale(cid: str, count: int = 1) -> None:
        scale = {"component_id": cid, "component_ref": f"file://{path}", "count": count}
        reply = await lattice.request(lattice.subj("component.scale", host), scale)
        assert reply == {"success": True, "message": ""}

    try:
        for cid in ("reread-a", "reread-b"):  # the second one from the unchanged file
            await scale(cid)
            await lattice.wait_event("component_scaled", lambda e, c=cid: e["data"]["component_id"] == c, 60)
            scaled.append(cid)
        path.write_bytes(b"this is not WebAssembly\n" * 8)
        await scale("reread-c")
        failed = await lattice.wait_event(
            "component_scale_failed", lambda e: e["data"]["component_id"] == "reread-c", 60
        )
        assert "is not a WebAssembly file" in failed["data"]["error"], failed
        shutil.copyfile(http_echo_wasm, path)
        await scale("reread-d")
        await lattice.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "reread-d", 60)
        scaled.append("reread-d")
    finally:
        for cid in scaled:
            await scale(cid, 0)
        shutil.rmtree(path.parent, ignore_errors=True)


@pytest.mark.slow
async def test_claims_and_registry(lattice: Lattice, ids: list[str]) -> None:
    # claims.get (nothing signed yet) and registry.put.
    reply = await lattice.request(lattice.subj("claims.get"))
    assert reply == {"success": True, "message": "", "response": []}
    creds = {"ghcr.io": {"username": "u", "password": "p", "registryType": "oci"}}
    reply = await lattice.request(lattice.subj("registry.put"), creds)
    assert reply == {"success": True, "message": "successfully put registries"}


@pytest.mark.slow
async def test_sigterm_is_a_graceful_stop(hosts: HostProcs, lattice: Lattice, ids: list[str]) -> None:
    # SIGTERM is a graceful stop too: host_stopped, exit code 0.
    victim = next(p for p in hosts.procs if p.poll() is None)
    victim.send_signal(signal.SIGTERM)
    assert await wait_exit(victim) == 0
    await lattice.wait_event("host_stopped", timeout=5)


@pytest.mark.slow
async def test_stop_kill_and_restart(hosts: HostProcs, lattice: Lattice) -> None:
    seed_a = HostIdentity.generate().seed
    proc_a = hosts.start("name=a", seed=seed_a, heartbeat=1.0)
    proc_b = hosts.start("name=b", heartbeat=1.0)
    proc_c = hosts.start("name=c", heartbeat=1.0)
    ids = await lattice.wait_hosts(3)
    by_name: dict[str, str] = {}
    for reply in await lattice.gather(lattice.subj("host.ping")):
        by_name[reply["response"]["labels"]["name"]] = reply["response"]["id"]
    host_a, host_b, host_c = by_name["a"], by_name["b"], by_name["c"]
    assert host_a == HostIdentity.from_seed(seed_a).public_key and set(ids) == set(by_name.values())

    # Heartbeats carry the full inventory.
    beat = await lattice.wait_event("host_heartbeat", lambda e: e["source"] == host_b)
    assert_event(beat, "host_heartbeat", host_b)
    assert set(beat["data"]) == INVENTORY_KEYS and beat["data"]["host_id"] == host_b

    # Shared state written before the hosts go away.
    await lattice.request(lattice.subj("config.put", "kvcfg"), {"bucket": "b1"})
    assert (await lattice.request(lattice.subj("link.put"), LINK))["success"] is True

    # host.stop: reply, host_stopped event, process exits; the others keep answering.
    reply = await lattice.request(lattice.subj("host.stop", host_a), {"host_id": "NOTME"})
    assert reply == {"success": False, "message": "invalid host_id [NOTME]"}
    reply = await lattice.request(lattice.subj("host.stop", host_a), b"")
    assert reply == {"success": True, "message": "successfully handled stop host"}
    stopped = await lattice.wait_event("host_stopped", lambda e: e["source"] == host_a)
    assert_event(stopped, "host_stopped", host_a)
    assert set(stopped["data"]) == {"labels"} and stopped["data"]["labels"]["name"] == "a"
    assert await wait_exit(proc_a) == 0
    pings = await lattice.gather(lattice.subj("host.ping"), wait=0.7)
    assert {r["response"]["id"] for r in pings} == {host_b, host_c}

    # kill -9: that host's heartbeats stop, no host_stopped; the survivor keeps beating.
    proc_b.send_signal(signal.SIGKILL)
    await wait_exit(proc_b)
    await asyncio.sleep(0.3)  # a beat already in flight may still arrive
    beats_b = len(lattice.of("host_heartbeat", host_b))
    await asyncio.sleep(2.5)  # 2.5 heartbeat intervals
    assert len(lattice.of("host_heartbeat", host_b)) == beats_b
    assert not lattice.of("host_stopped", host_b)
    beats_c = len(lattice.of("host_heartbeat", host_c))
    await lattice.wait_event(
        "host_heartbeat", lambda e: len(lattice.of("host_heartbeat", host_c)) > beats_c, timeout=3
    )

    # Restart a host with A's seed: same ID; once it is the only host, it answers from KV.
    restarts = len(lattice.of("host_started", host_a))
    hosts.start("name=a2", seed=seed_a, heartbeat=1.0)
    deadline = time.monotonic() + 30
    while len(lattice.of("host_started", host_a)) == restarts:
        assert time.monotonic() < deadline, "restarted host did not start"
        await asyncio.sleep(0.05)
    reply = await lattice.request(lattice.subj("host.stop", host_c), {"host_id": host_c, "timeout": 5000})
    assert reply["success"] is True
    assert await wait_exit(proc_c) == 0
    pings = await lattice.gather(lattice.subj("host.ping"), wait=0.7)
    assert [r["response"]["id"] for r in pings] == [host_a]
    assert pings[0]["response"]["labels"]["name"] == "a2"
    reply = await lattice.request(lattice.subj("link.get"))
    assert reply == {"success": True, "message": "", "response": [LINK]}
    reply = await lattice.request(lattice.subj("config.get", "kvcfg"))
    assert reply["response"] == {"bucket": "b1"}


async def test_unreachable_nats_and_bad_seed_fail_clearly() -> None:
    from wasmlattice.lattice.run import HostOptions, HostStartError, run_host
    from wasmlattice.protocol.connection import NatsUnreachableError

    port = free_port()  # a port nobody listens on
    with pytest.raises(NatsUnreachableError, match=r"cannot reach NATS at nats://127\.0\.0\.1"):
        await run_host(HostOptions(nats_url=f"nats://127.0.0.1:{port}"))
    with pytest.raises(HostStartError, match="server seed starting with 'SN'"):
        await run_host(HostOptions(nats_url=f"nats://127.0.0.1:{port}", host_seed="SUAM"))


def test_identity_labels_and_uptime() -> None:
    from wasmlattice.host.host import Host, LabelError, format_uptime, parse_label_args
    from wasmlattice.host.identity import HostIdentityError, friendly_name

    ident = HostIdentity.generate()
    assert ident.public_key.startswith("N") and ident.seed.startswith("SN")
    assert ident.seed not in repr(ident)
    assert HostIdentity.from_seed(ident.seed) == ident
    assert friendly_name(ident.public_key) == friendly_name(ident.public_key)
    with pytest.raises(HostIdentityError):
        HostIdentity.from_seed("SNAAAA")
    assert parse_label_args(["a=1", "b=x"]) == {"a": "1", "b": "x"}
    for bad in ("a", "a=b=c", "=v"):
        with pytest.raises(LabelError):
            parse_label_args([bad])
    host = Host(ident, labels={"zone": "a", "hostcore.os": "fake"})
    assert host.labels["zone"] == "a" and host.labels["hostcore.os"] != "fake"
    with pytest.raises(LabelError, match=r"hostcore\.\* labels cannot be set dynamically"):
        host.put_label("HOSTCORE.arch", "x")
    assert format_uptime(0) == "0s" and format_uptime(3723) == "1h 2m 3s"
    assert format_uptime(90061) == "1day 1h 1m 1s"


@pytest.mark.slow
async def test_ping_expecting_known_hosts_ends_when_they_answered(lattice: Lattice, ids: list[str]) -> None:
    """The app manager's rounds ping with the hosts they know: the ping ends once those answered,
    not after its whole wait (a plain ping must wait: it cannot know how many hosts there are)."""
    ctl = CtlClient(lattice.nc, lattice.lattice)
    # A wait far beyond the test's timeout: only the early end can make this return.
    found = await asyncio.wait_for(ctl.ping_hosts(wait=600.0, expect=ids[:2]), 60.0)
    assert {h.id for h in found} >= set(ids[:2])
    # Expecting a host that is not there: the whole (short) wait, and the others still count.
    found = await ctl.ping_hosts(wait=1.0, expect=[*ids, "NOPE"])
    assert sorted(h.id for h in found) == sorted(ids)
