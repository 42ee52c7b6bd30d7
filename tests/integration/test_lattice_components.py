"""Components and the builtin HTTP server provider on real host processes over a real nats-server.

Hosts run as `python -m wasmlattice.lattice.run`; the test drives them with `CtlClient` and checks the
lattice events, the inventory, and HTTP requests through the provider's listeners.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.http import get, wait_status
from tests.support.lattice import HTTP_SERVER, http_link
from tests.support.lattice import LatticeEnv as Env
from tests.support.processes import free_port

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


async def test_auction_and_scale_failures(env: Env, echo_ref: str) -> None:
    env.start_host()
    (host,) = await env.host_ids(1)
    ctl = env.ctl

    acks = await ctl.auction_component(echo_ref, "echo", {"zone": "test"}, wait=1.0)
    assert [a.host_id for a in acks] == [host]
    assert await ctl.auction_component(echo_ref, "echo", {"zone": "other"}, wait=0.5) == []

    # A missing file (in a directory the host allows) fails asynchronously, with the path in the error.
    missing = f"file://{tempfile.gettempdir()}/{uuid.uuid4().hex}/x.wasm"
    assert await ctl.scale_component(host, missing, "ghost", 1) == ""
    failed = await env.wait_event("component_scale_failed", lambda e: e["data"]["component_id"] == "ghost")
    assert "does not exist" in failed["data"]["error"]
    await ctl.scale_component(host, "oci://ghcr.io/x/y:1", "oci", 1)
    failed = await env.wait_event("component_scale_failed", lambda e: e["data"]["component_id"] == "oci")
    assert "registry ghcr.io" in failed["data"]["error"]


class Served:
    """The echo component on one host (max_instances 1) behind the builtin HTTP server on `port`."""

    def __init__(self, env: Env, host: str, port: int, scaled: dict[str, Any]) -> None:
        self.env, self.host, self.port, self.scaled = env, host, port, scaled
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
async def served(env: Env, echo_ref: str) -> Served:
    env.start_host()
    (host,) = await env.host_ids(1)
    ctl = env.ctl
    assert await ctl.scale_component(host, echo_ref, "echo", 1, annotations={"a": "b"}) == ""
    scaled = await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "echo")
    port = free_port()
    await ctl.put_config("echo-http", {"address": f"127.0.0.1:{port}"})
    assert await ctl.start_provider(host, HTTP_SERVER, "http-server") == "successfully started provider"
    await ctl.put_link(http_link("http-server", "echo", ["echo-http"]))
    return Served(env, host, port, scaled)


async def test_component_behind_http_server_provider(served: Served, echo_ref: str) -> None:
    env, host, scaled, url = served.env, served.host, served.scaled, served.url
    assert scaled["data"] == {
        "annotations": {"a": "b"},
        "host_id": host,
        "image_ref": echo_ref,
        "max_instances": 1,
        "component_id": "echo",
    }
    inv = await env.inventory(host)
    assert [(c.id, c.image_ref, c.max_instances, c.annotations) for c in inv.components] == [
        ("echo", echo_ref, 1, {"a": "b"})
    ]

    started = await env.wait_event("provider_started")
    assert started["data"]["provider_id"] == "http-server" and started["data"]["image_ref"] == HTTP_SERVER
    inv = await env.inventory(host)
    assert [(p.id, p.image_ref) for p in inv.providers] == [("http-server", HTTP_SERVER)]

    body = await wait_status(f"{url}/echo?x=1", 200, timeout=60.0)
    assert "/echo?x=1" in body

    # max_instances=1: two slow requests both succeed (the second waits for the instance).
    n = 16 * 1024 * 1024
    results = await asyncio.gather(get(f"{url}/bytes?n={n}"), get(f"{url}/bytes?n={n}"))
    assert [status for status, _ in results] == [200, 200]
    assert all(len(text) == n for _, text in results)


async def test_update_and_scale_with_another_image(served: Served, echo_ref: str, tmp_path: Path) -> None:
    env, host, url, ctl = served.env, served.host, served.url, served.env.ctl
    # The route is there once the link has reached the provider.
    await wait_status(f"{url}/echo", 200, timeout=60.0)
    # Update to another reference (same bytes, other path): it keeps serving.
    other = tmp_path / "echo2.wasm"
    shutil.copyfile(echo_ref.removeprefix("file://"), other)
    other_ref = f"file://{other}"
    seen = len(env.events)
    msg = await ctl.update_component(host, "echo", other_ref)
    assert msg == f"component echo updating from {echo_ref} to {other_ref}"
    # docs/protocol.md#update: scaled(new ref, max) for the new instance set, then scaled(same id and ref, 0).
    await env.wait_event(
        "component_scaled", lambda e: e["data"]["image_ref"] == other_ref and e["data"]["max_instances"] == 0
    )
    update_events = [
        (e["data"]["component_id"], e["data"]["image_ref"], e["data"]["max_instances"], e["data"]["host_id"])
        for e in env.events[seen:]
        if e["type"] == "com.wasmcloud.lattice.component_scaled"
    ]
    assert update_events == [("echo", other_ref, 1, host), ("echo", other_ref, 0, host)]
    assert (await get(f"{url}/echo"))[0] == 200
    inv = await env.inventory(host)
    assert [(c.id, c.image_ref) for c in inv.components] == [("echo", other_ref)]

    # A scale naming another image than the running one is acknowledged with a warning, whatever
    # the count (docs/protocol.md#scale); the image is not changed.
    msg = await ctl.scale_component(host, echo_ref, "echo", 2)
    assert msg.startswith(f"component echo is already running with a different image reference `{other_ref}`")
    assert "the image is not changed" in msg
    await env.wait_event(
        "component_scaled", lambda e: e["data"]["image_ref"] == other_ref and e["data"]["max_instances"] == 2
    )
    assert [(c.image_ref, c.max_instances) for c in (await env.inventory(host)).components] == [
        (other_ref, 2)
    ]

    # Scale to 0 with the other image and allow_update: still warned; nothing is left to update, so
    # the ack says the image is not changed and no update (nor its failure) follows.
    msg = await ctl.scale_component(host, echo_ref, "echo", 0, allow_update=True)
    assert msg.startswith(f"component echo is already running with a different image reference `{other_ref}`")
    assert "the image is not changed" in msg
    await env.wait_event(
        "component_scaled", lambda e: e["data"]["image_ref"] == echo_ref and e["data"]["max_instances"] == 0
    )
    assert (await env.inventory(host)).components == []
    await asyncio.sleep(0.5)
    assert not [
        e
        for e in env.events
        if e["type"].endswith("component_scale_failed") and e["data"]["component_id"] == "echo"
    ]
    status, text = await get(f"{url}/echo")
    assert status == 503 and "echo is not running" in text


async def test_link_delete_provider_stop_and_host_stop(served: Served) -> None:
    env, host, url, port, ctl = served.env, served.host, served.url, served.port, served.env.ctl
    # The listener is open once the link has reached the provider.
    await wait_status(f"{url}/echo", 200, timeout=60.0)
    # Link delete closes the listener; provider stop is reported.
    await ctl.delete_link("http-server", "wasi", "http")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            await get(f"{url}/echo", timeout=2.0)
        except (TimeoutError, aiohttp.ClientError):
            # A request racing the close may be reset or dropped; what counts is that new ones are refused.
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("listener still open after link delete")
    assert await ctl.stop_provider(host, "http-server") == "successfully stopped provider"
    await env.wait_event("provider_stopped")
    assert (await env.inventory(host)).providers == []

    # host stop exits cleanly.
    await ctl.stop_host(host)
    assert env.procs[0].wait(20) == 0


async def test_path_routing_several_components(env: Env, echo_ref: str) -> None:
    env.start_host()
    (host,) = await env.host_ids(1)
    ctl = env.ctl
    port = free_port()
    await ctl.put_config("router", {"routing_mode": "path", "default_address": f"127.0.0.1:{port}"})
    await ctl.put_config("p-echo", {"path": "/echo"})
    await ctl.put_config("p-count", {"path": "/count"})
    for cid in ("a", "b"):
        await ctl.scale_component(host, echo_ref, cid, 4)
        await env.wait_event("component_scaled", lambda e, c=cid: e["data"]["component_id"] == c)
    await ctl.start_provider(host, HTTP_SERVER, "router", config=["router"])
    await env.wait_event("provider_started")
    await ctl.put_link(http_link("router", "a", ["p-echo"]))
    await ctl.put_link(http_link("router", "b", ["p-count"]).model_copy(update={"name": "b"}))
    url = f"http://127.0.0.1:{port}"
    assert "/echo" in await wait_status(f"{url}/echo", 200)
    # Component b counts its own requests only (each component has its own instances).
    assert (await wait_status(f"{url}/count", 200)).strip().isdigit()
    status, text = await get(f"{url}/elsewhere")
    assert status == 404 and "no component is linked" in text

    # Unknown provider references fail the start with the supported ones named.
    await ctl.start_provider(host, "oci://example/provider:1", "bogus")
    failed = await env.wait_event("provider_start_failed")
    assert "builtin://http-server" in failed["data"]["error"]


async def test_provider_health_is_answered_and_reported(env: Env) -> None:
    # A host checking its providers every 0.3 s (wasmCloud's default is 30 s, first after 5 s).
    env.start_host("--health-interval", "0.3")
    (host,) = await env.host_ids(1)
    health_subject = f"wasmbus.rpc.{env.lattice}.web.health"

    assert await env.ctl.start_provider(host, HTTP_SERVER, "web") == "successfully started provider"
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "web")
    # The first healthy check publishes `passed` (a new provider counts as unhealthy), later ones
    # `status`, each with exactly the data fields of docs/protocol.md#event-catalogue.
    passed = await env.wait_event("health_check_passed", lambda e: e["data"]["provider_id"] == "web")
    assert passed["data"] == {"host_id": host, "provider_id": "web"}
    assert passed["source"] == host
    await env.wait_event("health_check_status", lambda e: e["data"]["provider_id"] == "web")
    assert not [e for e in env.events if e["type"].endswith("health_check_failed")]

    # The provider's health subject answers as a provider process would: healthy, no message.
    reply = await env.nc.request(health_subject, b"", timeout=5)
    assert json.loads(reply.data) == {"healthy": True}

    await env.ctl.stop_provider(host, "web")
    await env.wait_event("provider_stopped", lambda e: e["data"]["provider_id"] == "web")
    # Once stopped, health requests find no responder and no more health events come.
    import nats.errors

    with pytest.raises(nats.errors.NoRespondersError):
        await env.nc.request(health_subject, b"", timeout=2)
    seen = len([e for e in env.events if "health_check" in e["type"]])
    await asyncio.sleep(1.0)
    assert len([e for e in env.events if "health_check" in e["type"]]) == seen


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on `port` (IPv4), from /proc (state 0A is LISTEN)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


async def test_two_hosts_share_one_address_and_updates_keep_in_flight_requests(
    env: Env, echo_ref: str, tmp_path: Path
) -> None:
    env.start_host()
    env.start_host()
    hosts = await env.host_ids(2)
    port = free_port()
    await env.ctl.put_config("shared-http", {"address": f"127.0.0.1:{port}"})
    for host in hosts:
        await env.ctl.scale_component(host, echo_ref, "echo", 4)
        await env.ctl.start_provider(host, HTTP_SERVER, "web")
    for host in hosts:
        await env.wait_event("component_scaled", lambda e, h=host: e["data"]["host_id"] == h)
        await env.wait_event("provider_started", lambda e, h=host: e["data"]["host_id"] == h)
    # One link in the lattice: both hosts' providers bind the same address (SO_REUSEPORT).
    await env.ctl.put_link(http_link("web", "echo", ["shared-http"]))
    url = f"http://127.0.0.1:{port}"
    await wait_status(f"{url}/echo", 200, timeout=60.0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until the second host has bound it too
        if listening_sockets(port) >= 2:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"expected two listeners on port {port}")

    # An update while a large response is streaming: the in-flight request completes.
    n = 32 * 1024 * 1024
    slow = asyncio.ensure_future(get(f"{url}/bytes?n={n}", timeout=120))
    await asyncio.sleep(0.3)
    other = tmp_path / "echo-v2.wasm"
    shutil.copyfile(echo_ref.removeprefix("file://"), other)
    for host in hosts:
        await env.ctl.update_component(host, "echo", f"file://{other}")
    status, body = await slow
    assert status == 200 and len(body) == n

    # One host gone (kill -9): the address is still served by the other.
    env.procs[0].kill()
    env.procs[0].wait(10)
    ok = 0
    for _ in range(20):
        try:
            status, _ = await get(f"{url}/echo", timeout=10)
            ok += status == 200
        except aiohttp.ClientError:
            pass  # a connection the kernel had queued on the killed host's socket
    assert ok >= 15, ok
