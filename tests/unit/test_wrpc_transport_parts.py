"""Pure parts of the wRPC NATS transport: subjects, chunking, header sizes, error payloads."""

from __future__ import annotations

import asyncio
import re

import pytest

from wasmlattice.protocol.wrpc.streams import ChunkStream
from wasmlattice.protocol.wrpc.transport import (
    InvocationTimeout,
    NoResponders,
    RemoteError,
    UnexpectedEof,
    WrpcError,
    decode_error,
    encode_error,
    first_chunk_budget,
    header_block_size,
    index_subject,
    invocation_subject,
    new_traceparent,
    parse_index,
    split_payload,
    status_error,
)


def test_invocation_subject() -> None:
    assert (
        invocation_subject("default.comp", "wasi:keyvalue/store@0.2.0-draft", "get")
        == "default.comp.wrpc.0.0.1.wasi:keyvalue/store@0.2.0-draft.get"
    )
    assert (
        invocation_subject(None, "wasi:http/types@0.2.0", "fields")
        == "wrpc.0.0.1.wasi:http/types@0.2.0.fields"
    )
    assert invocation_subject("", "", "run") == "wrpc.0.0.1.run"


def test_index_subjects() -> None:
    assert index_subject("_INBOX.a.b.results", (0, 1)) == "_INBOX.a.b.results.0.1"
    assert index_subject("_INBOX.a.b.params", ()) == "_INBOX.a.b.params"
    assert parse_index("1.2.0") == (1, 2, 0)
    assert parse_index("") == ()


def test_split_payload() -> None:
    assert split_payload(b"", 4) == []
    assert split_payload(b"abc", 4) == [b"abc"]
    assert split_payload(b"abcdefghi", 4) == [b"abcd", b"efgh", b"i"]
    assert split_payload(b"abcdefgh", 4) == [b"abcd", b"efgh"]
    with pytest.raises(ValueError):
        split_payload(b"x", 0)


def test_header_block_and_first_chunk_budget() -> None:
    assert header_block_size(None) == 0
    assert header_block_size({}) == 0
    # b"NATS/1.0\r\n" + b"a: bc\r\n" + b"\r\n"
    assert header_block_size({"a": "bc"}) == 10 + 7 + 2
    assert first_chunk_budget(1000, "_INBOX.x", {"a": "bc"}) == 1000 - 8 - 19
    assert first_chunk_budget(10, "_INBOX.xxxxxxxx", None) == 0


def test_traceparent_format() -> None:
    tps = {new_traceparent() for _ in range(100)}
    assert len(tps) == 100
    assert all(re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", tp) for tp in tps)


@pytest.mark.parametrize("text", ["", "boom", "ü" * 100, "x" * 20000])
def test_error_payload_round_trip(text: str) -> None:
    enc = encode_error(text)
    assert decode_error(enc) == text


def test_error_payload_leb128_and_fallback() -> None:
    assert encode_error("hi") == b"\x02hi"
    assert encode_error("x" * 200)[:2] == b"\xc8\x01"
    # A peer sending bare UTF-8 still yields readable text.
    assert decode_error(b"plain failure") == "plain failure"


def test_status_errors() -> None:
    assert isinstance(status_error("s", "503", None), NoResponders)
    assert str(status_error("s", "503", None)).startswith("no responders for s")
    assert isinstance(status_error("s", "408", "Request Timeout"), InvocationTimeout)
    assert isinstance(status_error("s", "409", None), UnexpectedEof)
    other = status_error("s", "500", "oops")
    assert type(other) is WrpcError and "500 (oops)" in str(other)
    assert issubclass(RemoteError, WrpcError)


async def test_chunk_stream() -> None:
    s = ChunkStream()
    s.feed(b"a")
    s.feed(b"b")

    async def later() -> None:
        await asyncio.sleep(0.01)
        s.feed(b"c")
        s.feed(b"")
        s.feed(b"ignored after close")

    task = asyncio.create_task(later())
    assert await s.read_all() == b"abc"
    await task

    f = ChunkStream()
    f.feed(b"x")
    f.fail(RemoteError("nope"))
    it = aiter(f)
    assert await anext(it) == b"x"
    with pytest.raises(RemoteError):
        await anext(it)
