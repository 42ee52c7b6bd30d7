"""HTTP ingress: serve a `wasi:http/incoming-handler` component over HTTP/1.1 with aiohttp."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from wasmlattice.http.target import (
    INCOMING_HANDLER,
    INLINE_BUDGET,
    HttpTarget,
    SlotTimeout,
    interrupted,
    load_http_component,
    retry_on_thread,
)
from wasmlattice.runtime.component import CompileCache, default_cache_dir
from wasmlattice.runtime.engine import HostEngine
from wasmlattice.runtime.fastcall import GuestTrap
from wasmlattice.runtime.pool import InstancePool
from wasmlattice.runtime.witypes import Err, Ok
from wasmlattice.wasi.ctx import WasiConfig, WasiCtx
from wasmlattice.wasi.http import (
    FORBIDDEN_HEADERS,
    IncomingRequest,
    OutgoingClient,
    OutgoingResponse,
    ResponseOutparam,
    header_text,
)
from wasmlattice.wasi.io import BytePipe, IoError

log = logging.getLogger("wasmlattice.http")


@dataclass
class ServeOptions:
    """How `wasmlattice run` serves a component."""

    listen: str = "127.0.0.1:8000"
    workers: int = 1
    reuse: int = 1
    timeout: float = 30.0
    max_memory: int | None = None
    allowed_outgoing: tuple[str, ...] = ()
    max_body: int = 64 * 1024 * 1024
    max_header_size: int = 8190
    threads: int = 2
    env: list[tuple[str, str]] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    read_only_dirs: dict[str, Path] = field(default_factory=dict)
    cache_dir: Path | None = None

    def host_port(self) -> tuple[str, int]:
        """The listen address split into host and port."""
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--listen must be HOST:PORT, got {self.listen!r}")
        return host.strip("[]"), int(port)


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
# Resolves what serves a request: a local target, a forwarder, or a ready response (404, 503...).
Resolver = Callable[[web.BaseRequest], "HttpTarget | Forward | web.StreamResponse"]


class HttpHandler:
    """Serves HTTP requests by calling a `wasi:http/incoming-handler` guest, resolved per request.

    `wasmlattice run` resolves every request to its one component; the lattice's HTTP server
    provider resolves by listener address or path. Each request holds on to the target it
    resolved, so a component replaced meanwhile finishes its in-flight requests on the old one.
    """

    def __init__(self, resolve: Resolver, *, max_body: int) -> None:
        self.resolve = resolve
        self.max_body = max_body
        self.client: OutgoingClient | None = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve one HTTP request by calling the guest's incoming handler."""
        loop = asyncio.get_running_loop()
        if self.client is None:
            self.client = OutgoingClient(loop)
        if request.content_length is not None and request.content_length > self.max_body:
            return error_response(
                413, f"request body of {request.content_length} bytes exceeds {self.max_body}"
            )
        target = self.resolve(request)
        if isinstance(target, web.StreamResponse):
            return target
        if not isinstance(target, HttpTarget):
            return await target(request)
        try:
            await target.acquire()
        except SlotTimeout as e:
            log.warning("%s", e)
            return error_response(503, str(e))
        try:
            return await self._serve(request, target)
        finally:
            target.release()

    async def _serve(self, request: web.BaseRequest, target: HttpTarget) -> web.StreamResponse:
        await send_continue(request)
        if target.inline.enabled() and (not request.body_exists or request.content.is_eof()):
            data = request.content.read_nowait(-1) if request.body_exists else b""
            resp = await self._try_inline(request, target, data)
            if resp is not None:
                return resp
            return await self._threaded(request, target, data)
        return await self._threaded(request, target, None)

    def _new_ctx(self, target: HttpTarget, loop: asyncio.AbstractEventLoop) -> WasiCtx:
        wctx = WasiCtx(target.config, loop)
        assert self.client is not None
        wctx.outgoing = self.client.send
        return wctx

    def _request(self, request: web.BaseRequest, body: BytePipe) -> IncomingRequest:
        path, authority = split_target(request.raw_path)
        return IncomingRequest(
            request.method,
            path,
            "https" if request.secure else "http",
            authority or request.host,
            guest_request_headers(request),
            body,
        )

    async def _try_inline(
        self, request: web.BaseRequest, target: HttpTarget, data: bytes
    ) -> web.StreamResponse | None:
        """Run the guest on the loop's thread (no GIL hand-offs); None if it must run on a thread.

        The attempt is abandoned when the guest would wait (for the network, a timer, or room in
        a full pipe) or outlives a short budget. Nothing it did has left the process by then -
        the loop has not run - so the request is simply run again on a worker thread.
        """
        loop = asyncio.get_running_loop()
        wctx = self._new_ctx(target, loop)
        wctx.inline = True
        body = BytePipe.complete(wctx, data)
        ex = Exchange(loop)
        budget = min(target.timeout, INLINE_BUDGET)
        try:
            target.pool.run(wctx, budget, self._request(request, body), ResponseOutparam(ex.deliver))
        except GuestTrap as e:
            retry = retry_on_thread(e, budget, target.timeout)
            if retry:
                target.inline.record(False)
                return None
            ex.error = e
        except BaseException as e:
            ex.error = e
        target.inline.record(True)
        ex.finished = True
        _end_unfinished_body(ex.response)
        return await self._respond(request, target, ex, body)

    async def _threaded(
        self, request: web.BaseRequest, target: HttpTarget, data: bytes | None
    ) -> web.StreamResponse:
        """Run the guest on a worker thread, streaming the request body in as it arrives."""
        loop = asyncio.get_running_loop()
        wctx = self._new_ctx(target, loop)
        body = BytePipe(wctx) if data is None else BytePipe.complete(wctx, data)
        pump = None
        if data is None and request.body_exists:
            pump = loop.create_task(_pump_body(request, body, self.max_body))
        else:
            body.eof = True
        ex = Exchange(loop)
        target.executor.submit(
            run_guest, target, ex, wctx, self._request(request, body), ResponseOutparam(ex.deliver)
        )
        try:
            return await self._respond(request, target, ex, body)
        finally:
            if pump is not None:
                pump.cancel()

    async def _respond(
        self, request: web.BaseRequest, target: HttpTarget, ex: Exchange, req_body: BytePipe
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
        pipe = resp.pipe
        no_body = bodyless(request.method, resp.status)
        if ex.finished and pipe is not None and pipe.eof and pipe.error is None:
            # The whole body is here: headers, body and end go out in one write.
            out._send_headers_immediately = False
            data = b"" if no_body else b"".join(pipe.chunks)
            pipe.chunks.clear()
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


def run_guest(
    target: HttpTarget, ex: Exchange, wctx: WasiCtx, req: IncomingRequest, out: ResponseOutparam
) -> None:
    """Run the guest's handler on this (worker) thread, reporting its end to `ex`."""
    try:
        target.pool.run(wctx, target.timeout, req, out)
    except BaseException as e:
        _end_unfinished_body(ex.response)
        ex.finish(e)
    else:
        _end_unfinished_body(ex.response)
        ex.finish(None)


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


class ComponentApp:
    """`wasmlattice run`: one loaded, linked component and the handler that serves it over HTTP."""

    def __init__(self, path: str, opts: ServeOptions, engine: HostEngine | None = None) -> None:
        self.path = path
        self.opts = opts
        self.engine = engine or HostEngine()
        self.linked = load_http_component(
            self.engine, path, CompileCache(opts.cache_dir or default_cache_dir())
        )
        self.pool = InstancePool(
            self.engine, self.linked, INCOMING_HANDLER, "handle", reuse=opts.reuse, max_memory=opts.max_memory
        )
        self.config = WasiConfig(
            component_id=Path(path).stem,
            env=list(opts.env),
            args=list(opts.args),
            read_only_dirs=dict(opts.read_only_dirs),
            allowed_outgoing=tuple(opts.allowed_outgoing),
        )
        self.target = HttpTarget(path, self.pool, self.config, timeout=opts.timeout, threads=opts.threads)
        self.handler = HttpHandler(lambda _request: self.target, max_body=opts.max_body)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve one HTTP request by calling the guest's incoming handler."""
        return await self.handler.handle(request)

    async def close(self) -> None:
        """Release the worker threads and pooled client connections."""
        await self.handler.close()
        self.target.executor.shutdown(wait=False, cancel_futures=True)
        self.engine.close()


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


async def _pump_body(request: web.BaseRequest, pipe: BytePipe, limit: int) -> None:
    from wasmlattice.wasi.io import IoError

    total = 0
    try:
        while True:
            chunk = await request.content.readany()
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


async def serve_app(app: ComponentApp, sock: socket.socket, ready: asyncio.Event | None = None) -> None:
    """Serve `app` on `sock` until cancelled."""
    server = web.Server(
        app.handle,
        max_line_size=app.opts.max_header_size,
        max_field_size=app.opts.max_header_size,
        access_log=None,
    )
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await app.close()
