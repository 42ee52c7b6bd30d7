"""The server side of wRPC over NATS: serve a function to the lattice.

`serve` subscribes a handler to an invocation subject; the handler gets the encoded parameters
and returns the encoded results (or a `Reply` with asynchronous results), and reads asynchronous
parameters through `current_invocation()`. The wire is described in `transport.py`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from wasmlattice.observability import tracing
from wasmlattice.protocol.wrpc.inbox import Mux, mux_for
from wasmlattice.protocol.wrpc.streams import ChunkStream, StreamSet, publish_stream, pump
from wasmlattice.protocol.wrpc.transport import (
    DEFAULT_TIMEOUT,
    IndexPath,
    UnexpectedEof,
    WrpcError,
    encode_error,
    index_subject,
    span_fields,
)

# The wRPC transport's logger, whichever of its modules logs, so log settings address it as one.
from wasmlattice.supervision import Supervisor

log = logging.getLogger("wasmlattice.protocol.wrpc.transport")


@dataclass(frozen=True)
class Reply:
    """A handler result with asynchronous parts: `results` go on `R_c.results`, each of `streams` on
    `R_c.results.<path>` after it."""

    results: bytes
    streams: Mapping[IndexPath, AsyncIterable[bytes]] = field(default_factory=dict)


Handler = Callable[[bytes, Mapping[str, str]], Awaitable[bytes | Reply]]


class ServerInvocation:
    """The invocation a handler is running for (see `current_invocation()`)."""

    __slots__ = ("_params", "_streams", "headers", "subject")

    def __init__(self, subject: str, headers: Mapping[str, str], idle_timeout: float | None = None) -> None:
        """`idle_timeout`: how long an asynchronous parameter may send nothing before it fails (a
        caller whose messages were lost, or that is gone, would otherwise hold the handler forever)."""
        self.subject = subject
        self.headers = headers
        self._params = ChunkStream()
        self._streams = StreamSet(idle_timeout, f"{subject}: parameter stream")

    def deliver(self, rest: str, msg: Msg) -> None:
        """Route one message below `R_s` (called by the connection's inbox multiplexer)."""
        if rest == "params":
            self._params.feed(msg.data)
        elif rest.startswith("params."):
            self._streams.get(rest[7:]).feed(msg.data)

    def param_stream(self, path: Sequence[int]) -> ChunkStream:
        """The asynchronous parameter at index `path`, sent on `R_s.params.<path>`."""
        if not path:
            raise ValueError("the root parameters are not a stream; the handler receives them")
        return self._streams.get(".".join(str(i) for i in path))

    def _end(self) -> None:
        self._streams.fail(UnexpectedEof(f"{self.subject}: the invocation ended"))


_current: contextvars.ContextVar[ServerInvocation] = contextvars.ContextVar("wrpc_invocation")


def current_invocation() -> ServerInvocation:
    """The invocation the calling handler serves (raises LookupError outside a handler)."""
    return _current.get()


class Server:
    """A running `serve()` subscription; `await stop()` ends it."""

    def __init__(
        self,
        nc: Client,
        subject: str,
        queue: str | None,
        handler: Handler,
        *,
        params_complete: Callable[[bytes], bool] | None,
        max_concurrency: int | None,
        params_timeout: float,
    ) -> None:
        self.subject = subject
        self.queue = queue
        self._nc = nc
        self._handler = handler
        self._complete = params_complete
        self._sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._params_timeout = params_timeout
        # Owns one task per invocation being handled.
        self._supervisor = Supervisor(f"wrpc-server:{subject}", logger=log)
        self._mux: Mux | None = None
        self._sub: Any = None

    @property
    def in_flight(self) -> int:
        """How many invocations are being handled now."""
        return self._supervisor.spawned

    async def _start(self) -> None:
        await self._supervisor.start()
        self._mux = await mux_for(self._nc)
        self._sub = await self._nc.subscribe(self.subject, queue=self.queue or "", cb=self._on_invocation)
        # A round trip makes the subscription effective before `serve` returns: callers on other
        # connections may invoke right away and would otherwise race it into "no responders".
        # nats-py writes PING straight to the socket while SUB waits in its send buffer, so the first
        # PONG can precede the SUB; by the time it arrives the buffer has gone out, and the second
        # PING is ordered after the SUB.
        await self._nc.flush()
        await self._nc.flush()

    async def _on_invocation(self, msg: Msg) -> None:
        if not msg.reply:
            log.warning(
                "dropped a message on %s without a reply subject: not a wRPC invocation", self.subject
            )
            return
        if self._sem is not None:
            # Waiting here holds back the subscription, so excess invocations queue in NATS' client
            # buffer instead of piling up as tasks.
            await self._sem.acquire()
        if not self._supervisor.running:
            # Delivered after stop() began: the caller sees no handshake and times out or retries.
            log.debug("dropped an invocation of %s: the server is stopping", self.subject)
            self._task_done(None)
            return
        self._supervisor.spawn("invocation", self._handle(msg)).add_done_callback(self._task_done)

    def _task_done(self, _task: asyncio.Task[None] | None) -> None:
        if self._sem is not None:
            self._sem.release()

    async def _collect_params(self, call: ServerInvocation, first: bytes) -> bytes:
        parts = [first] if first else []
        complete = self._complete
        async for chunk in call._params:
            parts.append(chunk)
            if complete is not None and complete(b"".join(parts)):
                break
        return b"".join(parts)

    async def _handle(self, msg: Msg) -> None:
        if not tracing.enabled():
            return await self._serve_one(msg)
        # The caller's trace context (W3C headers on the invocation) is the parent of this side.
        name, attrs = span_fields(msg.subject, msg.headers)
        with tracing.server_span(name, msg.headers, attrs):
            await self._serve_one(msg)

    async def _serve_one(self, msg: Msg) -> None:
        nc = self._nc
        assert self._mux is not None
        results_subject = f"{msg.reply}.results"
        # A parameter stream idle for as long as a whole invocation may take to start is given up.
        call = ServerInvocation(msg.subject, msg.headers or {}, self._params_timeout)
        token, own_inbox = self._mux.register(call)
        try:
            # Routing is in place before the handshake goes out, so no parameter message can be lost.
            await nc.publish(msg.reply, b"", reply=own_inbox)
            params = msg.data
            if self._complete is None or not self._complete(params):
                try:
                    async with asyncio.timeout(self._params_timeout):
                        params = await self._collect_params(call, params)
                except TimeoutError:
                    raise UnexpectedEof(
                        f"{self.subject}: parameters incomplete after {self._params_timeout:g} s"
                    ) from None
            _current.set(call)
            reply = await self._handler(params, call.headers)
            if isinstance(reply, Reply):
                await publish_stream(nc, results_subject, reply.results)
                if reply.streams:
                    await asyncio.gather(
                        *(pump(nc, index_subject(results_subject, p), s) for p, s in reply.streams.items())
                    )
            else:
                await publish_stream(nc, results_subject, reply)
        except asyncio.CancelledError:
            await self._report(results_subject, "the server stopped before the invocation finished")
            raise
        except Exception as exc:
            # A handler raises WrpcError with a message meant for the caller (a trap, a full
            # component, bad parameters): the message says it all. Anything else is a bug here,
            # and its traceback is what whoever fixes it needs.
            tracing.fail(tracing.current_span(), str(exc) or type(exc).__name__)
            expected = isinstance(exc, WrpcError)
            log.warning("wRPC invocation of %s failed: %s", self.subject, exc, exc_info=not expected)
            await self._report(results_subject, str(exc) or type(exc).__name__)
        finally:
            self._mux.unregister(token)
            call._end()

    async def _report(self, results_subject: str, text: str) -> None:
        """Tell the client the invocation failed: error text, then close the result stream."""
        if self._nc.is_closed:
            return
        try:
            await self._nc.publish(f"{results_subject[: -len('.results')]}.error", encode_error(text))
            await self._nc.publish(results_subject, b"")
        except Exception as exc:
            log.warning("could not report a failed invocation of %s to its caller: %s", self.subject, exc)

    async def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stop taking invocations; wait up to `timeout` for running ones, then cancel them."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            if not self._nc.is_closed:
                await sub.unsubscribe()
        await self._supervisor.stop(timeout)


async def serve(
    nc: Client,
    subject: str,
    queue: str | None,
    handler: Handler,
    *,
    params_complete: Callable[[bytes], bool] | None = None,
    max_concurrency: int | None = None,
    params_timeout: float = DEFAULT_TIMEOUT,
) -> Server:
    """Serve invocations on `subject` (in queue group `queue`) with `handler(params, headers)`.

    The handler returns the encoded results (`bytes`) or a `Reply` with asynchronous results; it can
    read asynchronous parameters through `current_invocation()`. If it raises, the caller gets a
    `RemoteError` with the message. `params_complete(buf)` says whether `buf` holds all parameters;
    without it the server waits for the client to close the parameter stream, one more message.
    """
    server = Server(
        nc,
        subject,
        queue,
        handler,
        params_complete=params_complete,
        max_concurrency=max_concurrency,
        params_timeout=params_timeout,
    )
    await server._start()
    return server
