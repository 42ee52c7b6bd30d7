"""wRPC over NATS (`protocol/wrpc`: transport, client, server) against the shared real nats-server.

Client and server use separate NATS connections, as two hosts would. Each test serves on a subject
of its own (`uniq`), so tests sharing the nats-server do not meet. Values are raw bytes here; the
value codec is tested on its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from wasmlattice.protocol.wrpc.client import Invocation, invoke
from wasmlattice.protocol.wrpc.server import Reply, current_invocation, serve
from wasmlattice.protocol.wrpc.transport import (
    InvocationTimeout,
    NoResponders,
    RemoteError,
    invocation_subject,
)

pytestmark = pytest.mark.timeout(60)

TRACEPARENT_RE = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


@pytest.fixture
async def conns(nats_url: str) -> AsyncIterator[tuple[Client, Client]]:
    """A client connection and a server connection."""
    client = await nats.connect(nats_url)
    server = await nats.connect(nats_url)
    try:
        yield client, server
    finally:
        await client.close()
        await server.close()


@pytest.fixture
def uniq(request: pytest.FixtureRequest) -> str:
    """An invocation subject no other test uses."""
    name = re.sub(r"[^a-z0-9]", "", request.node.name.lower())[:40]
    return invocation_subject(f"wrpctest.{name}{os.getpid()}", "wrpc-test:transport/echo@0.1.0", "echo")


async def echo(params: bytes, headers: Mapping[str, str]) -> bytes:
    return params


async def upper(p: bytes, h: Mapping[str, str]) -> bytes:
    return p.upper()


async def test_small_round_trip_and_empty(conns: tuple[Client, Client], uniq: str) -> None:
    client, server = conns
    srv = await serve(server, uniq, "q", echo)
    try:
        assert await invoke(client, uniq, b"hello") == b"hello"
        assert await invoke(client, uniq, b"") == b""
        results = await asyncio.gather(*(invoke(client, uniq, str(i).encode()) for i in range(50)))
        assert results == [str(i).encode() for i in range(50)]
    finally:
        await srv.stop()


async def test_large_params_and_results_are_split(conns: tuple[Client, Client], uniq: str) -> None:
    client, server = conns
    max_payload = client.max_payload
    params = os.urandom(3 * max_payload + 12345)

    async def double(p: bytes, h: Mapping[str, str]) -> bytes:
        return p + p[::-1]

    srv = await serve(server, uniq, None, double)
    try:
        got = await invoke(client, uniq, params)
        assert got == params + params[::-1]
    finally:
        await srv.stop()


async def test_wire_sequence_seen_by_an_observer(
    nats_url: str, conns: tuple[Client, Client], uniq: str
) -> None:
    client, server = conns
    observer = await nats.connect(nats_url)
    seen: list[Msg] = []

    async def record(msg: Msg) -> None:
        seen.append(msg)

    await observer.subscribe(">", cb=record)
    # nats-py may send the flush PING ahead of the buffered SUB; the second round trip is after it.
    await observer.flush()
    await observer.flush()
    srv = await serve(server, uniq, "q", upper)
    try:
        big = b"x" * (client.max_payload + 10)
        assert await invoke(client, uniq, b"abc", headers={"source-id": "me"}) == b"ABC"
        assert await invoke(client, uniq, big) == big.upper()
        await asyncio.sleep(0.2)
    finally:
        await srv.stop()
        await observer.close()

    calls = [m for m in seen if m.subject == uniq]
    assert len(calls) == 2
    first, second = calls
    r_c = first.reply
    assert r_c.startswith("_INBOX.")
    mine = [m for m in seen if m.subject == r_c or m.subject.startswith(r_c + ".")]
    handshake = mine[0]
    assert handshake.subject == r_c and handshake.data == b"" and handshake.reply
    r_s = handshake.reply
    assert r_s.startswith("_INBOX.")
    params_msgs = [m for m in seen if m.subject == f"{r_s}.params"]
    # Everything fitted the invocation message, so the client only closes the parameter stream.
    assert [m.data for m in params_msgs] == [b""]
    assert first.data == b"abc"
    assert first.headers is not None and first.headers["source-id"] == "me"
    assert TRACEPARENT_RE.match(first.headers["traceparent"])
    results = [m.data for m in mine[1:]]
    assert results == [b"ABC", b""]
    assert [m.subject for m in mine[1:]] == [f"{r_c}.results"] * 2
    # Order as the spec has it: invocation, handshake, params close, results, results close.
    order = [seen.index(m) for m in (first, handshake, params_msgs[0], mine[1], mine[2])]
    assert order == sorted(order)

    # The large call: a truncated invocation message, the rest on R_s.params, each <= max_payload.
    r_c2 = second.reply
    hs2 = next(m for m in seen if m.subject == r_c2)
    cont = [m.data for m in seen if m.subject == f"{hs2.reply}.params"]
    assert cont[-1] == b"" and all(len(c) <= client.max_payload for c in cont)
    assert second.data + b"".join(cont) == big
    assert len(second.data) < client.max_payload
    res2 = [m.data for m in seen if m.subject == f"{r_c2}.results"]
    assert len(res2) == 3 and res2[-1] == b"" and b"".join(res2) == big.upper()


async def test_queue_group_shares_load(nats_url: str, conns: tuple[Client, Client], uniq: str) -> None:
    client, server = conns
    server2 = await nats.connect(nats_url)
    counts = {"a": 0, "b": 0}

    def counting(name: str) -> Any:
        async def handler(p: bytes, h: Mapping[str, str]) -> bytes:
            counts[name] += 1
            return name.encode()

        return handler

    s1 = await serve(server, uniq, "lattice.comp", counting("a"))
    s2 = await serve(server2, uniq, "lattice.comp", counting("b"))
    try:
        got = [await invoke(client, uniq, b"") for _ in range(60)]
        assert len(got) == 60
        assert counts["a"] > 0 and counts["b"] > 0 and counts["a"] + counts["b"] == 60
    finally:
        await s1.stop()
        await s2.stop()
        await server2.close()


async def test_headers_pass_through_and_traceparent(conns: tuple[Client, Client], uniq: str) -> None:
    client, server = conns

    async def show(p: bytes, h: Mapping[str, str]) -> bytes:
        assert current_invocation().headers == h
        return json.dumps(dict(h)).encode()

    srv = await serve(server, uniq, None, show)
    try:
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        got = json.loads(
            await invoke(
                client,
                uniq,
                b"",
                headers={"traceparent": tp, "tracestate": "a=b", "source-id": "c1", "link-name": "default"},
            )
        )
        assert got == {"traceparent": tp, "tracestate": "a=b", "source-id": "c1", "link-name": "default"}
        got = json.loads(await invoke(client, uniq, b"", headers={"link-name": "other"}))
        assert got["link-name"] == "other" and TRACEPARENT_RE.match(got["traceparent"])
    finally:
        await srv.stop()


async def test_no_responders_fails_fast(conns: tuple[Client, Client], uniq: str) -> None:
    client, _ = conns
    start = time.monotonic()
    with pytest.raises(NoResponders, match=f"no responders for {re.escape(uniq)}"):
        await invoke(client, uniq, b"x", timeout=10.0)
    assert time.monotonic() - start < 1.0


async def test_timeout_at_the_deadline(conns: tuple[Client, Client], uniq: str) -> None:
    client, server = conns

    async def slow(p: bytes, h: Mapping[str, str]) -> bytes:
        await asyncio.sleep(5)
        return p

    srv = await serve(server, uniq, None, slow)
    try:
        start = time.monotonic()
        with pytest.raises(InvocationTimeout, match=r"no result within 0\.5 s"):
            await invoke(client, uniq, b"x", timeout=0.5)
        elapsed = time.monotonic() - start
        assert 0.45 <= elapsed < 1.5
    finally:
        await srv.stop(timeout=0.1)


async def test_handler_error_is_remote_error_and_server_keeps_serving(
    conns: tuple[Client, Client], uniq: str
) -> None:
    client, server = conns

    async def picky(p: bytes, h: Mapping[str, str]) -> bytes:
        if p == b"bad":
            raise ValueError("bad input: try good")
        return b"ok"

    srv = await serve(server, uniq, None, picky)
    try:
        with pytest.raises(RemoteError, match="bad input: try good"):
            await invoke(client, uniq, b"bad")
        assert await invoke(client, uniq, b"good") == b"ok"
    finally:
        await srv.stop()


async def test_async_result_stream(conns: tuple[Client, Client], uniq: str) -> None:
    client, server = conns
    big = os.urandom(client.max_payload + 100)

    async def chunks() -> AsyncIterator[bytes]:
        for c in (b"one", b"two", big):
            await asyncio.sleep(0.01)
            yield c

    async def streaming(p: bytes, h: Mapping[str, str]) -> Reply:
        return Reply(b"root:" + p, streams={(0,): chunks()})

    srv = await serve(server, uniq, None, streaming)
    try:
        async with Invocation(client, uniq, b"p") as inv:
            assert await inv.results() == b"root:p"
            got = [c async for c in inv.result_stream((0,))]
        assert b"".join(got) == b"onetwo" + big
    finally:
        await srv.stop()


async def test_async_param_stream(conns: tuple[Client, Client], uniq: str) -> None:
    client, server = conns

    async def collect(p: bytes, h: Mapping[str, str]) -> bytes:
        body = [c async for c in current_invocation().param_stream((0, 1))]
        return p + b"|" + b"".join(body)

    async def body() -> AsyncIterator[bytes]:
        for c in (b"a", b"b", b"c"):
            await asyncio.sleep(0.01)
            yield c

    srv = await serve(server, uniq, None, collect)
    try:
        assert await invoke(client, uniq, b"head", param_streams={(0, 1): body()}) == b"head|abc"
    finally:
        await srv.stop()


async def test_a_silent_param_stream_ends_the_invocation(conns: tuple[Client, Client], uniq: str) -> None:
    """A parameter stream that sends nothing for the server's `params_timeout` fails its reader
    (lost messages or a vanished caller must not hold the handler); slower is fine below it."""
    client, server = conns
    finished: list[str] = []

    async def collect(p: bytes, h: Mapping[str, str]) -> bytes:
        try:
            body = [c async for c in current_invocation().param_stream((0,))]
        except Exception as e:
            finished.append(str(e))
            raise
        finished.append("ok")
        return b"".join(body)

    def body(gap: float) -> AsyncIterator[bytes]:
        async def gen() -> AsyncIterator[bytes]:
            for c in (b"a", b"b"):
                yield c
                await asyncio.sleep(gap)

        return gen()

    srv = await serve(server, uniq, None, collect, params_timeout=1.0)
    try:
        # Gaps well within the idle timeout: served.
        assert await invoke(client, uniq, b"", param_streams={(0,): body(0.3)}, timeout=10) == b"ab"
        # A gap longer than it: the handler's read fails naming the stream, and the caller hears it.
        # (Had the handler waited for the stream, it would have read "ab" after the gap and succeeded.)
        with pytest.raises(RemoteError, match=r"parameter stream 0: nothing received for 1 s"):
            await invoke(client, uniq, b"", param_streams={(0,): body(5.0)}, timeout=10)
        assert finished[0] == "ok" and "nothing received for 1 s" in finished[1], finished
    finally:
        await srv.stop()


async def test_server_with_params_complete_serves_a_raw_spec_client(
    conns: tuple[Client, Client], uniq: str
) -> None:
    """A hand-written client that never closes its parameter stream (the decoder decides)."""
    client, server = conns
    srv = await serve(server, uniq, None, upper, params_complete=lambda b: len(b) >= 3)
    inbox = client.new_inbox()
    got: asyncio.Queue[Msg] = asyncio.Queue()
    sub = await client.subscribe(f"{inbox}.>", cb=got.put)
    hs_sub = await client.subscribe(inbox, cb=got.put)
    try:
        await client.publish(uniq, b"a", reply=inbox)
        hs = await asyncio.wait_for(got.get(), 2)
        assert hs.subject == inbox and hs.data == b"" and hs.reply
        await client.publish(f"{hs.reply}.params", b"bc")
        res = [await asyncio.wait_for(got.get(), 2) for _ in range(2)]
        assert [(m.subject, m.data) for m in res] == [(f"{inbox}.results", b"ABC"), (f"{inbox}.results", b"")]
    finally:
        await sub.unsubscribe()
        await hs_sub.unsubscribe()
        await srv.stop()


async def test_max_concurrency_bounds_running_handlers(conns: tuple[Client, Client], uniq: str) -> None:
    client, server = conns
    running = peak = 0

    async def busy(p: bytes, h: Mapping[str, str]) -> bytes:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return p

    srv = await serve(server, uniq, None, busy, max_concurrency=2)
    try:
        out = await asyncio.gather(*(invoke(client, uniq, bytes([i])) for i in range(8)))
        assert out == [bytes([i]) for i in range(8)]
        assert peak == 2
    finally:
        await srv.stop()
