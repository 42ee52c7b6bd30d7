"""Guests' outgoing HTTP requests, sent from the event loop with a pooled keep-alive aiohttp
client session; the destination allow-list and the request target."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from wasmlattice.aio import wait_for
from wasmlattice.observability import tracing
from wasmlattice.runtime.execution import NeedsLoop
from wasmlattice.runtime.witypes import Err
from wasmlattice.wasi.ctx import WasiCtx
from wasmlattice.wasi.http_outgoing import (
    FutureIncomingResponse,
    IncomingResponse,
    OutgoingRequest,
    RequestOptions,
)
from wasmlattice.wasi.http_types import header_text, internal_error, method_from_wit
from wasmlattice.wasi.io import BytePipe, IoError


def destination_allowed(allowed: tuple[str, ...], host: str, port: int) -> bool:
    """Whether `host:port` matches an allow-list entry (`*`, `host` or `host:port`)."""
    host = host.lower().strip("[]")
    for entry in allowed:
        e = entry.lower()
        if e == "*":
            return True
        if e.startswith("[") and "]" in e:
            h, _, rest = e[1:].partition("]")
            p = rest[1:] if rest.startswith(":") else ""
        elif e.count(":") == 1:
            h, p = e.split(":")
        else:
            h, p = e, ""
        if h == host and (not p or p == str(port)):
            return True
    return False


@dataclass(frozen=True)
class RequestTarget:
    """Where an outgoing request goes: its URL, and the host and port its allow-list check uses."""

    url: str
    host: str
    port: int


def request_target(request: OutgoingRequest) -> RequestTarget:
    """The destination of a guest's request; `Err(error-code)` if its scheme or authority is unusable."""
    scheme = request.scheme()
    scheme_name = (
        "http" if scheme is None or scheme[0] == "HTTP" else "https" if scheme[0] == "HTTPS" else None
    )
    if scheme_name is None:
        raise Err(("HTTP-protocol-error", None))
    authority = request.authority()
    if not authority:
        raise Err(("HTTP-request-URI-invalid", None))
    host, port = _split_authority(authority, 443 if scheme_name == "https" else 80)
    url = f"{scheme_name}://{authority}{request.path_with_query() or '/'}"
    return RequestTarget(url, host.lower(), port)


class OutgoingClient:
    """Sends guests' outgoing requests over a pooled, keep-alive aiohttp session on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._session: Any = None

    async def _get_session(self) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def close(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def send(
        self, wctx: WasiCtx, request: OutgoingRequest, options: RequestOptions | None
    ) -> FutureIncomingResponse:
        """Start sending `request` if the host's allow-list permits it; called on the guest's thread.

        This is `wasmlattice run`'s path (`--allow-outgoing`); lattice components go through their
        http-client provider, which checks its link's allow-list and then calls `start`.
        """
        if wctx.inline:
            raise NeedsLoop("an outgoing request needs the event loop")
        target = request_target(request)
        if not destination_allowed(wctx.config.allowed_outgoing, target.host, target.port):
            raise Err(("HTTP-request-denied", None))
        return self.start(wctx, request, options, target)

    def start(
        self, wctx: WasiCtx, request: OutgoingRequest, options: RequestOptions | None, target: RequestTarget
    ) -> FutureIncomingResponse:
        """Send an already permitted request from the event loop; its future, for the guest."""
        if wctx.inline:
            raise NeedsLoop("an outgoing request needs the event loop")
        fut = FutureIncomingResponse(wctx)
        cf = asyncio.run_coroutine_threadsafe(self._run(wctx, request, options, target.url, fut), self.loop)
        fut.task = cf
        return fut

    async def _run(
        self,
        wctx: WasiCtx,
        request: OutgoingRequest,
        options: RequestOptions | None,
        url: str,
        fut: FutureIncomingResponse,
    ) -> None:
        import aiohttp

        body = request.body_obj
        data: AsyncIterator[bytes] | None = None
        if body is not None:
            data = _pipe_iter(body.pipe)
        default = wctx.config.outgoing_timeout

        def secs(ns: int | None) -> float:
            return default if ns is None else ns / 1e9

        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=secs(options.connect if options else None),
            sock_read=secs(options.between_bytes if options else None),
        )
        first_byte = secs(options.first_byte if options else None)
        headers = [(n, header_text(v)) for n, v in request.fields.entries]
        span = None
        if tracing.enabled():
            span, headers = _traced(request.method(), url, headers)
        try:
            await self._exchange(request, url, headers, data, timeout, first_byte, wctx, fut, span)
        finally:
            if span is not None:
                span.end()

    async def _exchange(
        self,
        request: OutgoingRequest,
        url: str,
        headers: list[tuple[str, str]],
        data: AsyncIterator[bytes] | None,
        timeout: Any,
        first_byte: float,
        wctx: WasiCtx,
        fut: FutureIncomingResponse,
        span: tracing.Span | None,
    ) -> None:
        try:
            session = await self._get_session()
            resp_cm = session.request(
                method_from_wit(request.method()),
                url,
                headers=headers,
                data=data,
                timeout=timeout,
                allow_redirects=False,
            )
            resp = await wait_for(resp_cm.__aenter__(), first_byte)
        except asyncio.CancelledError:
            fut.resolve(Err(("HTTP-request-denied", None)))
            raise
        except BaseException as e:
            tracing.fail(span, f"{type(e).__name__}: {e}")
            fut.resolve(Err(_client_error_code(e)))
            return
        if span is not None:
            span.set_attribute("http.response.status_code", resp.status)
            if resp.status >= 500:
                tracing.fail(span, f"HTTP {resp.status}")
        pipe = BytePipe(wctx)
        headers_in = [(k.decode("latin-1").lower(), v) for k, v in resp.raw_headers]
        fut.resolve(IncomingResponse(resp.status, headers_in, pipe))
        try:
            async for chunk in resp.content.iter_any():
                if not await pipe.awrite(chunk):
                    break
            pipe.finish()
        except BaseException as e:
            pipe.finish(IoError(f"response body failed: {e}", _client_error_code(e)))
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            resp.release()


def _traced(method: Any, url: str, headers: list[tuple[str, str]]) -> tuple[Any, list[tuple[str, str]]]:
    """The client span of an outgoing request, and its headers with the span's trace context in
    place of any `traceparent`/`tracestate` the guest set."""
    name = method_from_wit(method)
    parts = urlsplit(url)
    attrs: dict[str, Any] = {
        "http.request.method": name,
        "url.full": url,
        "server.address": parts.hostname or "",
    }
    if parts.port is not None:
        attrs["server.port"] = parts.port
    span = tracing.start_span(f"HTTP {name}", tracing.SpanKind.CLIENT, attrs)
    carrier: dict[str, str] = {}
    with tracing.use(span):
        tracing.inject(carrier)
    kept = [(n, v) for n, v in headers if n.lower() not in ("traceparent", "tracestate")]
    return span, kept + list(carrier.items())


async def _pipe_iter(pipe: BytePipe) -> AsyncIterator[bytes]:
    while True:
        chunk = await pipe.aread()
        if chunk is None:
            return
        if chunk:
            yield chunk


def _split_authority(authority: str, default_port: int) -> tuple[str, int]:
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if ":" in authority:
        host, _, port = authority.rpartition(":")
        try:
            return host, int(port)
        except ValueError:
            raise Err(("HTTP-request-URI-invalid", None)) from None
    return authority, default_port


def _client_error_code(e: BaseException) -> Any:
    import aiohttp

    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return ("connection-timeout", None)
    if isinstance(e, aiohttp.ClientConnectorDNSError):
        return ("DNS-error", (str(e), None))
    if isinstance(e, aiohttp.ClientConnectorError):
        if isinstance(e.os_error, ConnectionRefusedError):
            return ("connection-refused", None)
        return ("destination-unavailable", None)
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return ("HTTP-response-incomplete", None)
    if isinstance(e, aiohttp.ClientPayloadError):
        return ("HTTP-response-incomplete", None)
    if isinstance(e, aiohttp.ClientResponseError):
        return ("HTTP-protocol-error", None)
    return internal_error(f"{type(e).__name__}: {e}")
