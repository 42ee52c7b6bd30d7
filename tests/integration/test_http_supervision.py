"""Supervision of the builtin HTTP server's listeners (resyncs in general: tests/unit/test_supervision.py).

A link whose `address` is taken must not be forgotten until the next lattice change: the provider
reports itself unhealthy (so the host publishes `health_check_failed` and logs why), retries the
bind with backoff, and serves the link once the port is free, with no new link or config put.
Real host process, real nats-server, real sockets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from tests.support.http import get, wait_status
from tests.support.lattice import HTTP_SERVER, http_link
from tests.support.lattice import LatticeEnv as Env
from tests.support.processes import free_port
from wasmlattice.client.ctl import CtlError

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def occupy(port: int) -> socket.socket:
    """A plain listening socket on 127.0.0.1:`port` (no SO_REUSEPORT, so nothing else can bind it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen(8)
    return sock


async def test_a_taken_port_is_reported_unhealthy_and_bound_once_free(env: Env, echo_ref: str) -> None:
    # A host checking provider health every 0.3 s (wasmCloud: 30 s, first after 5 s).
    env.start_host("--health-interval", "0.3")
    (host,) = await env.host_ids(1)
    ctl = env.ctl
    port = free_port()
    address = f"127.0.0.1:{port}"
    blocker = occupy(port)
    try:
        assert await ctl.scale_component(host, echo_ref, "echo", 2) == ""
        await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "echo")
        assert await ctl.start_provider(host, HTTP_SERVER, "web") == "successfully started provider"
        await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "web")
        # No links yet: healthy (health_check_failed is only sent on a healthy -> unhealthy change).
        await env.wait_event("health_check_passed", lambda e: e["data"]["provider_id"] == "web")

        await ctl.put_config("web-addr", {"address": address})
        await ctl.put_link(http_link("web", "echo", ["web-addr"]))
        failed = await env.wait_event("health_check_failed", lambda e: e["data"]["provider_id"] == "web")
        assert failed["data"] == {"host_id": host, "provider_id": "web"}
        why = f"cannot listen on {address} for echo: [Errno 98]"
        hint = "free the port or change the link's `address` config"
        # The provider's health subject says which address failed, why, and what to do.
        reply = json.loads(
            (await env.nc.request(f"wasmbus.rpc.{env.lattice}.web.health", b"", timeout=5)).data
        )
        assert reply["healthy"] is False
        assert why in reply["message"] and hint in reply["message"], reply
        # The host's log has the bind failure (with the OS error) and the health change.
        text = await env.wait_log(f"provider web became unhealthy: {why}")
        assert f"WARNING wasmlattice.capabilities: http-server web: {why}" in text
        assert hint in text
        # Retries of the same failure do not flood the log at WARNING.
        await asyncio.sleep(2.0)
        assert env.log_text().count(f"WARNING wasmlattice.capabilities: http-server web: {why}") == 1
        with pytest.raises(OSError):
            await get(f"http://{address}/echo", timeout=2)  # the blocker accepts, never answers
    finally:
        blocker.close()

    # With no lattice change at all, the next retry (backoff at most 30 s) binds and serves.
    puts_before = len([e for e in env.events if "linkdef" in e["type"] or "config" in e["type"]])
    freed = time.monotonic()
    assert "/echo" in await wait_status(f"http://{address}/echo", 200, timeout=35)
    assert time.monotonic() - freed < 31
    assert len([e for e in env.events if "linkdef" in e["type"] or "config" in e["type"]]) == puts_before
    await env.wait_log(f"http-server web listening on {address}")
    await env.wait_log("http-server web: recovered after")
    # Healthy again: a health_check_passed after the failed one, and the subject says so.
    failed_at = env.events.index(failed)
    await env.wait_event(
        "health_check_passed",
        lambda e: e["data"]["provider_id"] == "web" and env.events.index(e) > failed_at,
        timeout=10,
    )
    reply = json.loads((await env.nc.request(f"wasmbus.rpc.{env.lattice}.web.health", b"", timeout=5)).data)
    assert reply == {"healthy": True}


async def test_a_misspelt_link_key_is_refused_not_served_on_every_interface(env: Env, echo_ref: str) -> None:
    env.start_host("--health-interval", "0.3")
    (host,) = await env.host_ids(1)
    ctl = env.ctl
    assert await ctl.scale_component(host, echo_ref, "echo", 1) == ""
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "echo")
    assert await ctl.start_provider(host, HTTP_SERVER, "web") == "successfully started provider"
    await env.wait_event("health_check_passed", lambda e: e["data"]["provider_id"] == "web")

    port = free_port()
    # Put with the typo, the link is refused by the host that answers (it knows the provider).
    await ctl.put_config("web-typo", {"adress": f"127.0.0.1:{port}"})
    with pytest.raises(CtlError, match=r"unknown key 'adress' for http-server .*did you mean 'address'"):
        await ctl.put_link(http_link("web", "echo", ["web-typo"]))
    # A typo that arrives later, through the named config, is the provider's to report.
    await ctl.put_config("web-typo", {"address": f"127.0.0.1:{port}"})
    await ctl.put_link(http_link("web", "echo", ["web-typo"]))
    assert "/echo" in await wait_status(f"http://127.0.0.1:{port}/echo", 200, timeout=30)
    await ctl.put_config("web-typo", {"adress": f"127.0.0.1:{port}"})
    await env.wait_event("health_check_failed", lambda e: e["data"]["provider_id"] == "web")
    reply = json.loads((await env.nc.request(f"wasmbus.rpc.{env.lattice}.web.health", b"", timeout=5)).data)
    assert reply["healthy"] is False
    assert (
        "unknown key 'adress' for http-server (link source config): did you mean 'address'?"
        in (reply["message"])
    ), reply
    # Nothing listens on the default address (0.0.0.0:8000) or the intended one for this link.
    with pytest.raises(OSError):
        await get(f"http://127.0.0.1:{port}/echo", timeout=2)
    await env.wait_log("link to echo not served: the source config of the link to echo: unknown key 'adress'")

    # Fixing the key serves the link and makes the provider healthy again.
    await ctl.put_config("web-typo", {"address": f"127.0.0.1:{port}"})
    assert "/echo" in await wait_status(f"http://127.0.0.1:{port}/echo", 200, timeout=30)
    reply = json.loads((await env.nc.request(f"wasmbus.rpc.{env.lattice}.web.health", b"", timeout=5)).data)
    assert reply == {"healthy": True}
