"""Applications from manifests, reconciled across real host processes by an app manager.

The manager runs in the test's process (its own NATS connection); hosts are processes with
labels. Checked: weighted spreads, daemons, links and owned config, upgrades, undeploy (shared
providers stay), a host killed with SIGKILL, and a manager restarted mid-deploy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.support.http import get
from tests.support.lattice import LatticeEnv, eventually
from tests.support.processes import free_port
from wasmlattice.apps.client import AppClient
from wasmlattice.apps.manager import AppManager

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def manifest(name: str, version: str, components: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "core.oam.dev/v1beta1",
        "kind": "Application",
        "metadata": {"name": name, "annotations": {"version": version}},
        "spec": {"components": components},
    }


def component(name: str, image: str, *traits: dict[str, Any], **props: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "component",
        "properties": {"image": image, **props},
        "traits": list(traits),
    }


def capability(name: str, image: str, *traits: dict[str, Any], **props: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "capability",
        "properties": {"image": image, **props},
        "traits": list(traits),
    }


def spread(instances: int, *spreads: dict[str, Any]) -> dict[str, Any]:
    return {"type": "spreadscaler", "properties": {"instances": instances, "spread": list(spreads)}}


def daemon(instances: int, *spreads: dict[str, Any]) -> dict[str, Any]:
    return {"type": "daemonscaler", "properties": {"instances": instances, "spread": list(spreads)}}


def link(namespace: str, package: str, interfaces: list[str], target: Any, **extra: Any) -> dict[str, Any]:
    props = {"namespace": namespace, "package": package, "interfaces": interfaces, "target": target, **extra}
    return {"type": "link", "properties": props}


# How long an app may take to converge: the manager reconciles in rounds, slower than one link.
CONVERGE = 60.0
# A component file that does not exist, in a directory the test hosts allow (`host_cmd`).
MISSING_FILE = f"file://{tempfile.gettempdir()}/wasmlattice-nonexistent/x.wasm"

# One spread per zone, equal weights.
ZONES = ({"name": "a", "requirements": {"zone": "a"}}, {"name": "b", "requirements": {"zone": "b"}})


def kv_link(config_name: str, bucket: str) -> dict[str, Any]:
    """A link to the `kv` capability with an owned target config naming the bucket."""
    target = {"name": "kv", "config": [{"name": config_name, "properties": {"bucket": bucket}}]}
    return link("wasi", "keyvalue", ["store"], target)


class Apps:
    """An app manager in this process, its client, and lattice views for assertions."""

    def __init__(self, env: LatticeEnv) -> None:
        self.env = env
        self.nc: Any = None
        self.manager: AppManager | None = None
        self.client: AppClient

    async def start_manager(self, host_timeout: float = 3.0) -> AppManager:
        if self.nc is None:
            self.nc = await nats.connect(self.env.nats_url)
            self.client = AppClient(self.nc, self.env.lattice, timeout=10.0)
        manager = AppManager(self.nc, self.nc.jetstream(), self.env.lattice, host_timeout=host_timeout)
        await manager.start()
        self.manager = manager
        return manager

    async def deploy(self, doc: dict[str, Any]) -> None:
        await self.client.put(doc)
        await self.client.deploy(doc["metadata"]["name"], doc["metadata"]["annotations"]["version"])

    async def status(self, name: str) -> str:
        return (await self.client.status(name)).status

    async def wait_status(self, name: str, want: str, timeout: float = 90.0) -> None:
        async def check() -> None:
            st = await self.client.status(name)
            assert st.status == want, (
                st.status,
                st.message,
                [(s.name, s.status, s.message) for s in st.scalers],
            )

        await eventually(check, timeout, f"{name} {want}")

    async def placement(self, component_id: str) -> dict[str, int]:
        """host label `name` -> max instances of `component_id` there."""
        out: dict[str, int] = {}
        for host in await self.env.ctl.ping_hosts(wait=0.5):
            inv = await self.env.ctl.get_host_inventory(host.id)
            for c in inv.components:
                if c.id == component_id:
                    out[host.labels["name"]] = c.max_instances
        return out

    async def providers(self, provider_id: str) -> list[str]:
        out = []
        for host in await self.env.ctl.ping_hosts(wait=0.5):
            inv = await self.env.ctl.get_host_inventory(host.id)
            out += [host.labels["name"] for p in inv.providers if p.id == provider_id]
        return sorted(out)

    async def close(self) -> None:
        if self.manager is not None:
            await self.manager.stop()
        if self.nc is not None:
            await self.nc.close()


@pytest.fixture
async def apps(env: LatticeEnv) -> Any:
    a = Apps(env)
    try:
        yield a
    finally:
        await a.close()


def start_hosts(env: LatticeEnv, labels: list[dict[str, str]]) -> None:
    for i, extra in enumerate(labels):
        args = ["--label", f"name=h{i}", "--heartbeat-interval", "2"]
        for k, v in extra.items():
            args += ["--label", f"{k}={v}"]
        env.start_host(*args)


async def test_spreads_daemons_links_upgrade_undeploy(
    env: LatticeEnv, apps: Apps, http_echo_wasm: Path
) -> None:
    echo = "file://" + str(http_echo_wasm)
    start_hosts(
        env,
        [
            {"zone": "a"},
            {"zone": "a"},
            {"zone": "b"},
            {"zone": "b", "role": "edge"},
            {"zone": "b", "role": "edge"},
        ],
    )
    await env.host_ids(5)
    await apps.start_manager()
    ab = (
        {"name": "a", "requirements": {"zone": "a"}, "weight": 60},
        {"name": "b", "requirements": {"zone": "b"}, "weight": 40},
    )
    v1 = manifest("place", "v1", [
        component("echo", echo, spread(10, *ab), kv_link("bucket", "one")),
        component("edge", echo, daemon(2, {"name": "edge", "requirements": {"role": "edge"}})),
        capability("kv", "builtin://keyvalue-memory", spread(1), id="shared-kv"),
    ])  # fmt: skip
    await apps.deploy(v1)
    await apps.wait_status("place", "deployed")

    async def placed() -> None:
        echo_at = await apps.placement("place-echo")
        assert sum(n for h, n in echo_at.items() if h in ("h0", "h1")) == 6, echo_at
        assert sum(n for h, n in echo_at.items() if h in ("h2", "h3", "h4")) == 4, echo_at
        assert await apps.placement("place-edge") == {"h3": 2, "h4": 2}
        assert len(await apps.providers("shared-kv")) == 1

    await eventually(placed, what="placement", timeout=CONVERGE)
    links = await env.ctl.get_links()
    (made,) = [lk for lk in links if lk.source_id == "place-echo"]
    assert (made.target, made.wit_package, made.target_config) == (
        "shared-kv",
        "keyvalue",
        ["place-bucket"],
    )
    assert await env.ctl.get_config("place-bucket") == {"bucket": "one"}
    inv_edge = await apps.placement("place-edge")

    # A second app shares the provider (same id and image).
    other = manifest(
        "other", "v1", [capability("kv", "builtin://keyvalue-memory", spread(1), id="shared-kv")]
    )
    await apps.deploy(other)
    await apps.wait_status("other", "deployed")

    # v2: echo shrinks and moves to an even split, the link's config changes; edge and kv stay.
    half = ZONES
    v2 = manifest("place", "v2", [
        component("echo", echo, spread(4, *half), kv_link("bucket2", "two")),
        component("edge", echo, daemon(2, {"name": "edge", "requirements": {"role": "edge"}})),
        capability("kv", "builtin://keyvalue-memory", spread(1), id="shared-kv"),
    ])  # fmt: skip
    await apps.deploy(v2)

    async def upgraded() -> None:
        echo_at = await apps.placement("place-echo")
        assert sum(n for h, n in echo_at.items() if h in ("h0", "h1")) == 2, echo_at
        assert sum(n for h, n in echo_at.items() if h in ("h2", "h3", "h4")) == 2, echo_at
        (lk,) = [x for x in await env.ctl.get_links() if x.source_id == "place-echo"]
        assert lk.target_config == ["place-bucket2"], lk
        assert await env.ctl.get_config("place-bucket") is None
        assert await env.ctl.get_config("place-bucket2") == {"bucket": "two"}

    await eventually(upgraded, what="upgrade", timeout=CONVERGE)
    await apps.wait_status("place", "deployed")
    assert await apps.placement("place-edge") == inv_edge  # unchanged
    assert len(await apps.providers("shared-kv")) == 1

    # Undeploy removes what the app made, and nothing the other app still uses.
    await apps.client.undeploy("place")

    async def removed() -> None:
        assert await apps.placement("place-echo") == {}
        assert await apps.placement("place-edge") == {}
        assert [x for x in await env.ctl.get_links() if x.source_id == "place-echo"] == []
        assert await env.ctl.get_config("place-bucket2") is None

    await eventually(removed, what="undeploy", timeout=CONVERGE)
    assert await apps.status("place") == "undeployed"
    assert len(await apps.providers("shared-kv")) == 1  # "other" keeps it
    await apps.client.undeploy("other")
    await eventually(
        lambda: _assert_eq(apps.providers("shared-kv"), []), what="provider stopped", timeout=CONVERGE
    )


async def _assert_eq(value: Awaitable[Any], expected: Any) -> None:
    got = await value
    assert got == expected, got


async def test_host_killed_work_moves_and_http_keeps_answering(
    env: LatticeEnv, apps: Apps, http_echo_wasm: Path
) -> None:
    echo = "file://" + str(http_echo_wasm)
    start_hosts(env, [{"zone": "a"}, {"zone": "a"}, {"zone": "a"}])
    await env.host_ids(3)
    await apps.start_manager(host_timeout=3.0)
    port = free_port()
    zone_a = {"name": "a", "requirements": {"zone": "a"}}
    doc = manifest("web", "v1", [
        component("echo", echo, daemon(4, zone_a)),
        component("worker", echo, spread(3, zone_a)),
        capability("http", "builtin://http-server", daemon(1, zone_a)),
    ])  # fmt: skip
    listen = {"config": [{"name": "listen", "properties": {"address": f"127.0.0.1:{port}"}}]}
    doc["spec"]["components"][2]["traits"].append(
        link("wasi", "http", ["incoming-handler"], "echo", source=listen)
    )
    await apps.deploy(doc)
    await apps.wait_status("web", "deployed")
    await eventually(
        lambda: _assert_eq(apps.placement("web-echo"), {"h0": 4, "h1": 4, "h2": 4}), timeout=CONVERGE
    )
    url = f"http://127.0.0.1:{port}/echo"
    assert (await get(url))[0] == 200
    worker_at = await apps.placement("web-worker")
    assert sum(worker_at.values()) == 3 and len(worker_at) == 1, worker_at
    (victim_name,) = worker_at

    # Kill the worker's host (start_hosts started host `hN` as process N) while requests flow.
    results: list[tuple[float, int]] = []
    stop_load = asyncio.Event()

    async def load() -> None:
        while not stop_load.is_set():
            started = time.monotonic()
            try:
                status = (await get(url, timeout=5.0))[0]
            except Exception:
                status = 0  # reset or refused: the dying host's socket
            results.append((started, status))

    loader = asyncio.ensure_future(load())
    await asyncio.sleep(1.0)
    killed_at = time.monotonic()
    env.procs[int(victim_name[1:])].send_signal(signal.SIGKILL)

    async def moved() -> None:
        where = await apps.placement("web-worker")
        assert victim_name not in where and sum(where.values()) == 3, where

    # Back at full scale within the detection time (3 s here) plus 5 s.
    await eventually(moved, timeout=3.0 + 5.0, what="worker re-placed")
    await asyncio.sleep(2.0)
    stop_load.set()
    await loader
    before = [st for t, st in results if t < killed_at]
    after = [st for t, st in results if t > killed_at + 1.0]
    assert before and set(before) == {200}, before
    # From a second after the kill on, every request is answered by the remaining hosts.
    assert after and set(after) == {200}, after
    await apps.wait_status("web", "deployed")


async def test_http_provider_and_component_on_different_hosts(
    env: LatticeEnv, apps: Apps, http_echo_wasm: Path
) -> None:
    """The manifest puts the HTTP server on one host and the component on another: requests reach
    the component over the lattice (wrpc:http), so placement need not keep them together."""
    echo = "file://" + str(http_echo_wasm)
    start_hosts(env, [{"role": "edge"}, {"role": "worker"}])
    await env.host_ids(2)
    await apps.start_manager()
    port = free_port()
    workers = {"name": "w", "requirements": {"role": "worker"}}
    edge = {"name": "e", "requirements": {"role": "edge"}}
    doc = manifest("split", "v1", [
        component("echo", echo, spread(2, workers)),
        capability("http", "builtin://http-server", daemon(1, edge)),
    ])  # fmt: skip
    listen = {"config": [{"name": "listen", "properties": {"address": f"127.0.0.1:{port}"}}]}
    doc["spec"]["components"][1]["traits"].append(
        link("wasi", "http", ["incoming-handler"], "echo", source=listen)
    )
    await apps.deploy(doc)
    await apps.wait_status("split", "deployed")
    await eventually(lambda: _assert_eq(apps.placement("split-echo"), {"h1": 2}), timeout=CONVERGE)
    status, body = await get(f"http://127.0.0.1:{port}/echo?from=edge")
    assert status == 200, body
    assert "/echo?from=edge" in body, body


async def test_manager_restarted_mid_deploy_converges(
    env: LatticeEnv, apps: Apps, http_echo_wasm: Path
) -> None:
    echo = "file://" + str(http_echo_wasm)
    start_hosts(env, [{"zone": "a"}, {"zone": "b"}])
    await env.host_ids(2)
    first = await apps.start_manager()
    doc = manifest("restart", "v1", [
        component("echo", echo, spread(6, *ZONES)),
        capability("kv", "builtin://keyvalue-memory", spread(2)),
    ])  # fmt: skip
    await apps.deploy(doc)
    await asyncio.sleep(0.3)  # mid-deploy
    # The manager dies without cleaning up (no lease release): tasks cancelled, connection dropped.
    for name in ("lease", "reconcile"):
        child = first._supervisor.child(name)
        assert child is not None
        await child.stop()
    await apps.nc.close()
    apps.nc, apps.manager = None, None
    second = await apps.start_manager()
    assert second.manager_id != first.manager_id
    await apps.wait_status("restart", "deployed", timeout=120)
    await eventually(lambda: _assert_eq(apps.placement("restart-echo"), {"h0": 3, "h1": 3}), timeout=CONVERGE)
    assert await apps.providers("restart-kv") == ["h0", "h1"]
    # Nothing duplicated: one entry per host, one provider per host, as many as asked.
    for host in await env.ctl.ping_hosts(wait=0.5):
        inv = await env.ctl.get_host_inventory(host.id)
        assert [c.id for c in inv.components].count("restart-echo") == 1
        assert [p.id for p in inv.providers].count("restart-kv") == 1
    events = [e for e in env.events if e["type"].endswith("provider_started")]
    assert len([e for e in events if e["data"]["provider_id"] == "restart-kv"]) == 2, json.dumps(events)[:500]


async def test_two_managers_one_leader(env: LatticeEnv, http_echo_wasm: Path) -> None:
    echo = "file://" + str(http_echo_wasm)
    start_hosts(env, [{"zone": "a"}])
    await env.host_ids(1)
    ncs = [await nats.connect(env.nats_url) for _ in range(2)]
    managers = [AppManager(nc, nc.jetstream(), env.lattice, host_timeout=3.0) for nc in ncs]
    try:
        for m in managers:
            await m.start()

        async def one_leader() -> AppManager:
            leaders = [m for m in managers if m.leader]
            assert len(leaders) == 1, [m.leader for m in managers]
            return leaders[0]

        leader = await eventually(one_leader, timeout=20, what="a single leader")
        follower = next(m for m in managers if m is not leader)
        # A deploy answered by either manager (queue group) is run by the leader.
        client = AppClient(ncs[0], env.lattice, timeout=10.0)
        await client.put(manifest("duo", "v1", [component("echo", echo, spread(2))]))
        await client.deploy("duo", "v1")

        async def deployed() -> None:
            assert (await client.status("duo")).status == "deployed"

        await eventually(deployed, what="duo deployed", timeout=CONVERGE)
        # The leader dies without releasing the lease: the follower takes over once it expires.
        for name in ("lease", "reconcile"):
            child = leader._supervisor.child(name)
            assert child is not None
            await child.stop()
        await eventually(lambda: _assert_eq(_leads(follower), True), timeout=20, what="follower leads")
        await client.put(manifest("duo", "v2", [component("echo", echo, spread(3))]))
        await client.deploy("duo", "v2")

        async def three() -> None:
            inv = await env.ctl.get_host_inventory((await env.host_ids(1))[0])
            assert [c.max_instances for c in inv.components if c.id == "duo-echo"] == [3]

        await eventually(three, what="v2 applied by the new leader", timeout=CONVERGE)
    finally:
        for m in managers:
            with contextlib.suppress(Exception):
                await m.stop()
        for nc in ncs:
            await nc.close()


async def _leads(manager: AppManager) -> bool:
    return manager.leader


async def test_failures_are_reported_with_their_reasons(env: LatticeEnv, apps: Apps) -> None:
    await apps.start_manager()
    # No hosts yet: the app waits.
    await apps.deploy(manifest("early", "v1", [component("c", MISSING_FILE, spread(1))]))
    await apps.wait_status("early", "waiting", timeout=20)
    start_hosts(env, [{"zone": "a"}])
    await env.host_ids(1)
    # A spread no host can satisfy.
    nowhere = spread(2, {"name": "z", "requirements": {"zone": "z"}})
    await apps.deploy(manifest("nowhere", "v1", [component("c", MISSING_FILE, nowhere)]))
    await apps.wait_status("nowhere", "failed")
    st = await apps.client.status("nowhere")
    assert "Could not satisfy spread z" in st.message, st
    # A component the host cannot load: the host's reason, from its scale-failed event.
    await apps.wait_status("early", "failed")
    assert "does not exist" in (await apps.client.status("early")).message


async def test_an_http_listener_that_cannot_bind_fails_the_app_with_the_reason(
    env: LatticeEnv, apps: Apps, http_echo_wasm: Path
) -> None:
    """A provider that started but cannot serve (its port is taken) is not `deployed`: the app says
    `failed` with the listener's error, and becomes `deployed` once the port is free."""
    import socket

    env.start_host("--label", "name=h0", "--health-interval", "0.5")
    await env.host_ids(1)
    await apps.start_manager()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    doc = manifest("taken", "v1", [
        component("echo", "file://" + str(http_echo_wasm), spread(1)),
        capability("http", "builtin://http-server", spread(1)),
    ])  # fmt: skip
    listen = {"config": [{"name": "listen", "properties": {"address": f"127.0.0.1:{port}"}}]}
    doc["spec"]["components"][1]["traits"].append(
        link("wasi", "http", ["incoming-handler"], "echo", source=listen)
    )
    try:
        await apps.deploy(doc)
        await apps.wait_status("taken", "failed")
        st = await apps.client.status("taken")
        assert f"cannot listen on 127.0.0.1:{port} for taken-echo: [Errno 98]" in st.message, st
        assert "is unhealthy" in st.message, st
    finally:
        blocker.close()
    await apps.wait_status("taken", "deployed")
    status, body = await get(f"http://127.0.0.1:{port}/echo")
    assert status == 200, body


async def test_secrets_in_a_manifest_reach_the_component(
    env: LatticeEnv, apps: Apps, build_component: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64
    import os

    from wasmlattice.capabilities.secrets import put_secret

    key = os.urandom(32)
    monkeypatch.setenv("WASMLATTICE_SECRETS_KEY", base64.b64encode(key).decode())
    env.env = {**env.env, "WASMLATTICE_SECRETS_KEY": base64.b64encode(key).decode()}
    start_hosts(env, [{"zone": "a"}])
    await env.host_ids(1)
    await apps.start_manager()
    # Granted to the component the manifest runs (`<app>-<component>`); the manifest's policy grants nothing.
    await put_secret(apps.nc.jetstream(), env.lattice, "dbpw", "s3cret-value", key, allow=["vaulted-api"])
    guest = "file://" + str(build_component("config_guest"))
    port = free_port()
    listen = {"config": [{"name": "listen", "properties": {"address": f"127.0.0.1:{port}"}}]}
    secrets = [{"name": "db-pass", "properties": {"policy": "vault", "key": "dbpw"}}]
    http_link = link("wasi", "http", ["incoming-handler"], "api", source=listen)
    doc = manifest("vaulted", "v1", [
        component("api", guest, spread(1), secrets=secrets),
        capability("http", "builtin://http-server", http_link),
    ])  # fmt: skip
    doc["spec"]["policies"] = [
        {
            "name": "vault",
            "type": "policy.secret.wasmcloud.dev/v1alpha1",
            "properties": {"backend": "nats-kv"},
        }
    ]
    await apps.deploy(doc)
    await apps.wait_status("vaulted", "deployed")
    ref = await env.ctl.get_config("SECRET_vaulted-db_pass")
    assert (
        ref is not None and ref["key"] == "dbpw" and ref["backend"] == "nats-kv" and ref["name"] == "db-pass"
    )

    async def revealed() -> None:
        status, body = await get(f"http://127.0.0.1:{port}/secret?key=db-pass")
        assert status == 200 and json.loads(body)["value"] == "s3cret-value", (status, body)

    await eventually(revealed, what="secret revealed", timeout=CONVERGE)
    await apps.client.undeploy("vaulted")
    await eventually(
        lambda: _assert_eq(env.ctl.get_config("SECRET_vaulted-db_pass"), None),
        timeout=CONVERGE,
        what="ref removed",
    )
