"""Outgoing HTTP through the builtin http-client provider, and the http-server's host routing and TLS.

Real host processes on a real nats-server; the http echo guest's `/outgoing?url=...` route makes the
outgoing request and answers with the upstream's status and body, or 502 and the `wasi:http`
error code it got (e.g. `ErrorCode_HttpRequestDenied()`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import trustme

from tests.support.http import Upstream, get, wait_body, wait_status
from tests.support.lattice import HTTP_SERVER, http_link, serve_http
from tests.support.lattice import LatticeEnv as Env
from tests.support.processes import free_port
from wasmlattice.protocol.models import Link

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

HTTP_CLIENT = "wasmcloud+builtin://http-client"
NO_LINK = "no link named `default` for `wasi:http/outgoing-handler`"


def egress_link(component_id: str, provider_id: str, target_config: list[str]) -> Link:
    return Link(
        source_id=component_id,
        target=provider_id,
        wit_namespace="wasi",
        wit_package="http",
        interfaces=["outgoing-handler"],
        target_config=target_config,
    )


def outgoing(base: str, url: str, *headers: str) -> str:
    """The echo guest's URL that makes an outgoing request to `url` (with `name:value` headers)."""
    extra = "".join(f"&header={quote(h)}" for h in headers)
    return f"{base}/outgoing?url={quote(url, safe='')}{extra}"


# ---------------------------------------------------------------------------------------------
# Outgoing HTTP
# ---------------------------------------------------------------------------------------------


async def test_outgoing_requests_go_through_the_linked_http_client(
    env: Env, echo_ref: str, upstream: Upstream
) -> None:
    env.start_host()
    (host,) = await env.host_ids(1)
    ctl = env.ctl
    base = await serve_http(env, host, "echo", echo_ref, port=free_port(), ready_path="/echo")
    hello = upstream.url("/hello")

    # No link yet: the guest gets internal-error naming the missing link, and the host logs it.
    status, text = await get(outgoing(base, hello))
    assert status == 502 and "InternalError" in text and NO_LINK in text, text
    await env.wait_log(f"component echo: {NO_LINK}")

    await ctl.start_provider(host, HTTP_CLIENT, "egress")
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "egress")
    refused_port = free_port()  # nothing listens there
    allowed = "127.0.0.1, does-not-exist.invalid:80"
    await ctl.put_config("egress-hosts", {"ALLOWED_HOSTS": allowed})
    await ctl.put_link(egress_link("echo", "egress", ["egress-hosts"]))

    assert await wait_status(outgoing(base, hello), 200) == "hello from upstream\n"
    # Request headers reach the upstream; keep-alive reuse does not mix requests up.
    for i in range(3):
        status, text = await get(outgoing(base, upstream.url("/headers"), f"x-round:{i}"))
        assert (status, text) == (200, f"x-round: {i}")
    status, text = await get(outgoing(base, upstream.url("/status/418")))
    assert (status, text) == (418, "upstream status 418\n")

    # Destinations outside `allowed_hosts` are denied (same server, other name), and logged.
    status, text = await get(outgoing(base, f"http://localhost:{upstream.port}/hello"))
    assert status == 502 and "HttpRequestDenied" in text, text
    await env.wait_log(f"outgoing request to localhost:{upstream.port} denied")
    status, text = await get(outgoing(base, "http://does-not-exist.invalid:8080/"))
    assert status == 502 and "HttpRequestDenied" in text, text
    # Allowed but failing destinations get their own error codes.
    status, text = await get(outgoing(base, "http://does-not-exist.invalid/"))
    assert status == 502 and "DnsError" in text, text
    status, text = await get(outgoing(base, f"http://127.0.0.1:{refused_port}/"))
    assert status == 502 and "ConnectionRefused" in text, text

    # Deleting the link fails the next call; putting it back heals.
    await ctl.delete_link("echo", "wasi", "http")
    body = await wait_body(outgoing(base, hello), 502, NO_LINK)
    assert "InternalError" in body
    await ctl.put_link(egress_link("echo", "egress", ["egress-hosts"]))
    assert await wait_status(outgoing(base, hello), 200) == "hello from upstream\n"

    # A link to a provider that is not an http-client is refused with a message saying so.
    await ctl.delete_link("echo", "wasi", "http")
    await wait_body(outgoing(base, hello), 502, NO_LINK)
    await ctl.put_link(egress_link("echo", "http-echo", []))
    await wait_body(outgoing(base, hello), 502, "is not an http-client provider")

    # Without `allowed_hosts` every destination is allowed; a stopped provider fails the call.
    await ctl.delete_link("echo", "wasi", "http")
    await wait_body(outgoing(base, hello), 502, NO_LINK)
    await ctl.put_link(egress_link("echo", "egress", []))
    assert await wait_status(outgoing(base, f"http://localhost:{upstream.port}/hello"), 200)
    await ctl.stop_provider(host, "egress")
    await env.wait_event("provider_stopped", lambda e: e["data"]["provider_id"] == "egress")
    await wait_body(outgoing(base, hello), 502, "`egress` (the target of link `default`")
    # The host kept serving throughout.
    status, text = await get(f"{base}/echo")
    assert status == 200 and '"path_with_query": "/echo"' in text


# ---------------------------------------------------------------------------------------------
# Ingress: host routing and TLS
# ---------------------------------------------------------------------------------------------


async def request(url: str, headers: dict[str, str] | None = None, ssl_ctx: Any = None) -> tuple[int, str]:
    connector = aiohttp.TCPConnector(ssl=ssl_ctx if ssl_ctx is not None else True)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as s,
        s.get(url, headers=headers) as r,
    ):
        return r.status, (await r.read()).decode("latin-1")


async def test_host_routing_puts_several_components_behind_one_listener(env: Env, echo_ref: str) -> None:
    env.start_host()
    (host,) = await env.host_ids(1)
    ctl = env.ctl
    port = free_port()
    await ctl.put_config("router", {"routing_mode": "host", "default_address": f"127.0.0.1:{port}"})
    await ctl.put_config("h-a", {"HOST": "a.example"})
    await ctl.put_config("h-b", {"host": "B.Example:8080"})
    await ctl.put_config("h-none", {"path": "/ignored"})
    await ctl.scale_component(host, echo_ref, "a", 2)
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "a")
    await ctl.start_provider(host, HTTP_SERVER, "router", config=["router"])
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "router")
    await ctl.put_link(http_link("router", "a", ["h-a"]))
    # b is linked but not running yet: its host name routes to it, and the 503 names it.
    await ctl.put_link(http_link("router", "b", ["h-b"]).model_copy(update={"name": "b"}))
    # A link without `host` is not served, and the log says why.
    await ctl.put_link(http_link("router", "c", ["h-none"]).model_copy(update={"name": "c"}))
    await env.wait_log("host routing needs a `host`")

    url = f"http://127.0.0.1:{port}/echo"
    deadline = time.monotonic() + 30
    while (await request(url, {"Host": "a.example"}))[0] != 200:
        assert time.monotonic() < deadline, "a.example was not routed to component a"
        await asyncio.sleep(0.1)
    # Host names compare case-insensitively and without the port.
    status, text = await request(url, {"Host": "A.EXAMPLE:1234"})
    assert status == 200 and '"authority": "A.EXAMPLE:1234"' in text
    status, text = await wait_status_with(url, {"Host": "b.example"}, 503)
    assert "component b is not running" in text
    status, text = await request(url, {"Host": "c.example"})
    assert status == 404 and "no component is linked for host c.example" in text

    await ctl.scale_component(host, echo_ref, "b", 2)
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "b")
    await wait_status_with(url, {"Host": "b.example:8080"}, 200)
    status, _ = await request(url, {"Host": "a.example"})
    assert status == 200

    # Deleting b's link leaves a served and b unknown.
    await ctl.delete_link("router", "wasi", "http", "b")
    status, text = await wait_status_with(url, {"Host": "b.example"}, 404)
    assert "no component is linked for host b.example" in text
    assert (await request(url, {"Host": "a.example"}))[0] == 200


async def test_host_routing_by_a_configured_header(env: Env, echo_ref: str) -> None:
    env.start_host()
    (host,) = await env.host_ids(1)
    ctl = env.ctl
    port = free_port()
    config = {"routing_mode": "host", "header": "X-Tenant", "default_address": f"127.0.0.1:{port}"}
    await ctl.put_config("router", config)
    await ctl.put_config("h-a", {"host": "tenant-a"})
    await ctl.scale_component(host, echo_ref, "a", 2)
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "a")
    await ctl.start_provider(host, HTTP_SERVER, "router", config=["router"])
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "router")
    await ctl.put_link(http_link("router", "a", ["h-a"]))
    url = f"http://127.0.0.1:{port}/echo"
    await wait_status_with(url, {"x-tenant": "Tenant-A"}, 200)
    # The Host header no longer routes; a request without the header is answered 404.
    status, text = await request(url, {"Host": "tenant-a"})
    assert status == 404 and "no X-Tenant header" in text


async def wait_status_with(
    url: str, headers: dict[str, str], status: int, ssl_ctx: Any = None, timeout: float = 30.0
) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await request(url, headers, ssl_ctx)
            if last[0] == status:
                return (int(last[0]), str(last[1]))
        except aiohttp.ClientError as e:
            last = e
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} with {headers} did not answer {status} within {timeout}s; last: {last}")


def write_cert(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost signed by `ca`, as PEM files (chain, key)."""
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


async def test_tls_listeners(env: Env, echo_ref: str, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = write_cert(ca, tmp_path)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    env.start_host()
    (host,) = await env.host_ids(1)
    ctl = env.ctl
    for cid in ("a", "b"):
        await ctl.scale_component(host, echo_ref, cid, 2)
        await env.wait_event("component_scaled", lambda e, c=cid: e["data"]["component_id"] == c)

    # Path mode with TLS in the provider config (keys are case-insensitive).
    port = free_port()
    router = {"routing_mode": "path", "default_address": f"127.0.0.1:{port}"}
    await ctl.put_config("tls-router", {**router, "TLS_CERT_FILE": str(cert), "tls_priv_key_file": str(key)})
    await ctl.put_config("p-echo", {"path": "/echo"})
    await ctl.start_provider(host, HTTP_SERVER, "tls-router", config=["tls-router"])
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "tls-router")
    await ctl.put_link(http_link("tls-router", "a", ["p-echo"]))
    status, text = await wait_status_with(f"https://127.0.0.1:{port}/echo", {}, 200, trusting)
    assert '"path_with_query": "/echo"' in text
    # A client that does not trust the CA refuses the certificate; plain HTTP is not served.
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await request(f"https://127.0.0.1:{port}/echo")
    with pytest.raises(aiohttp.ClientError):
        await request(f"http://127.0.0.1:{port}/echo")

    # A missing certificate file fails the start of a path-mode provider, naming the file.
    missing = tmp_path / "nope.pem"
    bad = {**router, "default_address": f"127.0.0.1:{free_port()}"}
    await ctl.put_config("bad-router", {**bad, "tls_cert_file": str(missing), "tls_priv_key_file": str(key)})
    await ctl.start_provider(host, HTTP_SERVER, "bad-router", config=["bad-router"])
    failed = await env.wait_event("provider_start_failed", lambda e: e["data"]["provider_id"] == "bad-router")
    assert str(missing) in failed["data"]["error"] and "TLS certificate" in failed["data"]["error"]
    # Only one of the two keys is an error too.
    await ctl.put_config("half-router", {**bad, "tls_cert_file": str(cert)})
    await ctl.start_provider(host, HTTP_SERVER, "half-router", config=["half-router"])
    failed = await env.wait_event(
        "provider_start_failed", lambda e: e["data"]["provider_id"] == "half-router"
    )
    assert "tls_priv_key_file" in failed["data"]["error"]

    # Address mode: TLS from a link's source config; a link with an unreadable key is not served,
    # and the provider keeps serving its other links.
    await ctl.start_provider(host, HTTP_SERVER, "by-address")
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "by-address")
    good_port, bad_port = free_port(), free_port()
    tls = {"tls_cert_file": str(cert), "tls_priv_key_file": str(key)}
    await ctl.put_config("addr-a", {"address": f"127.0.0.1:{good_port}", **tls})
    await ctl.put_config("addr-b", {**tls, "address": f"127.0.0.1:{bad_port}", "tls_priv_key_file": "/nope"})
    await ctl.put_link(http_link("by-address", "a", ["addr-a"]))
    await ctl.put_link(http_link("by-address", "b", ["addr-b"]).model_copy(update={"name": "b"}))
    await wait_status_with(f"https://127.0.0.1:{good_port}/count", {}, 200, trusting)
    await env.wait_log(f"cannot listen on 127.0.0.1:{bad_port} for b")
    with pytest.raises(aiohttp.ClientError):
        await request(f"https://127.0.0.1:{bad_port}/count", ssl_ctx=trusting)
    status, _ = await request(f"https://127.0.0.1:{port}/echo", ssl_ctx=trusting)
    assert status == 200
