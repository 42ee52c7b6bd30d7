"""`wasi:filesystem` 0.2: read-only directory grants, with every path confined to its base directory.

A guest sees a preopen only for each `WasiConfig.read_only_dirs` entry (none by default). A
`Descriptor` names a host path rather than holding an OS file descriptor, so a guest that never
drops its handles cannot exhaust the host's descriptors; each operation opens what it needs.

Path resolution follows WASI's sandboxing rules (as wasmtime's cap-std does): the path is walked
one component at a time from the base descriptor, expanding symbolic links by hand, and fails with
`not-permitted` if it is absolute, if `..` climbs above the base, or if a link is absolute or leads
outside. Nothing may be modified: every mutating operation fails with `read-only`.
"""

from __future__ import annotations

import errno
import hashlib
import io as _pyio
import os
import stat as _stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from wasmlattice.runtime.linking import HostInterface
from wasmlattice.runtime.witypes import Err
from wasmlattice.wasi.ctx import WasiCtx, ctx
from wasmlattice.wasi.io import MAX_READ, BytePipe, InputStream, IoError, Pollable

# POSIX's SYMLOOP_MAX floor is 8; Linux allows 40 and so does cap-std.
_MAX_SYMLINKS = 40
# The most one `read` returns: it may return less than asked, and this bounds the list<u8> copy.
_MAX_PREAD = 1 << 20
# Offsets above this cannot be passed to the OS (off_t is signed 64-bit).
_MAX_OFFSET = 2**63 - 1
# Keyed so a guest cannot recover inode numbers from a metadata hash (as the WIT recommends).
_HASH_KEY = os.urandom(32)
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

_ERRNO_CODES: dict[int, str] = {}
for _name, _code in (
    ("EACCES", "access"),
    ("EAGAIN", "would-block"),
    ("EALREADY", "already"),
    ("EBADF", "bad-descriptor"),
    ("EBUSY", "busy"),
    ("EDEADLK", "deadlock"),
    ("EDQUOT", "quota"),
    ("EEXIST", "exist"),
    ("EFBIG", "file-too-large"),
    ("EILSEQ", "illegal-byte-sequence"),
    ("EINPROGRESS", "in-progress"),
    ("EINTR", "interrupted"),
    ("EINVAL", "invalid"),
    ("EIO", "io"),
    ("EISDIR", "is-directory"),
    ("ELOOP", "loop"),
    ("EMLINK", "too-many-links"),
    ("EMSGSIZE", "message-size"),
    ("ENAMETOOLONG", "name-too-long"),
    ("ENODEV", "no-device"),
    ("ENOENT", "no-entry"),
    ("ENOLCK", "no-lock"),
    ("ENOMEM", "insufficient-memory"),
    ("ENOSPC", "insufficient-space"),
    ("ENOTDIR", "not-directory"),
    ("ENOTEMPTY", "not-empty"),
    ("ENOTRECOVERABLE", "not-recoverable"),
    ("ENOTSUP", "unsupported"),
    ("EOPNOTSUPP", "unsupported"),
    ("ENOSYS", "unsupported"),
    ("ENOTTY", "no-tty"),
    ("ENXIO", "no-such-device"),
    ("EOVERFLOW", "overflow"),
    ("EPERM", "not-permitted"),
    ("EPIPE", "pipe"),
    ("EROFS", "read-only"),
    ("ESPIPE", "invalid-seek"),
    ("ETXTBSY", "text-file-busy"),
    ("EXDEV", "cross-device"),
):
    # Some names are missing, or alias one another (EAGAIN/EWOULDBLOCK), on some platforms.
    _num = getattr(errno, _name, None)
    if _num is not None:
        _ERRNO_CODES.setdefault(_num, _code)

# `option<datetime>` and the `descriptor-stat` record, as the fast call path represents them.
OptDatetime = tuple[int, int] | None
DescriptorStat = tuple[str, int, int, OptDatetime, OptDatetime, OptDatetime]


def error_code(e: OSError) -> str:
    """The `error-code` name for an OS error (`io` when errno has no closer match)."""
    return _ERRNO_CODES.get(e.errno or 0, "io")


@contextmanager
def _os_errors() -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise Err(error_code(e)) from None


class FsError(IoError):
    """A `wasi:io/error.error` raised by a file stream, carrying a filesystem `error-code`."""

    __slots__ = ("fs_code",)

    def __init__(self, message: str, fs_code: str) -> None:
        # `code` stays None: other interfaces (wasi:http) read it as their own error type.
        super().__init__(message)
        self.fs_code = fs_code


def descriptor_type(mode: int) -> str:
    """The `descriptor-type` of a `st_mode`."""
    if _stat.S_ISREG(mode):
        return "regular-file"
    if _stat.S_ISDIR(mode):
        return "directory"
    if _stat.S_ISLNK(mode):
        return "symbolic-link"
    if _stat.S_ISCHR(mode):
        return "character-device"
    if _stat.S_ISBLK(mode):
        return "block-device"
    if _stat.S_ISFIFO(mode):
        return "fifo"
    if _stat.S_ISSOCK(mode):
        return "socket"
    return "unknown"


def _datetime(ns: int) -> OptDatetime:
    # `datetime.seconds` is a u64: times before the epoch cannot be expressed.
    if ns < 0:
        return None
    s, rest = divmod(ns, 1_000_000_000)
    return (s, rest)


def _stat_record(st: os.stat_result) -> DescriptorStat:
    return (
        descriptor_type(st.st_mode),
        st.st_nlink,
        st.st_size,
        _datetime(st.st_atime_ns),
        _datetime(st.st_mtime_ns),
        _datetime(st.st_ctime_ns),
    )


def _metadata_hash(st: os.stat_result) -> tuple[int, int]:
    # Identity plus size and modification time, so the hash changes when the file does.
    data = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}".encode()
    h = hashlib.blake2b(data, key=_HASH_KEY, digest_size=16).digest()
    return (int.from_bytes(h[:8], "little"), int.from_bytes(h[8:], "little"))


def _within(base: str, path: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _components(path: str) -> list[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


def resolve(base: str, path: str, follow: bool) -> str:
    """The host path `path` names relative to the directory `base` (a real path), confined to `base`.

    Symbolic links are expanded one at a time (the last component only if `follow`), so that
    no step, not even a transient one, can leave `base`. The result may not exist.
    """
    if not path:
        raise Err("no-entry")
    if "\0" in path:
        raise Err("invalid")
    if path.startswith("/"):
        raise Err("not-permitted")
    # A trailing slash (or `.`) asks for a directory, and so expands a final link, as in POSIX.
    want_dir = path in (".", "..") or path.endswith(("/", "/.", "/.."))
    todo = list(reversed(_components(path)))
    stack: list[str] = []
    links = 0
    while todo:
        comp = todo.pop()
        if comp == "..":
            if not stack:
                raise Err("not-permitted")
            stack.pop()
            continue
        cur = os.path.join(base, *stack, comp)
        last = not todo
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            if not last:
                raise Err("no-entry") from None
            stack.append(comp)
            break
        except OSError as e:
            raise Err(error_code(e)) from None
        if _stat.S_ISLNK(st.st_mode) and (not last or follow or want_dir):
            links += 1
            if links > _MAX_SYMLINKS:
                raise Err("loop")
            with _os_errors():
                target = os.readlink(cur)
            if target.startswith("/"):
                raise Err("not-permitted")
            todo.extend(reversed(_components(target)))
            continue
        if (not last or want_dir) and not _stat.S_ISDIR(st.st_mode):
            raise Err("not-directory")
        stack.append(comp)
    if not stack:
        return base
    result = os.path.join(base, *stack)
    # Belt and braces against the tree changing under the walk: the kernel's view must agree.
    if follow or want_dir:
        real = os.path.realpath(result)
    else:
        real = os.path.join(os.path.realpath(os.path.dirname(result)), os.path.basename(result))
    if not _within(base, real):
        raise Err("not-permitted")
    return result


class DirectoryEntryStream:
    """`directory-entry-stream`: the entries of a directory, as listed when it was opened."""

    def __init__(self, entries: list[tuple[str, str]]) -> None:
        self._entries = entries
        self._next = 0

    def read_directory_entry(self) -> tuple[str, str] | None:
        """The next `(type, name)` entry, or None when there are no more."""
        if self._next >= len(self._entries):
            return None
        kind, name = self._entries[self._next]
        self._next += 1
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            # The host name is not valid UTF-8 (Python kept its bytes as surrogates).
            raise Err("illegal-byte-sequence") from None
        return (kind, name)


class FileInputStream(InputStream):
    """`input-stream` over a host file, read chunk by chunk as the guest asks (files never block)."""

    def __init__(self, wctx: WasiCtx, file: _pyio.FileIO) -> None:
        super().__init__(BytePipe(wctx))
        # A FileIO closes itself when collected, so a handle the guest never drops leaks nothing.
        self._file: _pyio.FileIO | None = file

    def _close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()

    def _fill(self, n: int) -> None:
        pipe = self.pipe
        f = self._file
        if f is None or n <= 0 or pipe.chunks:
            return
        try:
            data = f.read(min(n, MAX_READ)) or b""
        except OSError as e:
            self._close()
            pipe.finish()
            # Raised here rather than through the pipe, which would lose the filesystem code.
            raise Err(
                ("last-operation-failed", FsError(f"reading the file failed: {e}", error_code(e)))
            ) from None
        if data:
            pipe.put(data)
        else:
            self._close()
            pipe.finish()

    def read(self, n: int) -> bytes:
        """Read at most n bytes."""
        self._fill(n)
        return super().read(n)

    def blocking_read(self, n: int) -> bytes:
        """Read at most n bytes (a file read never has to wait)."""
        self._fill(n)
        return super().blocking_read(n)

    def skip(self, n: int) -> int:
        """Skip at most n bytes."""
        self._fill(n)
        return super().skip(n)

    def blocking_skip(self, n: int) -> int:
        """Skip at most n bytes (a file read never has to wait)."""
        self._fill(n)
        return super().blocking_skip(n)

    def subscribe(self) -> Pollable:
        """Always ready: the next read fetches from the file at once."""
        return Pollable(self.pipe.ctx)

    def drop(self) -> None:
        """Resource dropped by the guest: close the file."""
        self._close()
        super().drop()


class Descriptor:
    """`descriptor`: a file or directory inside a read-only grant, named by its real host path."""

    __slots__ = ("flags", "path")

    def __init__(self, path: str, flags: frozenset[str]) -> None:
        self.path = path
        self.flags = flags

    def __repr__(self) -> str:
        return f"Descriptor({self.path!r}, {sorted(self.flags)})"

    # -- helpers -----------------------------------------------------------------------------

    def _lstat(self) -> os.stat_result:
        with _os_errors():
            return os.lstat(self.path)

    def _require_dir(self) -> None:
        if not _stat.S_ISDIR(self._lstat().st_mode):
            raise Err("not-directory")

    def _require_read(self) -> None:
        if "read" not in self.flags:
            raise Err("bad-descriptor")

    def _open_file(self) -> int:
        """An OS descriptor for reading this file (the caller closes it)."""
        with _os_errors():
            fd = os.open(self.path, _OPEN_FLAGS)
        try:
            if _stat.S_ISDIR(os.fstat(fd).st_mode):
                raise Err("is-directory")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _at(self, path: str, follow: bool) -> str:
        self._require_dir()
        return resolve(self.path, path, follow)

    # -- reading -----------------------------------------------------------------------------

    def read(self, length: int, offset: int) -> tuple[bytes, bool]:
        """`read`: up to `length` bytes at `offset`, and whether the end of the file was reached."""
        self._require_read()
        fd = self._open_file()
        try:
            with _os_errors():
                size = os.fstat(fd).st_size
                if offset >= size or offset > _MAX_OFFSET:
                    return (b"", True)
                data = os.pread(fd, min(length, _MAX_PREAD), offset) if length else b""
        finally:
            os.close(fd)
        return (data, offset + len(data) >= size)

    def read_via_stream(self, offset: int) -> InputStream:
        """`read-via-stream`: an input stream over the file from `offset`."""
        self._require_read()
        fd = self._open_file()
        try:
            with _os_errors():
                # O_NONBLOCK only kept the open from hanging on a FIFO; reads should wait.
                os.set_blocking(fd, True)
                if offset:
                    os.lseek(fd, min(offset, _MAX_OFFSET), os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return FileInputStream(ctx(), _pyio.FileIO(fd, "r", closefd=True))

    def read_directory(self) -> DirectoryEntryStream:
        """`read-directory`: a stream of this directory's entries (without `.` and `..`)."""
        self._require_read()
        self._require_dir()
        entries: list[tuple[str, str]] = []
        with _os_errors(), os.scandir(self.path) as it:
            for entry in it:
                try:
                    kind = descriptor_type(entry.stat(follow_symlinks=False).st_mode)
                except OSError:
                    kind = "unknown"  # removed since it was listed
                entries.append((kind, entry.name))
        entries.sort(key=lambda e: e[1])
        return DirectoryEntryStream(entries)

    def advise(self, offset: int, length: int, advice: str) -> None:
        """`advise`: accepted and ignored (advice never changes results)."""

    def sync(self) -> None:
        """`sync`: nothing was written, so nothing to do (as the WIT says for read-only descriptors)."""

    def sync_data(self) -> None:
        """`sync-data`: nothing was written, so nothing to do."""

    def get_flags(self) -> set[str]:
        """`get-flags`: the flags the descriptor was opened with."""
        return set(self.flags)

    def get_type(self) -> str:
        """`get-type`: the kind of object the descriptor refers to."""
        return descriptor_type(self._lstat().st_mode)

    def stat(self) -> DescriptorStat:
        """`stat`: the object's attributes."""
        return _stat_record(self._lstat())

    def stat_at(self, path_flags: set[str], path: str) -> DescriptorStat:
        """`stat-at`: the attributes of `path` (a final link followed with `symlink-follow`)."""
        target = self._at(path, "symlink-follow" in path_flags)
        with _os_errors():
            return _stat_record(os.lstat(target))

    def open_at(self, path_flags: set[str], path: str, open_flags: set[str], flags: set[str]) -> Descriptor:
        """`open-at`: a descriptor for `path`; only reading is allowed."""
        self._require_dir()
        if {"write", "mutate-directory"} & flags or {"create", "truncate", "exclusive"} & open_flags:
            raise Err("read-only")
        target = resolve(self.path, path, "symlink-follow" in path_flags)
        with _os_errors():
            st = os.lstat(target)
        if _stat.S_ISLNK(st.st_mode):
            raise Err("loop")  # as openat(2) with O_NOFOLLOW
        is_dir = _stat.S_ISDIR(st.st_mode)
        if "directory" in open_flags and not is_dir:
            raise Err("not-directory")
        if "read" in flags:
            # Open and close at once so that a permission problem is reported now, as openat(2) would.
            with _os_errors():
                os.close(os.open(target, _OPEN_FLAGS | (os.O_DIRECTORY if is_dir else 0)))
        return Descriptor(target, frozenset(flags))

    def readlink_at(self, path: str) -> str:
        """`readlink-at`: the contents of the symbolic link at `path`."""
        target = self._at(path, False)
        with _os_errors():
            contents = os.readlink(target)
        if contents.startswith("/"):
            raise Err("not-permitted")
        try:
            contents.encode("utf-8")
        except UnicodeEncodeError:
            raise Err("illegal-byte-sequence") from None
        return contents

    def is_same_object(self, other: Descriptor) -> bool:
        """`is-same-object`: whether both descriptors refer to the same file (device and inode)."""
        try:
            a, b = os.lstat(self.path), os.lstat(other.path)
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def metadata_hash(self) -> tuple[int, int]:
        """`metadata-hash`: a keyed hash of identity, size and modification time."""
        return _metadata_hash(self._lstat())

    def metadata_hash_at(self, path_flags: set[str], path: str) -> tuple[int, int]:
        """`metadata-hash-at`: `metadata-hash` of the object at `path`."""
        target = self._at(path, "symlink-follow" in path_flags)
        with _os_errors():
            return _metadata_hash(os.lstat(target))


def _read_only(*_args: Any) -> NoReturn:
    """Every grant is read-only, so any operation that would modify something fails."""
    raise Err("read-only")


def get_directories() -> list[tuple[Descriptor, str]]:
    """`preopens.get-directories`: one read-only descriptor per configured grant."""
    wctx = ctx()
    out: list[tuple[Descriptor, str]] = []
    for guest_path, host_dir in wctx.config.read_only_dirs.items():
        real = os.path.realpath(host_dir)
        if not os.path.isdir(real):
            wctx.log.warning(
                "[%s] read-only directory %s (for %s) is not a directory; not granted",
                wctx.config.component_id,
                host_dir,
                guest_path,
            )
            continue
        out.append((Descriptor(real, frozenset({"read"})), guest_path))
    return out


def filesystem_error_code(err: IoError) -> str | None:
    """`filesystem-error-code`: the filesystem error behind a stream error, if it has one."""
    return err.fs_code if isinstance(err, FsError) else None


def interfaces() -> list[HostInterface]:
    """The `wasi:filesystem` interfaces."""
    d = Descriptor
    types: dict[str, Callable[..., Any]] = {
        "[method]descriptor.read-via-stream": d.read_via_stream,
        "[method]descriptor.write-via-stream": _read_only,
        "[method]descriptor.append-via-stream": _read_only,
        "[method]descriptor.advise": d.advise,
        "[method]descriptor.sync-data": d.sync_data,
        "[method]descriptor.get-flags": d.get_flags,
        "[method]descriptor.get-type": d.get_type,
        "[method]descriptor.set-size": _read_only,
        "[method]descriptor.set-times": _read_only,
        "[method]descriptor.read": d.read,
        "[method]descriptor.write": _read_only,
        "[method]descriptor.read-directory": d.read_directory,
        "[method]descriptor.sync": d.sync,
        "[method]descriptor.create-directory-at": _read_only,
        "[method]descriptor.stat": d.stat,
        "[method]descriptor.stat-at": d.stat_at,
        "[method]descriptor.set-times-at": _read_only,
        "[method]descriptor.link-at": _read_only,
        "[method]descriptor.open-at": d.open_at,
        "[method]descriptor.readlink-at": d.readlink_at,
        "[method]descriptor.remove-directory-at": _read_only,
        "[method]descriptor.rename-at": _read_only,
        "[method]descriptor.symlink-at": _read_only,
        "[method]descriptor.unlink-file-at": _read_only,
        "[method]descriptor.is-same-object": d.is_same_object,
        "[method]descriptor.metadata-hash": d.metadata_hash,
        "[method]descriptor.metadata-hash-at": d.metadata_hash_at,
        "[method]directory-entry-stream.read-directory-entry": DirectoryEntryStream.read_directory_entry,
        "filesystem-error-code": filesystem_error_code,
    }
    return [
        HostInterface("wasi:filesystem/types", types),
        HostInterface("wasi:filesystem/preopens", {"get-directories": get_directories}),
    ]
