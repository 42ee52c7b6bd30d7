"""Auctions, the backwards-compatible `linkdefs.put` publish and `scale component` placement.

Real nats-server, real `wasmlattice.lattice.run` processes, raw NATS for the wire checks (exact JSON
of every reply and publish: docs/protocol.md#auctions, docs/protocol.md#link-put,
docs/protocol.md#provider-messages) and the CLI as a user runs it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.support.cli import cli, cli_ok
from tests.support.lattice import HTTP_SERVER
from tests.support.lattice import LatticeEnv as Env

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def ctl_subject(env: Env, op: str) -> str:
    return f"wasmbus.ctl.v1.{env.lattice}.{op}"


async def start_labelled_hosts(env: Env) -> dict[str, str]:
    """Three hosts: eu/web, eu/db, us/web; their IDs by "region/role"."""
    for region, role in (("eu", "web"), ("eu", "db"), ("us", "web")):
        env.start_host("--label", f"region={region}", "--label", f"role={role}")
    await env.host_ids(3)
    hosts = await env.ctl.ping_hosts(1.0)
    by_name = {f"{h.labels['region']}/{h.labels['role']}": h.id for h in hosts}
    assert len(by_name) == 3, by_name
    return by_name


async def component_bidders(env: Env, component_id: str, ref: str, constraints: dict[str, str]) -> list[str]:
    """Host IDs answering a component auction, each reply's exact JSON checked (docs/protocol.md#payloads)."""
    body = {"component_ref": ref, "component_id": component_id, "constraints": constraints}
    replies = await env.gather(ctl_subject(env, "component.auction"), json.dumps(body).encode(), 0.7)
    for reply in replies:
        assert reply == {
            "success": True,
            "message": "",
            "response": {
                "component_ref": ref,
                "component_id": component_id,
                "host_id": reply["response"]["host_id"],
                "constraints": constraints,
            },
        }
    return sorted(r["response"]["host_id"] for r in replies)


async def provider_bidders(env: Env, provider_id: str, ref: str, constraints: dict[str, str]) -> list[str]:
    """Host IDs answering a provider auction, each reply's exact JSON checked (docs/protocol.md#payloads)."""
    body = {"provider_ref": ref, "provider_id": provider_id, "constraints": constraints}
    replies = await env.gather(ctl_subject(env, "provider.auction"), json.dumps(body).encode(), 0.7)
    for reply in replies:
        assert reply == {
            "success": True,
            "message": "",
            "response": {
                "host_id": reply["response"]["host_id"],
                "provider_ref": ref,
                "provider_id": provider_id,
                "constraints": constraints,
            },
        }
    return sorted(r["response"]["host_id"] for r in replies)


async def test_auctions_answered_by_matching_hosts_not_running_the_id(env: Env, echo_ref: str) -> None:
    h = await start_labelled_hosts(env)
    eu_web, eu_db, us_web = h["eu/web"], h["eu/db"], h["us/web"]

    # Constraints select by exact label values; non-matching hosts stay silent.
    assert await component_bidders(env, "echo", echo_ref, {"region": "eu"}) == sorted([eu_web, eu_db])
    assert await component_bidders(env, "echo", echo_ref, {"region": "eu", "role": "web"}) == [eu_web]
    assert await component_bidders(env, "echo", echo_ref, {}) == sorted(h.values())
    assert await component_bidders(env, "echo", echo_ref, {"region": "mars"}) == []

    # Once eu/web runs component `echo`, it no longer bids for that ID; it still bids for others,
    # and for a provider of the same ID (components and providers are separate).
    assert await env.ctl.scale_component(eu_web, echo_ref, "echo", 1) == ""
    await env.wait_event("component_scaled", lambda e: e["data"]["host_id"] == eu_web)
    assert await component_bidders(env, "echo", echo_ref, {"region": "eu"}) == [eu_db]
    assert await component_bidders(env, "echo", echo_ref, {}) == sorted([eu_db, us_web])
    assert await component_bidders(env, "other", echo_ref, {"region": "eu"}) == sorted([eu_web, eu_db])
    assert await provider_bidders(env, "echo", HTTP_SERVER, {"region": "eu"}) == sorted([eu_web, eu_db])

    # Provider auction: the host running provider `web` stays silent for that provider ID.
    assert await provider_bidders(env, "web", HTTP_SERVER, {"role": "web"}) == sorted([eu_web, us_web])
    assert await env.ctl.start_provider(eu_db, HTTP_SERVER, "web") == "successfully started provider"
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "web")
    assert await provider_bidders(env, "web", HTTP_SERVER, {"region": "eu"}) == [eu_web]
    assert await provider_bidders(env, "web", HTTP_SERVER, {}) == sorted([eu_web, us_web])
    assert await provider_bidders(env, "web", HTTP_SERVER, {"region": "eu", "role": "db"}) == []
    assert await component_bidders(env, "web", echo_ref, {"region": "eu"}) == sorted([eu_web, eu_db])

    # Stopped again, both hosts bid again: the check follows what runs now.
    await env.ctl.scale_component(eu_web, echo_ref, "echo", 0)
    await env.wait_event(
        "component_scaled", lambda e: e["data"]["host_id"] == eu_web and e["data"]["max_instances"] == 0
    )
    assert await component_bidders(env, "echo", echo_ref, {"region": "eu"}) == sorted([eu_web, eu_db])
    await env.ctl.stop_provider(eu_db, "web")
    await env.wait_event("provider_stopped", lambda e: e["data"]["provider_id"] == "web")
    assert await provider_bidders(env, "web", HTTP_SERVER, {"region": "eu"}) == sorted([eu_web, eu_db])


async def test_link_put_publishes_linkdefs_put_to_both_ends(env: Env) -> None:
    env.start_host()
    await env.host_ids(1)
    ctl = env.ctl
    got: list[tuple[str, dict[str, Any]]] = []

    async def on_put(msg: Any) -> None:
        got.append((msg.subject, json.loads(msg.data)))

    await env.nc.subscribe(f"wasmbus.rpc.{env.lattice}.*.linkdefs.put", cb=on_put)
    await env.nc.flush()
    await ctl.put_config("src", {"a": "1"})
    await ctl.put_config("kv1", {"bucket": "b1", "ttl": "5"})
    await ctl.put_config("kv2", {"bucket": "b2"})
    link = {
        "source_id": "http-echo",
        "target": "kv-provider",
        "name": "default",
        "wit_namespace": "wasi",
        "wit_package": "keyvalue",
        "interfaces": ["store", "atomics"],
        "source_config": ["src"],
        "target_config": ["kv1", "kv2"],
    }
    reply = await env.nc.request(ctl_subject(env, "link.put"), json.dumps(link).encode(), timeout=5)
    assert json.loads(reply.data) == {"success": True, "message": "successfully set link"}
    await asyncio.sleep(0.7)  # anything more than the two publishes would arrive by now
    # docs/protocol.md#link-put step 5: an InterfaceLinkDefinition with the resolved (merged, in
    # order) configs.
    expected = dict(
        link,
        source_config={"a": "1"},
        target_config={"bucket": "b2", "ttl": "5"},
        source_secrets=None,
        target_secrets=None,
    )
    assert sorted(got, key=lambda sp: sp[0]) == [
        (f"wasmbus.rpc.{env.lattice}.http-echo.linkdefs.put", expected),
        (f"wasmbus.rpc.{env.lattice}.kv-provider.linkdefs.put", expected),
    ]

    # A link naming a secret reference (any config starting with SECRET) is stored and announced,
    # but never published in the clear.
    secret_ref = {
        "name": "x",
        "type": "secret.wasmcloud.dev/v1alpha1",
        "backend": "nats-kv",
        "key": "x",
        "policy": '{"type":"properties.secret.wasmcloud.dev/v1alpha1","properties":{}}',
    }
    await ctl.put_config("SECRET_x", secret_ref)
    got.clear()
    for name, source_config, target_config in (
        ("secret-target", ["src"], ["kv1", "SECRET_x"]),
        ("secret-source", ["SECRET_x"], []),
    ):
        body = dict(link, name=name, source_config=source_config, target_config=target_config)
        reply = await env.nc.request(ctl_subject(env, "link.put"), json.dumps(body).encode(), timeout=5)
        assert json.loads(reply.data) == {"success": True, "message": "successfully set link"}
        await env.wait_event("linkdef_set", lambda e, n=name: e["data"]["name"] == n)
    await asyncio.sleep(0.7)
    assert got == []


async def test_cli_scale_without_host_goes_to_hosts_running_it(env: Env, echo_ref: str) -> None:
    h = await start_labelled_hosts(env)
    eu_web, eu_db, us_web = h["eu/web"], h["eu/db"], h["us/web"]
    common = ("--nats-url", env.nats_url, "--lattice", env.lattice, "-o", "json")

    async def scale(*args: str) -> dict[str, Any]:
        r = await asyncio.to_thread(cli_ok, "scale", "component", echo_ref, "echo", *args, *common)
        result: dict[str, Any] = json.loads(r.stdout)
        assert result["success"] is True, result
        return result

    async def counts() -> dict[str, int]:
        out = {}
        for host in h.values():
            for c in (await env.inventory(host)).components:
                if c.id == "echo":
                    out[host] = c.max_instances
        return out

    # Not running anywhere: an auction among the hosts matching the constraints.
    first = await scale("--count", "2", "-c", "role=web", "-c", "region=us")
    assert [r["host_id"] for r in first["results"]] == [us_web]
    assert await counts() == {us_web: 2}

    # Running on us/web: a new count goes there, not to a new host (hosts running it do not bid).
    again = await scale("--count", "3")
    assert [(r["host_id"], r["event"]) for r in again["results"]] == [(us_web, "component_scaled")]
    assert await counts() == {us_web: 3}

    # Running on two hosts: the new count applies on each.
    assert await env.ctl.scale_component(eu_db, echo_ref, "echo", 1) == ""
    await env.wait_event("component_scaled", lambda e: e["data"]["host_id"] == eu_db)
    both = await scale("--count", "4")
    assert sorted(r["host_id"] for r in both["results"]) == sorted([us_web, eu_db])
    assert await counts() == {us_web: 4, eu_db: 4}

    # Constraints narrow the running hosts; when none of them matches, the auction places it anew.
    only_eu = await scale("--count", "5", "-c", "region=eu")
    assert [r["host_id"] for r in only_eu["results"]] == [eu_db]
    web_eu = await scale("--count", "1", "-c", "region=eu", "-c", "role=web")
    assert [r["host_id"] for r in web_eu["results"]] == [eu_web]
    assert await counts() == {us_web: 4, eu_db: 5, eu_web: 1}

    # Stopping where it does not run is an error that says what to check; 0 stops it everywhere.
    absent = await asyncio.to_thread(
        cli, "scale", "component", echo_ref, "echo", "--count", "0", "-c", "region=mars", *common[:4]
    )
    assert absent.returncode == 1
    assert "not running on any host matching constraints" in absent.stderr
    assert "wasmlattice get inventory" in absent.stderr
    stopped = await scale("--count", "0")
    assert sorted(r["host_id"] for r in stopped["results"]) == sorted(h.values())
    assert await counts() == {}
