"""`wasi:http` 0.2: types (fields, requests, responses, bodies, trailers) and the outgoing handler."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from wasmlattice.runtime.execution import NeedsLoop
from wasmlattice.runtime.linking import HostInterface
from wasmlattice.runtime.witypes import Err, Ok
from wasmlattice.wasi.ctx import WasiCtx, ctx
from wasmlattice.wasi.io import BytePipe, InputStream, IoError, OutputStream, Pollable

# Headers a guest may not set (the same set wasmtime refuses by default).
FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "host",
        "http2-settings",
    }
)
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

METHODS = ("get", "head", "post", "put", "delete", "connect", "options", "trace", "patch")


def method_to_wit(method: str) -> Any:
    """An HTTP method string as the `method` variant."""
    m = method.lower()
    return (m, None) if m in METHODS and method.isupper() else ("other", method)


def method_from_wit(v: Any) -> str:
    """The `method` variant as an HTTP method string."""
    name, payload = v
    return str(payload) if name == "other" else name.upper()


def header_text(value: bytes) -> str:
    """A field value as the str aiohttp writes: aiohttp encodes header strs as UTF-8, so a UTF-8
    value passes through byte for byte; other bytes (obs-text) go out as their UTF-8 encoding."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def internal_error(message: str) -> tuple[str, str]:
    """An `error-code.internal-error` with a message."""
    return ("internal-error", message)


class Fields:
    """`fields` (also `headers` and `trailers`): an ordered multimap with lowercase names."""

    __slots__ = ("entries", "immutable")

    def __init__(self, entries: list[tuple[str, bytes]] | None = None, immutable: bool = False) -> None:
        self.entries: list[tuple[str, bytes]] = entries if entries is not None else []
        self.immutable = immutable

    @staticmethod
    def check_name(name: str) -> str:
        """Validate a field name for a guest-set field; its lowercase form."""
        b = name.encode("utf-8", "surrogateescape")
        if not _TOKEN.match(b):
            raise Err("invalid-syntax")
        low = name.lower()
        if low in FORBIDDEN_HEADERS:
            raise Err("forbidden")
        return low

    @staticmethod
    def check_value(value: bytes) -> bytes:
        """Validate a field value."""
        if _BAD_VALUE.search(value):
            raise Err("invalid-syntax")
        return value

    def _mutable(self) -> None:
        if self.immutable:
            raise Err("immutable")

    @classmethod
    def from_list(cls, entries: list[tuple[str, bytes]]) -> Fields:
        """`[static]fields.from-list`."""
        return cls([(cls.check_name(n), cls.check_value(v)) for n, v in entries])

    def get(self, name: str) -> list[bytes]:
        """All values of a field."""
        low = name.lower()
        return [v for n, v in self.entries if n == low]

    def has(self, name: str) -> bool:
        """Whether a field is present."""
        low = name.lower()
        return any(n == low for n, _ in self.entries)

    def set(self, name: str, values: list[bytes]) -> None:
        """Replace a field's values."""
        self._mutable()
        low = self.check_name(name)
        for v in values:
            self.check_value(v)
        self.entries = [(n, v) for n, v in self.entries if n != low] + [(low, v) for v in values]

    def delete(self, name: str) -> None:
        """Remove a field."""
        self._mutable()
        low = self.check_name(name)
        self.entries = [(n, v) for n, v in self.entries if n != low]

    def append(self, name: str, value: bytes) -> None:
        """Add a value to a field."""
        self._mutable()
        self.entries.append((self.check_name(name), self.check_value(value)))

    def list_entries(self) -> list[tuple[str, bytes]]:
        """All (name, value) pairs in order."""
        return list(self.entries)

    def clone(self) -> Fields:
        """A mutable copy."""
        return Fields(list(self.entries))

    def first(self, name: str) -> bytes | None:
        """The first value of a field, if any (host-side helper)."""
        for n, v in self.entries:
            if n == name:
                return v
        return None


class IncomingBody:
    """`incoming-body`: a request or response body arriving from the network."""

    def __init__(self, pipe: BytePipe) -> None:
        self.pipe = pipe
        self.stream_taken = False

    def stream(self) -> InputStream:
        """The body's input stream (once)."""
        if self.stream_taken:
            raise Err(None)
        self.stream_taken = True
        pipe = self.pipe
        # A stream dropped before its end lets the rest of the body drain unread, so the feeder
        # is never stuck on a full pipe and the trailers still arrive.
        return InputStream(pipe, on_drop=lambda: None if pipe.eof else pipe.close_reader(discard=True))

    @staticmethod
    def finish(this: IncomingBody) -> FutureTrailers:
        """Finish reading; the trailers arrive later."""
        return FutureTrailers(this.pipe)


class FutureTrailers:
    """`future-trailers`: ready when the body has ended."""

    def __init__(self, pipe: BytePipe) -> None:
        self.pipe = pipe
        self.taken = False

    def subscribe(self) -> Pollable:
        """Ready once the whole body has arrived."""
        pipe = self.pipe
        return Pollable(pipe.ctx, lambda: pipe.eof)

    def get(self) -> Any:
        """None until ready; then once the trailers (or the body's error)."""
        pipe = self.pipe
        with pipe.cond:
            if not pipe.eof:
                return None
        if self.taken:
            return Err(None)
        self.taken = True
        if pipe.error is not None:
            return Ok(Err(pipe.error.code or internal_error(pipe.error.message)))
        t = pipe.trailers
        return Ok(Ok(None if t is None else Fields(list(t), immutable=True)))


class IncomingRequest:
    """`incoming-request`, made by the host's HTTP server."""

    def __init__(
        self,
        method: str,
        path_with_query: str | None,
        scheme: str | None,
        authority: str | None,
        headers: list[tuple[str, bytes]],
        body: BytePipe,
    ) -> None:
        self._method = method_to_wit(method)
        self._path = path_with_query
        self._scheme = scheme
        self._authority = authority
        self._headers = headers
        self.body = body
        self.consumed = False

    def method(self) -> Any:
        """The request method."""
        return self._method

    def path_with_query(self) -> str | None:
        """Path and query."""
        return self._path

    def scheme(self) -> Any:
        """The scheme."""
        s = self._scheme
        if s is None:
            return None
        return ("HTTP", None) if s == "http" else ("HTTPS", None) if s == "https" else ("other", s)

    def authority(self) -> str | None:
        """The authority (host[:port])."""
        return self._authority

    def headers(self) -> Fields:
        """The request headers (immutable)."""
        return Fields(list(self._headers), immutable=True)

    def consume(self) -> IncomingBody:
        """The body (once)."""
        if self.consumed:
            raise Err(None)
        self.consumed = True
        return IncomingBody(self.body)


class OutgoingBody:
    """`outgoing-body`: a body the guest writes, streamed out through a pipe."""

    def __init__(self, pipe: BytePipe, expected_length: int | None, is_request: bool) -> None:
        self.pipe = pipe
        self.expected = expected_length
        self.written = 0
        self.is_request = is_request
        self.stream_taken = False
        self.finished = False

    def _size_error(self, size: int | None) -> tuple[str, int | None]:
        return ("HTTP-request-body-size" if self.is_request else "HTTP-response-body-size", size)

    def _count(self, n: int) -> None:
        self.written += n
        if self.expected is not None and self.written > self.expected:
            err = self._size_error(self.written)
            self.pipe.finish(IoError("body longer than its content-length", err))
            raise Err(("last-operation-failed", IoError("body longer than its content-length", err)))

    def write(self) -> OutputStream:
        """The body's output stream (once)."""
        if self.stream_taken:
            raise Err(None)
        self.stream_taken = True
        return OutputStream(self.pipe, on_write=self._count)

    @staticmethod
    def finish(this: OutgoingBody, trailers: Fields | None) -> None:
        """End the body, with optional trailers; checks the promised content-length."""
        this.finished = True
        if this.expected is not None and this.written != this.expected:
            err = this._size_error(this.written)
            this.pipe.finish(IoError("body length does not match content-length", err))
            raise Err(err)
        this.pipe.finish(None, None if trailers is None else list(trailers.entries))

    def drop(self) -> None:
        """Dropped without finish: the body is incomplete."""
        if not self.finished:
            self.pipe.finish(IoError("the guest dropped the body without finishing it"))


def _content_length(fields: Fields) -> int | None:
    v = fields.first("content-length")
    if v is None:
        return None
    try:
        return int(v.decode("ascii").strip())
    except ValueError:
        return None


class OutgoingResponse:
    """`outgoing-response`: the guest's answer to an incoming request."""

    def __init__(self, headers: Fields) -> None:
        self.status = 200
        self.fields = Fields(headers.entries)
        self.body_obj: OutgoingBody | None = None
        self.pipe: BytePipe | None = None

    def status_code(self) -> int:
        """The status code."""
        return self.status

    def set_status_code(self, code: int) -> None:
        """Set the status code (100..999)."""
        if not 100 <= code <= 999:
            raise Err(None)
        self.status = code

    def headers(self) -> Fields:
        """The response headers (immutable view)."""
        return Fields(self.fields.entries, immutable=True)

    def body(self) -> OutgoingBody:
        """The body (once)."""
        if self.body_obj is not None:
            raise Err(None)
        self.pipe = BytePipe(ctx())
        self.body_obj = OutgoingBody(self.pipe, _content_length(self.fields), is_request=False)
        return self.body_obj


class ResponseOutparam:
    """`response-outparam`: where the guest sets its response (delivered to the HTTP server)."""

    def __init__(self, deliver: Callable[[Any], None]) -> None:
        self.deliver = deliver
        self.set_already = False

    @staticmethod
    def set(param: ResponseOutparam, response: Any) -> None:
        """Deliver the response (or an error code)."""
        param.set_already = True
        param.deliver(response)

    def send_informational(self, status: int, headers: Fields) -> None:
        """1xx responses are not supported by this host."""
        raise Err(internal_error("informational responses are not supported"))


class RequestOptions:
    """`request-options`: timeouts for an outgoing request, in nanoseconds."""

    def __init__(self) -> None:
        self.connect: int | None = None
        self.first_byte: int | None = None
        self.between_bytes: int | None = None

    def _set(self, attr: str, v: int | None) -> None:
        setattr(self, attr, v)


class OutgoingRequest:
    """`outgoing-request`: a request the guest sends through the outgoing handler."""

    def __init__(self, headers: Fields) -> None:
        self.fields = Fields(headers.entries)
        self._method: Any = ("get", None)
        self._path: str | None = None
        self._scheme: Any = None
        self._authority: str | None = None
        self.body_obj: OutgoingBody | None = None

    def body(self) -> OutgoingBody:
        """The body (once)."""
        if self.body_obj is not None:
            raise Err(None)
        self.body_obj = OutgoingBody(BytePipe(ctx()), _content_length(self.fields), is_request=True)
        return self.body_obj

    def method(self) -> Any:
        """The method."""
        return self._method

    def set_method(self, m: Any) -> None:
        """Set the method (must be a valid token)."""
        if m[0] == "other" and not _TOKEN.match(str(m[1]).encode()):
            raise Err(None)
        self._method = m

    def path_with_query(self) -> str | None:
        """Path and query."""
        return self._path

    def set_path_with_query(self, p: str | None) -> None:
        """Set path and query."""
        if p is not None and any(c in p for c in " \r\n\0"):
            raise Err(None)
        self._path = p

    def scheme(self) -> Any:
        """The scheme."""
        return self._scheme

    def set_scheme(self, s: Any) -> None:
        """Set the scheme."""
        if s is not None and s[0] == "other" and not re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*$", str(s[1])):
            raise Err(None)
        self._scheme = s

    def authority(self) -> str | None:
        """The authority."""
        return self._authority

    def set_authority(self, a: str | None) -> None:
        """Set the authority (host[:port])."""
        if a is not None and not re.match(r"^[A-Za-z0-9.\-\[\]:_~%]*$", a):
            raise Err(None)
        self._authority = a

    def headers(self) -> Fields:
        """The request headers (immutable view)."""
        return Fields(self.fields.entries, immutable=True)


class IncomingResponse:
    """`incoming-response`: the answer to a guest's outgoing request."""

    def __init__(self, status: int, headers: list[tuple[str, bytes]], body: BytePipe) -> None:
        self._status = status
        self._headers = headers
        self.pipe = body
        self.consumed = False

    def status(self) -> int:
        """The status code."""
        return self._status

    def headers(self) -> Fields:
        """The headers (immutable)."""
        return Fields(list(self._headers), immutable=True)

    def consume(self) -> IncomingBody:
        """The body (once)."""
        if self.consumed:
            raise Err(None)
        self.consumed = True
        return IncomingBody(self.pipe)

    def drop(self) -> None:
        """Dropped by the guest: stop reading the network."""
        if not self.consumed:
            self.pipe.close_reader()


class FutureIncomingResponse:
    """`future-incoming-response`: resolved from the event loop when response headers arrive."""

    def __init__(self, wctx: WasiCtx) -> None:
        self.ctx = wctx
        self.result: Any = None
        self.taken = False
        self.task: Any = None

    def resolve(self, result: Any) -> None:
        """Set the outcome (`IncomingResponse` or an error-code `Err`); called on the event loop."""
        with self.ctx.cond:
            if self.result is None:
                self.result = result
            self.ctx.cond.notify_all()

    def subscribe(self) -> Pollable:
        """Ready when the response (or an error) is there."""
        return Pollable(self.ctx, lambda: self.result is not None)

    def get(self) -> Any:
        """None until ready; then once the response or its error."""
        with self.ctx.cond:
            r = self.result
        if r is None:
            return None
        if self.taken:
            return Err(None)
        self.taken = True
        return Ok(r if isinstance(r, Err) else Ok(r))

    def drop(self) -> None:
        """Dropped by the guest: cancel the request if still running."""
        if self.taken:
            # The guest holds the response: its body keeps streaming (an unread body is stopped
            # when the incoming-response or its stream is dropped), as in wasmtime.
            return
        task, loop = self.task, self.ctx.loop
        if task is not None and loop is not None and not task.done():
            loop.call_soon_threadsafe(task.cancel)


def http_error_code(err: IoError) -> Any:
    """`http-error-code`: the HTTP error code behind an `error`, if any."""
    code = err.code
    if isinstance(code, tuple) and code and isinstance(code[0], str) and code[0][:1].isalpha():
        return code
    return None


# Sends a lattice component's outgoing request through the http-client provider its link selects.
# Installed by `capabilities.http_client` (this layer does not import the capability layer above it).
ComponentSender = Callable[[WasiCtx, "OutgoingRequest", "RequestOptions | None"], "FutureIncomingResponse"]
_component_sender: ComponentSender | None = None


def set_component_sender(sender: ComponentSender | None) -> None:
    """Install how components on a lattice host (with a component context) send outgoing requests."""
    global _component_sender
    _component_sender = sender


def _outgoing_handle(request: OutgoingRequest, options: RequestOptions | None) -> FutureIncomingResponse:
    wctx = ctx()
    if wctx.config.component is not None:
        # On a lattice host the component's link decides where requests go, not the host's flags.
        if _component_sender is None:
            raise Err(internal_error("outgoing HTTP is not available on this host (no http-client support)"))
        return _component_sender(wctx, request, options)
    send = wctx.outgoing
    if send is None:
        raise Err(("HTTP-request-denied", None))
    result: FutureIncomingResponse = send(wctx, request, options)
    return result


def _opt(attr: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    return (lambda o: getattr(o, attr), lambda o, v: o._set(attr, v))


def interfaces() -> list[HostInterface]:
    """The `wasi:http` interfaces (`types` and `outgoing-handler`)."""
    get_c, set_c = _opt("connect")
    get_f, set_f = _opt("first_byte")
    get_b, set_b = _opt("between_bytes")
    types: dict[str, Callable[..., Any]] = {
        "http-error-code": http_error_code,
        "[constructor]fields": lambda: Fields(),
        "[static]fields.from-list": Fields.from_list,
        "[method]fields.get": Fields.get,
        "[method]fields.has": Fields.has,
        "[method]fields.set": Fields.set,
        "[method]fields.delete": Fields.delete,
        "[method]fields.append": Fields.append,
        "[method]fields.entries": Fields.list_entries,
        "[method]fields.clone": Fields.clone,
        "[method]incoming-request.method": IncomingRequest.method,
        "[method]incoming-request.path-with-query": IncomingRequest.path_with_query,
        "[method]incoming-request.scheme": IncomingRequest.scheme,
        "[method]incoming-request.authority": IncomingRequest.authority,
        "[method]incoming-request.headers": IncomingRequest.headers,
        "[method]incoming-request.consume": IncomingRequest.consume,
        "[constructor]outgoing-request": OutgoingRequest,
        "[method]outgoing-request.body": OutgoingRequest.body,
        "[method]outgoing-request.method": OutgoingRequest.method,
        "[method]outgoing-request.set-method": OutgoingRequest.set_method,
        "[method]outgoing-request.path-with-query": OutgoingRequest.path_with_query,
        "[method]outgoing-request.set-path-with-query": OutgoingRequest.set_path_with_query,
        "[method]outgoing-request.scheme": OutgoingRequest.scheme,
        "[method]outgoing-request.set-scheme": OutgoingRequest.set_scheme,
        "[method]outgoing-request.authority": OutgoingRequest.authority,
        "[method]outgoing-request.set-authority": OutgoingRequest.set_authority,
        "[method]outgoing-request.headers": OutgoingRequest.headers,
        "[constructor]request-options": RequestOptions,
        "[method]request-options.connect-timeout": get_c,
        "[method]request-options.set-connect-timeout": set_c,
        "[method]request-options.first-byte-timeout": get_f,
        "[method]request-options.set-first-byte-timeout": set_f,
        "[method]request-options.between-bytes-timeout": get_b,
        "[method]request-options.set-between-bytes-timeout": set_b,
        "[method]response-outparam.send-informational": ResponseOutparam.send_informational,
        "[static]response-outparam.set": ResponseOutparam.set,
        "[method]incoming-response.status": IncomingResponse.status,
        "[method]incoming-response.headers": IncomingResponse.headers,
        "[method]incoming-response.consume": IncomingResponse.consume,
        "[method]incoming-body.stream": IncomingBody.stream,
        "[static]incoming-body.finish": IncomingBody.finish,
        "[method]future-trailers.subscribe": FutureTrailers.subscribe,
        "[method]future-trailers.get": FutureTrailers.get,
        "[constructor]outgoing-response": OutgoingResponse,
        "[method]outgoing-response.status-code": OutgoingResponse.status_code,
        "[method]outgoing-response.set-status-code": OutgoingResponse.set_status_code,
        "[method]outgoing-response.headers": OutgoingResponse.headers,
        "[method]outgoing-response.body": OutgoingResponse.body,
        "[method]outgoing-body.write": OutgoingBody.write,
        "[static]outgoing-body.finish": OutgoingBody.finish,
        "[method]future-incoming-response.subscribe": FutureIncomingResponse.subscribe,
        "[method]future-incoming-response.get": FutureIncomingResponse.get,
    }
    return [
        HostInterface("wasi:http/types", types),
        HostInterface("wasi:http/outgoing-handler", {"handle": _outgoing_handle}),
    ]


# ---------------------------------------------------------------------------------------------
# Outgoing requests, sent from the event loop with a pooled aiohttp client session.
# ---------------------------------------------------------------------------------------------


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
            resp = await asyncio.wait_for(resp_cm.__aenter__(), first_byte)
        except asyncio.CancelledError:
            fut.resolve(Err(("HTTP-request-denied", None)))
            raise
        except BaseException as e:
            fut.resolve(Err(_client_error_code(e)))
            return
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
