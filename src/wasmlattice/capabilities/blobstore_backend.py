"""What a `wasi:blobstore` backend implements, and the byte pumps between backends and guest streams.

A backend serves one link (opened by its provider from the link's target config). Its methods are
asyncio code run on the host's loop; a guest-facing failure is a `BlobError`, whose message is what
the guest receives as the interface's `error` string.

Object data never passes through the guest call as one buffer: a write drains a `BytePipe` that
the guest fills through an `output-stream`, a read fills a `BytePipe` that the guest drains
through an `input-stream`, both with the pipe's backpressure.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass

from wasmlattice.wasi.io import BytePipe

# Bytes a reader hands to a pipe at a time.
READ_CHUNK = 1 << 16
# How long a backend thread waits on a pipe before looking again whether it should give up.
THREAD_POLL_S = 1.0


class BlobError(Exception):
    """An operation the guest asked for failed; the message is the interface's `error` string."""


@dataclass
class ObjectRange:
    """Which bytes of an object a read covers: `start` inclusive, `length` bytes."""

    start: int
    length: int


def object_range(size: int, start: int, end: int) -> ObjectRange:
    """The bytes `get-data(start, end)` selects (offsets inclusive) from an object of `size` bytes.

    `end` past the object is clipped to its last byte, so `end = u64::MAX` reads to the end.
    """
    if end < start:
        raise BlobError(f"invalid range: end offset {end} is before start offset {start}")
    if start >= size:
        return ObjectRange(start, 0)
    return ObjectRange(start, min(end, size - 1) - start + 1)


class BlobReader(ABC):
    """An opened object range: its size, and a pump that copies it into a pipe."""

    def __init__(self, size: int) -> None:
        self.size = size

    @abstractmethod
    async def pump(self, pipe: BytePipe) -> None:
        """Write the bytes into `pipe` (with its backpressure); stop early if the reader is gone."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what an unconsumed reader holds."""


class BlobBackend(ABC):
    """The containers and objects one link reaches."""

    @abstractmethod
    async def create_container(self, name: str) -> int:
        """Create an empty container; its creation time (seconds since the epoch)."""

    @abstractmethod
    async def container_created(self, name: str) -> int:
        """The creation time of an existing container (`BlobError` if it does not exist)."""

    @abstractmethod
    async def container_exists(self, name: str) -> bool:
        """Whether the container exists."""

    @abstractmethod
    async def delete_container(self, name: str) -> None:
        """Delete a container and its objects (`BlobError` if it does not exist)."""

    @abstractmethod
    async def list_objects(self, container: str) -> list[str]:
        """Every object name in the container."""

    @abstractmethod
    async def object_info(self, container: str, name: str) -> tuple[int, int]:
        """An object's (size, creation time); `BlobError` if it does not exist."""

    @abstractmethod
    async def has_object(self, container: str, name: str) -> bool:
        """Whether the object exists."""

    @abstractmethod
    async def delete_object(self, container: str, name: str) -> None:
        """Delete an object; an absent object is not an error."""

    async def clear(self, container: str) -> None:
        """Delete every object of the container."""
        for name in await self.list_objects(container):
            await self.delete_object(container, name)

    @abstractmethod
    async def open_read(self, container: str, name: str, start: int, end: int) -> BlobReader:
        """Open bytes `start..=end` of an object for reading."""

    @abstractmethod
    async def check_write(self, container: str, name: str) -> None:
        """Fail now (`BlobError`) if `write` of that object could not succeed (bad name, no container)."""

    @abstractmethod
    async def write(self, container: str, name: str, pipe: BytePipe) -> None:
        """Store everything written to `pipe` until its end as the object; nothing if it fails."""

    @abstractmethod
    async def copy_object(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        """Copy object `src` (container, name) to `dest`, replacing it."""

    async def move_object(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        """Move object `src` to `dest` (copy, then delete the source)."""
        if src == dest:
            await self.object_info(*src)
            return
        await self.copy_object(src, dest)
        await self.delete_object(*src)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the backend holds."""


# -- pipes used from backend threads ----------------------------------------------------------
# nats-py's object store reads and writes file-like objects on executor threads; these adapt a
# pipe to that, waiting on the pipe's condition like the guest's own thread does.


class PipeReader:
    """A file-like reader (`readinto`) draining a pipe from a worker thread, until its end."""

    def __init__(self, pipe: BytePipe, cancelled: threading.Event) -> None:
        self.pipe = pipe
        self.cancelled = cancelled

    def readinto(self, buf: bytearray | memoryview) -> int:
        """Fill `buf` with the next bytes; 0 at the end; `OSError` if the writer failed."""
        pipe = self.pipe
        with pipe.cond:
            while True:
                if self.cancelled.is_set():
                    raise OSError("the write was cancelled")
                if pipe.error is not None and not pipe.chunks:
                    raise OSError(pipe.error.message)
                out = pipe.take(len(buf))
                if out is None:
                    return 0
                if out:
                    buf[: len(out)] = out
                    return len(out)
                pipe.cond.wait(THREAD_POLL_S)


class PipeRangeWriter:
    """A file-like writer (`write`) filling a pipe from a worker thread with one range of the data."""

    def __init__(self, pipe: BytePipe, rng: ObjectRange, cancelled: threading.Event) -> None:
        self.pipe = pipe
        self.lo = rng.start
        self.hi = rng.start + rng.length
        self.pos = 0
        self.cancelled = cancelled

    def write(self, data: bytes) -> int:
        """Pass on the part of `data` inside the range, waiting for room; drop it once nobody reads."""
        n = len(data)
        lo, hi = max(self.lo - self.pos, 0), min(self.hi - self.pos, n)
        self.pos += n
        if lo >= hi:
            return n
        part = data[lo:hi]
        pipe = self.pipe
        with pipe.cond:
            while pipe.size >= pipe.capacity and not pipe.reader_gone and not self.cancelled.is_set():
                pipe.cond.wait(THREAD_POLL_S)
            if pipe.reader_gone or self.cancelled.is_set():
                return n
        pipe.put(part)
        return n
