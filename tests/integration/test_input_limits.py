"""Input limits at the edge of the control interface, tried as an attacker on the lattice would.

A real host process on a real nats-server serves the HTTP echo guest; each test sends hostile
control messages (over-long IDs, bloated or invalid labels, wildcard IDs, bad links stored in KV)
and checks the clear error the host answers (docs/protocol.md#field-limits) and that the host is
still whole afterwards: it answers ping and inventory and still serves HTTP.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.http import get
from tests.support.lattice import LatticeEnv, eventually, serve_http
from tests.support.processes import free_port
from wasmlattice.protocol import subjects as sj

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

LONG_ID = "x" * 5000


async def ctl(env: LatticeEnv, op: str, target: str | None, body: bytes | dict[str, Any]) -> dict[str, Any]:
    """One raw control request and its JSON reply (fails on no reply: the host must always answer)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    subject = sj.ctl_subject(op, env.lattice, target)
    msg = await env.nc.request(subject, data, timeout=5.0)
    reply: dict[str, Any] = json.loads(msg.data)
    return reply


async def serving_host(env: LatticeEnv, echo_ref: str) -> tuple[str, str]:
    """Start one host that serves the echo guest over HTTP; (host ID, base URL)."""
    env.start_host()
    (host_id,) = await env.host_ids(1)
    url = await serve_http(env, host_id, "echo", echo_ref, port=free_port(), ready_path="/echo")
    return host_id, url


async def assert_whole(env: LatticeEnv, host_id: str, url: str) -> dict[str, Any]:
    """The host answers ping and inventory and serves HTTP; its ping `response`."""
    replies = await env.gather(sj.ctl_subject("host.ping", env.lattice), wait=1.0)
    pings = [r["response"] for r in replies if r.get("success") and r["response"]["id"] == host_id]
    assert len(pings) == 1, f"host {host_id} is not visible to host.ping: {replies}"
    inventory = await env.inventory(host_id)
    assert [c.id for c in inventory.components] == ["echo"]
    status, _ = await get(url + "/echo")
    assert status == 200
    assert env.host_tracebacks() == []
    ping: dict[str, Any] = pings[0]
    return ping


def refused(reply: dict[str, Any], *needles: str) -> None:
    """A wire-exact ctl error (docs/protocol.md#replies) whose message holds every needle."""
    assert set(reply) == {"success", "message"}, reply
    assert reply["success"] is False
    for needle in needles:
        assert needle in reply["message"], reply["message"]


@pytest.mark.parametrize("op", ["link.put", "component.scale", "provider.start"])
async def test_a_5000_character_id_is_refused_and_the_host_stays_whole(
    env: LatticeEnv, echo_ref: str, op: str
) -> None:
    host_id, url = await serving_host(env, echo_ref)
    if op == "link.put":
        body: dict[str, Any] = {
            "source_id": LONG_ID,
            "target": "echo",
            "wit_namespace": "wasi",
            "wit_package": "keyvalue",
            "interfaces": ["store"],
        }
        reply = await ctl(env, op, None, body)
        refused(reply, "link.put", "source_id: longer than 256 characters")
    elif op == "component.scale":
        reply = await ctl(env, op, host_id, {"component_id": LONG_ID, "component_ref": echo_ref, "count": 1})
        refused(reply, "component_id: longer than 256 characters")
    else:
        reply = await ctl(
            env, op, host_id, {"provider_id": LONG_ID, "provider_ref": "wasmcloud+builtin://kv"}
        )
        refused(reply, "provider.start", "provider_id: longer than 256 characters")
    # Nothing was acted on: no event names the ID, no spec was written.
    await asyncio.sleep(0.5)
    assert not [e for e in env.events if LONG_ID in json.dumps(e)]
    links = await ctl(env, "link.get", None, b"")
    assert links["success"] is True
    assert [(link["source_id"], link["target"]) for link in links["response"]] == [("http-echo", "echo")]
    await assert_whole(env, host_id, url)


async def test_bloated_and_invalid_labels_are_refused_and_the_host_stays_visible(
    env: LatticeEnv, echo_ref: str
) -> None:
    host_id, url = await serving_host(env, echo_ref)
    big = "v" * 600_000
    for key in ("bloat1", "bloat2"):
        refused(await ctl(env, "label.put", host_id, {"key": key, "value": big}), "value: longer than 4096")
    # A JSON escape of a lone surrogate: valid JSON, but not encodable as UTF-8 afterwards.
    raw = b'{"key": "bad", "value": "x\\ud800y"}'
    refused(await ctl(env, "label.put", host_id, raw), "value", "unpaired surrogate")
    raw_key = b'{"key": "\\udfffkey", "value": "ok"}'
    refused(await ctl(env, "label.put", host_id, raw_key), "key", "unpaired surrogate")
    refused(await ctl(env, "label.put", host_id, {"key": "k" * 129, "value": "v"}), "key: longer than 128")

    ping = await assert_whole(env, host_id, url)
    assert not {"bloat1", "bloat2", "bad"} & set(ping["labels"])

    # The label cap: labels up to 64 in all are taken, the next one is refused by name.
    have = len(ping["labels"])
    for i in range(64 - have):
        reply = await ctl(env, "label.put", host_id, {"key": f"k{i}", "value": "v" * 4096})
        assert reply == {"success": True, "message": "successfully put label"}
    refused(
        await ctl(env, "label.put", host_id, {"key": "one-more", "value": "v"}),
        "labels: a host has at most 64 labels",
    )
    # Replacing an existing label is still allowed at the cap.
    assert (await ctl(env, "label.put", host_id, {"key": "k0", "value": "new"}))["success"] is True
    ping = await assert_whole(env, host_id, url)
    assert len(ping["labels"]) == 64 and ping["labels"]["k0"] == "new"


async def test_a_wildcard_or_unsafe_component_id_is_refused_and_nothing_starts(
    env: LatticeEnv, echo_ref: str
) -> None:
    host_id, url = await serving_host(env, echo_ref)
    bad_ids = ["*", ">", "a.b", "a b", "tab\there", "nul\x00", "echo.*"]
    for bad_id in bad_ids:
        body = {"component_id": bad_id, "component_ref": echo_ref, "count": 1}
        reply = await ctl(env, "component.scale", host_id, body)
        refused(reply, "component.scale", "component_id: ")
        assert "NATS subject token" in reply["message"] or "control character" in reply["message"]
    await asyncio.sleep(1.0)
    # Nothing started under those IDs, no event was published for them.
    assert [c.id for c in (await env.inventory(host_id)).components] == ["echo"]
    assert [e for e in env.events if e["data"].get("component_id") in bad_ids] == []
    await assert_whole(env, host_id, url)


async def test_a_stored_link_over_the_limits_is_skipped_not_published(
    env: LatticeEnv, echo_ref: str, tmp_path: Path
) -> None:
    host_id, url = await serving_host(env, echo_ref)
    good = {
        "source_id": "hand-written",
        "target": "kv-provider",
        "name": "default",
        "wit_namespace": "wasi",
        "wit_package": "keyvalue",
        "interfaces": ["store"],
        "source_config": [],
        "target_config": [],
    }
    bad = {**good, "target": LONG_ID, "name": "long"}
    wild = {**good, "target": "*", "name": "wild"}
    # Written by hand (or by an older host), bypassing link.put.
    js = env.nc.jetstream()
    kv = await js.key_value(sj.lattice_data_bucket(env.lattice))
    spec = {"url": "", "links": [good, bad, wild]}
    await kv.put(sj.component_spec_key("hand-written"), json.dumps(spec).encode())

    async def only_the_good_link() -> None:
        reply = await ctl(env, "link.get", None, b"")
        assert reply["success"] is True
        stored = [link["name"] for link in reply["response"] if link["source_id"] == "hand-written"]
        assert stored == ["default"]

    await eventually(only_the_good_link, what="link.get without the stored links over the limits")
    log = await env.wait_log("skipping stored link")
    assert "target: longer than 256 characters" in log
    # Deleting the good link rewrites the spec; the host still never publishes the bad ones.
    body = {"source_id": "hand-written", "wit_namespace": "wasi", "wit_package": "keyvalue"}
    assert (await ctl(env, "link.del", None, body))["success"] is True
    assert not [e for e in env.events if LONG_ID in json.dumps(e)]
    await assert_whole(env, host_id, url)
