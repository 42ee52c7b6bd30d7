"""`wasmcloud:messaging@0.2.0` and `wasi:logging` on a real host process over a real nats-server.

The `msg_guest` component serves HTTP (publish, request, log routes) and handles messages
(`handle-message` replies with the body upper-cased and republishes it to `handled.<subject>`;
body `fail` returns an Err, `trap` traps). The test talks NATS with its own nats-py connection.
Subjects start with the test's unique lattice name, so tests sharing the nats-server do not meet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats.errors
import pytest

from tests.support.http import get_json
from tests.support.lattice import LatticeEnv as Env
from tests.support.lattice import serve_http
from tests.support.processes import free_port
from wasmlattice.protocol.models import Link

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

MESSAGING = "wasmcloud+builtin://messaging-nats"
PROVIDER = "nats-msg"
COMPONENT = "msg"


def consumer_link(target_config: list[str] | None = None) -> Link:
    return Link(
        source_id=COMPONENT,
        target=PROVIDER,
        wit_namespace="wasmcloud",
        wit_package="messaging",
        interfaces=["consumer"],
        target_config=target_config or [],
    )


def handler_link(source_config: list[str], name: str = "default") -> Link:
    return Link(
        source_id=PROVIDER,
        target=COMPONENT,
        wit_namespace="wasmcloud",
        wit_package="messaging",
        interfaces=["handler"],
        name=name,
        source_config=source_config,
    )


async def request_until_served(nc: Any, subject: str, body: bytes, timeout: float = 30.0) -> Any:
    """Request until something subscribes to `subject` (subscriptions follow links asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await nc.request(subject, body, timeout=10.0)
        except nats.errors.NoRespondersError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def until_unserved(nc: Any, subject: str, timeout: float = 30.0) -> None:
    """Wait until nothing answers requests to `subject`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await nc.request(subject, b"ping", timeout=1.0)
        except nats.errors.NoRespondersError:
            return
        except nats.errors.TimeoutError:
            pass  # delivered while the subscription was going away, to nothing that answers
        await asyncio.sleep(0.1)
    raise AssertionError(f"{subject} is still answered after {timeout}s")


async def collector(nc: Any, subject: str, queue: str = "") -> tuple[Any, list[Any]]:
    got: list[Any] = []

    async def cb(msg: Any) -> None:
        got.append(msg)

    sub = await nc.subscribe(subject, queue=queue, cb=cb)
    await nc.flush()
    return sub, got


async def wait_for(pred: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def msg_ref(build_component: Callable[[str], Path]) -> str:
    return "file://" + str(build_component("msg_guest").resolve())


async def setup(env: Env, msg_ref: str, subscriptions: str) -> tuple[str, str]:
    """One host running the guest behind HTTP, the messaging provider, both links; (host, url)."""
    env.start_host()
    (host,) = await env.host_ids(1)
    url = await serve_http(env, host, COMPONENT, msg_ref, port=free_port(), max_instances=2)
    assert await env.ctl.start_provider(host, MESSAGING, PROVIDER) == "successfully started provider"
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == PROVIDER)
    await env.ctl.put_config("msg-subs", {"subscriptions": subscriptions})
    await env.ctl.put_link(consumer_link())
    await env.ctl.put_link(handler_link(["msg-subs"]))
    return host, url


class Messaging:
    """The message guest behind HTTP on one host, subscribed to `{lattice}.echo` and, in queue group
    `workers`, to `{lattice}.work.*`."""

    def __init__(self, env: Env, url: str) -> None:
        self.env, self.url, self.nc, self.p = env, url, env.nc, env.lattice


@pytest.fixture
async def messaging(env: Env, msg_ref: str) -> Messaging:
    p = env.lattice
    _, url = await setup(env, msg_ref, f"{p}.echo, {p}.work.*|workers")
    return Messaging(env, url)


async def test_subscription_request_reply_and_republish(messaging: Messaging) -> None:
    nc, p = messaging.nc, messaging.p
    _, handled = await collector(nc, f"handled.{p}.>")

    # Request/reply through the subscription: the guest answers on reply-to, upper-cased...
    reply = await request_until_served(nc, f"{p}.echo", b"hello")
    assert reply.data == b"HELLO"
    # ...and republishes what it got through consumer.publish.
    await wait_for(lambda: len(handled) == 1, "the republished message")
    assert (handled[0].subject, handled[0].data, handled[0].reply) == (
        f"handled.{p}.echo",
        b"hello",
        f"{p}.echo",
    )


async def test_queue_group_is_shared_with_other_members(messaging: Messaging) -> None:
    nc, p = messaging.nc, messaging.p

    # A queue group subscription: the component shares `workers` with a test member.
    async def test_worker(msg: Any) -> None:
        await msg.respond(b"from-test")

    await nc.subscribe(f"{p}.work.*", queue="workers", cb=test_worker)
    await nc.flush()
    replies = [(await request_until_served(nc, f"{p}.work.job{i}", b"job")).data for i in range(40)]
    assert set(replies) == {b"JOB", b"from-test"}, replies


async def test_publish_from_http_reaches_a_subscriber(messaging: Messaging) -> None:
    nc, p, url = messaging.nc, messaging.p, messaging.url
    # Publish from an HTTP route reaches a subscriber, with its reply-to.
    _, out = await collector(nc, f"{p}.out")
    assert await get_json(f"{url}/publish?subject={p}.out&body=hi&reply_to={p}.r") == (200, {"ok": None})
    await wait_for(lambda: len(out) == 1, "the published message")
    assert (out[0].data, out[0].reply) == (b"hi", f"{p}.r")


async def test_request_from_http_and_its_errors(messaging: Messaging) -> None:
    nc, p, url = messaging.nc, messaging.p, messaging.url

    # Request from an HTTP route to a test responder.
    async def responder(msg: Any) -> None:
        await msg.respond(b"pong:" + msg.data)

    await nc.subscribe(f"{p}.svc", cb=responder)
    # A subscriber that never answers.
    await collector(nc, f"{p}.slow")
    await nc.flush()
    status, doc = await get_json(f"{url}/request?subject={p}.svc&body=x&timeout_ms=5000")
    assert status == 200 and doc["ok"]["body"] == "pong:x" and doc["ok"]["reply_to"] is None

    # Time-out, no responders and bad subjects are the interface's own errors; nothing else breaks.
    assert await get_json(f"{url}/request?subject={p}.slow&body=x&timeout_ms=300") == (
        500,
        {"err": f"request to {p}.slow timed out after 300 ms"},
    )
    status, doc = await get_json(f"{url}/request?subject={p}.nobody&body=x&timeout_ms=2000")
    assert (
        status == 500
        and doc["err"] == f"request to {p}.nobody failed: no responders (nothing subscribes to it)"
    )
    assert await get_json(f"{url}/publish?subject=&body=x") == (
        500,
        {"err": "publish failed: the subject is empty"},
    )
    status, doc = await get_json(f"{url}/publish?subject={p}.a..b&body=x")
    assert status == 500 and "empty token" in doc["err"]
    status, doc = await get_json(f"{url}/request?subject={p}.svc&body=again&timeout_ms=5000")
    assert status == 200 and doc["ok"]["body"] == "pong:again"
    assert (await request_until_served(nc, f"{p}.echo", b"still")).data == b"STILL"


async def test_handler_errors_and_traps_are_logged(messaging: Messaging) -> None:
    env, nc, p = messaging.env, messaging.nc, messaging.p
    # Messages published before the handler link reaches the provider would go to nobody.
    assert (await request_until_served(nc, f"{p}.echo", b"ready")).data == b"READY"
    # A handler Err and a trap are logged with component, subject and reason; the next message is handled.
    await nc.publish(f"{p}.echo", b"fail")
    reason = f"refusing body `fail` on {p}.echo"
    await env.wait_log(f"component {COMPONENT} returned an error for a message on {p}.echo: {reason}")
    await nc.publish(f"{p}.echo", b"trap")
    text = await env.wait_log(f"component {COMPONENT} trapped handling a message on {p}.echo")
    assert "deliberate trap" in text
    assert (await nc.request(f"{p}.echo", b"after", timeout=10.0)).data == b"AFTER"
    # The guest's error and trap are its own: the host itself logs no traceback.
    assert env.host_tracebacks() == []


async def test_guest_logging_lands_in_the_host_log(messaging: Messaging) -> None:
    env, url = messaging.env, messaging.url
    # wasi:logging lines land in the host log with the component ID and level (trace/debug are
    # below the host's INFO level).
    assert await get_json(f"{url}/log?tag=T1") == (200, {"ok": None})
    text = await env.wait_log("T1 critical")
    for level, name in (("info", "INFO"), ("warn", "WARNING"), ("error", "ERROR"), ("critical", "CRITICAL")):
        assert f"{name} wasmlattice.guest: component {COMPONENT} [{level}] msg-guest: T1 {level}" in text
    assert "T1 debug" not in text and "T1 trace" not in text


async def test_deleting_the_links(messaging: Messaging) -> None:
    env, nc, p, url = messaging.env, messaging.nc, messaging.p, messaging.url
    # The handler link is in place before it is deleted.
    await request_until_served(nc, f"{p}.echo", b"ready")

    # A test responder for the HTTP route's requests.
    async def responder(msg: Any) -> None:
        await msg.respond(b"pong:" + msg.data)

    await nc.subscribe(f"{p}.svc", cb=responder)
    await nc.flush()
    # Deleting the handler link stops delivery; the HTTP side keeps working.
    await env.ctl.delete_link(PROVIDER, "wasmcloud", "messaging")
    await until_unserved(nc, f"{p}.echo")
    status, doc = await get_json(f"{url}/request?subject={p}.svc&body=y&timeout_ms=5000")
    assert status == 200 and doc["ok"]["body"] == "pong:y"

    # Without its consumer link, the guest gets the missing-link error.
    await env.ctl.delete_link(COMPONENT, "wasmcloud", "messaging")
    deadline = time.monotonic() + 20
    while True:
        status, doc = await get_json(f"{url}/publish?subject={p}.out&body=z")
        if status == 500 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert (status, doc) == (500, {"err": "no link named `default` for `wasmcloud:messaging/consumer`"})
    assert env.host_tracebacks() == []


async def test_cluster_uris_and_local_components(env: Env, msg_ref: str, nats_url: str) -> None:
    p = env.lattice
    nc = env.nc
    host, url = await setup(env, msg_ref, f"{p}.main")
    # A second handler link on its own connection (`cluster_uris`), and a consumer link on another.
    await env.ctl.put_config("alt-subs", {"subscriptions": f"{p}.alt", "cluster_uris": nats_url})
    await env.ctl.put_link(handler_link(["alt-subs"], name="alt"))
    await env.ctl.put_config("own-conn", {"cluster_uris": nats_url})
    await env.ctl.put_link(consumer_link(["own-conn"]))
    assert (await request_until_served(nc, f"{p}.alt", b"alt")).data == b"ALT"
    assert (await request_until_served(nc, f"{p}.main", b"main")).data == b"MAIN"
    _, out = await collector(nc, f"{p}.viaown")
    assert await get_json(f"{url}/publish?subject={p}.viaown&body=own") == (200, {"ok": None})
    await wait_for(lambda: len(out) == 1, "the message sent over the link's own connection")

    # A cluster that cannot be reached is the interface's error, naming the URL.
    await env.ctl.put_config("bad-conn", {"cluster_uris": "nats://127.0.0.1:1"})
    await env.ctl.put_link(consumer_link(["bad-conn"]))
    deadline = time.monotonic() + 30
    while True:
        status, doc = await get_json(f"{url}/publish?subject={p}.viaown&body=x")
        if status == 500 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert status == 500 and "cannot connect to NATS at nats://127.0.0.1:1" in doc["err"], doc

    await env.ctl.put_link(consumer_link())

    # The component leaves this host: its subscriptions go; it comes back: they return.
    await env.ctl.scale_component(host, msg_ref, COMPONENT, 0)
    await until_unserved(nc, f"{p}.main")
    await until_unserved(nc, f"{p}.alt")
    await env.ctl.scale_component(host, msg_ref, COMPONENT, 1)
    assert (await request_until_served(nc, f"{p}.main", b"back")).data == b"BACK"
    assert env.host_tracebacks() == []


async def test_logging_and_consumer_under_run(
    start_wasmlattice: Callable[..., Any], build_component: Callable[[str], Path]
) -> None:
    # `wasmlattice run` has no lattice: logging still reaches the log; messaging answers its error.
    server = start_wasmlattice(build_component("msg_guest"), ready_path="/")
    assert await get_json(f"{server.base_url}/log?tag=R1") == (200, {"ok": None})
    text = server.wait_for_log("R1 critical")
    for level in ("info", "warn", "error", "critical"):
        assert f"component msg_guest-{server_hash(server)} [{level}] msg-guest: R1 {level}" in text
    status, doc = await get_json(f"{server.base_url}/publish?subject=x&body=y")
    assert status == 500 and "only available to components run by a lattice host" in doc["err"]
    assert (await get_json(f"{server.base_url}/"))[0] == 200


def server_hash(server: Any) -> str:
    # Under `wasmlattice run` the component ID is the file's stem (`msg_guest-<content hash>`).
    return str(server.cmd[server.cmd.index("run") + 1]).rsplit("msg_guest-", 1)[1].removesuffix(".wasm")
