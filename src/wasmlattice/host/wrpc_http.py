"""HTTP across the lattice: serving a component's HTTP handler over wRPC, and forwarding to one.

The serving side (`HttpExport`) runs the guest through the host's one guest-call path with the
component's `HttpTarget` (instance bound, worker threads, deadline) like a local request; the
calling side (`RemoteHttp`) is what the router hands the HTTP server provider for a component that
does not run on its host. The wire format is `protocol/wrpc/http.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from wasmlattice.capabilities.http_ingress import (
    HTTP_OPERATION,
    STREAM_GRACE,
    Exchange,
    HttpGuestCall,
    HttpTarget,
    RequestParts,
    bodyless,
    error_response,
    guest_request_headers,
    guest_response,
    send_continue,
    split_target,
)
from wasmlattice.protocol.wrpc.async_values import STREAM_END
from wasmlattice.protocol.wrpc.client import Invocation
from wasmlattice.protocol.wrpc.http import (
    BODY_IDLE_TIMEOUT,
    CHUNK,
    FUNCTION,
    INSTANCE,
    REQUEST_BODY,
    REQUEST_TRAILERS,
    RESPONSE_BODY,
    RESPONSE_TRAILERS,
    Entries,
    RequestHead,
    ResponseHead,
    WrpcHttpError,
    decode_body,
    decode_request,
    decode_result,
    decode_trailers,
    encode_body_chunk,
    encode_error_code,
    encode_request,
    encode_response,
    encode_trailers,
    with_idle_timeout,
)
from wasmlattice.protocol.wrpc.primitives import CodecError
from wasmlattice.protocol.wrpc.server import Reply, ServerInvocation, current_invocation
from wasmlattice.protocol.wrpc.transport import (
    SOURCE_ID,
    TARGET_ID,
    InvocationTimeout,
    NoResponders,
    RemoteError,
    WrpcError,
    invocation_subject,
)
from wasmlattice.runtime.execution import SlotTimeout, interrupted, start_guest
from wasmlattice.runtime.fastcall import GuestTrap
from wasmlattice.runtime.witypes import Err, Ok
from wasmlattice.supervision import Supervisor
from wasmlattice.wasi.http_incoming import OutgoingResponse
from wasmlattice.wasi.io import BytePipe, IoError

log = logging.getLogger("wasmlattice.http")


class HttpExport:
    """Serves `wrpc:http/incoming-handler.handle` invocations with one component's HTTP target."""

    def __init__(
        self,
        component_id: str,
        target: HttpTarget,
        timeout: float,
        supervisor: Supervisor,
        *,
        denial: Callable[[str, str], Awaitable[str | None]] | None = None,
    ) -> None:
        self.component_id = component_id
        # The host's policy check (instance, function) -> error text or None (docs/policy.md).
        self.denial = denial
        self.target = target
        # How long an invocation waits for a free instance (the caller's time-out).
        self.timeout = timeout
        # Owns each invocation's body feeder and the wait for its guest's end.
        self.sup = supervisor

    async def handle(self, data: bytes, headers: Mapping[str, str]) -> Reply | bytes:
        """One invocation: run the guest on the request; its response head, body and trailers."""
        cid = self.component_id
        if self.denial is not None:
            denied = await self.denial(INSTANCE, FUNCTION)
            if denied is not None:
                log.info("%s: %s (request from %s)", cid, denied, _source(headers))
                raise WrpcHttpError(denied)
        try:
            req, _ = decode_request(data)
        except CodecError as e:
            raise WrpcHttpError(f"invalid {INSTANCE}#{FUNCTION} parameters for {cid}: {e}") from None
        call = current_invocation()
        target = self.target
        parts = RequestParts(req.method, req.path_with_query, req.scheme, req.authority, req.headers)
        guest = HttpGuestCall(target, parts, None)
        done = asyncio.Event()
        try:
            # Never inline: the body arrives from the invocation while the guest runs.
            finished = await start_guest(
                target, guest.attempt, inline=False, wait=self.timeout, operation=HTTP_OPERATION
            )
        except SlotTimeout as e:
            raise WrpcHttpError(str(e)) from None
        except RuntimeError:  # the workload was retired: the component was replaced or stopped
            raise WrpcHttpError(f"{cid} is stopping and cannot take the request") from None
        ex, body = guest.ex, guest.body
        self.sup.spawn(f"{cid} request body", _feed_body(call, req, body))
        try:
            await ex.wait_first(STREAM_GRACE)
        finally:
            # Whatever happens to this invocation, the guest's end is logged and its body released.
            self.sup.spawn(f"{cid} guest end", self._settle(ex, finished, done))
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
        return Reply(
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

    async def _settle(
        self, ex: Exchange, finished: asyncio.Future[BaseException | None], done: asyncio.Event
    ) -> None:
        try:
            await ex.wait_finished()
            await finished
        finally:
            done.set()
        e = ex.error
        if e is not None and isinstance(ex.response, (Ok, Err, OutgoingResponse)):
            reason = e.reason if isinstance(e, GuestTrap) else repr(e)
            log.error("%s failed after responding: %s", self.component_id, reason)


def _source(headers: Mapping[str, str]) -> str:
    return headers.get(SOURCE_ID, "a caller")


async def _feed_body(call: ServerInvocation, req: RequestHead, pipe: BytePipe) -> None:
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
        yield STREAM_END
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
            subject = invocation_subject(f"{self.lattice}.{component_id}", INSTANCE, FUNCTION)
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
        inv = Invocation(
            self.nc,
            self.subject(component_id),
            params,
            headers={SOURCE_ID: self.source_id, TARGET_ID: component_id},
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
        self, request: web.BaseRequest, inv: Invocation, cid: str, upload: _Upload
    ) -> web.StreamResponse:
        try:
            data = await inv.results()
        except NoResponders:
            return self._not_running(cid)
        except InvocationTimeout as e:
            # No handshake at all: no host took the invocation.
            if not inv.handshake_done:
                return self._not_running(cid)
            log.warning("%s: %s", cid, e)
            return error_response(504, f"component {cid} did not answer within {self.timeout:g}s")
        except RemoteError as e:
            if upload.too_big:
                return error_response(413, f"request body exceeds {self.max_body} bytes")
            log.warning("%s failed on another host: %s", cid, e)
            return error_response(500, f"the component failed: {_remote_reason(e)}")
        except WrpcError as e:
            log.warning("%s: invocation failed: %s", cid, e)
            return error_response(502, f"calling component {cid} over the lattice failed: {e}")
        try:
            head = decode_result(data)
        except CodecError as e:
            log.warning("%s answered with an invalid wrpc:http result: %s", cid, e)
            return error_response(502, f"component {cid} answered with an invalid response: {e}")
        if isinstance(head, Err):
            log.warning("%s answered with error code %s", cid, head.value)
            return error_response(500, f"the component answered with an error: {head.value}")
        return await self._stream(request, inv, cid, head)

    async def _stream(
        self, request: web.BaseRequest, inv: Invocation, cid: str, head: ResponseHead
    ) -> web.StreamResponse:
        out = guest_response(head.status, head.headers)
        no_body = bodyless(request.method, head.status)
        try:
            await out.prepare(request)
            if head.body is not None:
                if not no_body:
                    await out.write(head.body)
            else:
                messages = with_idle_timeout(inv.result_stream(RESPONSE_BODY), BODY_IDLE_TIMEOUT)
                async for chunk in decode_body(messages, "the response body"):
                    if not no_body:
                        await out.write(chunk)
            await out.write_eof()
        except (OSError, WrpcError, CodecError) as e:
            # The body failed midway (or the client went away): abort the connection so the client
            # sees a truncated response rather than a clean end.
            if isinstance(e, ConnectionError):
                log.debug("%s: client went away during the response: %s", cid, e)  # routine
            else:
                log.warning("%s: response body from another host aborted: %s", cid, e)
            if request.transport is not None:
                request.transport.close()
        return out


def _remote_reason(e: RemoteError) -> str:
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
        yield STREAM_END
