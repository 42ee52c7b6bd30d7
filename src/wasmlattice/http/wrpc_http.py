"""HTTP across the lattice: `wasi:http/incoming-handler` served and called as `wrpc:http/incoming-handler`.

wasmCloud serves a component's `wasi:http/incoming-handler@0.2.x` export over wRPC as
`wrpc:http/incoming-handler@0.1.0` function `handle` (docs/protocol.md#interfaces), so the HTTP server
provider can reach the component on any host of the lattice. The `wrpc:http@0.1.0` types, as this
module puts them on the wire (component-model value encoding plus wRPC's async values, see
`wrpc.codec`):

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

The serving side (`serve_http`) runs the guest with the component's `HttpTarget` (instance
bound, worker threads, deadline) like a local request; the calling side (`RemoteHttp`) is what
the HTTP server provider uses for a component that does not run on its host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from wasmlattice.http.server import (
    STREAM_GRACE,
    Exchange,
    bodyless,
    error_response,
    guest_request_headers,
    guest_response,
    run_guest,
    send_continue,
    split_target,
)
from wasmlattice.http.target import HttpTarget, SlotTimeout, interrupted
from wasmlattice.protocol.wrpc import codec, transport
from wasmlattice.runtime.fastcall import GuestTrap
from wasmlattice.runtime.witypes import (
    BYTES,
    STRING,
    U8,
    U32,
    U64,
    Err,
    Ok,
    Prim,
    lst,
    option,
    record,
    result,
    tup,
    variant,
)
from wasmlattice.wasi.ctx import WasiCtx
from wasmlattice.wasi.http import (
    FORBIDDEN_HEADERS,
    IncomingRequest,
    OutgoingResponse,
    ResponseOutparam,
    method_from_wit,
    method_to_wit,
)
from wasmlattice.wasi.io import BytePipe, IoError

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
_REQUEST_TAIL = codec.TupleCodec([METHOD, option(STRING), option(SCHEME), option(STRING), FIELDS], "request")
_RESPONSE_TAIL = codec.TupleCodec([U16, FIELDS], "response")
_ERROR_RESULT = codec.TupleCodec([result(None, ERROR_CODE)], "results")
_ERROR_CODE_DEC = codec.decoder(ERROR_CODE)
_BYTES_DEC = codec.decoder(BYTES)
_U8_ENC = codec.encoder(U8)
_U8_DEC = codec.decoder(U8)
_OPTION_FIELDS_ENC = codec.encoder(OPTION_FIELDS)
_OPTION_FIELDS_DEC = codec.decoder(OPTION_FIELDS)

# A pending stream and a pending future inline (both an empty list / `pending` case).
PENDING = b"\x00"

Entries = list[tuple[str, bytes]]


class WrpcHttpError(transport.WrpcError):
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
    return PENDING + codec.encode_future_ready(_OPTION_FIELDS_ENC, None) + tail


def decode_request(data: bytes | bytearray | memoryview) -> tuple[RequestHead, int]:
    """The `handle` parameters at the start of `data` and how many bytes they used.

    Raises `codec.TruncatedError` while incomplete, `codec.CodecError` when invalid.
    """
    with memoryview(data) as mv:
        try:
            inline, o = _BYTES_DEC(mv, 0)
        except codec.CodecError as e:
            raise e.within("request.body") from None
        ready, trailers, o = codec.decode_future(_OPTION_FIELDS_DEC, mv, o)
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
    except codec.CodecError:
        return _ERROR_RESULT.encode([Err(("internal-error", f"invalid error code {code!r}"))])


def decode_result(data: bytes | bytearray | memoryview) -> ResponseHead | Err:
    """The `handle` result: the response head, or `Err(error-code)`. `codec.CodecError` if invalid."""
    with memoryview(data) as mv:
        if not len(mv):
            raise codec.CodecError("empty result")
        if mv[0] == 1:
            code, o = _ERROR_CODE_DEC(mv, 1)
            _check_end(mv, o)
            return Err(code)
        if mv[0] != 0:
            raise codec.CodecError(f"invalid result status byte {mv[0]:#04x}")
        inline, o = _BYTES_DEC(mv, 1)
        ready, trailers, o = codec.decode_future(_OPTION_FIELDS_DEC, mv, o)
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
        raise codec.CodecError(f"{len(mv) - used} trailing bytes after the result")


def encode_trailers(trailers: Entries | None) -> bytes:
    """A pending trailers future's value, sent on its path: a bare `option<fields>`."""
    out = bytearray()
    _OPTION_FIELDS_ENC(None if trailers is None else fields_to_wire(trailers), out)
    return bytes(out)


def decode_trailers(data: bytes) -> Entries | None:
    """The value of a pending trailers future received on its path."""
    value, used = _OPTION_FIELDS_DEC(memoryview(data), 0)
    if used != len(data):
        raise codec.CodecError(f"{len(data) - used} trailing bytes after the trailers")
    return None if value is None else fields_from_wire(value)


def encode_body_chunk(data: bytes) -> bytes:
    """One non-empty piece of a pending `stream<u8>`."""
    return codec.encode_stream_chunk(_U8_ENC, data)


class StreamDecoder:
    """Decodes a pending `stream<u8>` from transport messages, which may cut chunks anywhere."""

    __slots__ = ("_buf", "ended")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.ended = False

    def feed(self, data: bytes) -> list[bytes]:
        """The complete chunks now decodable; sets `ended` at the end marker."""
        if self.ended:
            raise codec.CodecError("data after the end of the stream")
        self._buf += data
        out: list[bytes] = []
        while self._buf:
            try:
                chunk, used = codec.decode_stream_chunk(_U8_DEC, self._buf)
            except codec.TruncatedError:
                break
            del self._buf[:used]
            if not chunk:
                self.ended = True
                if self._buf:
                    raise codec.CodecError(f"{len(self._buf)} bytes after the end of the stream")
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


async def _with_idle_timeout(messages: AsyncIterator[bytes], idle: float) -> AsyncIterator[bytes]:
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


# -- serving side ---------------------------------------------------------------------------------


def params_complete(data: bytes) -> bool:
    """Whether `data` holds the whole `handle` parameters (for `transport.serve`)."""
    try:
        decode_request(data)
    except codec.CodecError:
        return False
    return True


class HttpExport:
    """Serves `wrpc:http/incoming-handler.handle` invocations with one component's HTTP target."""

    def __init__(self, component_id: str, target: HttpTarget, timeout: float) -> None:
        self.component_id = component_id
        self.target = target
        # How long an invocation waits for a free instance (the caller's time-out).
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, data: bytes, headers: Mapping[str, str]) -> transport.Reply | bytes:
        """One invocation: run the guest on the request; its response head, body and trailers."""
        cid = self.component_id
        try:
            req, _ = decode_request(data)
        except codec.CodecError as e:
            raise WrpcHttpError(f"invalid {INSTANCE}#{FUNCTION} parameters for {cid}: {e}") from None
        call = transport.current_invocation()
        target = self.target
        try:
            await target.acquire(self.timeout)
        except SlotTimeout as e:
            raise WrpcHttpError(str(e)) from None
        loop = asyncio.get_running_loop()
        ex = Exchange(loop)
        done = asyncio.Event()
        try:
            wctx = WasiCtx(target.config, loop)
            body = BytePipe(wctx)
            self._spawn(_feed_body(call, req, body))
            incoming = IncomingRequest(
                req.method, req.path_with_query, req.scheme, req.authority, req.headers, body
            )
            target.executor.submit(run_guest, target, ex, wctx, incoming, ResponseOutparam(ex.deliver))
        except BaseException as e:
            target.release()
            if isinstance(e, RuntimeError):  # the executor is shut down: the component was replaced
                raise WrpcHttpError(f"{cid} is stopping and cannot take the request") from None
            raise
        try:
            await ex.wait_first(STREAM_GRACE)
        finally:
            # The instance slot is the guest's until it returns, whatever happens to this call.
            self._spawn(self._settle(ex, done))
        response = ex.response
        if isinstance(response, Err):
            log.warning(
                "%s answered a request from %s with error code %s", cid, _source(headers), response.value
            )
            return encode_error_code(response.value)
        resp = response.value if isinstance(response, Ok) else response
        if not isinstance(resp, OutgoingResponse):
            raise WrpcHttpError(self._failure(ex, body, headers))
        state = _BodyState()
        return transport.Reply(
            encode_response(resp.status, resp.fields.entries),
            {RESPONSE_BODY: _send_body(resp, done, state), RESPONSE_TRAILERS: _send_trailers(state)},
        )

    def _failure(self, ex: Exchange, body: BytePipe, headers: Mapping[str, str]) -> str:
        """Why the guest set no response, for the caller (who answers 500)."""
        cid, exc = self.component_id, ex.error
        if isinstance(exc, GuestTrap):
            if interrupted(exc):
                return f"{cid} did not answer within its {self.target.timeout:g}s deadline"
            log.warning("%s trapped serving HTTP for %s: %s", cid, _source(headers), exc.reason)
            return f"{cid} trapped: {exc.reason}"
        if exc is not None:
            log.error("%s: host error while serving HTTP: %r", cid, exc)
            return f"{cid}: host error: {exc}"
        if body.error is not None:
            return f"{cid}: {body.error.message}"
        if isinstance(ex.response, Ok):
            return f"{cid} set an invalid response"
        return f"{cid} returned without setting a response"

    async def _settle(self, ex: Exchange, done: asyncio.Event) -> None:
        try:
            await ex.wait_finished()
        finally:
            self.target.release()
            done.set()
        e = ex.error
        if e is not None and isinstance(ex.response, (Ok, Err, OutgoingResponse)):
            reason = e.reason if isinstance(e, GuestTrap) else repr(e)
            log.error("%s failed after responding: %s", self.component_id, reason)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _source(headers: Mapping[str, str]) -> str:
    return headers.get(transport.SOURCE_ID, "a caller")


async def _feed_body(call: transport.ServerInvocation, req: RequestHead, pipe: BytePipe) -> None:
    """Move the request body (and trailers) from the invocation into the guest's pipe."""
    try:
        if req.body is not None:
            await pipe.awrite(req.body)
        else:
            async for chunk in decode_body(call.param_stream(REQUEST_BODY), "the request body"):
                if not await pipe.awrite(chunk):
                    break  # the guest stopped reading and does not want the rest
        trailers = req.trailers
        if not req.trailers_ready:
            trailers = decode_trailers(await call.param_stream(REQUEST_TRAILERS).read_all())
        pipe.finish(None, trailers)
    except Exception as e:
        pipe.finish(IoError(f"receiving the request body failed: {e}"))


class _BodyState:
    """What the trailers sender learns from the body sender: when it ended, how, and the trailers."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.ok = False
        self.trailers: Entries | None = None


async def _send_body(resp: OutgoingResponse, done: asyncio.Event, state: _BodyState) -> AsyncIterator[bytes]:
    """The guest's response body as stream chunks, then the end marker."""
    try:
        pipe = resp.pipe
        if pipe is None:
            await done.wait()  # the guest may still take the body before it returns
            pipe = resp.pipe
        if pipe is not None:
            while True:
                try:
                    data = await pipe.aread()
                except OSError as e:
                    raise WrpcHttpError(f"the response body failed: {e}") from None
                if data is None:
                    break
                for i in range(0, len(data), CHUNK):
                    yield encode_body_chunk(data[i : i + CHUNK])
            state.trailers = None if pipe.trailers is None else list(pipe.trailers)
        state.ok = True
        yield codec.STREAM_END
    finally:
        if not state.ok and resp.pipe is not None:
            resp.pipe.close_reader()  # nobody reads the rest: do not leave the guest blocked
        state.ended.set()


async def _send_trailers(state: _BodyState) -> AsyncIterator[bytes]:
    """The trailers future's value, once the body has ended (nothing if it failed)."""
    await state.ended.wait()
    if state.ok:
        yield encode_trailers(state.trailers)


# -- calling side ---------------------------------------------------------------------------------


class RemoteHttp:
    """Forwards HTTP requests to a component on another host of the lattice over wRPC."""

    def __init__(self, nc: Any, lattice: str, source_id: str, *, timeout: float, max_body: int) -> None:
        self.nc = nc
        self.lattice = lattice
        self.source_id = source_id
        # Until the response head: how long the remote host has to start answering.
        self.timeout = timeout
        self.max_body = max_body
        self._subjects: dict[str, str] = {}

    def subject(self, component_id: str) -> str:
        """Where `handle` of `component_id` is invoked (built once per component)."""
        subject = self._subjects.get(component_id)
        if subject is None:
            subject = transport.invocation_subject(f"{self.lattice}.{component_id}", INSTANCE, FUNCTION)
            self._subjects[component_id] = subject
        return subject

    def _not_running(self, component_id: str) -> web.Response:
        return error_response(
            503,
            f"component {component_id} is not running on any host of lattice {self.lattice}: no host "
            f"answered {INSTANCE}#{FUNCTION} for it; scale it on a host (e.g. `wash scale component`)",
        )

    async def forward(self, request: web.BaseRequest, component_id: str) -> web.StreamResponse:
        """Serve `request` with `component_id` running elsewhere in the lattice.

        `HttpHandler` has refused a declared body over the limit already; `_Upload` enforces the
        limit on what actually arrives.
        """
        await send_continue(request)
        path, authority = split_target(request.raw_path)
        params = encode_request(
            request.method,
            path,
            "https" if request.secure else "http",
            authority or request.host,
            guest_request_headers(request),
        )
        upload = _Upload(request, self.max_body)
        inv = transport.Invocation(
            self.nc,
            self.subject(component_id),
            params,
            headers={transport.SOURCE_ID: self.source_id, transport.TARGET_ID: component_id},
            timeout=self.timeout,
            param_streams={REQUEST_BODY: upload.chunks()},
        )
        try:
            await inv.start()
        except Exception as e:
            inv.close()
            return error_response(502, f"cannot send the request to {component_id} over the lattice: {e}")
        try:
            return await self._answer(request, inv, component_id, upload)
        finally:
            inv.close()

    async def _answer(
        self, request: web.BaseRequest, inv: transport.Invocation, cid: str, upload: _Upload
    ) -> web.StreamResponse:
        try:
            data = await inv.results()
        except transport.NoResponders:
            return self._not_running(cid)
        except transport.InvocationTimeout as e:
            # No handshake at all: no host took the invocation.
            if not inv.handshake_done:
                return self._not_running(cid)
            log.warning("%s: %s", cid, e)
            return error_response(504, f"component {cid} did not answer within {self.timeout:g}s")
        except transport.RemoteError as e:
            if upload.too_big:
                return error_response(413, f"request body exceeds {self.max_body} bytes")
            log.warning("%s failed on another host: %s", cid, e)
            return error_response(500, f"the component failed: {_remote_reason(e)}")
        except transport.WrpcError as e:
            log.warning("%s: invocation failed: %s", cid, e)
            return error_response(502, f"calling component {cid} over the lattice failed: {e}")
        try:
            head = decode_result(data)
        except codec.CodecError as e:
            log.warning("%s answered with an invalid wrpc:http result: %s", cid, e)
            return error_response(502, f"component {cid} answered with an invalid response: {e}")
        if isinstance(head, Err):
            log.warning("%s answered with error code %s", cid, head.value)
            return error_response(500, f"the component answered with an error: {head.value}")
        return await self._stream(request, inv, cid, head)

    async def _stream(
        self, request: web.BaseRequest, inv: transport.Invocation, cid: str, head: ResponseHead
    ) -> web.StreamResponse:
        out = guest_response(head.status, head.headers)
        no_body = bodyless(request.method, head.status)
        try:
            await out.prepare(request)
            if head.body is not None:
                if not no_body:
                    await out.write(head.body)
            else:
                messages = _with_idle_timeout(inv.result_stream(RESPONSE_BODY), BODY_IDLE_TIMEOUT)
                async for chunk in decode_body(messages, "the response body"):
                    if not no_body:
                        await out.write(chunk)
            await out.write_eof()
        except (OSError, transport.WrpcError, codec.CodecError) as e:
            # The body failed midway (or the client went away): abort the connection so the client
            # sees a truncated response rather than a clean end.
            if isinstance(e, ConnectionError):
                log.debug("%s: client went away during the response: %s", cid, e)  # routine
            else:
                log.warning("%s: response body from another host aborted: %s", cid, e)
            if request.transport is not None:
                request.transport.close()
        return out


def _remote_reason(e: transport.RemoteError) -> str:
    # The transport's text is "<subject>: the server failed: <reason>"; the subject adds nothing.
    text = str(e)
    _, sep, reason = text.partition(": the server failed: ")
    return reason if sep else text


class _Upload:
    """The client's request body as stream chunks for the invocation, within the size limit."""

    def __init__(self, request: web.BaseRequest, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.too_big = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """Encoded chunks, then the end marker; raises (no end marker: truncated) past the limit."""
        request = self.request
        total = 0
        if request.body_exists:
            while True:
                data = await request.content.readany()
                if not data:
                    break
                total += len(data)
                if total > self.limit:
                    self.too_big = True
                    raise WrpcHttpError(f"request body exceeds {self.limit} bytes")
                for i in range(0, len(data), CHUNK):
                    yield encode_body_chunk(data[i : i + CHUNK])
        yield codec.STREAM_END
