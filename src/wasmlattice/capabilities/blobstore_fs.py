"""The `builtin://blobstore-fs` backend: containers are directories under one root directory.

Link target config: `root` (required) is the directory a link's containers live in (created if
missing). Link config is whatever a control message says, so the provider
(`capabilities.blobstore`) uses a root only inside a directory the host allows (`--allow-dir`).
A container is a sub-directory `<root>/<container>`; an object is a file under it, and a `/` in
an object name makes sub-directories (`a/b.txt`), like keys in S3.

Confinement: nothing a guest names may reach outside `root`. Container names are one path
component that does not start with `.`; object names are relative paths whose components are
neither empty, `.` nor `..`; neither may contain NUL. A name that resolves (through symbolic links)
outside `root` is refused too. Each refusal is the interface's `error`, naming the rule.

Writes go to a temporary file under `<root>/.wasmlattice-tmp` and are renamed into place once the
guest finishes the value, so a reader never sees half an object. A read opens the file at
`get-data`, so the bytes it returns stay the ones it opened even if the object is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from wasmlattice.capabilities.blobstore_backend import (
    READ_CHUNK,
    BlobBackend,
    BlobError,
    BlobReader,
    object_range,
)
from wasmlattice.wasi.io import BytePipe

T = TypeVar("T")

TMP_DIR = ".wasmlattice-tmp"


def check_container_name(name: str) -> None:
    """`BlobError` unless `name` is a container name confined to one directory under the root."""
    if not name:
        raise BlobError("invalid container name: it is empty")
    if "\0" in name:
        raise BlobError(f"invalid container name {name!r}: it contains a NUL character")
    if "/" in name or "\\" in name:
        raise BlobError(f"invalid container name {name!r}: it may not contain `/` or `\\`")
    if name.startswith("."):
        raise BlobError(f"invalid container name {name!r}: it may not start with `.`")


def check_object_name(name: str) -> list[str]:
    """The path components of object `name`; `BlobError` unless it stays inside its container."""
    if not name:
        raise BlobError("invalid object name: it is empty")
    if "\0" in name:
        raise BlobError(f"invalid object name {name!r}: it contains a NUL character")
    if name.startswith("/"):
        raise BlobError(f"invalid object name {name!r}: it may not be an absolute path")
    parts = name.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise BlobError(f"invalid object name {name!r}: path components may not be empty, `.` or `..`")
    return parts


def confined(root: Path, path: Path) -> bool:
    """Whether `path`, with every symbolic link resolved, is `root` or inside it."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root + os.sep)


class FsBlobBackend(BlobBackend):
    """Containers as directories under `root` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.tmp = root / TMP_DIR
        self.tmp.mkdir(exist_ok=True)

    # -- paths -------------------------------------------------------------------------------

    def container_path(self, name: str) -> Path:
        """The directory of container `name`, checked to stay inside the root."""
        check_container_name(name)
        path = self.root / name
        if not confined(self.root, path):
            raise BlobError(f"container {name!r} resolves outside the blobstore root; refused")
        return path

    def existing_container(self, name: str) -> Path:
        """The directory of an existing container (`BlobError` if it does not exist)."""
        path = self.container_path(name)
        if not path.is_dir():
            raise BlobError(f"container `{name}` does not exist")
        return path

    def object_path(self, container: str, name: str) -> Path:
        """The file of object `name` in an existing container, checked to stay inside it."""
        base = self.existing_container(container)
        path = base.joinpath(*check_object_name(name))
        if not confined(base, path):
            raise BlobError(f"object {name!r} resolves outside its container; refused")
        return path

    async def _run(self, fn: Callable[[], T]) -> T:
        # File system calls block: keep them off the event loop. OS errors are reported without
        # the host's paths, which are none of the guest's business.
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn)
        except OSError as e:
            raise BlobError(f"the blobstore directory failed the operation: {e.strerror or e}") from None

    # -- containers --------------------------------------------------------------------------

    async def create_container(self, name: str) -> int:
        """Create the container's directory (`BlobError` if it exists)."""

        def create() -> int:
            path = self.container_path(name)
            try:
                path.mkdir()
            except FileExistsError:
                raise BlobError(f"container `{name}` already exists; open it with get-container") from None
            return int(path.stat().st_mtime)

        return await self._run(create)

    async def container_created(self, name: str) -> int:
        """When the container's directory was made (its change time)."""
        return await self._run(lambda: int(self.existing_container(name).stat().st_ctime))

    async def container_exists(self, name: str) -> bool:
        """Whether the container's directory exists."""
        return await self._run(lambda: self.container_path(name).is_dir())

    async def delete_container(self, name: str) -> None:
        """Remove the container's directory tree (symbolic links inside are removed, not followed)."""
        await self._run(lambda: shutil.rmtree(self.existing_container(name)))

    # -- objects -----------------------------------------------------------------------------

    async def list_objects(self, container: str) -> list[str]:
        """Every file under the container, as `/`-separated names."""

        def walk() -> list[str]:
            base = self.existing_container(container)
            names = []
            for dirpath, _dirs, files in os.walk(base):
                for f in files:
                    full = Path(dirpath) / f
                    if confined(base, full) and full.is_file():
                        names.append(full.relative_to(base).as_posix())
            return sorted(names)

        return await self._run(walk)

    async def object_info(self, container: str, name: str) -> tuple[int, int]:
        """The file's size and modification time (when this version of the object was written)."""

        def info() -> tuple[int, int]:
            path = self.object_path(container, name)
            if not path.is_file():
                raise BlobError(f"object `{name}` does not exist in container `{container}`")
            st = path.stat()
            return st.st_size, int(st.st_mtime)

        return await self._run(info)

    async def has_object(self, container: str, name: str) -> bool:
        """Whether the object's file exists."""
        return await self._run(lambda: self.object_path(container, name).is_file())

    async def delete_object(self, container: str, name: str) -> None:
        """Remove the file, then the sub-directories it leaves empty."""

        def delete() -> None:
            base = self.existing_container(container)
            path = self.object_path(container, name)
            if path.is_dir() and not path.is_symlink():
                raise BlobError(f"`{name}` in container `{container}` is a directory of objects, not one")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            parent = path.parent
            while parent != base:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

        await self._run(delete)

    async def open_read(self, container: str, name: str, start: int, end: int) -> BlobReader:
        """Open the file now (so its bytes stay readable even if the object is replaced)."""

        def open_file() -> FsReader:
            path = self.object_path(container, name)
            try:
                f = path.open("rb")
            except (FileNotFoundError, IsADirectoryError):
                raise BlobError(f"object `{name}` does not exist in container `{container}`") from None
            rng = object_range(os.fstat(f.fileno()).st_size, start, end)
            f.seek(rng.start)
            return FsReader(f, rng.length)

        return await self._run(open_file)

    async def check_write(self, container: str, name: str) -> None:
        """Check the names and that the container exists."""
        await self._run(lambda: self.object_path(container, name))

    async def write(self, container: str, name: str, pipe: BytePipe) -> None:
        """Stream the pipe into a temporary file, then rename it over the object."""
        tmp = self.tmp / uuid.uuid4().hex
        f = await self._run(lambda: tmp.open("wb"))
        try:
            try:
                while True:
                    data = await pipe.aread()
                    if data is None:
                        break
                    await self._run(lambda d=data: f.write(d))  # type: ignore[misc]
            finally:
                await self._run(f.close)
            await self._run(lambda: self._install(tmp, container, name))
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _install(self, tmp: Path, container: str, name: str) -> None:
        # The names are checked again: the container may have gone while the data arrived.
        path = self.object_path(container, name)
        if path.is_dir() and not path.is_symlink():
            raise BlobError(f"object `{name}` cannot be written: other objects' names start with `{name}/`")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise BlobError(f"object `{name}` cannot be written: a prefix of its name is an object") from None
        if not confined(self.root / container, path):
            raise BlobError(f"object {name!r} resolves outside its container; refused")
        os.replace(tmp, path)

    async def copy_object(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        """Copy the file through a temporary one, then rename it into place."""

        def copy() -> None:
            spath = self.object_path(*src)
            self.object_path(*dest)
            if not spath.is_file():
                raise BlobError(f"object `{src[1]}` does not exist in container `{src[0]}`")
            tmp = self.tmp / uuid.uuid4().hex
            try:
                shutil.copyfile(spath, tmp)
                self._install(tmp, *dest)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()

        await self._run(copy)

    async def move_object(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        """Rename the file (same file system), removing directories it leaves empty."""

        def move() -> None:
            spath = self.object_path(*src)
            self.object_path(*dest)
            if not spath.is_file():
                raise BlobError(f"object `{src[1]}` does not exist in container `{src[0]}`")
            self._install(spath, *dest)

        if src == dest:
            await self.object_info(*src)
            return
        await self._run(move)
        await self.delete_object(*src)  # only prunes the emptied directories now


class FsReader(BlobReader):
    """An open file positioned at the start of a range."""

    def __init__(self, f: BinaryIO, length: int) -> None:
        super().__init__(length)
        self.f = f

    async def pump(self, pipe: BytePipe) -> None:
        """Read the range in chunks into the pipe."""
        loop = asyncio.get_running_loop()
        left = self.size
        try:
            while left > 0:
                data = await loop.run_in_executor(None, self.f.read, min(READ_CHUNK, left))
                if not data:
                    raise BlobError("the object's file became shorter while it was read")
                left -= len(data)
                if not await pipe.awrite(data):
                    return
        finally:
            self.close()

    def close(self) -> None:
        """Close the file."""
        self.f.close()
