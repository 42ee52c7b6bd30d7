"""HTTP ingress across hosts: the HTTP server provider on one host, the component on another.

The provider on host A forwards requests for a component that does not run on A over wRPC, as
`wrpc:http/incoming-handler@0.1.0` `handle`, to the host that runs it (host B); bodies stream both
ways. Real nats-server, real host processes, the `http_echo` guest (it echoes method, path,
headers and a body hash on /echo, and streams the request body back on /body).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.support.http import wait_status
from tests.support.lattice import HTTP_SERVER, LatticeEnv, eventually, http_link
from tests.support.processes import free_port

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

INSTANCE = "wrpc:http/incoming-handler@0.1.0"


async def two_hosts(env: LatticeEnv) -> tuple[str, str]:
    """Host A (runs the HTTP server provider) and host B."""
    env.start_host()
    env.start_host()
    a, b = await env.host_ids(2)
    return a, b


async def scaled(env: LatticeEnv, host: str, ref: str, cid: str, count: int) -> None:
    assert await env.ctl.scale_component(host, ref, cid, count) == ""
    await env.wait_event(
        "component_scaled",
        lambda e: (
            e["data"]["component_id"] == cid
            and e["data"]["host_id"] == host
            and e["data"]["max_instances"] == count
        ),
    )


async def provider_linked(env: LatticeEnv, host: str, cid: str, port: int) -> str:
    """The HTTP server provider on `host`, linked to `cid` on its own port; the base URL."""
    ctl = env.ctl
    if not any(e["type"].endswith("provider_started") for e in env.events):
        await ctl.start_provider(host, HTTP_SERVER, "http-server")
        await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "http-server")
    await ctl.put_config(f"addr-{cid}", {"address": f"127.0.0.1:{port}"})
    # One link name per target: a source has one target per link name and interface.
    link = http_link("http-server", cid, [f"addr-{cid}"]).model_copy(update={"name": cid})
    await ctl.put_link(link)
    return f"http://127.0.0.1:{port}"


async def request(
    method: str, url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.request(method, url, data=data, headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.read()


class Watch:
    """Copies of the invocations published to a component's `handle` subject (a plain subscriber)."""

    def __init__(self) -> None:
        self.msgs: list[Any] = []
        self.sub: Any = None

    async def start(self, env: LatticeEnv, cid: str) -> None:
        async def on_msg(msg: Any) -> None:
            self.msgs.append(msg)

        subject = f"{env.lattice}.{cid}.wrpc.0.0.1.{INSTANCE}.handle"
        self.sub = await env.nc.subscribe(subject, cb=on_msg)
        await env.nc.flush()


async def test_requests_run_on_the_host_that_runs_the_component(env: LatticeEnv, echo_ref: str) -> None:
    a, b = await two_hosts(env)
    await scaled(env, b, echo_ref, "echo", 4)
    watch = Watch()
    await watch.start(env, "echo")
    url = await provider_linked(env, a, "echo", free_port())
    await wait_status(url + "/echo", 200)

    # The component runs only on B: A's provider reached it over the lattice.
    assert [c.id for c in (await env.inventory(a)).components] == []
    assert [c.id for c in (await env.inventory(b)).components] == ["echo"]

    before = len(watch.msgs)
    status, headers, body = await request(
        "GET",
        url + "/echo?q=1&header=x-reply:yes",
        headers={"X-Custom": "abc", "X-Multi": "one", "Connection": "keep-alive"},
    )
    assert status == 200, body
    doc = json.loads(body)
    assert doc["method"] == "GET"
    assert doc["path_with_query"] == "/echo?q=1&header=x-reply:yes"
    assert doc["scheme"] == "http"
    assert doc["authority"] == url.removeprefix("http://")
    seen = dict((name, values) for name, values in doc["headers"])
    assert seen["x-custom"] == ["abc"] and seen["x-multi"] == ["one"]
    # Hop-by-hop headers do not reach the guest (the Host header arrives as the authority).
    assert "connection" not in seen and "host" not in seen
    assert doc["body_length"] == 0
    assert headers["x-reply"] == "yes" and headers["Content-Type"] == "application/json"
    # The request went over wRPC, with the provider as its source.
    assert len(watch.msgs) == before + 1
    assert watch.msgs[-1].headers["source-id"] == "http-server"

    # A 1 MiB binary body, streamed to B and back.
    payload = os.urandom(1 << 20)
    status, headers, body = await request("POST", url + "/body", data=payload)
    assert status == 200
    assert len(body) == len(payload) and body == payload
    status, _, body = await request("PUT", url + "/echo", data=payload)
    assert status == 200
    doc = json.loads(body)
    assert doc["method"] == "PUT" and doc["body_length"] == len(payload)
    assert doc["body_sha256"] == hashlib.sha256(payload).hexdigest()

    # HEAD: the guest's headers, no body.
    status, headers, body = await request("HEAD", url + "/echo")
    assert status == 200 and body == b""
    assert headers["Content-Type"] == "application/json"

    # A trap on B is a 500 here, naming what failed.
    status, _, body = await request("GET", url + "/trap")
    assert status == 500
    assert b"the component failed" in body and b"trap" in body

    # A component linked but running on no host: 503, saying so and what to do.
    ghost = await provider_linked(env, a, "ghost", free_port())
    text = await wait_status(ghost + "/echo", 503)
    assert "component ghost is not running on any host of lattice" in text and "scale it" in text


async def test_scaling_moves_requests_between_remote_and_local(env: LatticeEnv, echo_ref: str) -> None:
    a, b = await two_hosts(env)
    await scaled(env, b, echo_ref, "echo", 2)
    url = await provider_linked(env, a, "echo", free_port())
    await wait_status(url + "/echo", 200)

    await scaled(env, b, echo_ref, "echo", 0)
    text = await wait_status(url + "/echo", 503)
    assert "component echo is not running on any host" in text

    # Once A runs it too, A serves it itself: no invocation goes over the lattice.
    await scaled(env, a, echo_ref, "echo", 2)
    watch = Watch()
    await watch.start(env, "echo")

    async def served_locally() -> None:
        status, _, body = await request("GET", url + "/echo?local")
        assert status == 200, body
        assert json.loads(body)["path_with_query"] == "/echo?local"

    await eventually(served_locally)
    for _ in range(5):
        await served_locally()
    assert watch.msgs == []


async def test_bodies_stream_both_ways_within_the_instance_bound(env: LatticeEnv, echo_ref: str) -> None:
    a, b = await two_hosts(env)
    await scaled(env, b, echo_ref, "echo", 1)
    url = await provider_linked(env, a, "echo", free_port())
    await wait_status(url + "/echo", 200)

    release = asyncio.Event()

    async def upload() -> AsyncIterator[bytes]:
        yield b"first-chunk"
        await release.wait()
        yield b"second-chunk"

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        async with s.post(url + "/body", data=upload()) as r:
            # /body answers at once and echoes what it reads: the first piece comes back across
            # both hosts while the client still holds the rest of its body (nothing is buffered whole).
            assert r.status == 200
            first = await asyncio.wait_for(r.content.readexactly(len(b"first-chunk")), 10)
            assert first == b"first-chunk"
            # B runs at most one instance, and this request holds it: another one waits for it.
            other = asyncio.create_task(request("GET", url + "/echo"))
            await asyncio.sleep(1.0)
            assert not other.done()
            release.set()
            assert await r.read() == b"second-chunk"
        status, _, _ = await asyncio.wait_for(other, 30)
        assert status == 200
