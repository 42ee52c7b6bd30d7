"""The `builtin://blobstore-nats` backend: containers are NATS JetStream object store buckets.

It uses the host's own NATS connection (the lattice's). Container `name` is the object store
bucket `<bucket_prefix><name>`: `bucket_prefix` comes from the link's target config (default
empty, so a container is the bucket of the same name, as other NATS tools see it); give each link
its own prefix to keep their containers apart. Bucket names allow only `A-Z a-z 0-9 _ -`, so
any other character of a container name (and `-` itself) is written as `-` and two hex digits per
UTF-8 byte: container `photos.2024` is bucket `photos-2e2024`. Object names are any UTF-8 string
(the object store encodes them itself).

Objects are written in chunks as the guest writes them and become visible only when the guest
finishes the value; a value that is dropped unfinished leaves nothing behind. Reads stream the
object's chunks; a range read still receives the chunks before the range and drops them.
"""

from __future__ import annotations

import datetime
import tempfile
import threading
from typing import Any

from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError

from wasmlattice.capabilities.blobstore_backend import (
    BlobBackend,
    BlobError,
    BlobReader,
    ObjectRange,
    PipeRangeWriter,
    PipeReader,
    object_range,
)
from wasmlattice.protocol.kv import create_replicated
from wasmlattice.wasi.io import BytePipe

_BUCKET_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
# Copies larger than this spill from memory to a temporary file.
SPOOL_BYTES = 8 << 20


def bucket_name(prefix: str, container: str) -> str:
    """The object store bucket of `container` (an injective encoding into bucket characters)."""
    if not container:
        raise BlobError("invalid container name: it is empty")
    out = [prefix]
    for ch in container:
        if ch in _BUCKET_CHARS:
            out.append(ch)
        else:
            out.extend(f"-{b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


def _epoch(when: Any) -> int:
    if isinstance(when, datetime.datetime):
        return int(when.timestamp())
    if isinstance(when, str) and when:
        try:
            return int(datetime.datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return 0
    return 0


def _check_object(name: str) -> None:
    if not name:
        raise BlobError("invalid object name: it is empty")


class NatsBlobBackend(BlobBackend):
    """Containers as object store buckets in the host's JetStream (see the module docstring)."""

    def __init__(self, js: Any, prefix: str) -> None:
        self.js = js
        self.prefix = prefix

    async def _store(self, container: str) -> Any:
        bucket = bucket_name(self.prefix, container)
        try:
            return await self.js.object_store(bucket)
        except (BucketNotFoundError, NotFoundError):
            raise BlobError(f"container `{container}` does not exist") from None

    # -- containers --------------------------------------------------------------------------

    async def create_container(self, name: str) -> int:
        """Create the bucket (`BlobError` if it exists)."""
        bucket = bucket_name(self.prefix, name)
        if await self.container_exists(name):
            raise BlobError(f"container `{name}` already exists; open it with get-container")
        await create_replicated(
            self.js, f"object store {bucket}", lambda n: self.js.create_object_store(bucket, replicas=n)
        )
        return await self.container_created(name)

    async def container_created(self, name: str) -> int:
        """The creation time of the bucket's stream."""
        try:
            info = await self.js.stream_info(f"OBJ_{bucket_name(self.prefix, name)}")
        except NotFoundError:
            raise BlobError(f"container `{name}` does not exist") from None
        return _epoch(info.created)

    async def container_exists(self, name: str) -> bool:
        """Whether the bucket exists."""
        try:
            await self.js.stream_info(f"OBJ_{bucket_name(self.prefix, name)}")
        except NotFoundError:
            return False
        return True

    async def delete_container(self, name: str) -> None:
        """Delete the bucket and everything in it."""
        try:
            await self.js.delete_object_store(bucket_name(self.prefix, name))
        except NotFoundError:
            raise BlobError(f"container `{name}` does not exist") from None

    # -- objects -----------------------------------------------------------------------------

    async def list_objects(self, container: str) -> list[str]:
        """Every object name in the bucket."""
        store = await self._store(container)
        try:
            infos = await store.list(ignore_deletes=True)
        except NotFoundError:
            return []
        return sorted(i.name for i in infos if not i.deleted)

    async def _info(self, container: str, name: str) -> Any:
        _check_object(name)
        store = await self._store(container)
        try:
            return store, await store.get_info(name)
        except (ObjectNotFoundError, NotFoundError):
            raise BlobError(f"object `{name}` does not exist in container `{container}`") from None

    async def object_info(self, container: str, name: str) -> tuple[int, int]:
        """The object's size and when it was written."""
        _, info = await self._info(container, name)
        return int(info.size or 0), _epoch(info.mtime)

    async def has_object(self, container: str, name: str) -> bool:
        """Whether the object exists."""
        try:
            await self._info(container, name)
        except BlobError as e:
            if "does not exist in container" in str(e):
                return False
            raise
        return True

    async def delete_object(self, container: str, name: str) -> None:
        """Delete the object (an absent one is fine)."""
        _check_object(name)
        store = await self._store(container)
        try:
            await store.delete(name)
        except (ObjectNotFoundError, NotFoundError):
            pass

    async def open_read(self, container: str, name: str, start: int, end: int) -> BlobReader:
        """Look the object up now; its chunks are fetched when the guest consumes the value."""
        store, info = await self._info(container, name)
        return NatsReader(store, name, object_range(int(info.size or 0), start, end))

    async def check_write(self, container: str, name: str) -> None:
        """Check the names and that the bucket exists."""
        _check_object(name)
        await self._store(container)

    async def write(self, container: str, name: str, pipe: BytePipe) -> None:
        """Put the pipe's bytes as the object, chunk by chunk (visible once complete)."""
        store = await self._store(container)
        cancelled = threading.Event()
        try:
            await store.put(name, PipeReader(pipe, cancelled))
        finally:
            cancelled.set()

    async def copy_object(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        """Fetch the source into a spooled temporary file, then put it as the destination."""
        _check_object(dest[1])
        sstore, _ = await self._info(*src)
        dstore = await self._store(dest[0])
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            await sstore.get(src[1], writeinto=spool)
            spool.seek(0)
            await dstore.put(dest[1], spool)


class NatsReader(BlobReader):
    """An object range, fetched chunk by chunk into the guest's pipe."""

    def __init__(self, store: Any, name: str, rng: ObjectRange) -> None:
        super().__init__(rng.length)
        self.store = store
        self.name = name
        self.range = rng

    async def pump(self, pipe: BytePipe) -> None:
        """Stream the object's chunks, passing on the bytes of the range."""
        if self.range.length == 0:
            return
        cancelled = threading.Event()
        try:
            await self.store.get(self.name, writeinto=PipeRangeWriter(pipe, self.range, cancelled))
        except (ObjectNotFoundError, NotFoundError):
            raise BlobError(f"object `{self.name}` was deleted before it was read") from None
        finally:
            cancelled.set()
