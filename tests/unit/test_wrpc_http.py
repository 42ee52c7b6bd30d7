"""The wrpc:http@0.1.0 values on the wire: `handle`'s request parameter and its result, byte for byte."""

from __future__ import annotations

import pytest

from wasmlattice.protocol.wrpc.async_values import STREAM_END
from wasmlattice.protocol.wrpc.http import (
    ERROR_CODE,
    StreamDecoder,
    decode_request,
    decode_result,
    decode_trailers,
    encode_body_chunk,
    encode_error_code,
    encode_request,
    encode_response,
    encode_trailers,
    params_complete,
)
from wasmlattice.protocol.wrpc.primitives import CodecError
from wasmlattice.runtime.witypes import Err

# GET /a?b=1 on http://h with header `x` twice (values 1 and 2).
GOLDEN_REQUEST = (
    b"\x00"  # body: stream<u8>, pending (chunks follow on R_s.params.0.0)
    b"\x01\x00"  # trailers: future<option<fields>>, ready(none)
    b"\x00"  # method: get
    b"\x01\x06/a?b=1"  # path-with-query: some("/a?b=1")
    b"\x01\x00"  # scheme: some(HTTP)
    b"\x01\x01h"  # authority: some("h")
    b"\x01\x01x\x02\x011\x012"  # headers: [("x", ["1", "2"])]
)


def test_request_golden_bytes() -> None:
    wire = encode_request("GET", "/a?b=1", "http", "h", [("x", b"1"), ("x", b"2")])
    assert wire == GOLDEN_REQUEST
    head, used = decode_request(wire)
    assert used == len(wire)
    assert (head.method, head.path_with_query, head.scheme, head.authority) == ("GET", "/a?b=1", "http", "h")
    assert head.headers == [("x", b"1"), ("x", b"2")]
    assert head.body is None  # pending: it streams
    assert head.trailers_ready and head.trailers is None


def test_request_other_method_scheme_and_forbidden_headers() -> None:
    wire = encode_request("PURGE", None, "wss", None, [("connection", b"close"), ("a", b"\xff")])
    # method other("PURGE"), no path, scheme other("wss"), no authority; the receiving side drops
    # hop-by-hop headers such as `connection` (the guest must not see them).
    assert wire[3:10] == bytes([0x09, 0x05, *b"PURGE"])
    head, _ = decode_request(wire)
    assert head.method == "PURGE" and head.scheme == "wss"
    assert head.path_with_query is None and head.authority is None
    assert head.headers == [("a", b"\xff")]


def test_request_with_inline_body_and_pending_trailers() -> None:
    # A peer may send a ready stream (its bytes inline) and pending trailers.
    # body ready("abc"), trailers pending, method post, no path, scheme or authority, no headers.
    wire = bytes([0x03, *b"abc", 0x00, 0x02, 0x00, 0x00, 0x00, 0x00])
    head, used = decode_request(wire)
    assert used == len(wire)
    assert head.body == b"abc" and head.method == "POST"
    assert not head.trailers_ready


def test_request_completeness() -> None:
    assert params_complete(GOLDEN_REQUEST)
    for cut in range(len(GOLDEN_REQUEST)):
        assert not params_complete(GOLDEN_REQUEST[:cut]), cut


def test_response_golden_bytes() -> None:
    wire = encode_response(200, [("content-type", b"text/plain")])
    assert wire == (
        b"\x00"  # result: ok
        b"\x00\x00"  # body pending, trailers pending
        b"\xc8\x01"  # status 200 (LEB128 u16)
        b"\x01\x0ccontent-type\x01\x0atext/plain"  # headers
    )
    head = decode_result(wire)
    assert not isinstance(head, Err)
    assert head.status == 200 and head.headers == [("content-type", b"text/plain")]
    assert head.body is None and not head.trailers_ready


def test_error_code_result() -> None:
    assert len(ERROR_CODE.cases) == 39  # wasi:http@0.2.0's error-code
    wire = encode_error_code(("internal-error", "boom"))
    assert wire == bytes([0x01, 0x26, 0x01, 0x04, *b"boom"])
    assert decode_result(wire) == Err(("internal-error", "boom"))
    assert decode_result(encode_error_code(("HTTP-request-denied", None))) == Err(
        ("HTTP-request-denied", None)
    )
    # A value that is no error-code still answers an error the caller can show.
    fallback = decode_result(encode_error_code(("no-such-code", 1)))
    assert isinstance(fallback, Err) and fallback.value[0] == "internal-error"
    with pytest.raises(CodecError):
        decode_result(wire + b"\x00")


def test_body_stream_decodes_across_message_boundaries() -> None:
    body = bytes(range(256)) * 700  # 179200 bytes: a multi-byte LEB128 length
    wire = encode_body_chunk(body[:100_000]) + encode_body_chunk(body[100_000:]) + STREAM_END
    assert wire[:4] == bytes([0xA0, 0x8D, 0x06, 0x00])  # 100000 as LEB128, then the first byte
    dec = StreamDecoder()
    got: list[bytes] = []
    for i in range(0, len(wire), 777):  # cut anywhere, as the transport may
        got += dec.feed(wire[i : i + 777])
    assert dec.ended and b"".join(got) == body
    with pytest.raises(CodecError):
        dec.feed(b"\x01x")


def test_trailers_value() -> None:
    assert encode_trailers(None) == b"\x00"
    wire = encode_trailers([("grpc-status", b"0")])
    assert wire == bytes([0x01, 0x01, 0x0B, *b"grpc-status", 0x01, 0x01, *b"0"])
    assert decode_trailers(wire) == [("grpc-status", b"0")]
