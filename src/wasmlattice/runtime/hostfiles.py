"""The host's own files, as far as a control message may reach them (docs/security.md).

A control message may name a `file://` component to load or a blobstore-fs root; both touch the
host machine, so the host's operator decides what they may reach, never the message:

- `file://` references load only when the host runs with `--allow-file-load`, only regular files,
  only under the directories the host allows (`--allow-dir`, symbolic links resolved), and only up
  to `--max-component-size` bytes. A path outside those directories gets the same error whether or
  not it exists, so the error reveals nothing about the rest of the machine.
- A blobstore-fs root must be inside an allowed directory and may not contain the host's own
  secrets (the secrets key, NATS credentials: `HostFiles.protected`).

The file is opened without following a final symbolic link and without blocking (a FIFO or a
device never stalls the loader), then checked through the open descriptor: what is read is what
was checked.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

# A component file larger than this is refused before it is read (`--max-component-size`).
DEFAULT_MAX_COMPONENT_SIZE = 256 * 1024 * 1024
ALLOW_FILE_LOAD_FLAG = "--allow-file-load"
ALLOW_DIR_FLAG = "--allow-dir"
# The one refusal for anything outside the allowed directories, existing or not, file or not.
MSG_NOT_ALLOWED = f"not a regular file under the host's allowed directories ({ALLOW_DIR_FLAG})"
_READ_CHUNK = 1 << 20


class FileIdentity(NamedTuple):
    """What tells a file's content unchanged without reading it (as `git status` does): the same
    inode on the same device, size, modification and change times. Any write changes a time."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    def settled(self, now_ns: int) -> bool:
        """Whether the file was last changed long enough before `now_ns` to be told apart from a
        write that follows. File times come from a coarse clock (a few ms), so two writes close
        together can leave the same times: like git's "racy" entries, such a file is read again."""
        return now_ns - max(self.mtime_ns, self.ctime_ns) > SETTLED_NS


# How long before a read a file must have last changed for its identity to be trusted (above).
SETTLED_NS = 2_000_000_000


class HostFileError(Exception):
    """A control message asked for a file or directory the host does not allow; says why."""


def real_path(path: str | os.PathLike[str]) -> str:
    """`path` absolute, with `~` expanded and every symbolic link resolved."""
    return os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


def is_within(path: str, directory: str) -> bool:
    """Whether real path `path` is real path `directory` or inside it."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class HostFiles:
    """What this host lets control messages reach on its machine (default: nothing)."""

    allow_file_load: bool = False
    # Real paths (see `of`); `file://` components and blobstore-fs roots must be inside one.
    allowed_dirs: tuple[str, ...] = ()
    max_component_size: int = DEFAULT_MAX_COMPONENT_SIZE
    # (what, real path) of host files no blobstore-fs root may contain, e.g. the secrets key.
    protected: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(
        cls,
        allow_file_load: bool = False,
        allowed_dirs: Iterable[str | os.PathLike[str]] = (),
        max_component_size: int = DEFAULT_MAX_COMPONENT_SIZE,
        protected: Iterable[tuple[str, str | os.PathLike[str]]] = (),
    ) -> HostFiles:
        """A policy with the directories and protected files resolved to real paths."""
        return cls(
            allow_file_load=allow_file_load,
            allowed_dirs=tuple(dict.fromkeys(real_path(d) for d in allowed_dirs)),
            max_component_size=max_component_size,
            protected=tuple((what, real_path(p)) for what, p in protected),
        )

    def allows(self, path: str | os.PathLike[str]) -> bool:
        """Whether `path` (symbolic links resolved) is inside an allowed directory."""
        real = real_path(path)
        return any(is_within(real, d) for d in self.allowed_dirs)

    def _dirs_hint(self) -> str:
        if not self.allowed_dirs:
            return f"this host allows no directories; start it with {ALLOW_DIR_FLAG} DIR"
        return f"allowed: {', '.join(self.allowed_dirs)}"

    # -- file:// components ------------------------------------------------------------------

    def check_load(self, ref: str, path: str) -> str:
        """The real path of a `file://` component the host may load; `HostFileError` if it may not.

        Only the policy is checked (no file is opened): cheap enough to answer a control request.
        """
        if not self.allow_file_load:
            raise HostFileError(
                f"cannot load {ref!r}: file loading is disabled on this host; start it with "
                f"{ALLOW_FILE_LOAD_FLAG} (WASMCLOUD_ALLOW_FILE_LOAD=true) and {ALLOW_DIR_FLAG} DIR"
            )
        if "\0" in path:  # no file has that name; the OS would refuse it with another error
            raise HostFileError(f"cannot load {ref!r}: {MSG_NOT_ALLOWED}")
        real = real_path(path)
        if not any(is_within(real, d) for d in self.allowed_dirs):
            raise HostFileError(f"cannot load {ref!r}: {MSG_NOT_ALLOWED}")
        return real

    def read_component(
        self, ref: str, path: str, unchanged: Callable[[FileIdentity], bool] | None = None
    ) -> tuple[bytes | None, FileIdentity]:
        """The bytes of the `file://` component at `path`, within this policy and its size cap, and
        the file's identity; the bytes are None (not read) when `unchanged(identity)` says the
        caller already has them. Every check runs either way."""
        real = self.check_load(ref, path)
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(real, flags)
        except FileNotFoundError:
            # Inside the allowed directories, saying so reveals nothing the operator did not share.
            raise HostFileError(f"cannot load {ref!r}: component file {path} does not exist") from None
        except OSError as e:
            if e.errno == errno.ELOOP:  # the file became a symbolic link after it was resolved
                raise HostFileError(f"cannot load {ref!r}: {MSG_NOT_ALLOWED}") from None
            # Inside the allowed directories: the reason is the operator's to know.
            raise HostFileError(f"cannot load {ref!r}: cannot open the file: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise HostFileError(f"cannot load {ref!r}: not a regular file")
            opened = _opened_path(fd)
            if opened is not None and not any(is_within(opened, d) for d in self.allowed_dirs):
                # A directory on the way was swapped for a link after the check: refuse.
                raise HostFileError(f"cannot load {ref!r}: {MSG_NOT_ALLOWED}")
            if st.st_size > self.max_component_size:
                raise HostFileError(self._too_big(ref, st.st_size))
            identity = FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if unchanged is not None and unchanged(identity):
                return None, identity
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = os.read(fd, _READ_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_component_size:  # it grew while being read
                    raise HostFileError(self._too_big(ref, size))
                chunks.append(chunk)
            return b"".join(chunks), identity
        finally:
            os.close(fd)

    def _too_big(self, ref: str, size: int) -> str:
        return (
            f"cannot load {ref!r}: the file has {size} bytes or more; this host loads components of at "
            f"most {self.max_component_size} bytes (--max-component-size)"
        )

    # -- blobstore-fs roots ------------------------------------------------------------------

    def check_blob_root(self, root: str) -> Path:
        """The real path of blobstore-fs root `root`; `HostFileError` unless the host allows it."""
        if "\0" in root:
            raise HostFileError(f"blobstore-fs root {root!r} contains a NUL character")
        if not os.path.isabs(root):
            raise HostFileError(f"blobstore-fs root {root!r} must be an absolute path")
        real = real_path(root)
        if not any(is_within(real, d) for d in self.allowed_dirs):
            raise HostFileError(
                f"blobstore-fs root {root!r} is not inside a directory this host allows "
                f"({ALLOW_DIR_FLAG}; {self._dirs_hint()}); refused"
            )
        for what, path in self.protected:
            if is_within(path, real):
                raise HostFileError(f"blobstore-fs root {root!r} contains the host's {what}; refused")
        return Path(real)


def _opened_path(fd: int) -> str | None:
    """The real path of an open file (Linux `/proc`), or None where the system cannot say."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
