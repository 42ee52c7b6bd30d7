"""The pieces of outgoing-HTTP record/replay (replay/outgoing.py): the body tap, giving read bytes
back, following a response (within the cap and over it), checking entries, comparing requests."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from tests.unit.test_wasi_http import wctx
from wasmlattice.replay import outgoing
from wasmlattice.replay.outgoing import BodyTap, RecordedExchange, ReplayedExchange, request_difference
from wasmlattice.replay.recording import CallLog, parse
from wasmlattice.replay.values import RecordingError
from wasmlattice.runtime.witypes import Err, OptionT, Prim, VariantT
from wasmlattice.wasi.ctx import WasiConfig, WasiCtx
from wasmlattice.wasi.http_outgoing import FutureIncomingResponse, IncomingResponse
from wasmlattice.wasi.io import BytePipe, OutputStream, tap_writes

__all__ = ["wctx"]  # the WASI context fixture of test_wasi_http, used here too

ERROR_CODE = VariantT((("connection-refused", None), ("internal-error", OptionT(Prim("string")))))


def drain(pipe: BytePipe) -> bytes:
    """Everything buffered in `pipe` (it has ended)."""
    out = b""
    with pipe.cond:
        while (chunk := pipe.take(1 << 20)) is not None:
            out += chunk
    return out


def test_tap_sees_held_and_later_writes_and_forwards_them(wctx: WasiCtx) -> None:
    pipe = BytePipe(wctx)
    stream = OutputStream(pipe)
    stream.write(b"before ")
    tap = BodyTap()
    tap_writes(pipe, tap.add)
    stream.write(b"after")
    pipe.finish()
    assert tap.data() == b"before after"
    assert drain(pipe) == b"before after"  # still sent


def test_tap_without_forward_keeps_the_pipe_empty_so_writers_never_wait(wctx: WasiCtx) -> None:
    pipe = BytePipe(wctx, capacity=16)
    stream = OutputStream(pipe)
    stream.write(b"x" * 10)
    tap = BodyTap(cap=100)
    tap_writes(pipe, tap.add, forward=False)
    for _ in range(20):  # 200 bytes through a 16-byte pipe nobody reads
        assert stream.check_write() == 16
        stream.write(b"y" * 10)
    assert pipe.size == 0
    assert tap.over and tap.size == 210 and tap.data() == b""


def test_give_back_puts_bytes_in_front(wctx: WasiCtx) -> None:
    pipe = BytePipe(wctx)
    pipe.put(b"world")
    with pipe.cond:
        taken = pipe.take(100)
    assert taken == b"world"
    pipe.put(b"!")
    pipe.give_back(b"hello world")
    pipe.finish()
    assert drain(pipe) == b"hello world!"


def test_when_resolved_calls_once_before_or_after(wctx: WasiCtx) -> None:
    got: list[Any] = []
    early = FutureIncomingResponse(wctx)
    early.when_resolved(got.append)
    early.resolve(Err("a"))
    early.resolve(Err("b"))  # a second outcome is ignored
    late = FutureIncomingResponse(wctx)
    late.resolve(Err("c"))
    late.when_resolved(got.append)
    assert [e.value for e in got] == ["a", "c"]


def exchange_entry() -> dict[str, Any]:
    req = {
        "method": "GET",
        "scheme": "http",
        "authority": "h",
        "path_with_query": "/",
        "headers": [],
        "body": None,
    }
    return {"call": "wasi:http/outgoing-handler@0.2.0#handle", "args": [req, None], "response": None}


async def follow(
    body_parts: list[bytes], monkeypatch: pytest.MonkeyPatch, cap: int
) -> tuple[dict[str, Any], bytes]:
    """Follow a response streamed in `body_parts`: the recorded entry and what the guest reads."""
    monkeypatch.setattr(outgoing, "MAX_EXCHANGE_BODY", cap)
    c = WasiCtx(WasiConfig(), asyncio.get_running_loop())
    entry = exchange_entry()
    ex = RecordedExchange(CallLog(), entry, None, ERROR_CODE)
    inner, outer = FutureIncomingResponse(c), FutureIncomingResponse(c)
    task = asyncio.create_task(ex.follow(inner, outer))
    pipe = BytePipe(c)
    resp = IncomingResponse(200, [("content-type", b"text/plain")], pipe)
    inner.resolve(resp)
    for part in body_parts:
        await asyncio.sleep(0.01)  # the follower reads each part as it comes
        await pipe.awrite(part)
    pipe.finish()
    await asyncio.wait_for(task, 10)
    assert outer.result is resp
    return entry, drain(pipe)


async def test_follow_records_the_whole_body_and_the_guest_reads_it_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry, read = await follow([b"0123", b"4567", b"89"], monkeypatch, cap=10)
    assert entry["response"] == {
        "status": 200,
        "headers": [["content-type", "text/plain"]],
        "body": {"text": "0123456789"},
        "body_error": None,
    }
    assert "unreplayable" not in entry
    assert read == b"0123456789"


async def test_follow_over_the_cap_hands_everything_on_and_marks_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parts = [b"0123", b"4567", b"89ab", b"cdef"]
    entry, read = await follow(parts, monkeypatch, cap=10)
    assert "body" not in entry["response"] and entry["response"]["status"] == 200
    assert "over 10 bytes" in entry["unreplayable"]
    assert read == b"".join(parts)  # nothing lost, nothing reordered


async def test_follow_records_the_error_code() -> None:
    c = WasiCtx(WasiConfig(), asyncio.get_running_loop())
    entry = exchange_entry()
    ex = RecordedExchange(CallLog(), entry, None, ERROR_CODE)
    inner, outer = FutureIncomingResponse(c), FutureIncomingResponse(c)
    inner.resolve(Err(("connection-refused", None)))  # before anyone follows: still seen
    await asyncio.wait_for(ex.follow(inner, outer), 10)
    assert entry["response"] == {"error": {"case": "connection-refused"}}
    assert isinstance(outer.result, Err) and outer.result.value == ("connection-refused", None)


def recording_with(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": "wasmlattice-recording",
        "version": 1,
        "component": {"id": "x", "path": "/x.wasm", "sha256": None},
        "request": {
            "method": "GET",
            "path_with_query": "/",
            "scheme": "http",
            "authority": "a",
            "headers": [],
            "body": {"text": ""},
        },
        "calls": [entry],
        "outcome": {"status": 200, "headers": [], "body": {"text": ""}, "trap": None},
    }


def good_entry() -> dict[str, Any]:
    req = {
        "method": "POST",
        "scheme": "http",
        "authority": "127.0.0.1:9",
        "path_with_query": "/x",
        "headers": [["content-type", "text/plain"]],
        "body": {"text": "hi"},
    }
    return {
        "call": "wasi:http/outgoing-handler@0.2.0#handle",
        "args": [req, None],
        "result": {"ok": {"resource": "future-incoming-response", "id": 1}},
        "response": {"status": 200, "headers": [], "body": {"text": "ok"}, "body_error": None},
    }


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("response", "status"), 42, "calls[0].response.status"),
        (("response", "headers"), [["a"]], "calls[0].response.headers[0]"),
        (("response", "body"), {"base64": "!"}, "calls[0].response.body"),
        (("args", 0, "headers"), "x", "calls[0].args[0].headers"),
        (("args", 0, "body"), None, "calls[0].args[0].body"),
        (("args", 0, "method"), 1, "calls[0].args[0].method"),
        (
            ("args", 1),
            {"connect_timeout": -1, "first_byte_timeout": None, "between_bytes_timeout": None},
            "calls[0].args[1].connect_timeout",
        ),
    ],
)
def test_a_bad_exchange_entry_names_the_field(path: tuple[Any, ...], value: Any, field: str) -> None:
    entry = good_entry()
    parse(recording_with(copy.deepcopy(entry)))  # the good one is accepted
    target: Any = entry
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(RecordingError) as e:
        parse(recording_with(entry))
    assert str(e.value).startswith(f"{field}:"), e.value


def test_an_unreplayable_entry_may_leave_bodies_out() -> None:
    entry = good_entry()
    entry["args"][0]["body"] = None
    del entry["response"]["body"]
    entry["unreplayable"] = "the request body is over ..."
    parse(recording_with(entry))
    del entry["unreplayable"]
    with pytest.raises(RecordingError, match=r"calls\[0\]\.args\[0\]\.body"):
        parse(recording_with(entry))


def test_request_difference_names_the_first_field() -> None:
    exp = good_entry()["args"]
    got = copy.deepcopy(exp)
    assert request_difference(exp, got) is None
    got[0]["headers"].append(["x-more", "1"])
    assert request_difference(exp, got) == ("request.headers[1]", "(none)", "x-more: 1")
    got[0]["path_with_query"] = "/y"
    assert request_difference(exp, got) == ("request.path_with_query", '"/x"', '"/y"')


def test_replayed_body_is_compared_once_ended(wctx: WasiCtx) -> None:
    pipe = BytePipe(wctx)
    tap = BodyTap()
    tap_writes(pipe, tap.add, forward=False)
    ex = ReplayedExchange(3, "h#handle", b"hello", tap, pipe)
    pipe.put(b"help")
    assert ex.check(final=False) is None  # still being written
    pipe.finish()
    where, expected, got = ex.check(final=False) or ("", "", "")
    assert where == "call 3 (h#handle) request.body (byte 3)"
    assert expected == "5 bytes: 'hello'" and got == "4 bytes: 'help'"
    assert ex.check(final=True) is None  # reported once
