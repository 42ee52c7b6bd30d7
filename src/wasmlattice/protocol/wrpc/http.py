"""HTTP across the lattice: `wasi:http/incoming-handler` served and called as `wrpc:http/incoming-handler`.

wasmCloud serves a component's `wasi:http/incoming-handler@0.2.x` export over wRPC as
`wrpc:http/incoming-handler@0.1.0` function `handle` (docs/protocol.md#interfaces), so the HTTP server
provider can reach the component on any host of the lattice. The `wrpc:http@0.1.0` types, as this
module puts them on the wire (component-model value encoding plus wRPC's async values, see
`wrpc/codec.py` and `wrpc/async_values.py`):

    fields   = list<tuple<string, list<list<u8>>>>     each name once, with all its values
    request  = record { body: stream<u8>, trailers: future<option<fields>>, method: method,
                        path-with-query: option<string>, scheme: option<scheme>,
                        authority: option<string>, headers: fields }
    response = record { body: stream<u8>, trailers: future<option<fields>>, status: u16,
                        headers: fields }
    handle: func(request: request) -> result<response, error-code>

`method`, `scheme` and `error-code` are wasi:http@0.2.0's variants. Index paths of the async
values: the request is parameter 0, so its body streams on `R_s.params.0.0` and its trailers on
`R_s.params.0.1`; the result is result 0, and `result` adds no path segment (as the reference
encoder passes an `ok` payload's deferred values through), so the response body streams on
`R_c.results.0.0` and its trailers on `R_c.results.0.1`.

What each side sends: bodies always as pending streams (inline `00`), each chunk a `list<u8>`
and the end an empty list (`00`) before the transport closes the subject. Request trailers are
a ready `none` (`01 00`: aiohttp does not expose request trailers); response trailers are pending
and follow the body's end as a bare `option<fields>`. Both sides also accept a ready stream (its
bytes inline) and ready or pending trailers. A stream whose subject closes before its end marker
is a truncated body, an error on both sides.

This module is the codec; the host serves the export and forwards requests with it
(`host/wrpc_http.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from wasmlattice.protocol.wrpc.async_values import (
    decode_future,
    decode_stream_chunk,
    encode_future_ready,
    encode_stream_chunk,
)
from wasmlattice.protocol.wrpc.codec import decoder, encoder
from wasmlattice.protocol.wrpc.primitives import CodecError, TruncatedError
from wasmlattice.protocol.wrpc.transport import WrpcError
from wasmlattice.protocol.wrpc.tuples import TupleCodec
from wasmlattice.runtime.witypes import (
    BYTES,
    STRING,
    U8,
    U32,
    U64,
    Err,
    Prim,
    lst,
    option,
    record,
    result,
    tup,
    variant,
)
from wasmlattice.wasi.http_types import (
    FORBIDDEN_HEADERS,
    method_from_wit,
    method_to_wit,
)

log = logging.getLogger("wasmlattice.http")

INSTANCE = "wrpc:http/incoming-handler@0.1.0"
FUNCTION = "handle"
# Index paths of the async values (see the module docstring).
REQUEST_BODY: tuple[int, ...] = (0, 0)
REQUEST_TRAILERS: tuple[int, ...] = (0, 1)
RESPONSE_BODY: tuple[int, ...] = (0, 0)
RESPONSE_TRAILERS: tuple[int, ...] = (0, 1)
# A body chunk sent as one stream element list: big enough to amortise per-message costs, small
# enough that a NATS message (1 MiB by default) usually carries a whole chunk.
CHUNK = 64 * 1024
# The longest a caller waits for the next piece of a response body: a remote guest runs at most
# its `max_execution_time` (wasmCloud's default, 600 s), so a silent stream longer than that means
# its host is gone.
BODY_IDLE_TIMEOUT = 600.0

U16 = Prim("u16")

# -- the wrpc:http@0.1.0 types ------------------------------------------------------------------

FIELDS = lst(tup(STRING, lst(BYTES)))
OPTION_FIELDS = option(FIELDS)
METHOD = variant(
    "get", "head", "post", "put", "delete", "connect", "options", "trace", "patch", ("other", STRING)
)
SCHEME = variant("HTTP", "HTTPS", ("other", STRING))
DNS_ERROR_PAYLOAD = record(rcode=option(STRING), info_code=option(U16))
TLS_ALERT_RECEIVED_PAYLOAD = record(alert_id=option(U8), alert_message=option(STRING))
FIELD_SIZE_PAYLOAD = record(field_name=option(STRING), field_size=option(U32))
ERROR_CODE = variant(
    "DNS-timeout",
    ("DNS-error", DNS_ERROR_PAYLOAD),
    "destination-not-found",
    "destination-unavailable",
    "destination-IP-prohibited",
    "destination-IP-unroutable",
    "connection-refused",
    "connection-terminated",
    "connection-timeout",
    "connection-read-timeout",
    "connection-write-timeout",
    "connection-limit-reached",
    "TLS-protocol-error",
    "TLS-certificate-error",
    ("TLS-alert-received", TLS_ALERT_RECEIVED_PAYLOAD),
    "HTTP-request-denied",
    "HTTP-request-length-required",
    ("HTTP-request-body-size", option(U64)),
    "HTTP-request-method-invalid",
    "HTTP-request-URI-invalid",
    "HTTP-request-URI-too-long",
    ("HTTP-request-header-section-size", option(U32)),
    ("HTTP-request-header-size", option(FIELD_SIZE_PAYLOAD)),
    ("HTTP-request-trailer-section-size", option(U32)),
    ("HTTP-request-trailer-size", FIELD_SIZE_PAYLOAD),
    "HTTP-response-incomplete",
    ("HTTP-response-header-section-size", option(U32)),
    ("HTTP-response-header-size", FIELD_SIZE_PAYLOAD),
    ("HTTP-response-body-size", option(U64)),
    ("HTTP-response-trailer-section-size", option(U32)),
    ("HTTP-response-trailer-size", FIELD_SIZE_PAYLOAD),
    ("HTTP-response-transfer-coding", option(STRING)),
    ("HTTP-response-content-coding", option(STRING)),
    "HTTP-response-timeout",
    "HTTP-upgrade-failed",
    "HTTP-protocol-error",
    "loop-detected",
    "configuration-error",
    ("internal-error", option(STRING)),
)
# The synchronous fields after a record's two async ones.
_REQUEST_TAIL = TupleCodec([METHOD, option(STRING), option(SCHEME), option(STRING), FIELDS], "request")
_RESPONSE_TAIL = TupleCodec([U16, FIELDS], "response")
_ERROR_RESULT = TupleCodec([result(None, ERROR_CODE)], "results")
_ERROR_CODE_DEC = decoder(ERROR_CODE)
_BYTES_DEC = decoder(BYTES)
_U8_ENC = encoder(U8)
_U8_DEC = decoder(U8)
_OPTION_FIELDS_ENC = encoder(OPTION_FIELDS)
_OPTION_FIELDS_DEC = decoder(OPTION_FIELDS)

# A pending stream and a pending future inline (both an empty list / `pending` case).
PENDING = b"\x00"

Entries = list[tuple[str, bytes]]


class WrpcHttpError(WrpcError):
    """A wrpc:http invocation could not be served or answered; the message says why."""


# -- values -------------------------------------------------------------------------------------


def fields_to_wire(entries: Iterable[tuple[str, bytes]]) -> list[tuple[str, list[bytes]]]:
    """(name, value) pairs as `fields`: each name once, in first-seen order, with all its values."""
    grouped: dict[str, list[bytes]] = {}
    for name, value in entries:
        grouped.setdefault(name, []).append(value)
    return list(grouped.items())


def fields_from_wire(fields: Iterable[tuple[str, list[bytes]]]) -> Entries:
    """`fields` as lower-case (name, value) pairs, without hop-by-hop/forbidden headers."""
    out: Entries = []
    for name, values in fields:
        low = name.lower()
        if low in FORBIDDEN_HEADERS:
            continue
        out.extend((low, v) for v in values)
    return out


def scheme_to_wit(scheme: str | None) -> Any:
    """A URL scheme as the `scheme` variant (None stays None)."""
    if scheme is None:
        return None
    low = scheme.lower()
    return ("HTTP", None) if low == "http" else ("HTTPS", None) if low == "https" else ("other", scheme)


def scheme_from_wit(v: Any) -> str | None:
    """The `scheme` variant as the string `IncomingRequest` takes."""
    if v is None:
        return None
    name, payload = v
    return "http" if name == "HTTP" else "https" if name == "HTTPS" else str(payload)


@dataclass
class RequestHead:
    """A decoded `request` without its async parts' later values."""

    method: str
    path_with_query: str | None
    scheme: str | None
    authority: str | None
    headers: Entries
    body: bytes | None  # the whole body when sent inline, None when it streams on its path
    trailers_ready: bool
    trailers: Entries | None


@dataclass
class ResponseHead:
    """A decoded `response` without its async parts' later values."""

    status: int
    headers: Entries
    body: bytes | None
    trailers_ready: bool
    trailers: Entries | None


def encode_request(
    method: str,
    path_with_query: str | None,
    scheme: str | None,
    authority: str | None,
    headers: Iterable[tuple[str, bytes]],
) -> bytes:
    """The `handle` parameters for a request whose body streams on its path and has no trailers."""
    tail = _REQUEST_TAIL.encode(
        [method_to_wit(method), path_with_query, scheme_to_wit(scheme), authority, fields_to_wire(headers)]
    )
    return PENDING + encode_future_ready(_OPTION_FIELDS_ENC, None) + tail


def decode_request(data: bytes | bytearray | memoryview) -> tuple[RequestHead, int]:
    """The `handle` parameters at the start of `data` and how many bytes they used.

    Raises `TruncatedError` while incomplete, `CodecError` when invalid.
    """
    with memoryview(data) as mv:
        try:
            inline, o = _BYTES_DEC(mv, 0)
        except CodecError as e:
            raise e.within("request.body") from None
        ready, trailers, o = decode_future(_OPTION_FIELDS_DEC, mv, o)
        (method, pwq, scheme, authority, headers), used = _REQUEST_TAIL.decode_prefix(mv[o:])
    return RequestHead(
        method_from_wit(method),
        pwq,
        scheme_from_wit(scheme),
        authority,
        fields_from_wire(headers),
        inline or None,
        ready,
        None if trailers is None else fields_from_wire(trailers),
    ), o + used


def encode_response(status: int, headers: Iterable[tuple[str, bytes]]) -> bytes:
    """`ok(response)` as the result, its body and trailers pending (they follow on their paths)."""
    return b"\x00" + PENDING + PENDING + _RESPONSE_TAIL.encode([status, fields_to_wire(headers)])


def encode_error_code(code: Any) -> bytes:
    """`err(error-code)` as the result; a code that is not a valid `error-code` becomes internal-error."""
    try:
        return _ERROR_RESULT.encode([Err(code)])
    except CodecError:
        return _ERROR_RESULT.encode([Err(("internal-error", f"invalid error code {code!r}"))])


def decode_result(data: bytes | bytearray | memoryview) -> ResponseHead | Err:
    """The `handle` result: the response head, or `Err(error-code)`. `CodecError` if invalid."""
    with memoryview(data) as mv:
        if not len(mv):
            raise CodecError("empty result")
        if mv[0] == 1:
            code, o = _ERROR_CODE_DEC(mv, 1)
            _check_end(mv, o)
            return Err(code)
        if mv[0] != 0:
            raise CodecError(f"invalid result status byte {mv[0]:#04x}")
        inline, o = _BYTES_DEC(mv, 1)
        ready, trailers, o = decode_future(_OPTION_FIELDS_DEC, mv, o)
        (status, headers), used = _RESPONSE_TAIL.decode_prefix(mv[o:])
        _check_end(mv, o + used)
    return ResponseHead(
        status,
        fields_from_wire(headers),
        inline or None,
        ready,
        None if trailers is None else fields_from_wire(trailers),
    )


def _check_end(mv: memoryview, used: int) -> None:
    if used != len(mv):
        raise CodecError(f"{len(mv) - used} trailing bytes after the result")


def encode_trailers(trailers: Entries | None) -> bytes:
    """A pending trailers future's value, sent on its path: a bare `option<fields>`."""
    out = bytearray()
    _OPTION_FIELDS_ENC(None if trailers is None else fields_to_wire(trailers), out)
    return bytes(out)


def decode_trailers(data: bytes) -> Entries | None:
    """The value of a pending trailers future received on its path."""
    value, used = _OPTION_FIELDS_DEC(memoryview(data), 0)
    if used != len(data):
        raise CodecError(f"{len(data) - used} trailing bytes after the trailers")
    return None if value is None else fields_from_wire(value)


def encode_body_chunk(data: bytes) -> bytes:
    """One non-empty piece of a pending `stream<u8>`."""
    return encode_stream_chunk(_U8_ENC, data)


class StreamDecoder:
    """Decodes a pending `stream<u8>` from transport messages, which may cut chunks anywhere."""

    __slots__ = ("_buf", "ended")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.ended = False

    def feed(self, data: bytes) -> list[bytes]:
        """The complete chunks now decodable; sets `ended` at the end marker."""
        if self.ended:
            raise CodecError("data after the end of the stream")
        self._buf += data
        out: list[bytes] = []
        while self._buf:
            try:
                chunk, used = decode_stream_chunk(_U8_DEC, self._buf)
            except TruncatedError:
                break
            del self._buf[:used]
            if not chunk:
                self.ended = True
                if self._buf:
                    raise CodecError(f"{len(self._buf)} bytes after the end of the stream")
                break
            assert isinstance(chunk, bytes)
            out.append(chunk)
        return out


async def decode_body(messages: AsyncIterator[bytes], what: str) -> AsyncIterator[bytes]:
    """The bytes of a pending `stream<u8>` received as `messages`; raises if it closes before its end."""
    dec = StreamDecoder()
    async for msg in messages:
        for chunk in dec.feed(msg):
            yield chunk
        if dec.ended:
            return
    raise WrpcHttpError(f"{what} closed before its end marker (the sender failed or went away)")


async def with_idle_timeout(messages: AsyncIterator[bytes], idle: float) -> AsyncIterator[bytes]:
    it = messages.__aiter__()
    while True:
        try:
            async with asyncio.timeout(idle):
                msg = await it.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise WrpcHttpError(f"nothing arrived for {idle:g} s") from None
        yield msg


def params_complete(data: bytes) -> bool:
    """Whether `data` holds the whole `handle` parameters (for `server.serve`)."""
    try:
        decode_request(data)
    except CodecError:
        return False
    return True
