"""`wasi:http` 0.2 bodies: incoming bodies with their future trailers, and outgoing bodies with the
content-length they promise."""

from __future__ import annotations

from typing import Any

from wasmlattice.runtime.witypes import Err, Ok
from wasmlattice.wasi.http_types import Fields, internal_error
from wasmlattice.wasi.io import BytePipe, InputStream, IoError, OutputStream, Pollable


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


def content_length(fields: Fields) -> int | None:
    """The `content-length` a body promises, if its fields carry a valid one."""
    v = fields.first("content-length")
    if v is None:
        return None
    try:
        return int(v.decode("ascii").strip())
    except ValueError:
        return None
