"""wasi:http types as the guest sees them: field rules, bodies, content-length, destinations."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from wasmlattice.runtime.fastcall import set_current_state
from wasmlattice.runtime.witypes import Err, Ok
from wasmlattice.wasi.ctx import WasiConfig, WasiCtx
from wasmlattice.wasi.http_body import OutgoingBody
from wasmlattice.wasi.http_client import destination_allowed
from wasmlattice.wasi.http_incoming import IncomingRequest, OutgoingResponse
from wasmlattice.wasi.http_types import Fields, method_from_wit, method_to_wit
from wasmlattice.wasi.io import BytePipe


@pytest.fixture
def wctx() -> Iterator[WasiCtx]:
    c = WasiCtx(WasiConfig())
    prev = set_current_state(SimpleNamespace(wasi=c))  # type: ignore[arg-type]
    yield c
    set_current_state(prev)


@pytest.mark.parametrize(
    "name",
    [
        "connection",
        "Keep-Alive",
        "host",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "http2-settings",
    ],
)
def test_forbidden_headers_are_refused(name: str) -> None:
    with pytest.raises(Err) as e:
        Fields.from_list([(name, b"x")])
    assert e.value.value == "forbidden"
    f = Fields()
    with pytest.raises(Err):
        f.append(name, b"x")


@pytest.mark.parametrize(
    ("name", "value"), [("bad name", b"v"), ("", b"v"), ("x", b"a\r\nb"), ("x", b"\x00")]
)
def test_invalid_syntax_is_refused(name: str, value: bytes) -> None:
    with pytest.raises(Err) as e:
        Fields.from_list([(name, value)])
    assert e.value.value == "invalid-syntax"


def test_fields_are_case_insensitive_ordered_and_repeatable() -> None:
    f = Fields.from_list([("X-A", b"1"), ("x-b", b"2"), ("x-a", b"3")])
    assert f.get("x-a") == [b"1", b"3"]
    assert f.has("X-B")
    f.set("x-a", [b"9"])
    assert f.list_entries() == [("x-b", b"2"), ("x-a", b"9")]
    f.delete("X-B")
    assert f.list_entries() == [("x-a", b"9")]
    c = f.clone()
    c.append("x-c", b"1")
    assert not f.has("x-c")


def test_request_headers_are_immutable(wctx: WasiCtx) -> None:
    req = IncomingRequest("GET", "/", "http", "h", [("x", b"1")], BytePipe(wctx))
    h = req.headers()
    for op in (lambda: h.append("y", b"2"), lambda: h.set("x", []), lambda: h.delete("x")):
        with pytest.raises(Err) as e:
            op()
        assert e.value.value == "immutable"


def test_body_can_be_taken_once(wctx: WasiCtx) -> None:
    req = IncomingRequest("POST", "/", "http", "h", [], BytePipe(wctx))
    req.consume()
    with pytest.raises(Err):
        req.consume()
    resp = OutgoingResponse(Fields())
    resp.body()
    with pytest.raises(Err):
        resp.body()


def test_status_code_range(wctx: WasiCtx) -> None:
    resp = OutgoingResponse(Fields())
    resp.set_status_code(418)
    assert resp.status_code() == 418
    for bad in (99, 1000):
        with pytest.raises(Err):
            resp.set_status_code(bad)


def test_content_length_is_enforced_on_finish(wctx: WasiCtx) -> None:
    resp = OutgoingResponse(Fields.from_list([("content-length", b"5")]))
    body = resp.body()
    body.write().write(b"abc")
    with pytest.raises(Err) as e:
        OutgoingBody.finish(body, None)
    assert e.value.value == ("HTTP-response-body-size", 3)
    assert resp.pipe is not None and resp.pipe.error is not None


def test_writing_past_content_length_fails_the_stream(wctx: WasiCtx) -> None:
    resp = OutgoingResponse(Fields.from_list([("content-length", b"2")]))
    out = resp.body().write()
    with pytest.raises(Err) as e:
        out.write(b"abc")
    assert e.value.value[0] == "last-operation-failed"


def test_dropping_an_unfinished_body_marks_it_failed(wctx: WasiCtx) -> None:
    resp = OutgoingResponse(Fields())
    body = resp.body()
    body.write().write(b"partial")
    body.drop()
    assert resp.pipe is not None and resp.pipe.eof and resp.pipe.error is not None


def test_finished_body_ends_cleanly_with_trailers(wctx: WasiCtx) -> None:
    resp = OutgoingResponse(Fields())
    body = resp.body()
    body.write().write(b"all")
    OutgoingBody.finish(body, Fields.from_list([("x-checksum", b"1")]))
    pipe = resp.pipe
    assert pipe is not None and pipe.eof and pipe.error is None
    assert pipe.chunks == [b"all"] and pipe.trailers == [("x-checksum", b"1")]


def test_incoming_body_stream_and_trailers(wctx: WasiCtx) -> None:
    pipe = BytePipe(wctx)
    pipe.put(b"hello")
    pipe.finish()
    body = IncomingRequest("POST", "/", "http", "h", [], pipe).consume()
    stream = body.stream()
    assert stream.blocking_read(100) == b"hello"
    with pytest.raises(Err) as e:
        stream.blocking_read(100)
    assert e.value.value == ("closed", None)
    trailers = type(body).finish(body)
    assert trailers.get() == Ok(Ok(None))
    assert isinstance(trailers.get(), Err)  # only once


@pytest.mark.parametrize(
    ("allowed", "host", "port", "ok"),
    [
        ((), "127.0.0.1", 80, False),
        (("*",), "example.com", 443, True),
        (("127.0.0.1",), "127.0.0.1", 8080, True),
        (("127.0.0.1:8080",), "127.0.0.1", 8080, True),
        (("127.0.0.1:8080",), "127.0.0.1", 8081, False),
        (("Example.COM",), "example.com", 80, True),
        (("[::1]:80",), "::1", 80, True),
        (("localhost",), "127.0.0.1", 80, False),
    ],
)
def test_outgoing_destinations(allowed: tuple[str, ...], host: str, port: int, ok: bool) -> None:
    assert destination_allowed(allowed, host, port) is ok


@pytest.mark.parametrize("m", ["GET", "POST", "PATCH", "OPTIONS", "PURGE"])
def test_methods_round_trip(m: str) -> None:
    assert method_from_wit(method_to_wit(m)) == m


async def test_dropping_a_body_stream_early_drains_the_rest_and_trailers_arrive() -> None:
    import asyncio

    c = WasiCtx(WasiConfig(), asyncio.get_running_loop())
    prev = set_current_state(SimpleNamespace(wasi=c))  # type: ignore[arg-type]
    try:
        pipe = BytePipe(c, capacity=8)
        body = IncomingRequest("POST", "/", "http", "h", [], pipe).consume()
        stream = body.stream()

        async def feed() -> None:  # the server's pump: more data than the pipe holds
            for _ in range(10):
                assert await pipe.awrite(b"0123456789")
            pipe.finish()

        feeder = asyncio.ensure_future(feed())
        await asyncio.sleep(0.01)
        assert not feeder.done()  # held back by the full pipe
        assert stream.read(4) == b"0123"
        stream.drop()
        await asyncio.wait_for(feeder, 2)  # the rest drains without a reader
        trailers = type(body).finish(body)
        assert trailers.get() == Ok(Ok(None))
    finally:
        set_current_state(prev)
