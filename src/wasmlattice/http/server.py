"""HTTP ingress: serve a `wasi:http/incoming-handler` component over HTTP/1.1 with aiohttp."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from ..runtime.component import CompileCache, ComponentError, default_cache_dir, read_component_file
from ..runtime.engine import HostEngine
from ..runtime.fastcall import GuestTrap
from ..runtime.linking import link
from ..runtime.pool import InstancePool
from ..wasi.ctx import DeadlineExceeded, WasiConfig, WasiCtx
from ..wasi.http import IncomingRequest, OutgoingClient, OutgoingResponse, ResponseOutparam
from ..wasi.io import BytePipe
from ..wasi.registry import wasi_registry
from ..runtime.witypes import Err, Ok

log = logging.getLogger("wasmlattice.http")

INCOMING_HANDLER = "wasi:http/incoming-handler"


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
    threads: int = 8
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


class _GuestResponse(web.StreamResponse):
    """A response carrying exactly the guest's headers (aiohttp would add Server and Content-Type)."""

    guest_content_type = False

    async def _write_headers(self) -> None:
        h = self._headers
        h.popall("Server", None)
        if not self.guest_content_type:
            h.popall("Content-Type", None)
        await super()._write_headers()


def _error_response(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


class ComponentApp:
    """A loaded, linked component and the pool of instances that serve its HTTP requests."""

    def __init__(self, path: str, opts: ServeOptions, engine: HostEngine | None = None) -> None:
        self.path = path
        self.opts = opts
        self.engine = engine or HostEngine()
        data = read_component_file(path)
        cache = CompileCache(opts.cache_dir or default_cache_dir())
        comp = cache.load(data, self.engine, path)
        self.linked = link(self.engine, comp, wasi_registry(), origin=path)
        if not any(n.split("@")[0] == INCOMING_HANDLER for n in self.linked.exports):
            raise ComponentError(
                f"{path} does not export {INCOMING_HANDLER}; it is not an HTTP component "
                "(build it for the wasi:http/proxy world)"
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
        self.executor = ThreadPoolExecutor(max_workers=opts.threads, thread_name_prefix="wasm")
        self.client: OutgoingClient | None = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve one HTTP request by calling the guest's incoming handler."""
        loop = asyncio.get_running_loop()
        if self.client is None:
            self.client = OutgoingClient(loop)
        opts = self.opts
        if request.content_length is not None and request.content_length > opts.max_body:
            return _error_response(413, f"request body of {request.content_length} bytes exceeds {opts.max_body}")
        wctx = WasiCtx(self.config, loop)
        wctx.outgoing = self.client.send
        body = BytePipe(wctx)
        headers = [(k.decode("latin-1").lower(), v) for k, v in request.raw_headers]
        req = IncomingRequest(request.method, request.raw_path, "http", request.host, headers, body)
        resp_fut: asyncio.Future[Any] = loop.create_future()

        def deliver(result: Any) -> None:
            loop.call_soon_threadsafe(_set_once, resp_fut, result)

        pump = asyncio.ensure_future(_pump_body(request, body, opts.max_body))
        call = loop.run_in_executor(self.executor, self._run_guest, wctx, req, ResponseOutparam(deliver))
        try:
            return await self._respond(request, resp_fut, call, body)
        finally:
            pump.cancel()

    def _run_guest(self, wctx: WasiCtx, req: IncomingRequest, out: ResponseOutparam) -> None:
        self.pool.run(wctx, self.opts.timeout, req, out)

    async def _respond(
        self,
        request: web.BaseRequest,
        resp_fut: asyncio.Future[Any],
        call: asyncio.Future[None],
        req_body: BytePipe,
    ) -> web.StreamResponse:
        await asyncio.wait({resp_fut, call}, return_when=asyncio.FIRST_COMPLETED)
        if not resp_fut.done():
            return self._failure(call, req_body)
        result = resp_fut.result()
        if isinstance(result, Err):
            await _settle(call)
            log.warning("%s answered with error code %s", self.path, result.value)
            return _error_response(500, f"the component answered with an error: {result.value}")
        resp = result.value if isinstance(result, Ok) else result
        assert isinstance(resp, OutgoingResponse)
        out = _GuestResponse(status=resp.status)
        hdrs: CIMultiDict[str] = CIMultiDict()
        for name, value in resp.fields.entries:
            hdrs.add(name, value.decode("latin-1"))
        out.guest_content_type = "content-type" in hdrs
        length = hdrs.get("content-length")
        out.headers.update(hdrs)
        if length is not None and length.isdigit():
            out.content_length = int(length)
        try:
            await out.prepare(request)
            if resp.pipe is None:
                await _settle(call)
            pipe = resp.pipe
            if pipe is not None:
                while True:
                    chunk = await pipe.aread()
                    if chunk is None:
                        break
                    await out.write(chunk)
            await out.write_eof()
        except OSError as e:
            # The guest's body failed (or the client went away): abort the connection so the
            # client sees a truncated response rather than a clean end.
            if resp.pipe is not None:
                resp.pipe.close_reader()
            log.warning("%s: response body aborted: %s", self.path, e)
            if request.transport is not None:
                request.transport.close()
        await _settle(call)
        return out

    def _failure(self, call: asyncio.Future[None], req_body: BytePipe) -> web.Response:
        exc = call.exception()
        if isinstance(exc, GuestTrap):
            if isinstance(exc.cause, DeadlineExceeded) or "interrupt" in exc.message:
                log.warning("%s exceeded its %ss deadline and was interrupted", self.path, self.opts.timeout)
                return _error_response(504, f"the component did not answer within {self.opts.timeout}s")
            log.error("%s trapped: %s\n%s", self.path, exc.reason, exc.message)
            return _error_response(500, f"the component failed: {exc.reason}")
        if exc is not None:
            log.error("%s: host error while serving: %r", self.path, exc)
            return _error_response(500, f"host error: {exc}")
        if req_body.error is not None:
            return _error_response(413, req_body.error.message)
        return _error_response(500, "the component returned without setting a response")

    async def close(self) -> None:
        """Release the worker threads and pooled client connections."""
        if self.client is not None:
            await self.client.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.engine.close()


def _set_once(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


async def _settle(call: asyncio.Future[None]) -> None:
    try:
        await call
    except GuestTrap as e:
        log.error("component trapped after responding: %s", e.reason)
    except Exception as e:
        log.error("host error after responding: %r", e)


async def _pump_body(request: web.BaseRequest, pipe: BytePipe, limit: int) -> None:
    from ..wasi.io import IoError

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


