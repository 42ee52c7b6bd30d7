"""`wasi:http` 0.2 outgoing requests: the request and options a guest builds, the response it gets
back, and `outgoing-handler.handle`, which picks how the request is sent."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from wasmlattice.runtime.witypes import Err, Ok
from wasmlattice.wasi.ctx import WasiCtx, ctx
from wasmlattice.wasi.http_body import IncomingBody, OutgoingBody, content_length
from wasmlattice.wasi.http_types import TOKEN, Fields, internal_error
from wasmlattice.wasi.io import BytePipe, Pollable


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
        self.body_obj = OutgoingBody(BytePipe(ctx()), content_length(self.fields), is_request=True)
        return self.body_obj

    def method(self) -> Any:
        """The method."""
        return self._method

    def set_method(self, m: Any) -> None:
        """Set the method (must be a valid token)."""
        if m[0] == "other" and not TOKEN.match(str(m[1]).encode()):
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
        # Called once with the outcome when it is set (a recorder following the exchange).
        self._listener: Callable[[Any], None] | None = None

    def resolve(self, result: Any) -> None:
        """Set the outcome (`IncomingResponse` or an error-code `Err`); called on the event loop."""
        with self.ctx.cond:
            if self.result is not None:
                self.ctx.cond.notify_all()
                return
            self.result = result
            listener, self._listener = self._listener, None
            self.ctx.cond.notify_all()
        if listener is not None:
            listener(result)

    def when_resolved(self, listener: Callable[[Any], None]) -> None:
        """Call `listener` with the outcome once it is set (now, if it already is); one listener."""
        with self.ctx.cond:
            r = self.result
            if r is None:
                self._listener = listener
                return
        listener(r)

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


# Sends a lattice component's outgoing request through the http-client provider its link selects.
# Installed by `capabilities.http_client` (this layer does not import the capability layer above it).
ComponentSender = Callable[[WasiCtx, "OutgoingRequest", "RequestOptions | None"], "FutureIncomingResponse"]
_component_sender: ComponentSender | None = None


def set_component_sender(sender: ComponentSender | None) -> None:
    """Install how components on a lattice host (with a component context) send outgoing requests."""
    global _component_sender
    _component_sender = sender


def outgoing_handle(request: OutgoingRequest, options: RequestOptions | None) -> FutureIncomingResponse:
    """`outgoing-handler.handle`: send by the component's link, or under the host's `--allow-outgoing`."""
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
