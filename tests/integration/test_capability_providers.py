"""Every builtin capability provider through the control interface: start, inventory, health, stop."""

from __future__ import annotations

import json

import pytest

from tests.support.lattice import LatticeEnv

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

# Reference -> the provider name the inventory reports.
PROVIDERS = {
    "builtin://http-server": "http-server",
    "wasmcloud+builtin://http-client": "http-client",
    "builtin://keyvalue-nats": "keyvalue-nats",
    "builtin://keyvalue-redis": "keyvalue-redis",
    "builtin://keyvalue-memory": "keyvalue-memory",
    "builtin://blobstore-nats": "blobstore-nats",
    "builtin://blobstore-fs": "blobstore-fs",
    "wasmcloud+builtin://messaging-nats": "messaging-nats",
}


async def test_every_builtin_provider_is_started_reported_and_stopped(env: LatticeEnv) -> None:
    env.start_host("--health-interval", "0.3")
    (host,) = await env.host_ids(1)
    ctl = env.ctl
    # The http-server binds its default address in path mode; keep it on a free loopback port.
    await ctl.put_config("web-cfg", {"routing_mode": "path", "default_address": "127.0.0.1:0"})

    for i, ref in enumerate(PROVIDERS):
        pid = f"p{i}"
        config = ["web-cfg"] if ref == "builtin://http-server" else []
        assert await ctl.start_provider(host, ref, pid, config=config) == "successfully started provider"
        started = await env.wait_event("provider_started", lambda e, p=pid: e["data"]["provider_id"] == p)
        assert started["data"]["image_ref"] == ref
    inv = await ctl.get_host_inventory(host)
    assert sorted((p.id, p.image_ref, p.name) for p in inv.providers) == sorted(
        (f"p{i}", ref, name) for i, (ref, name) in enumerate(PROVIDERS.items())
    )
    for i in range(len(PROVIDERS)):
        await env.wait_event("health_check_passed", lambda e, p=f"p{i}": e["data"]["provider_id"] == p)
        reply = await env.nc.request(f"wasmbus.rpc.{env.lattice}.p{i}.health", b"", timeout=5)
        assert json.loads(reply.data) == {"healthy": True}
    assert not [e for e in env.events if e["type"].endswith("health_check_failed")]

    # An unknown reference fails with the list of what this host runs.
    await ctl.start_provider(host, "builtin://nosuch", "bad")
    failed = await env.wait_event("provider_start_failed", lambda e: e["data"]["provider_id"] == "bad")
    assert "builtin://keyvalue-redis" in failed["data"]["error"]
    assert "wasmcloud+builtin://messaging-nats" in failed["data"]["error"]

    for i in range(len(PROVIDERS)):
        assert await ctl.stop_provider(host, f"p{i}") == "successfully stopped provider"
        await env.wait_event("provider_stopped", lambda e, p=f"p{i}": e["data"]["provider_id"] == p)
    assert (await ctl.get_host_inventory(host)).providers == []
