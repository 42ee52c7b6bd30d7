"""HTTP ingress: serve `wasi:http/incoming-handler` guests over HTTP/1.1 with aiohttp.

`HttpHandler` turns each aiohttp request into the guest's `incoming-request`, runs the guest
through the host's one guest-call path (`runtime.execution.start_guest`: instance bound, inline or
worker thread, deadline) and streams its response back. What serves a request is resolved per
request: the http-server capability resolves by listener address, path or host through the host's
router (a local target, or a forwarder to another host); `wasmlattice run` resolves every request
to its one component.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from wasmlattice.observability import tracing
from wasmlattice.runtime.execution import (
    HostBusy,
    Interruption,
    SlotTimeout,
    Workload,
    interrupted,
    note_failure,
    start_guest,
    stopped,
)
from wasmlattice.runtime.fastcall import GuestTrap
from wasmlattice.runtime.pool import InstancePool
from wasmlattice.runtime.witypes import Err, Ok
from wasmlattice.wasi.ctx import WasiConfig, WasiCtx
from wasmlattice.wasi.http_client import OutgoingClient
from wasmlattice.wasi.http_incoming import IncomingRequest, OutgoingResponse, ResponseOutparam
from wasmlattice.wasi.http_types import FORBIDDEN_HEADERS, header_text
from wasmlattice.wasi.io import BytePipe, IoError

if TYPE_CHECKING:  # the OpenTelemetry SDK is imported only when metrics are on
    from wasmlattice.observability.metrics import HostMetrics

log = logging.getLogger("wasmlattice.http")

INCOMING_HANDLER = "wasi:http/incoming-handler"
# The invocation an HTTP request is counted as (metrics: `operation`, as `ns:pkg/iface/func`).
HTTP_OPERATION = f"{INCOMING_HANDLER}/handle"


@dataclass(frozen=True)
class IngressLimits:
    """What one HTTP listener tolerates from its clients (docs/lattice.md, README `run` options).

    `header_timeout`: seconds a new connection has to send a complete request head.
    `idle_timeout`: seconds a kept-alive connection may wait for its next complete request head.
    `body_timeout`: seconds a request body may stall (no new bytes) before the request fails.
    `max_connections`: open connections per listener; past it a new one is answered 503 with
    `Retry-After` and closed. The effective cap is at most half the process's file-descriptor
    limit, so a listener cannot starve the rest of the process.
    """

    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    body_timeout: float = 30.0
    max_connections: int = 1000

    def connection_cap(self) -> int:
        """`max_connections`, lowered to half the process's soft file-descriptor limit."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft // 2))


# Seconds a refused client is told to wait (`Retry-After`). A refusal waits up to
# REFUSAL_LINGER for the request the client sent (read and discarded) before it closes: closing
# with it unread would reset the connection, and the client would not see the 503. At most
# MAX_LINGERING refusals wait at once, so refusing cannot use up the descriptors the cap saves.
RETRY_AFTER = 1
REFUSAL_LINGER = 0.25
MAX_LINGERING = 64
_BUSY_BODY = b"too many connections; retry later\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: %d\r\nConnection: close\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s"
) % (RETRY_AFTER, len(_BUSY_BODY), _BUSY_BODY)
_V09_BODY = b"HTTP/0.9 is not supported; send HTTP/1.0 or HTTP/1.1\n"
_V09 = (
    b"HTTP/1.1 505 HTTP Version Not Supported\r\nConnection: close\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s"
) % (len(_V09_BODY), _V09_BODY)


class _Refusal(asyncio.Protocol):
    """A connection past the listener's cap: answered 503 with `Retry-After`, then closed."""

    def __init__(self, server: IngressServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an `asyncio.Transport` subclass).
        transport = cast(asyncio.Transport, transport)
        transport.write(_BUSY)
        if self.server.lingering >= MAX_LINGERING:
            transport.close()
            return
        self.server.lingering += 1
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(REFUSAL_LINGER, self._close)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._close()  # the request was read (and is discarded): closing now sends the 503 cleanly

    def eof_received(self) -> bool:
        self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.server.lingering -= 1
            self.timer = None


class _Connection(RequestHandler):
    """aiohttp's HTTP/1 connection, plus a header-read timeout and one-line malformed-request logs."""

    def __init__(self, manager: IngressServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.ingress = manager
        self.head_timer: asyncio.TimerHandle | None = None
        # Called when the client goes away: interrupts the guest serving its request.
        self.on_lost: set[Callable[[], None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # aiohttp's keep-alive timer covers every wait for a request head; this shorter one
        # covers a new connection's first (set once per connection, nothing per request).
        self.head_timer = self._loop.call_later(self.ingress.limits.header_timeout, self._head_timeout)

    def _head_timeout(self) -> None:
        self.head_timer = None
        if self._request_count == 0 and self.transport is not None:  # no request head parsed yet
            log.debug(
                "closing %s: no complete request head within %ss",
                self.peername,
                self.ingress.limits.header_timeout,
            )
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        for callback in list(self.on_lost):
            callback()
        self.on_lost.clear()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A malformed request is the client's fault: one line at debug (aiohttp logs a traceback)."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)  # a bug: keep its traceback
        log.debug("malformed request from %s: %s", request.remote, message or type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; it cannot become an error")
        resp = web.Response(status=status, text=message or "", content_type="text/plain")
        resp.force_close()
        return resp


class IngressServer(web.Server):
    """aiohttp's low-level server with `IngressLimits`: timeouts and a connection cap per listener."""

    def __init__(self, handler: Any, limits: IngressLimits, **kwargs: Any) -> None:
        super().__init__(handler, keepalive_timeout=limits.idle_timeout, **kwargs)
        self.limits = limits
        self.cap = limits.connection_cap()
        self.open = 0
        self.refused = 0
        self.lingering = 0

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        """Count an accepted connection."""
        self.open += 1
        super().connection_made(handler, transport)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        """Count a closed connection."""
        self.open -= 1
        super().connection_lost(handler, exc)

    def __call__(self) -> Any:
        """The protocol for a new connection: a served one, or a refusal past the cap."""
        if self.open >= self.cap:
            self.refused += 1
            if self.refused & (self.refused - 1) == 0:  # 1st, 2nd, 4th, 8th...: not one line each
                log.warning(
                    "refused %d connection(s) so far: %d open is this listener's cap (max_connections)",
                    self.refused,
                    self.cap,
                )
            return _Refusal(self)
        return _Connection(self, loop=self._loop, **self._kwargs)


class HttpTarget(Workload):
    """A linked HTTP component and what serving it needs: its pool and WASI config, and a workload."""

    def __init__(
        self,
        name: str,
        pool: InstancePool,
        config: WasiConfig,
        *,
        timeout: float,
        threads: int,
        max_concurrency: int | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout, threads=threads, max_concurrency=max_concurrency)
        self.pool = pool
        self.config = config
        # A `replay.recording.Recorder` when this component's requests are recorded (its pool
        # then links the recording wrapper, docs/record-replay.md); None, and free, otherwise.
        self.recorder: Any = None


class GuestResponse(web.StreamResponse):
    """A response carrying exactly the guest's headers (aiohttp would add Server and Content-Type)."""

    guest_content_type = False

    async def _write_headers(self) -> None:
        h = self._headers
        h.popall("Server", None)
        if not self.guest_content_type:
            h.popall("Content-Type", None)
        await super()._write_headers()


def error_response(status: int, message: str) -> web.Response:
    """A plain-text error response (the message plus a newline)."""
    return web.Response(status=status, text=message + "\n")


def busy_response(e: SlotTimeout) -> web.Response:
    """503 with `Retry-After` for a request the host or component had no room for."""
    resp = error_response(503, str(e))
    resp.headers["Retry-After"] = str(e.retry_after if isinstance(e, HostBusy) else RETRY_AFTER)
    return resp


async def send_continue(request: web.BaseRequest) -> None:
    """Answer `Expect: 100-continue`, which aiohttp's low-level server leaves to the application.

    Without it a client that waits for the go-ahead and a guest waiting for the body deadlock
    until the deadline.
    """
    if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0


def guest_request_headers(request: web.BaseRequest) -> list[tuple[str, bytes]]:
    """The request's headers as the guest sees them: lower-case, without hop-by-hop/forbidden ones.

    Like wasmtime, the guest does not see those (the Host header reaches it as the authority).
    """
    return [
        (name, v)
        for name, v in ((k.decode("latin-1").lower(), v) for k, v in request.raw_headers)
        if name not in FORBIDDEN_HEADERS
    ]


def guest_response(status: int, entries: Iterable[tuple[str, bytes]]) -> GuestResponse:
    """A response with exactly the guest's status and headers (its Content-Length honoured)."""
    out = GuestResponse(status=status)
    hdrs = out.headers
    for name, value in entries:
        hdrs.add(name, header_text(value))
    out.guest_content_type = "content-type" in hdrs
    length = hdrs.get("content-length")
    if length is not None and length.isdigit():
        out.content_length = int(length)
    return out


def bodyless(method: str, status: int) -> bool:
    """Whether the answer carries no body on the wire (HEAD, 1xx, 204, 304), whatever the guest wrote.

    aiohttp would write the guest's bytes raw after the headers, so they are drained, not sent.
    """
    return method == "HEAD" or status < 200 or status in (204, 304)


# Serves a request some other way than with a local target (e.g. on another host of the lattice).
Forward = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class PendingTarget:
    """A local target known only after an await (the host's policy has not decided yet), or the
    response to send instead (the policy denied the request)."""

    __slots__ = ("resolve",)

    def __init__(self, resolve: Callable[[], Awaitable[HttpTarget | web.StreamResponse]]) -> None:
        self.resolve = resolve


# Resolves what serves a request: a local target, a forwarder, or a ready response (404, 503...).
Resolver = Callable[[web.BaseRequest], "HttpTarget | PendingTarget | Forward | web.StreamResponse"]


class HttpHandler:
    """Serves HTTP requests by calling a `wasi:http/incoming-handler` guest, resolved per request.

    `wasmlattice run` resolves every request to its one component; the lattice's HTTP server
    provider resolves by listener address or path. Each request holds on to the target it
    resolved, so a component replaced meanwhile finishes its in-flight requests on the old one.
    """

    def __init__(
        self, resolve: Resolver, *, max_body: int, body_timeout: float = IngressLimits.body_timeout
    ) -> None:
        self.resolve = resolve
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.client: OutgoingClient | None = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve one HTTP request by calling the guest's incoming handler."""
        if not tracing.enabled():
            return await self._serve(request)
        attributes = {
            "http.request.method": request.method,
            "url.path": request.path,
            "url.scheme": "https" if request.secure else "http",
            "server.address": request.host,
        }
        # The client's `traceparent`, if it sent one, is the parent of everything this request does.
        with tracing.server_span(f"HTTP {request.method}", request.headers, attributes) as span:
            response = await self._serve(request)
            if span is not None:
                span.set_attribute("http.response.status_code", response.status)
                if response.status >= 500:
                    tracing.fail(span, f"HTTP {response.status}")
            return response

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.version[0] < 1:
            return refuse_http09(request)
        if self.client is None:
            self.client = OutgoingClient(asyncio.get_running_loop())
        if request.content_length is not None and request.content_length > self.max_body:
            return error_response(
                413, f"request body of {request.content_length} bytes exceeds {self.max_body}"
            )
        resolved = self.resolve(request)
        if isinstance(resolved, PendingTarget):
            resolved = await resolved.resolve()
        target = resolved
        if isinstance(target, web.StreamResponse):
            return target
        if not isinstance(target, HttpTarget):
            return await target(request)
        await send_continue(request)
        # A request whose body is all here may run inline; one still arriving streams to a thread.
        complete = not request.body_exists or request.content.is_eof()
        data = (request.content.read_nowait(-1) if request.body_exists else b"") if complete else None
        if target.recorder is not None:
            return await self._serve_recorded(request, target, data)
        call = HttpGuestCall(target, self._request(request), data, self.client.send)
        token = Interruption(f"{request.method} {request.path}")
        try:
            done = await start_guest(
                target, call.attempt, inline=complete, token=token, operation=HTTP_OPERATION
            )
        except SlotTimeout as e:
            log.warning("%s", e)
            return busy_response(e)
        except RuntimeError:  # the workload was retired: the component was replaced or stopped
            return error_response(503, f"{target.name} is stopping and cannot take the request")
        call.started(done)
        # A client that goes away while the guest runs stops it: nobody will read its answer.
        lost = getattr(request.protocol, "on_lost", None)

        def client_gone() -> None:
            token.interrupt("the HTTP client disconnected")

        if lost is not None and not call.ex.finished:
            lost.add(client_gone)
        try:
            if data is not None:
                return await self._respond(request, target, call.ex, call.body)
            # The body still arrives: a task scoped to this request feeds it to the guest meanwhile.
            pump = asyncio.get_running_loop().create_task(
                _pump_body(request, call.body, self.max_body, self.body_timeout)
            )
            try:
                return await self._respond(request, target, call.ex, call.body)
            finally:
                pump.cancel()
        finally:
            if lost is not None:
                lost.discard(client_gone)

    async def _serve_recorded(
        self, request: web.BaseRequest, target: HttpTarget, data: bytes | None
    ) -> web.StreamResponse:
        """Serve a request of a recorded component, writing the recording (docs/record-replay.md).

        The body is read whole first (within `--max-body` and the body timeout), so that the
        recording holds exactly what the guest was given.
        """
        if data is None:
            try:
                async with asyncio.timeout(self.body_timeout):
                    data = await request.content.read(self.max_body + 1)
                    while len(data) <= self.max_body and not request.content.at_eof():
                        more = await request.content.read(self.max_body + 1 - len(data))
                        if not more:
                            break
                        data += more
            except TimeoutError:
                return error_response(408, f"the request body stalled for {self.body_timeout}s")
            if len(data) > self.max_body:
                return error_response(413, f"request body exceeds {self.max_body} bytes")
        assert self.client is not None
        parts = self._request(request)
        session = target.recorder.begin_http(parts, data)
        call = HttpGuestCall(target, parts, data, self.client.send)
        call.session = session
        token = Interruption(f"{request.method} {request.path}")
        try:
            done = await start_guest(target, call.attempt, inline=True, token=token, operation=HTTP_OPERATION)
        except SlotTimeout as e:
            log.warning("%s", e)
            return busy_response(e)
        except RuntimeError:
            return error_response(503, f"{target.name} is stopping and cannot take the request")
        call.started(done)
        tap = ResponseTap()
        response = await self._respond(request, target, call.ex, call.body, tap)
        if tap.status is None:  # the host answered for the guest (a trap, an error)
            body = response.body if isinstance(response, web.Response) else b""
            body = body if isinstance(body, (bytes, bytearray)) else b""
            tap.status, tap.chunks = response.status, [bytes(body or b"")]
            tap.headers = [(k, v.encode("latin-1")) for k, v in response.headers.items()]
        session.finish_http(tap.status, tap.headers, b"".join(tap.chunks), call.ex.error)
        return response

    def counted(
        self, metrics: HostMetrics, route: Callable[[web.BaseRequest], str]
    ) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        """`handle`, counting each request by the component `route` names ("" for none) and status.

        A listener serves this instead of `handle` when metrics are on, so that with them off a
        request costs nothing more.
        """
        handle = self.handle

        async def serve(request: web.BaseRequest) -> web.StreamResponse:
            try:
                response = await handle(request)
            except asyncio.CancelledError:
                raise  # the client went away before an answer: nobody saw a status
            except Exception:
                metrics.http_request(route(request), request.method, 500)  # aiohttp answers 500
                raise
            metrics.http_request(route(request), request.method, response.status)
            return response

        return serve

    def _request(self, request: web.BaseRequest) -> RequestParts:
        path, authority = split_target(request.raw_path)
        return RequestParts(
            request.method,
            path,
            "https" if request.secure else "http",
            authority or request.host,
            guest_request_headers(request),
        )

    async def _respond(
        self,
        request: web.BaseRequest,
        target: HttpTarget,
        ex: Exchange,
        req_body: BytePipe,
        tap: ResponseTap | None = None,
    ) -> web.StreamResponse:
        name = target.name
        await ex.wait_first(STREAM_GRACE)
        result = ex.response
        if result is _UNSET:
            return _failure(target, ex.error, req_body)
        if isinstance(result, Err):
            await _settle(name, ex)
            log.warning("%s answered with error code %s", name, result.value)
            return error_response(500, f"the component answered with an error: {result.value}")
        resp = result.value if isinstance(result, Ok) else result
        if not isinstance(resp, OutgoingResponse):
            await _settle(name, ex)
            return error_response(500, "the component set an invalid response")
        out = guest_response(resp.status, resp.fields.entries)
        if tap is not None:
            tap.status, tap.headers = resp.status, list(resp.fields.entries)
        pipe = resp.pipe
        no_body = bodyless(request.method, resp.status)
        if ex.finished and pipe is not None and pipe.eof and pipe.error is None:
            # The whole body is here: headers, body and end go out in one write.
            out._send_headers_immediately = False
            data = b"" if no_body else b"".join(pipe.chunks)
            pipe.chunks.clear()
            if tap is not None:
                tap.chunks.append(data)
            try:
                await out.prepare(request)
                await out.write_eof(data)
            except OSError as e:
                log.debug("%s: client went away: %s", name, e)
            return out
        try:
            await out.prepare(request)
            if resp.pipe is None:
                await _settle(name, ex)  # the guest may still take the body before it returns
            pipe = resp.pipe
            if pipe is not None:
                while True:
                    chunk = await pipe.aread()
                    if chunk is None:
                        break
                    if not no_body:
                        if tap is not None:
                            # What the guest answered, even if the client leaves before it is sent.
                            tap.chunks.append(chunk)
                        await out.write(chunk)
            await out.write_eof()
        except OSError as e:
            # The guest's body failed (or the client went away): abort the connection so the
            # client sees a truncated response rather than a clean end.
            if resp.pipe is not None:
                resp.pipe.close_reader()
            log.warning("%s: response body aborted: %s", name, e)
            if request.transport is not None:
                request.transport.close()
        await _settle(name, ex)
        return out

    async def close(self) -> None:
        """Close pooled outgoing client connections."""
        if self.client is not None:
            await self.client.close()
            self.client = None


class ResponseTap:
    """The response a recorded request got from its guest: status and headers, body chunks."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[str, bytes]] = []
        self.chunks: list[bytes] = []


class RequestParts(NamedTuple):
    """The parts of an HTTP request the guest sees, apart from its body."""

    method: str
    path_with_query: str | None
    scheme: str | None
    authority: str | None
    headers: list[tuple[str, bytes]]


class HttpGuestCall:
    """One HTTP request to a guest: each attempt's WASI context, request body and `Exchange`.

    `attempt` is what `start_guest` calls to make an attempt (inline first, then maybe again on a
    worker thread); the last one made is the one that serves, and its `ex` and `body` are what the
    response is built from. `data` is the whole request body, or None while it still arrives.
    """

    # Set by each attempt; `start_guest` makes one before it returns.
    ex: Exchange
    body: BytePipe
    # The record or replay session of this invocation (docs/record-replay.md); None: neither.
    session: Any = None

    def __init__(
        self,
        target: HttpTarget,
        parts: RequestParts,
        data: bytes | None,
        outgoing: Callable[..., Any] | None = None,
    ) -> None:
        self.target = target
        self.parts = parts
        self.data = data
        self.outgoing = outgoing
        self.loop = asyncio.get_running_loop()

    def attempt(self, inline: bool) -> Callable[[float], BaseException | None]:
        """A fresh attempt: the guest's handler run under a deadline (see `start_guest`)."""
        wctx = WasiCtx(self.target.config, self.loop)
        wctx.outgoing = self.outgoing
        wctx.inline = inline
        if self.session is not None:
            wctx.recording = self.session.attempt()
        self.body = body = BytePipe(wctx) if self.data is None else BytePipe.complete(wctx, self.data)
        self.ex = ex = Exchange(self.loop)
        p = self.parts
        req = IncomingRequest(p.method, p.path_with_query, p.scheme, p.authority, p.headers, body)
        out = ResponseOutparam(ex.deliver)
        pool = self.target.pool
        if inline:
            # Inline, a trap is raised so that `start_guest` can tell a retry from a result.
            return lambda limit: pool.run(wctx, limit, req, out)
        return lambda limit: run_guest(pool, ex, wctx, req, out, limit)

    def started(self, done: asyncio.Future[BaseException | None]) -> None:
        """Note how the call went when it finished inline (a trap there is its result)."""
        if not done.done():
            return  # on a worker thread: `run_guest` reports to the exchange
        error = done.exception()
        if error is not None:
            self.ex.error = error
        self.ex.finished = True
        _end_unfinished_body(self.ex.response)


def run_guest(
    pool: InstancePool, ex: Exchange, wctx: WasiCtx, req: IncomingRequest, out: ResponseOutparam, limit: float
) -> BaseException | None:
    """Run the guest's handler on this (worker) thread, reporting its end to `ex`.

    Returns the failure it reported, if any (raising it would leave it unretrieved; `start_guest`
    counts a returned exception as a failed invocation).
    """
    try:
        pool.run(wctx, limit, req, out)
    except BaseException as e:
        note_failure(e)  # the call's future ends well: the exchange carries the failure
        _end_unfinished_body(ex.response)
        ex.finish(e)
        return e
    _end_unfinished_body(ex.response)
    ex.finish(None)
    return None


async def serve_locally(target: HttpTarget, call: HttpGuestCall) -> tuple[ResponseTap, BaseException | None]:
    """Run `call` on `target` with no socket (replay): the response as `_respond` would serve it.

    Answers what the ingress would for a trap or an error (`_failure`, `error_response`), so that
    a replayed invocation compares with the recorded one field by field.
    """
    tap = ResponseTap()
    done = await start_guest(target, call.attempt, inline=False, operation=HTTP_OPERATION)
    call.started(done)
    ex = call.ex
    await ex.wait_first(STREAM_GRACE)
    result = ex.response
    resp = result.value if isinstance(result, Ok) else result
    if result is _UNSET or isinstance(result, Err) or not isinstance(resp, OutgoingResponse):
        if result is _UNSET:
            fallback = _failure(target, ex.error, call.body)
        else:
            await ex.wait_finished()
            fallback = (
                error_response(500, f"the component answered with an error: {result.value}")
                if isinstance(result, Err)
                else error_response(500, "the component set an invalid response")
            )
        tap.status = fallback.status
        tap.headers = [(k, v.encode("latin-1")) for k, v in fallback.headers.items()]
        body = fallback.body
        tap.chunks.append(bytes(body) if isinstance(body, (bytes, bytearray)) else b"")
        return tap, ex.error
    tap.status, tap.headers = resp.status, list(resp.fields.entries)
    if resp.pipe is None:
        await ex.wait_finished()
    pipe = resp.pipe
    if pipe is not None:
        try:
            while True:
                chunk = await pipe.aread()
                if chunk is None:
                    break
                tap.chunks.append(chunk)
        except OSError:
            pass  # the guest's body failed: what arrived is the body; the failure is `ex.error`
    await ex.wait_finished()
    return tap, ex.error


async def _settle(name: str, ex: Exchange) -> None:
    """Wait for the guest to return; log a failure after the response had started."""
    await ex.wait_finished()
    e = ex.error
    if isinstance(e, GuestTrap):
        log.error("%s trapped after responding: %s", name, e.reason)
    elif e is not None:
        log.error("%s: host error after responding: %r", name, e)


def _failure(target: HttpTarget, exc: BaseException | None, req_body: BytePipe) -> web.Response:
    name = target.name
    body_err = req_body.error
    code = body_err.code if body_err is not None else None
    if body_err is not None and isinstance(code, tuple) and code[:1] == ("HTTP-request-body-size",):
        # A (chunked) body went over --max-body: whatever the guest made of its failed read
        # (typically a trap), the client is told why.
        log.warning("%s: %s", name, body_err.message)
        return error_response(413, body_err.message)
    if body_err is not None and isinstance(code, tuple) and code[:1] == ("connection-read-timeout",):
        # The client stopped sending its body (already logged at debug, the connection closed).
        return error_response(408, body_err.message)
    why = stopped(exc)
    if why is not None:
        # The client went away (nobody reads this) or the component was stopped meanwhile.
        log.warning("%s: %s", name, why)
        return error_response(503, f"{name}: {why}")
    if isinstance(exc, GuestTrap):
        if interrupted(exc):
            log.warning("%s exceeded its %ss deadline and was interrupted", name, target.timeout)
            return error_response(504, f"the component did not answer within {target.timeout}s")
        log.error("%s trapped: %s\n%s", name, exc.reason, exc.message)
        return error_response(500, f"the component failed: {exc.reason}")
    if exc is not None:
        log.error("%s: host error while serving: %r", name, exc)
        return error_response(500, f"host error: {exc}")
    if req_body.error is not None:
        return error_response(413, req_body.error.message)
    return error_response(500, "the component returned without setting a response")


_UNSET: Any = object()


def split_target(target: str) -> tuple[str, str | None]:
    """Path-with-query and authority of a request-target; absolute-form gives both (as hyper does)."""
    if target.startswith("/"):
        return target, None
    scheme, sep, rest = target.partition("://")
    if not sep or not scheme:
        return target, None
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    path = rest[end:]
    return (path if path.startswith("/") else "/" + path), rest[:end]


def _end_unfinished_body(result: Any) -> None:
    """After the guest returned, a body it never finished will never end: end it as failed."""
    resp = result.value if isinstance(result, Ok) else result
    if isinstance(resp, OutgoingResponse) and resp.pipe is not None and not resp.pipe.eof:
        resp.pipe.finish(IoError("the component returned without finishing the response body"))


# How long a response may wait for its guest to finish before it is streamed instead: a guest
# that finishes within it is answered with one wake-up of the event loop rather than several.
STREAM_GRACE = 0.002


class Exchange:
    """Hands a guest's response and completion from its wasm thread to the event loop.

    The loop sleeps until the guest finishes, or until STREAM_GRACE has passed with a response
    set; only then does setting a response wake it. Fast guests cost one cross-thread wake-up.
    """

    __slots__ = ("_armed", "_fut", "_lock", "error", "finished", "loop", "response")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._fut: asyncio.Future[None] = loop.create_future()
        self._armed = False
        self.response: Any = _UNSET
        self.finished = False
        self.error: BaseException | None = None

    def _wake(self) -> None:
        if not self._fut.done():
            self._fut.set_result(None)

    def deliver(self, result: Any) -> None:
        """`response-outparam.set` (wasm thread)."""
        with self._lock:
            if self.response is not _UNSET:
                return
            self.response = result
            wake = self._armed
        if wake:
            self.loop.call_soon_threadsafe(self._wake)

    def finish(self, error: BaseException | None) -> None:
        """The guest returned or failed (wasm thread)."""
        with self._lock:
            self.finished = True
            self.error = error
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:
            pass  # the loop closed while the guest ran (shutdown)

    def _arm(self) -> None:
        with self._lock:
            self._armed = True
            ready = self.response is not _UNSET
        if ready:
            self._wake()

    async def wait_first(self, grace: float) -> None:
        """Until the guest finished, or a response is set and `grace` has passed."""
        if self.finished:
            return
        timer = self.loop.call_later(grace, self._arm)
        try:
            await self._fut
        finally:
            timer.cancel()

    async def wait_finished(self) -> None:
        """Until the guest has returned."""
        while True:
            with self._lock:
                if self.finished:
                    return
                if self._fut.done():
                    self._fut = self.loop.create_future()
                self._armed = False
            await self._fut


def refuse_http09(request: web.BaseRequest) -> web.StreamResponse:
    """Refuse an HTTP/0.9 request (no version, no headers): 505 and the connection closed."""
    log.debug("refused an HTTP/0.9 request from %s", request.remote)
    transport = request.transport
    if transport is not None:
        transport.write(_V09)
        transport.close()
    # Nothing more reaches the client: aiohttp finds the transport closing and drops this.
    return error_response(505, "HTTP/0.9 is not supported")


async def _pump_body(request: web.BaseRequest, pipe: BytePipe, limit: int, idle: float) -> None:
    total = 0
    try:
        while True:
            try:
                async with asyncio.timeout(idle):
                    chunk = await request.content.readany()
            except TimeoutError:
                log.debug("request body from %s stalled for %ss", request.remote, idle)
                pipe.finish(
                    IoError(
                        f"the request body stalled: no data for {idle}s", ("connection-read-timeout", None)
                    )
                )
                if request.transport is not None:
                    request.transport.close()
                return
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                pipe.finish(IoError(f"request body exceeds {limit} bytes", ("HTTP-request-body-size", total)))
                return
            if not await pipe.awrite(chunk):
                return
        pipe.finish()
    except asyncio.CancelledError:
        pipe.finish(IoError("request ended"))
        raise
    except Exception as e:
        pipe.finish(IoError(f"reading the request body failed: {e}"))


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket with SO_REUSEPORT, so several processes can share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock
