"""CtlClient: envelope parsing, errors, and request shapes against fake responders on a real NATS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from wasmlattice.client.ctl import (
    CtlClient,
    CtlError,
    CtlNoHostError,
    CtlTimeoutError,
    check_response,
    parse_envelope,
    parse_key_values,
)
from wasmlattice.protocol.connection import NatsOptions, connect
from wasmlattice.protocol.models import Link

pytestmark = pytest.mark.timeout(30)


def test_parse_envelope_variants() -> None:
    ok = parse_envelope(b'{"success":true,"message":"","response":{"a":"b"}}', "x")
    assert ok.success and ok.response == {"a": "b"}
    fallback = parse_envelope(b'{"success":false,"error":"boom"}', "x")
    assert not fallback.success and fallback.message == "boom"
    with pytest.raises(CtlError, match="unreadable reply"):
        parse_envelope(b"not json", "host.get")
    with pytest.raises(CtlError, match=r"label\.put failed: hostcore"):
        check_response(parse_envelope(b'{"success":false,"message":"hostcore.* nope"}', "x"), "label.put")


def test_parse_key_values() -> None:
    assert parse_key_values(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_key_values(["novalue"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_key_values(["=v"])


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Any]:
    conn = await connect(NatsOptions(url=nats_url, name="test-ctl"))
    try:
        yield conn
    finally:
        await conn.close()


async def _responder(nc: Any, subject: str, replies: list[dict[str, Any]], seen: list[Any]) -> Any:
    """Subscribe `subject`; answer each request with the next reply (or stay silent if none left)."""

    async def cb(msg: Any) -> None:
        seen.append((msg.subject, msg.data))
        if replies:
            await msg.respond(json.dumps(replies.pop(0)).encode())

    return await nc.subscribe(subject, cb=cb)


async def test_requests_use_subjects_and_payloads(nc: Any, lattice_name: str) -> None:
    seen: list[Any] = []
    p = f"wasmbus.ctl.v1.{lattice_name}"
    await _responder(
        nc, f"{p}.label.put.NHOST", [{"success": True, "message": "successfully put label"}], seen
    )
    await _responder(nc, f"{p}.link.put", [{"success": True, "message": "successfully set link"}], seen)
    await _responder(nc, f"{p}.config.get.*", [{"success": True, "message": "Configuration not found"}], seen)
    client = CtlClient(nc, lattice_name, timeout=2)
    assert await client.put_label("NHOST", "zone", "eu") == "successfully put label"
    link = Link(source_id="a", target="b", wit_namespace="wasi", wit_package="keyvalue", interfaces=["store"])
    assert await client.put_link(link) == "successfully set link"
    assert await client.get_config("missing") is None
    assert seen[0] == (f"{p}.label.put.NHOST", b'{"key":"zone","value":"eu"}')
    assert json.loads(seen[1][1])["interfaces"] == ["store"]
    assert seen[2][0] == f"{p}.config.get.missing"


async def test_failure_reply_raises_with_host_message(nc: Any, lattice_name: str) -> None:
    p = f"wasmbus.ctl.v1.{lattice_name}"
    reply = {"success": False, "message": "hostcore.* labels cannot be set dynamically"}
    await _responder(nc, f"{p}.label.put.NHOST", [reply], [])
    with pytest.raises(CtlError, match="hostcore"):
        await CtlClient(nc, lattice_name).put_label("NHOST", "hostcore.os", "x")


async def test_no_responders_and_timeout_say_what_to_do(nc: Any, lattice_name: str) -> None:
    client = CtlClient(nc, lattice_name, timeout=0.3)
    with pytest.raises(CtlNoHostError, match=r"no host answered on lattice .*wasmlattice up"):
        await client.get_links()
    with pytest.raises(CtlNoHostError, match="wasmlattice get hosts"):
        await client.get_host_inventory("NOSUCHHOST")
    await _responder(nc, f"wasmbus.ctl.v1.{lattice_name}.link.get", [], [])
    with pytest.raises(CtlTimeoutError, match=r"within 0.3s"):
        await client.get_links()


async def test_ping_gathers_every_host(nc: Any, lattice_name: str) -> None:
    subject = f"wasmbus.ctl.v1.{lattice_name}.host.ping"
    for hid in ("NB", "NA"):
        await _responder(nc, subject, [{"success": True, "message": "", "response": {"id": hid}}], [])
    client = CtlClient(nc, lattice_name)
    loop = asyncio.get_running_loop()
    hosts = await client.ping_hosts(wait=0.5)
    assert [h.id for h in hosts] == ["NA", "NB"]
    # Nobody subscribed: the no-responders notice ends the wait early.
    start = loop.time()
    assert await CtlClient(nc, lattice_name + "_empty").ping_hosts(wait=3) == []
    assert loop.time() - start < 2


async def test_auction_collects_acks(nc: Any, lattice_name: str) -> None:
    subject = f"wasmbus.ctl.v1.{lattice_name}.component.auction"
    ack = {"component_ref": "r", "component_id": "c", "host_id": "NA", "constraints": {"zone": "eu"}}
    await _responder(nc, subject, [{"success": True, "message": "", "response": ack}], [])
    acks = await CtlClient(nc, lattice_name).auction_component("r", "c", {"zone": "eu"}, wait=0.3)
    assert [a.host_id for a in acks] == ["NA"]
