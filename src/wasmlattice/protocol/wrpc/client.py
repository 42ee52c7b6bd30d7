"""The client side of wRPC over NATS: invoke a function served elsewhere in the lattice.

`invoke` sends encoded parameters and returns the encoded results; `Invocation` is the same call
step by step, with asynchronous parameters and results. The wire is described in `transport.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Mapping, Sequence
from types import TracebackType

from nats.aio.client import Client
from nats.aio.msg import Msg

from wasmlattice.observability import tracing
from wasmlattice.protocol.wrpc.inbox import Mux, mux_for
from wasmlattice.protocol.wrpc.streams import ChunkStream, StreamSet, pump
from wasmlattice.protocol.wrpc.transport import (
    DEFAULT_TIMEOUT,
    DESCRIPTION_HEADER,
    STATUS_HEADER,
    TRACEPARENT,
    TRACESTATE,
    InvocationTimeout,
    RemoteError,
    UnexpectedEof,
    WrpcError,
    decode_error,
    first_chunk_budget,
    index_subject,
    new_traceparent,
    span_fields,
    split_payload,
    status_error,
)


def _with_traceparent(headers: Mapping[str, str] | None) -> dict[str, str]:
    out = dict(headers) if headers else {}
    if tracing.enabled():
        # The trace context of the invocation's span is put in at `start`, replacing any given.
        for k in [k for k in out if k.lower() in (TRACEPARENT, TRACESTATE)]:
            del out[k]
        return out
    if not any(k.lower() == TRACEPARENT for k in out):
        out[TRACEPARENT] = new_traceparent()
    return out


class Invocation:
    """One outgoing invocation; use as `async with Invocation(...) as inv:`.

    `results()` returns the synchronous result bytes; `result_stream(path)` iterates the chunks of an
    asynchronous result sent on `R_c.results.<path>`. Leaving the block stops routing its messages.
    """

    def __init__(
        self,
        nc: Client,
        subject: str,
        params: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        param_streams: Mapping[Sequence[int], AsyncIterable[bytes]] | None = None,
    ) -> None:
        self.subject = subject
        self.timeout = timeout
        self._nc = nc
        self._params = params
        self._headers = _with_traceparent(headers)
        self._param_streams = param_streams
        self._handshake: asyncio.Future[Msg] | None = None
        self._results = ChunkStream()
        self._streams = StreamSet()
        self._senders: list[asyncio.Task[None]] = []
        self._mux: Mux | None = None
        self._token = ""
        self._deadline = 0.0
        self._ready = False
        self._first_len = 0
        self._data: bytes | None = None
        self._remote_error: RemoteError | None = None
        self._span: tracing.Span | None = None

    @property
    def handshake_done(self) -> bool:
        """Whether the server has answered the handshake (someone is serving the call)."""
        return self._ready

    # -- routing (called by the mux) ----------------------------------------------------------

    def deliver(self, rest: str, msg: Msg) -> None:
        """Route one message on `R_c` or below it (called by the connection's inbox multiplexer)."""
        if rest == "results":
            self._results.feed(msg.data)
        elif rest == "":
            if self._handshake is not None and not self._handshake.done():
                self._handshake.set_result(msg)
        elif rest.startswith("results."):
            self._streams.get(rest[8:]).feed(msg.data)
        elif rest == "error":
            self._remote_error = RemoteError(f"{self.subject}: the server failed: {decode_error(msg.data)}")
            self._results.fail(self._remote_error)
            self._streams.fail(self._remote_error)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Publish the invocation message (the rest follows the handshake)."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.timeout
        if tracing.enabled():
            # wasmCloud carries W3C trace context on every invocation's NATS headers.
            name, attrs = span_fields(self.subject, self._headers)
            self._span = tracing.start_span(name, tracing.SpanKind.CLIENT, attrs)
            with tracing.use(self._span):
                tracing.inject(self._headers)
        self._mux = await mux_for(self._nc)
        self._handshake = loop.create_future()
        self._token, reply = self._mux.register(self)
        budget = first_chunk_budget(self._nc.max_payload, reply, self._headers)
        first = self._params if len(self._params) <= budget else self._params[:budget]
        self._first_len = len(first)
        try:
            await self._nc.publish(self.subject, first, reply=reply, headers=self._headers)
        except Exception as e:
            tracing.fail(self._span, f"cannot publish the invocation: {e}")
            self.close()
            raise

    async def _complete_handshake(self) -> None:
        if self._ready:
            return
        assert self._handshake is not None, "Invocation.start() must run first"
        msg = await self._handshake
        headers = msg.headers
        if headers and STATUS_HEADER in headers and not msg.data:
            status = headers[STATUS_HEADER]
            if not status.startswith("2"):
                raise status_error(self.subject, status, headers.get(DESCRIPTION_HEADER))
        if not msg.reply:
            raise WrpcError(
                f"{self.subject}: the server's handshake named no reply subject; it does not speak "
                "wRPC over NATS correctly"
            )
        self._ready = True
        nc = self._nc
        params_subject = f"{msg.reply}.params"
        rest = self._params[self._first_len :]
        for chunk in split_payload(rest, nc.max_payload):
            await nc.publish(params_subject, chunk)
        await nc.publish(params_subject, b"")
        if self._param_streams:
            loop = asyncio.get_running_loop()
            for path, chunks in self._param_streams.items():
                task = loop.create_task(pump(nc, index_subject(params_subject, path), chunks))
                self._senders.append(task)

    def _timeout_error(self) -> InvocationTimeout:
        return InvocationTimeout(
            f"{self.subject}: no result within {self.timeout:g} s (the target may be overloaded or hung; "
            "raise the timeout if the call is legitimately slow)"
        )

    async def results(self) -> bytes:
        """The synchronous result bytes, once the server closes `R_c.results`.

        Raises `NoResponders`, `InvocationTimeout` (deadline: `timeout` after `start`),
        `RemoteError` or `WrpcError`.
        """
        if self._data is not None:
            return self._data
        if self._span is None:
            return await self._read_results()
        try:
            return await self._read_results()
        except BaseException as e:
            tracing.fail(self._span, str(e) or type(e).__name__)
            raise

    async def _read_results(self) -> bytes:
        try:
            async with asyncio.timeout_at(self._deadline):
                await self._complete_handshake()
                self._data = await self._results.read_all()
                return self._data
        except TimeoutError:
            raise self._timeout_error() from None

    async def wait_sent(self) -> None:
        """Wait until every asynchronous parameter stream has been sent and closed."""
        if not self._senders:
            return
        try:
            async with asyncio.timeout_at(self._deadline):
                await asyncio.gather(*self._senders)
        except TimeoutError:
            raise self._timeout_error() from None
        except WrpcError:
            raise
        except Exception as exc:
            raise WrpcError(f"{self.subject}: sending an asynchronous parameter failed: {exc}") from exc

    def result_stream(self, path: Sequence[int]) -> ChunkStream:
        """The asynchronous result at index `path`, sent on `R_c.results.<path>`."""
        if not path:
            raise ValueError("the root result is not a stream; use results()")
        if self._remote_error is not None:
            raise self._remote_error
        return self._streams.get(".".join(str(i) for i in path))

    def close(self) -> None:
        """Stop routing this invocation's messages and stop sending its parameter streams."""
        if self._span is not None:
            span, self._span = self._span, None
            span.end()
        if self._mux is not None:
            self._mux.unregister(self._token)
        for t in self._senders:
            t.cancel()
        closed = UnexpectedEof(f"{self.subject}: the invocation was closed locally")
        self._results.fail(closed)
        self._streams.fail(closed)

    async def __aenter__(self) -> Invocation:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def invoke(
    nc: Client,
    subject: str,
    params: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    param_streams: Mapping[Sequence[int], AsyncIterable[bytes]] | None = None,
) -> bytes:
    """Invoke the function served on `subject` with encoded `params`; return the encoded results.

    `param_streams` maps index paths to async iterables of chunks sent as asynchronous parameters.
    The `timeout` covers the whole call, including sending the parameter streams.
    """
    inv = Invocation(nc, subject, params, headers=headers, timeout=timeout, param_streams=param_streams)
    await inv.start()
    try:
        data = await inv.results()
        await inv.wait_sent()
        return data
    finally:
        inv.close()
