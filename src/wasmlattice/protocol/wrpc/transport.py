"""wRPC 0.0.1 over NATS: invoke functions served elsewhere in the lattice, and serve functions.

This module moves raw bytes; encoding values is the codec's job (`wrpc.codec`).

The wire, as this module implements it (wRPC `SPEC.md`, NATS section, and the behaviour of the
reference `wrpc-transport-nats` crate, which wasmCloud v1 hosts and provider SDKs use):

* An invocation is addressed to `[<prefix>.]wrpc.0.0.1.[<instance>.]<function>`, where the instance
  is the versioned WIT interface (`wasi:keyvalue/store@0.2.0-draft`) and is left out for root-level
  functions. wasmCloud puts `<lattice>.<entity id>` in front; a server of a component or provider
  listens with the queue group `<lattice>.<entity id>` so that replicas share the load.
* The client picks a fresh reply inbox `R_c` (here `_INBOX.<connection nuid>.<counter>`, one
  wildcard subscription `_INBOX.<connection nuid>.>` per NATS connection serving every call, as the
  reference crate does) and publishes the encoded parameters to the invocation subject with reply
  `R_c` and its headers. Parameters that do not fit one NATS message are cut: the first message
  carries what fits in `max_payload` less the reply subject and the header block.
* The server answers on `R_c` with an **empty** message whose reply subject is its own fresh inbox
  `R_s` (the handshake). A NATS status message on `R_c` instead means no handshake: 503 (no
  responders) fails the call at once, 408 is a timeout and 409 a terminated request.
* After the handshake the client sends the rest of the parameter bytes on `R_s.params`, each message
  at most `max_payload`, and then closes that stream with an empty message (the reference client
  always closes it, even when everything fitted the first message). Asynchronous parameter values
  (pending `stream`/`future` values) travel on `R_s.params.<i>.<j>…`, the index path of the value.
* The server gets complete parameters either from the value decoder (it knows when the bytes hold
  every parameter; pass `params_complete`) or from that closing empty message.
* The server sends the encoded results on `R_c.results` in chunks of at most `max_payload` and closes
  the stream with an empty message; asynchronous results go to `R_c.results.<i>…`, each stream closed
  the same way. A function without results thus produces just the closing message.
* An empty message closes a stream. When the handler fails, the server closes every stream it opened
  with an empty message. The current spec carries no error text; this module additionally publishes
  the error text (encoded as a component-model `string`: LEB128 length, UTF-8) on `R_c.error` before
  closing, as wRPC's earlier NATS transport did. The reference client drops messages on subjects it
  does not know, so this stays compatible; our client turns it into `RemoteError`.
* Invocations from a host carry W3C trace context headers (`traceparent`, maybe `tracestate`) and
  wasmCloud's `source-id` and `link-name`; `invoke` adds a fresh `traceparent` when none is given.
  The default timeout for an invocation is 10 s.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import random
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol
from weakref import WeakKeyDictionary

from nats.aio.client import Client
from nats.aio.msg import Msg

from wasmlattice.supervision import Supervisor

log = logging.getLogger(__name__)

PROTOCOL = "wrpc.0.0.1"
DEFAULT_TIMEOUT = 10.0

# Header names used by wasmCloud hosts on invocations.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
SOURCE_ID = "source-id"
LINK_NAME = "link-name"
TARGET_ID = "target-id"

_STATUS = "Status"
_DESCRIPTION = "Description"
# The NATS header block is `NATS/1.0\r\n`, one `key: value\r\n` line per header and a final `\r\n`.
_HEADER_OVERHEAD = len(b"NATS/1.0\r\n") + len(b"\r\n")

IndexPath = tuple[int, ...]


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class WrpcError(Exception):
    """A wRPC invocation failed."""


class NoResponders(WrpcError):
    """Nothing subscribes to the invocation subject (NATS status 503)."""


class InvocationTimeout(WrpcError):
    """The invocation did not complete before its deadline."""


class UnexpectedEof(WrpcError):
    """The peer ended the invocation before the protocol was complete."""


class RemoteError(WrpcError):
    """The server reported that handling the invocation failed."""


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def invocation_subject(prefix: str | None, instance: str, func: str) -> str:
    """The subject wRPC invocations of `instance`.`func` are published to, below an optional prefix."""
    parts = [prefix] if prefix else []
    parts.append(PROTOCOL)
    if instance:
        parts.append(instance)
    parts.append(func)
    return ".".join(parts)


def index_subject(base: str, path: Iterable[int]) -> str:
    """`base` followed by the index path, e.g. `R.results` and (0, 1) give `R.results.0.1`."""
    suffix = ".".join(str(i) for i in path)
    return f"{base}.{suffix}" if suffix else base


def parse_index(text: str) -> IndexPath:
    """The index path spelled by dotted decimal `text` (`""` is the root path)."""
    return tuple(int(p) for p in text.split(".")) if text else ()


def split_payload(data: bytes, limit: int) -> list[bytes]:
    """`data` cut into consecutive chunks of at most `limit` bytes (none for empty data)."""
    if limit <= 0:
        raise ValueError(f"cannot split a payload into chunks of at most {limit} bytes")
    if len(data) <= limit:
        return [data] if data else []
    return [data[i : i + limit] for i in range(0, len(data), limit)]


def header_block_size(headers: Mapping[str, str] | None) -> int:
    """How many bytes `headers` add to a NATS message (0 without headers)."""
    if not headers:
        return 0
    size = _HEADER_OVERHEAD
    for k, v in headers.items():
        size += len(k.encode()) + 2 + len(v.encode()) + 2
    return size


def first_chunk_budget(max_payload: int, reply: str, headers: Mapping[str, str] | None) -> int:
    """How many parameter bytes go into the invocation message itself.

    Like the reference client, leave room for the reply subject and the header block, which the NATS
    server counts against `max_payload` together with the payload.
    """
    return max(0, max_payload - len(reply) - header_block_size(headers))


def new_traceparent() -> str:
    """A fresh W3C `traceparent` (version 00, random trace and parent ids, not sampled)."""
    # The W3C spec forbids all-zero ids; `or 1` keeps the (astronomically unlikely) zero out.
    trace_id = random.getrandbits(128) or 1
    span_id = random.getrandbits(64) or 1
    return f"00-{trace_id:032x}-{span_id:016x}-00"


def encode_error(message: str) -> bytes:
    """`message` as a component-model `string` (LEB128 byte length, then UTF-8), for `R_c.error`."""
    raw = message.encode()
    n = len(raw)
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            break
    return bytes(out) + raw


def decode_error(payload: bytes) -> str:
    """The error text in an `R_c.error` payload; payloads that are not an encoded string read as UTF-8."""
    n = shift = 0
    for i, byte in enumerate(payload[:5]):
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if i + 1 + n == len(payload):
                return payload[i + 1 :].decode(errors="replace")
            break
    return payload.decode(errors="replace")


def status_error(subject: str, status: str, description: str | None) -> WrpcError:
    """The error for a NATS status message received instead of the handshake."""
    detail = f" ({description})" if description else ""
    if status == "503":
        return NoResponders(
            f"no responders for {subject}: nothing serves this function on the lattice "
            "(check that the target is running and the link points at it)"
        )
    if status == "408":
        return InvocationTimeout(f"{subject}: NATS reported a request timeout{detail}")
    if status == "409":
        return UnexpectedEof(f"{subject}: NATS terminated the request{detail} before the handshake")
    return WrpcError(f"{subject}: NATS answered with status {status}{detail} instead of a wRPC handshake")


def _with_traceparent(headers: Mapping[str, str] | None) -> dict[str, str]:
    out = dict(headers) if headers else {}
    if not any(k.lower() == TRACEPARENT for k in out):
        out[TRACEPARENT] = new_traceparent()
    return out


# ---------------------------------------------------------------------------------------------
# Byte streams
# ---------------------------------------------------------------------------------------------


class ChunkStream:
    """One wRPC data stream as received: an async iterator of non-empty byte chunks that ends when the
    peer closes the stream (empty message) and raises if the invocation fails meanwhile. One reader
    at a time."""

    __slots__ = ("_chunks", "_closed", "_error", "_waiter")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._closed = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def closed(self) -> bool:
        """Whether the peer closed the stream (buffered chunks may remain)."""
        return self._closed

    def feed(self, data: bytes) -> None:
        """Take one received message: data, or the close when empty."""
        if self._closed or self._error is not None:
            return
        if data:
            self._chunks.append(data)
        else:
            self._closed = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        """End the stream with `error` unless it was closed already."""
        if self._closed or self._error is not None:
            return
        self._error = error
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._chunks:
                return self._chunks.popleft()
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            await self._wait()

    async def read_all(self) -> bytes:
        """Every byte until the stream closes."""
        while not self._closed:
            if self._error is not None:
                raise self._error
            await self._wait()
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


class _StreamSet:
    """Streams received on `<base>.<path>` subjects, created on first message or first request."""

    __slots__ = ("_streams",)

    def __init__(self) -> None:
        self._streams: dict[str, ChunkStream] = {}

    def get(self, key: str) -> ChunkStream:
        s = self._streams.get(key)
        if s is None:
            s = self._streams[key] = ChunkStream()
        return s

    def fail(self, error: BaseException) -> None:
        for s in self._streams.values():
            s.fail(error)


# ---------------------------------------------------------------------------------------------
# Inbox multiplexer: one wildcard subscription per NATS connection routes every call's subjects
# ---------------------------------------------------------------------------------------------


class _Endpoint(Protocol):
    def deliver(self, rest: str, msg: Msg) -> None: ...


class _Mux:
    """Routes `<prefix>.<token>[.<rest>]` messages to the endpoint registered for `<token>`.

    One subscription per connection instead of one per call keeps per-call cost at a dict insert: no
    SUB/UNSUB round trips, and all of a call's subjects arrive in publication order.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._cut = len(prefix) + 1
        self._routes: dict[str, _Endpoint] = {}
        self._ids = itertools.count(1)
        self.sub: Any = None

    def register(self, endpoint: _Endpoint) -> tuple[str, str]:
        token = format(next(self._ids), "x")
        self._routes[token] = endpoint
        return token, f"{self.prefix}.{token}"

    def unregister(self, token: str) -> None:
        self._routes.pop(token, None)

    async def on_message(self, msg: Msg) -> None:
        token, _, rest = msg.subject[self._cut :].partition(".")
        endpoint = self._routes.get(token)
        if endpoint is not None:
            endpoint.deliver(rest, msg)


_muxes: WeakKeyDictionary[Client, _Mux] = WeakKeyDictionary()
_mux_locks: WeakKeyDictionary[Client, asyncio.Lock] = WeakKeyDictionary()


async def _mux_for(nc: Client) -> _Mux:
    mux = _muxes.get(nc)
    if mux is not None:
        return mux
    lock = _mux_locks.setdefault(nc, asyncio.Lock())
    async with lock:
        mux = _muxes.get(nc)
        if mux is None:
            mux = _Mux(nc.new_inbox())
            # Byte limit off: a dropped chunk would corrupt an invocation silently, and the callback
            # only moves messages into per-call buffers, so the queue drains as fast as it fills.
            mux.sub = await nc.subscribe(f"{mux.prefix}.>", cb=mux.on_message, pending_bytes_limit=0)
            _muxes[nc] = mux
    return mux


async def _publish_stream(nc: Client, subject: str, data: bytes) -> None:
    for chunk in split_payload(data, nc.max_payload):
        await nc.publish(subject, chunk)
    await nc.publish(subject, b"")


async def _pump(nc: Client, subject: str, chunks: AsyncIterable[bytes]) -> None:
    """Send an async stream's chunks on `subject`, then close it (also when the source fails)."""
    try:
        async for chunk in chunks:
            for part in split_payload(bytes(chunk), nc.max_payload):
                await nc.publish(subject, part)
    finally:
        if not nc.is_closed:
            await nc.publish(subject, b"")


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------


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
        self._streams = _StreamSet()
        self._senders: list[asyncio.Task[None]] = []
        self._mux: _Mux | None = None
        self._token = ""
        self._deadline = 0.0
        self._ready = False
        self._first_len = 0
        self._data: bytes | None = None
        self._remote_error: RemoteError | None = None

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
        self._mux = await _mux_for(self._nc)
        self._handshake = loop.create_future()
        self._token, reply = self._mux.register(self)
        budget = first_chunk_budget(self._nc.max_payload, reply, self._headers)
        first = self._params if len(self._params) <= budget else self._params[:budget]
        self._first_len = len(first)
        try:
            await self._nc.publish(self.subject, first, reply=reply, headers=self._headers)
        except Exception:
            self.close()
            raise

    async def _complete_handshake(self) -> None:
        if self._ready:
            return
        assert self._handshake is not None, "Invocation.start() must run first"
        msg = await self._handshake
        headers = msg.headers
        if headers and _STATUS in headers and not msg.data:
            status = headers[_STATUS]
            if not status.startswith("2"):
                raise status_error(self.subject, status, headers.get(_DESCRIPTION))
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
                task = loop.create_task(_pump(nc, index_subject(params_subject, path), chunks))
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


# ---------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------


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

    def __init__(self, subject: str, headers: Mapping[str, str]) -> None:
        self.subject = subject
        self.headers = headers
        self._params = ChunkStream()
        self._streams = _StreamSet()

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
        self._mux: _Mux | None = None
        self._sub: Any = None

    @property
    def in_flight(self) -> int:
        """How many invocations are being handled now."""
        return self._supervisor.spawned

    async def _start(self) -> None:
        await self._supervisor.start()
        self._mux = await _mux_for(self._nc)
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
        nc = self._nc
        assert self._mux is not None
        results_subject = f"{msg.reply}.results"
        call = ServerInvocation(msg.subject, msg.headers or {})
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
                await _publish_stream(nc, results_subject, reply.results)
                if reply.streams:
                    await asyncio.gather(
                        *(_pump(nc, index_subject(results_subject, p), s) for p, s in reply.streams.items())
                    )
            else:
                await _publish_stream(nc, results_subject, reply)
        except asyncio.CancelledError:
            await self._report(results_subject, "the server stopped before the invocation finished")
            raise
        except Exception as exc:
            # A handler raises WrpcError with a message meant for the caller (a trap, a full
            # component, bad parameters): the message says it all. Anything else is a bug here,
            # and its traceback is what whoever fixes it needs.
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
