"""`wasi:io` 0.2: error, poll and streams, with real backpressure between guest and event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from wasmlattice.runtime.fastcall import Trap
from wasmlattice.runtime.linking import HostInterface
from wasmlattice.runtime.witypes import Err
from wasmlattice.wasi.ctx import WasiCtx, ctx

# The most a single blocking-write-and-flush may carry (as wasmtime enforces).
BLOCKING_WRITE_LIMIT = 4096
# Default bytes a pipe buffers before writers must wait.
PIPE_CAPACITY = 1 << 20
# Largest chunk handed to a guest by one read (keeps list<u8> conversions bounded).
MAX_READ = 1 << 16
# The most one check-write grants (wasmtime's body streams grant 1 MiB too): a larger list<u8> in
# one host call runs into wasmtime's limit on data copied per host call and traps the guest.
WRITE_BUDGET = 1 << 20


class IoError:
    """`wasi:io/error.error`: an opaque error with a debug string."""

    __slots__ = ("code", "message")

    def __init__(self, message: str, code: Any = None) -> None:
        self.message = message
        self.code = code  # a wasi:http error-code, when the error came from HTTP

    def to_debug_string(self) -> str:
        """The error's text."""
        return self.message


CLOSED = ("closed", None)


def failed(message: str, code: Any = None) -> Err:
    """A `stream-error.last-operation-failed` carrying an `error` resource."""
    return Err(("last-operation-failed", IoError(message, code)))


class Pollable:
    """`wasi:io/poll.pollable`: something a guest can wait for."""

    __slots__ = ("_deadline", "_ready", "ctx")

    def __init__(
        self, wctx: WasiCtx, ready: Callable[[], bool] | None = None, deadline: float | None = None
    ) -> None:
        self.ctx = wctx
        self._ready = ready
        self._deadline = deadline

    def ready(self) -> bool:
        """Whether the event has happened (call with `ctx.cond` held for a consistent answer)."""
        if self._deadline is not None:
            return time.monotonic() >= self._deadline
        return self._ready() if self._ready is not None else True

    def timeout(self) -> float | None:
        """Seconds until a clock pollable fires, else None."""
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def block(self) -> None:
        """Wait until ready."""
        poll_list([self])


def poll_list(pollables: list[Pollable]) -> list[int]:
    """`wasi:io/poll.poll`: wait until at least one is ready; the indices of the ready ones."""
    if not pollables:
        raise Trap("poll called with an empty list")
    if len(pollables) > 2**32 - 1:
        raise Trap("poll called with too many pollables")
    wctx = pollables[0].ctx
    with wctx.cond:
        while True:
            ready = [i for i, p in enumerate(pollables) if p.ready()]
            if ready:
                return ready
            timeouts = [t for t in (p.timeout() for p in pollables) if t is not None]
            wctx.wait(min(timeouts) if timeouts else None)


class BytePipe:
    """A bounded byte buffer between a wasm thread and the event loop, both able to wait on it.

    Thread-side waits use the store's condition; loop-side waits use an asyncio event set from
    either side. `capacity` bounds buffered bytes: writers wait (backpressure), readers drain.
    """

    def __init__(self, wctx: WasiCtx, capacity: int = PIPE_CAPACITY) -> None:
        self.ctx = wctx
        self.cond = wctx.cond
        self.capacity = capacity
        self.chunks: list[bytes] = []
        self.size = 0
        self.eof = False  # the writer finished
        self.error: IoError | None = None  # the writer failed
        self.reader_gone = False  # the reader stopped reading
        self.discard = False  # ...but the writer should still run to the end (for trailers)
        self._event: asyncio.Event | None = None
        self.trailers: Any = None
        self.on_change: Callable[[], None] | None = None
        # Set while nobody will read yet (a response body before `response-outparam.set`): then
        # a writer that would wait for room traps with this message instead of waiting forever.
        self.unread: str | None = None

    @classmethod
    def complete(cls, wctx: WasiCtx, data: bytes) -> BytePipe:
        """A pipe already holding all of `data` and ended (a body that arrived whole)."""
        pipe = cls(wctx)
        if data:
            pipe.chunks.append(data)
            pipe.size = len(data)
        pipe.eof = True
        return pipe

    # -- shared ------------------------------------------------------------------------------

    def _changed(self) -> None:
        """Notify waiters (caller holds `cond`)."""
        self.cond.notify_all()
        ev, loop = self._event, self.ctx.loop
        if ev is not None and loop is not None:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:
                pass  # the loop is closed: nobody waits there any more
        if self.on_change is not None:
            self.on_change()

    def space(self) -> int:
        """Bytes that may be written now without exceeding capacity."""
        return max(0, self.capacity - self.size)

    def start_reading(self, capacity: int) -> None:
        """A reader is coming: from now on writers wait for it, with `capacity` buffered at most."""
        with self.cond:
            self.unread = None
            self.capacity = capacity
            self._changed()

    def check_unread(self) -> None:
        """Trap if the writer would have to wait for room that no reader will ever make."""
        if self.unread is not None and self.size >= self.capacity:
            raise Trap(self.unread)

    # -- writer side -------------------------------------------------------------------------

    def put(self, data: bytes) -> None:
        """Append data (the writer checked space, or accepts overshoot)."""
        with self.cond:
            if data:
                self.chunks.append(bytes(data))
                self.size += len(data)
            self._changed()

    def finish(self, error: IoError | None = None, trailers: Any = None) -> None:
        """The writer is done (or failed)."""
        with self.cond:
            if self.eof:
                return
            self.eof = True
            self.error = error
            self.trailers = trailers
            self._changed()

    # -- reader side -------------------------------------------------------------------------

    def take(self, n: int) -> bytes | None:
        """Up to n buffered bytes; b"" if none yet; None at end of stream (call with cond held)."""
        if not self.chunks:
            return None if self.eof else b""
        first = self.chunks[0]
        if len(first) <= n:
            self.chunks.pop(0)
            out = first
        else:
            out, self.chunks[0] = first[:n], first[n:]
        self.size -= len(out)
        self._changed()
        return out

    def give_back(self, data: bytes) -> None:
        """Put bytes a reader took back in front of the rest (a recorder that read a body ahead of
        the guest hands it on unchanged)."""
        with self.cond:
            if data:
                self.chunks.insert(0, bytes(data))
                self.size += len(data)
            self._changed()

    def close_reader(self, discard: bool = False) -> None:
        """The reader will read no more; writers see `closed`.

        With `discard`, a writer on the event loop keeps going and its data is dropped, so that
        the stream still reaches its end (and its trailers) without anyone buffering it.
        """
        with self.cond:
            self.reader_gone = True
            self.discard = discard
            self.chunks.clear()
            self.size = 0
            self._changed()

    # -- event-loop side ---------------------------------------------------------------------

    def _aevent(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    async def aread(self, n: int = MAX_READ * 16) -> bytes | None:
        """Wait for data; None at end of stream (raises `IOError` if the writer failed)."""
        ev = self._aevent()
        while True:
            with self.cond:
                if self.chunks or self.eof:
                    if not self.chunks and self.error is not None:
                        raise OSError(self.error.message)
                    return self.take(n)
                ev.clear()
            await ev.wait()

    async def awrite(self, data: bytes) -> bool:
        """Wait for space, then append; False if the reader is gone."""
        ev = self._aevent()
        while True:
            with self.cond:
                if self.reader_gone:
                    return self.discard
                if self.size < self.capacity:
                    self.chunks.append(bytes(data))
                    self.size += len(data)
                    self._changed()
                    return True
                ev.clear()
            await ev.wait()


def tap_writes(pipe: BytePipe, sink: Callable[[bytes], None], forward: bool = True) -> None:
    """Hand every later write into `pipe` (and the bytes it already holds) to `sink` as well.

    Without `forward` the writes go to `sink` only and the pipe stays empty, so a writer never
    waits for a reader (replay, which has no network to send to). The tap replaces `put` on this
    one pipe, so pipes nobody taps pay nothing for it.
    """
    with pipe.cond:
        held = b"".join(pipe.chunks)
        if not forward:
            pipe.chunks.clear()
            pipe.size = 0
    if held:
        sink(held)
    put = pipe.put

    def tapped(data: bytes) -> None:
        sink(bytes(data))
        if forward:
            put(data)

    pipe.put = tapped  # type: ignore[method-assign]


class InputStream:
    """`wasi:io/streams.input-stream` reading from a pipe."""

    def __init__(self, pipe: BytePipe, on_drop: Callable[[], None] | None = None) -> None:
        self.pipe = pipe
        self.on_drop = on_drop

    def _read(self, n: int, blocking: bool) -> bytes:
        pipe = self.pipe
        n = min(n, MAX_READ)
        with pipe.cond:
            while True:
                if pipe.error is not None and not pipe.chunks:
                    raise failed(pipe.error.message, pipe.error.code)
                if n == 0:
                    if pipe.eof and not pipe.chunks:
                        raise Err(CLOSED)
                    return b""
                out = pipe.take(n)
                if out is None:
                    raise Err(CLOSED)
                if out or not blocking:
                    return out
                pipe.ctx.wait(None)

    def read(self, n: int) -> bytes:
        """Non-blocking read of at most n bytes."""
        return self._read(n, False)

    def blocking_read(self, n: int) -> bytes:
        """Read at least one byte (or fail with closed), at most n."""
        return self._read(n, True)

    def skip(self, n: int) -> int:
        """Non-blocking skip."""
        return len(self._read(n, False))

    def blocking_skip(self, n: int) -> int:
        """Blocking skip."""
        return len(self._read(n, True))

    def subscribe(self) -> Pollable:
        """Ready when data, end of stream or an error is there."""
        pipe = self.pipe
        return Pollable(pipe.ctx, lambda: bool(pipe.chunks) or pipe.eof)

    def drop(self) -> None:
        """Resource dropped by the guest."""
        if self.on_drop is not None:
            self.on_drop()


class OutputStream:
    """`wasi:io/streams.output-stream` writing into a pipe (or, with `sink`, straight to a function)."""

    def __init__(
        self,
        pipe: BytePipe | None,
        sink: Callable[[bytes], None] | None = None,
        on_write: Callable[[int], None] | None = None,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.pipe = pipe
        self.sink = sink
        self.on_write = on_write
        self.on_drop = on_drop
        self.closed = False

    def _check_open(self) -> BytePipe | None:
        if self.closed:
            raise Err(CLOSED)
        pipe = self.pipe
        if pipe is not None and (pipe.reader_gone or pipe.eof):
            raise Err(CLOSED)
        return pipe

    def check_write(self) -> int:
        """Bytes the guest may write now."""
        pipe = self._check_open()
        if pipe is None:
            return PIPE_CAPACITY
        with pipe.cond:
            pipe.check_unread()
            return min(pipe.space(), WRITE_BUDGET)

    def write(self, data: bytes) -> None:
        """Write without blocking (the guest must respect check-write)."""
        pipe = self._check_open()
        if self.on_write is not None:
            self.on_write(len(data))
        if pipe is None:
            assert self.sink is not None
            self.sink(data)
        else:
            pipe.put(data)

    def _wait_flushed(self) -> None:
        # "Flushed" means accepted into the bounded pipe, as a body channel in wasmtime: waiting
        # for the network to drain it would deadlock guests that write before setting a response.
        pipe = self.pipe
        if pipe is None:
            return
        with pipe.cond:
            while pipe.size > pipe.capacity and not pipe.reader_gone:
                pipe.check_unread()
                pipe.ctx.wait(None)
            if pipe.reader_gone:
                raise Err(CLOSED)

    def _wait_space(self) -> None:
        pipe = self.pipe
        if pipe is None:
            return
        with pipe.cond:
            while pipe.space() == 0 and not pipe.reader_gone:
                pipe.check_unread()
                pipe.ctx.wait(None)

    def blocking_write_and_flush(self, data: bytes) -> None:
        """Write up to 4096 bytes and wait until they are handed on."""
        if len(data) > BLOCKING_WRITE_LIMIT:
            raise Trap(
                f"blocking-write-and-flush of {len(data)} bytes exceeds the {BLOCKING_WRITE_LIMIT}-byte limit"
            )
        self._check_open()
        self._wait_space()
        self.write(data)
        self._wait_flushed()

    def flush(self) -> None:
        """Begin a flush (data is handed on as written, so nothing to start)."""
        self._check_open()

    def blocking_flush(self) -> None:
        """Wait until everything written has been handed on."""
        self._check_open()
        self._wait_flushed()

    def subscribe(self) -> Pollable:
        """Ready when there is room to write (or the stream is closed)."""
        pipe = self.pipe
        if pipe is None:
            return Pollable(ctx())
        # Full with no reader to come is "ready" too: the next write or check-write traps.
        return Pollable(
            pipe.ctx,
            lambda: pipe.space() > 0 or pipe.reader_gone or pipe.eof or pipe.unread is not None,
        )

    def write_zeroes(self, n: int) -> None:
        """Write n zero bytes."""
        self.write(bytes(n))

    def blocking_write_zeroes_and_flush(self, n: int) -> None:
        """Write n (at most 4096) zero bytes and flush."""
        self.blocking_write_and_flush(bytes(n))

    def splice(self, src: InputStream, n: int) -> int:
        """Move up to n bytes from src without blocking."""
        room = self.check_write()
        data = src.read(min(n, room if room else 0))
        if data:
            self.write(data)
        return len(data)

    def blocking_splice(self, src: InputStream, n: int) -> int:
        """Move up to n bytes from src, waiting for data and room."""
        self._check_open()
        self._wait_space()
        data = src.blocking_read(min(n, max(1, self.check_write())))
        self.write(data)
        return len(data)

    def drop(self) -> None:
        """Resource dropped by the guest."""
        if self.on_drop is not None:
            self.on_drop()


def _poll(pollables: list[Pollable]) -> list[int]:
    return poll_list(pollables)


def interfaces() -> list[HostInterface]:
    """The `wasi:io` interfaces."""
    return [
        HostInterface("wasi:io/error", {"[method]error.to-debug-string": IoError.to_debug_string}),
        HostInterface(
            "wasi:io/poll",
            {
                "[method]pollable.ready": Pollable.ready,
                "[method]pollable.block": Pollable.block,
                "poll": _poll,
            },
        ),
        HostInterface(
            "wasi:io/streams",
            {
                "[method]input-stream.read": lambda s, n: s.read(n),
                "[method]input-stream.blocking-read": lambda s, n: s.blocking_read(n),
                "[method]input-stream.skip": lambda s, n: s.skip(n),
                "[method]input-stream.blocking-skip": lambda s, n: s.blocking_skip(n),
                "[method]input-stream.subscribe": lambda s: s.subscribe(),
                "[method]output-stream.check-write": lambda s: s.check_write(),
                "[method]output-stream.write": lambda s, d: s.write(d),
                "[method]output-stream.blocking-write-and-flush": lambda s, d: s.blocking_write_and_flush(d),
                "[method]output-stream.flush": lambda s: s.flush(),
                "[method]output-stream.blocking-flush": lambda s: s.blocking_flush(),
                "[method]output-stream.subscribe": lambda s: s.subscribe(),
                "[method]output-stream.write-zeroes": lambda s, n: s.write_zeroes(n),
                "[method]output-stream.blocking-write-zeroes-and-flush": lambda s, n: (
                    s.blocking_write_zeroes_and_flush(n)
                ),
                "[method]output-stream.splice": lambda s, src, n: s.splice(src, n),
                "[method]output-stream.blocking-splice": lambda s, src, n: s.blocking_splice(src, n),
            },
        ),
    ]
