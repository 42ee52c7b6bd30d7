"""A wRPC call's byte streams: receiving them as chunk streams, and sending them chunk by chunk.

Every part of a call travels as a stream of NATS messages closed by an empty one (`transport.py`
describes the wire): the parameters, the results and each asynchronous value on its index path.
Both the client (`client.py`) and the server (`server.py`) use these.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator

from nats.aio.client import Client

from wasmlattice.protocol.wrpc.transport import UnexpectedEof, split_payload


class ChunkStream:
    """One wRPC data stream as received: an async iterator of non-empty byte chunks that ends when the
    peer closes the stream (empty message) and raises if the invocation fails meanwhile. One reader
    at a time.

    `idle_timeout`: a reader that waits longer than that for the next message gets `UnexpectedEof`
    naming `name`. Core NATS delivers at most once: messages a dying server held are gone, and a
    stream missing them would otherwise keep its reader (and the instance behind it) forever.
    """

    __slots__ = ("_chunks", "_closed", "_error", "_idle", "_name", "_waiter")

    def __init__(self, idle_timeout: float | None = None, name: str = "") -> None:
        self._chunks: deque[bytes] = deque()
        self._closed = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._idle = idle_timeout
        self._name = name

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
            if self._idle is None:
                await self._waiter
                return
            try:
                async with asyncio.timeout(self._idle):
                    await self._waiter
            except TimeoutError:
                # The readers' loops raise it, as they do any failure of the invocation.
                idle = f"nothing received for {self._idle:g} s (the sender may be gone)"
                self.fail(UnexpectedEof(f"{self._name}: {idle}"))
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


class StreamSet:
    """Streams received on `<base>.<path>` subjects, created on first message or first request."""

    __slots__ = ("_idle", "_name", "_streams")

    def __init__(self, idle_timeout: float | None = None, name: str = "") -> None:
        """`idle_timeout` and `name` (its subject base) are given to every stream (`ChunkStream`)."""
        self._streams: dict[str, ChunkStream] = {}
        self._idle = idle_timeout
        self._name = name

    def get(self, key: str) -> ChunkStream:
        """The stream for the dotted index path `key`, created if new."""
        s = self._streams.get(key)
        if s is None:
            s = self._streams[key] = ChunkStream(self._idle, f"{self._name} {key}".strip())
        return s

    def fail(self, error: BaseException) -> None:
        """End every stream not closed yet with `error`."""
        for s in self._streams.values():
            s.fail(error)


async def publish_stream(nc: Client, subject: str, data: bytes) -> None:
    """Send `data` on `subject` in chunks of at most `max_payload`, then close the stream."""
    for chunk in split_payload(data, nc.max_payload):
        await nc.publish(subject, chunk)
    await nc.publish(subject, b"")


async def pump(nc: Client, subject: str, chunks: AsyncIterable[bytes]) -> None:
    """Send an async stream's chunks on `subject`, then close it (also when the source fails)."""
    try:
        async for chunk in chunks:
            for part in split_payload(bytes(chunk), nc.max_payload):
                await nc.publish(subject, part)
    finally:
        if not nc.is_closed:
            await nc.publish(subject, b"")
