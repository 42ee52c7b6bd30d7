"""`wasi:blobstore@0.2.0-draft`: containers of objects, on NATS JetStream object stores or a directory.

A component reaches a blobstore through its link for `wasi:blobstore` (link name `default`
unless it chose another); the link's target is a blobstore provider running on the same host:

- `builtin://blobstore-nats` (`capabilities.blobstore_nats`): a container is an object store
  bucket; link target config `bucket_prefix` keeps a link's containers apart from others'.
- `builtin://blobstore-fs` (`capabilities.blobstore_fs`): a container is a directory under the
  link target config's `root`; names are confined to it. The root must be inside a directory the
  host allows (`--allow-dir`) and may not contain the host's secrets (docs/security.md).

`get-container`/`create-container` bind the container resource to the backend of the link at that
moment: later calls on it keep using that backend.

Object data is streamed through the host's `wasi:io` streams. A write: `new-outgoing-value`, then
`write-data(name, value)` and writing the value's `output-stream` (in either order), then
`finish(value)`, which waits until the object is stored and returns the backend's error if it
was not. Data written before `write-data` is buffered; after it, writers wait for the backend
(backpressure). A value dropped without `finish` stores nothing. A read: `get-data(name, start,
end)` (offsets inclusive, `end` clipped to the object) opens the object; consuming the value
streams it (`incoming-value-consume-async`) or returns it whole (`-consume-sync`).

Every failure is the interface's `error` string: the backend's message, or the host's (no link,
provider not running), which is also logged with the component's ID.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from wasmlattice.capabilities.base import (
    CapabilityError,
    ComponentContext,
    LinkTargetProvider,
    ProviderSpec,
    component,
    lower_config,
    traced,
)
from wasmlattice.capabilities.blobstore_backend import BlobBackend, BlobError, BlobReader
from wasmlattice.capabilities.blobstore_fs import FsBlobBackend
from wasmlattice.capabilities.blobstore_nats import NatsBlobBackend
from wasmlattice.capabilities.config_keys import KeySet, ProviderKeys
from wasmlattice.protocol.models import Link, StrMap
from wasmlattice.runtime.execution import NeedsLoop
from wasmlattice.runtime.fastcall import Trap
from wasmlattice.runtime.hostfiles import HostFileError
from wasmlattice.runtime.linking import HostInterface
from wasmlattice.runtime.witypes import (
    BOOL,
    BYTES,
    STRING,
    U64,
    Err,
    FuncSig,
    borrow,
    func,
    lst,
    own,
    record,
    result,
    tup,
)
from wasmlattice.wasi.ctx import WasiCtx, ctx
from wasmlattice.wasi.io import PIPE_CAPACITY, BytePipe, InputStream, IoError, OutputStream

log = logging.getLogger("wasmlattice.capabilities.blobstore")

T = TypeVar("T")

INTERFACE = "wasi:blobstore/blobstore"
VERSIONS = ("0.2.0-draft",)


# -- calling backends -------------------------------------------------------------------------


def _call(comp: ComponentContext, make: Callable[[], Awaitable[T]]) -> T:
    """Run a backend coroutine for the guest; any failure becomes the interface's `error`."""
    try:
        return comp.run(make)
    except (NeedsLoop, Trap):
        raise
    except (BlobError, CapabilityError) as e:
        log.info("component %s: blobstore: %s", comp.component_id, e)
        raise Err(str(e)) from None
    except Exception as e:
        log.exception("component %s: blobstore backend failed", comp.component_id)
        raise Err(f"the blobstore backend failed: {type(e).__name__}: {e}") from None


def _context() -> ComponentContext:
    try:
        return component()
    except CapabilityError as e:
        raise Err(str(e)) from None


def _backend(comp: ComponentContext) -> BlobBackend:
    """The backend of the calling component's blobstore link (`Err` if there is none)."""
    try:
        lk, provider = comp.target(INTERFACE)
        if not isinstance(provider, BlobstoreProvider):
            raise comp.error(f"`{lk.target}` (the target of link `{lk.name}`) does not serve `{INTERFACE}`")
    except CapabilityError as e:
        raise Err(str(e)) from None
    backend: BlobBackend = _call(comp, lambda: provider.backend(lk))
    return backend


def _start(comp: ComponentContext, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
    """Start `coro` on the host's loop without waiting for it."""
    return asyncio.run_coroutine_threadsafe(coro, comp.services.loop)


# -- resources --------------------------------------------------------------------------------


class Container:
    """`container`: one container of one backend."""

    def __init__(self, comp: ComponentContext, backend: BlobBackend, name: str) -> None:
        self.comp = comp
        self.backend = backend
        self._name = name

    def name(self) -> str:
        """The container's name."""
        return self._name

    def info(self) -> tuple[str, int]:
        """`container-metadata`: name and creation time."""
        created = _call(self.comp, lambda: self.backend.container_created(self._name))
        return (self._name, created)

    def get_data(self, name: str, start: int, end: int) -> IncomingValue:
        """Open bytes `start..=end` of an object."""
        reader = _call(self.comp, lambda: self.backend.open_read(self._name, name, start, end))
        return IncomingValue(self.comp, reader)

    def write_data(self, name: str, value: OutgoingValue) -> None:
        """Store what the guest writes to `value` as the object, once it finishes the value."""
        if value.upload is not None:
            raise Err(f"this outgoing-value is already being written to object `{value.target}`")
        if value.finished:
            raise Err("this outgoing-value is already finished")
        _call(self.comp, lambda: self.backend.check_write(self._name, name))
        value.attach(self.comp, self.backend, self._name, name)

    def list_objects(self) -> StreamObjectNames:
        """A stream of the container's object names (as they were at this call)."""
        return StreamObjectNames(_call(self.comp, lambda: self.backend.list_objects(self._name)))

    def delete_object(self, name: str) -> None:
        """Delete an object."""
        _call(self.comp, lambda: self.backend.delete_object(self._name, name))

    def delete_objects(self, names: list[str]) -> None:
        """Delete several objects."""

        async def delete_all() -> None:
            for n in names:
                await self.backend.delete_object(self._name, n)

        _call(self.comp, delete_all)

    def has_object(self, name: str) -> bool:
        """Whether the object exists."""
        return _call(self.comp, lambda: self.backend.has_object(self._name, name))

    def object_info(self, name: str) -> tuple[str, str, int, int]:
        """`object-metadata`: name, container, creation time, size."""
        size, created = _call(self.comp, lambda: self.backend.object_info(self._name, name))
        return (name, self._name, created, size)

    def clear(self) -> None:
        """Delete every object."""
        _call(self.comp, lambda: self.backend.clear(self._name))


class StreamObjectNames:
    """`stream-object-names`: a listing read in pages."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.pos = 0

    def read(self, n: int) -> tuple[list[str], bool]:
        """Up to `n` more names, and whether the listing has ended."""
        page = self.names[self.pos : self.pos + n]
        self.pos += len(page)
        return page, self.pos >= len(self.names)

    def skip(self, n: int) -> tuple[int, bool]:
        """Skip up to `n` names: how many, and whether the listing has ended."""
        skipped = min(n, len(self.names) - self.pos)
        self.pos += skipped
        return skipped, self.pos >= len(self.names)


class OutgoingValue:
    """`outgoing-value`: bytes the guest writes to a pipe, drained by a backend once attached."""

    def __init__(self, wctx: WasiCtx) -> None:
        self.pipe = BytePipe(wctx, capacity=sys.maxsize)  # unbounded until a backend drains it
        self.stream_taken = False
        self.finished = False
        self.target = ""
        self.comp: ComponentContext | None = None
        self.upload: concurrent.futures.Future[None] | None = None
        wctx.cleanups.append(self._abandon)

    def write_body(self) -> OutputStream:
        """The value's output stream (once)."""
        if self.stream_taken:
            raise Err(None)
        self.stream_taken = True
        return OutputStream(self.pipe)

    def attach(self, comp: ComponentContext, backend: BlobBackend, container: str, name: str) -> None:
        """Start storing the pipe's bytes as `container`/`name`."""
        pipe = self.pipe
        with pipe.cond:
            pipe.capacity = PIPE_CAPACITY  # from now on writers wait for the backend
        self.comp, self.target = comp, name

        async def upload() -> None:
            try:
                await backend.write(container, name, pipe)
            except BaseException:
                pipe.close_reader()  # the guest's next write sees `closed` instead of waiting
                raise

        self.upload = _start(comp, upload())

    @staticmethod
    def finish(this: OutgoingValue) -> None:
        """The value is complete: wait until it is stored."""
        this.finished = True
        this.pipe.finish()
        if this.upload is None or this.comp is None:
            return
        upload = this.upload
        _call(this.comp, lambda: asyncio.wrap_future(upload))

    def _abandon(self) -> None:
        if not self.finished:
            self.finished = True
            self.pipe.finish(IoError("the outgoing-value was dropped without `finish`; nothing was stored"))

    def drop(self) -> None:
        """Dropped by the guest: unless finished, the value is incomplete and nothing is stored."""
        self._abandon()


class IncomingValue:
    """`incoming-value`: an opened object range, streamed into a pipe when consumed."""

    def __init__(self, comp: ComponentContext, reader: BlobReader) -> None:
        self.comp = comp
        self.reader = reader
        self.consumed = False
        ctx().cleanups.append(self._release)

    def size(self) -> int:
        """How many bytes the value holds."""
        return self.reader.size

    def _pipe(self) -> BytePipe:
        if self.consumed:
            raise Err("this incoming-value was already consumed")
        self.consumed = True
        pipe = BytePipe(ctx())
        reader = self.reader

        async def pump() -> None:
            try:
                await reader.pump(pipe)
            except BlobError as e:
                pipe.finish(IoError(str(e)))
            except Exception as e:
                log.exception("component %s: reading a blob failed", self.comp.component_id)
                pipe.finish(IoError(f"reading the object failed: {type(e).__name__}: {e}"))
            else:
                pipe.finish()

        _start(self.comp, pump())
        return pipe

    @staticmethod
    def consume_sync(this: IncomingValue) -> bytes:
        """The whole value as bytes."""
        stream = InputStream(this._pipe())
        parts = []
        while True:
            try:
                parts.append(stream.blocking_read(1 << 20))
            except Err as e:
                if e.value == ("closed", None):
                    return b"".join(parts)
                err = e.value[1]
                raise Err(err.message if isinstance(err, IoError) else str(err)) from None

    @staticmethod
    def consume_async(this: IncomingValue) -> InputStream:
        """The value as an input stream."""
        pipe = this._pipe()
        return InputStream(pipe, on_drop=lambda: None if pipe.eof else pipe.close_reader())

    def _release(self) -> None:
        if not self.consumed:
            self.consumed = True
            self.reader.close()

    def drop(self) -> None:
        """Dropped by the guest without being consumed: release the opened object."""
        self._release()


# -- the `blobstore` interface ----------------------------------------------------------------


def create_container(name: str) -> Container:
    """Create an empty container."""
    comp = _context()
    backend = _backend(comp)
    _call(comp, lambda: backend.create_container(name))
    return Container(comp, backend, name)


def get_container(name: str) -> Container:
    """Open an existing container."""
    comp = _context()
    backend = _backend(comp)
    _call(comp, lambda: backend.container_created(name))
    return Container(comp, backend, name)


def delete_container(name: str) -> None:
    """Delete a container and its objects."""
    comp = _context()
    backend = _backend(comp)
    _call(comp, lambda: backend.delete_container(name))


def container_exists(name: str) -> bool:
    """Whether a container exists."""
    comp = _context()
    backend = _backend(comp)
    return _call(comp, lambda: backend.container_exists(name))


def copy_object(src: tuple[str, str], dest: tuple[str, str]) -> None:
    """Copy an object (`object-id`s are (container, object))."""
    comp = _context()
    backend = _backend(comp)
    _call(comp, lambda: backend.copy_object(src, dest))


def move_object(src: tuple[str, str], dest: tuple[str, str]) -> None:
    """Move or rename an object."""
    comp = _context()
    backend = _backend(comp)
    _call(comp, lambda: backend.move_object(src, dest))


# -- signatures and interfaces ----------------------------------------------------------------

ERROR = STRING
OBJECT_ID = record(container=STRING, object=STRING)
CONTAINER_METADATA = record(name=STRING, created_at=U64)
OBJECT_METADATA = record(name=STRING, container=STRING, created_at=U64, size=U64)

TYPES_SIGNATURES: dict[str, FuncSig] = {
    "[static]outgoing-value.new-outgoing-value": func(returns=own("outgoing-value")),
    "[method]outgoing-value.outgoing-value-write-body": func(
        borrow("outgoing-value"), returns=result(own("output-stream"))
    ),
    "[static]outgoing-value.finish": func(own("outgoing-value"), returns=result(None, ERROR)),
    "[static]incoming-value.incoming-value-consume-sync": func(
        own("incoming-value"), returns=result(BYTES, ERROR)
    ),
    "[static]incoming-value.incoming-value-consume-async": func(
        own("incoming-value"), returns=result(own("input-stream"), ERROR)
    ),
    "[method]incoming-value.size": func(borrow("incoming-value"), returns=U64),
}

_C = borrow("container")
CONTAINER_SIGNATURES: dict[str, FuncSig] = {
    "[method]container.name": func(_C, returns=result(STRING, ERROR)),
    "[method]container.info": func(_C, returns=result(CONTAINER_METADATA, ERROR)),
    "[method]container.get-data": func(_C, STRING, U64, U64, returns=result(own("incoming-value"), ERROR)),
    "[method]container.write-data": func(_C, STRING, borrow("outgoing-value"), returns=result(None, ERROR)),
    "[method]container.list-objects": func(_C, returns=result(own("stream-object-names"), ERROR)),
    "[method]container.delete-object": func(_C, STRING, returns=result(None, ERROR)),
    "[method]container.delete-objects": func(_C, lst(STRING), returns=result(None, ERROR)),
    "[method]container.has-object": func(_C, STRING, returns=result(BOOL, ERROR)),
    "[method]container.object-info": func(_C, STRING, returns=result(OBJECT_METADATA, ERROR)),
    "[method]container.clear": func(_C, returns=result(None, ERROR)),
    "[method]stream-object-names.read-stream-object-names": func(
        borrow("stream-object-names"), U64, returns=result(tup(lst(STRING), BOOL), ERROR)
    ),
    "[method]stream-object-names.skip-stream-object-names": func(
        borrow("stream-object-names"), U64, returns=result(tup(U64, BOOL), ERROR)
    ),
}

BLOBSTORE_SIGNATURES: dict[str, FuncSig] = {
    "create-container": func(STRING, returns=result(own("container"), ERROR)),
    "get-container": func(STRING, returns=result(own("container"), ERROR)),
    "delete-container": func(STRING, returns=result(None, ERROR)),
    "container-exists": func(STRING, returns=result(BOOL, ERROR)),
    "copy-object": func(OBJECT_ID, OBJECT_ID, returns=result(None, ERROR)),
    "move-object": func(OBJECT_ID, OBJECT_ID, returns=result(None, ERROR)),
}


def interfaces() -> list[HostInterface]:
    """`wasi:blobstore/{types,container,blobstore}@0.2.0-draft`."""
    types_fns: dict[str, Callable[..., Any]] = {
        "[static]outgoing-value.new-outgoing-value": lambda: OutgoingValue(ctx()),
        "[method]outgoing-value.outgoing-value-write-body": OutgoingValue.write_body,
        "[static]outgoing-value.finish": OutgoingValue.finish,
        "[static]incoming-value.incoming-value-consume-sync": IncomingValue.consume_sync,
        "[static]incoming-value.incoming-value-consume-async": IncomingValue.consume_async,
        "[method]incoming-value.size": IncomingValue.size,
    }
    container_fns: dict[str, Callable[..., Any]] = {
        "[method]container.name": Container.name,
        "[method]container.info": Container.info,
        "[method]container.get-data": Container.get_data,
        "[method]container.write-data": Container.write_data,
        "[method]container.list-objects": Container.list_objects,
        "[method]container.delete-object": Container.delete_object,
        "[method]container.delete-objects": Container.delete_objects,
        "[method]container.has-object": Container.has_object,
        "[method]container.object-info": Container.object_info,
        "[method]container.clear": Container.clear,
        "[method]stream-object-names.read-stream-object-names": StreamObjectNames.read,
        "[method]stream-object-names.skip-stream-object-names": StreamObjectNames.skip,
    }
    blobstore_fns: dict[str, Callable[..., Any]] = {
        "create-container": create_container,
        "get-container": get_container,
        "delete-container": delete_container,
        "container-exists": container_exists,
        "copy-object": copy_object,
        "move-object": move_object,
    }
    # Each call is traced with the container and object names (never the data). Inline calls are
    # not: they leave with `NeedsLoop` and are made again on a worker thread.
    return [
        traced(
            HostInterface("wasi:blobstore/types", types_fns, versions=VERSIONS, signatures=TYPES_SIGNATURES),
            inline=False,
        ),
        traced(
            HostInterface(
                "wasi:blobstore/container", container_fns, versions=VERSIONS, signatures=CONTAINER_SIGNATURES
            ),
            describe={fname: _describe_container_call for fname in container_fns},
            inline=False,
        ),
        traced(
            HostInterface(INTERFACE, blobstore_fns, versions=VERSIONS, signatures=BLOBSTORE_SIGNATURES),
            describe={fname: _describe_blobstore_call for fname in blobstore_fns},
            inline=False,
        ),
    ]


# Span attributes of blobstore calls: the names a call is about.
CONTAINER_ATTR = "wasmlattice.blobstore.container"
OBJECT_ATTR = "wasmlattice.blobstore.object"


def _describe_container_call(*args: Any) -> dict[str, Any]:
    """`container` (and `object` when the method takes one name) of a container method's call."""
    attrs: dict[str, Any] = {}
    if args and isinstance(args[0], Container):
        attrs[CONTAINER_ATTR] = args[0].name()
    if len(args) > 1 and isinstance(args[1], str):
        attrs[OBJECT_ATTR] = args[1]
    return attrs


def _describe_blobstore_call(*args: Any) -> dict[str, Any]:
    """The container a `blobstore` function names, or the source `object-id` of a copy or move."""
    if args and isinstance(args[0], str):
        return {CONTAINER_ATTR: args[0]}
    if args and isinstance(args[0], tuple) and len(args[0]) == 2:
        return {CONTAINER_ATTR: str(args[0][0]), OBJECT_ATTR: str(args[0][1])}
    return {}


# -- providers --------------------------------------------------------------------------------


class BlobstoreProvider(LinkTargetProvider):
    """Base of the blobstore providers: one backend per link."""


class NatsBlobstoreProvider(BlobstoreProvider):
    """`builtin://blobstore-nats`: object store buckets in the lattice's JetStream."""

    kind = "blobstore-nats"

    async def open_backend(self, link: Link, config: StrMap) -> BlobBackend:
        """A backend with the link's `bucket_prefix`."""
        if self.services.js is None:
            raise CapabilityError(f"{self.provider_id}: this host has no JetStream connection")
        prefix = lower_config(config).get("bucket_prefix", "")
        if any(not (c.isascii() and (c.isalnum() or c in "_-")) for c in prefix):
            raise CapabilityError(
                f"link `{link.name}` from `{link.source_id}`: bucket_prefix {prefix!r} may only contain "
                "A-Z, a-z, 0-9, `_` and `-`"
            )
        return NatsBlobBackend(self.services.js, prefix)


class FsBlobstoreProvider(BlobstoreProvider):
    """`builtin://blobstore-fs`: containers as directories under the link's `root`."""

    kind = "blobstore-fs"

    async def open_backend(self, link: Link, config: StrMap) -> BlobBackend:
        """A backend on the link's `root` directory (created if missing)."""
        root = lower_config(config).get("root", "")
        if not root:
            raise CapabilityError(
                f"link `{link.name}` from `{link.source_id}` to `{self.provider_id}` has no `root` in its "
                "target config; put a named config with `root=/some/directory` in the link's target_config"
            )
        # The root comes from link config, which any control message can set: only a directory
        # the host's operator allowed is used (docs/security.md).
        try:
            path = self.services.files.check_blob_root(root)
        except HostFileError as e:
            log.warning("%s: link `%s` from `%s`: %s", self.provider_id, link.name, link.source_id, e)
            raise CapabilityError(str(e)) from None
        try:
            return await asyncio.get_running_loop().run_in_executor(None, FsBlobBackend, path)
        except OSError as e:
            raise CapabilityError(f"blobstore-fs cannot use root {root!r}: {e}") from None


PROVIDERS: dict[str, Callable[[ProviderSpec], Any]] = {
    "builtin://blobstore-nats": NatsBlobstoreProvider,
    "builtin://blobstore-fs": FsBlobstoreProvider,
}
# Every config these providers read (capabilities/config_keys.py): the target config of links to
# them; wasmCloud's blobstore-nats reads its own connection's keys, ours uses the host's.
CONFIG_KEYS: dict[str, ProviderKeys] = {
    "builtin://blobstore-nats": ProviderKeys(
        "blobstore-nats",
        target=KeySet(
            ("bucket_prefix",),
            ("cluster_uri", "js_domain", "client_jwt", "client_seed", "tls_ca", "tls_ca_file"),
        ),
    ),
    "builtin://blobstore-fs": ProviderKeys("blobstore-fs", target=KeySet(("root",))),
}
ALIASES: dict[str, str] = {
    "wasmcloud+builtin://blobstore-nats": "builtin://blobstore-nats",
    "wasmcloud+builtin://blobstore-fs": "builtin://blobstore-fs",
}
