"""Artifacts on disk by digest, shared by every host and command of one user on the machine.

`<root>/sha256/<hex>` holds the bytes whose sha256 is `<hex>`: component layers and the OCI
manifests that name them (so a reference pinned by digest resolves without the registry). Entries
are written atomically (temporary file in the same directory, then rename), so hosts pulling the
same artifact at once never see half a file, and are checked against their name when read: a
damaged entry is removed and fetched again, never used.

Root: `$WASMLATTICE_ARTIFACT_CACHE_DIR`, else `artifacts/` beside the compile cache's default
(`$XDG_CACHE_HOME/wasmlattice/artifacts`, `~/.cache/wasmlattice/artifacts`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

from wasmlattice.artifacts.reference import is_digest
from wasmlattice.artifacts.source import ArtifactError

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "WASMLATTICE_ARTIFACT_CACHE_DIR"


def default_artifact_cache_dir() -> Path:
    """`$WASMLATTICE_ARTIFACT_CACHE_DIR`, else `<user cache dir>/wasmlattice/artifacts`."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wasmlattice" / "artifacts"


def sha256_digest(data: bytes | bytearray) -> str:
    """`sha256:<hex>` of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ArtifactCache:
    """Content-addressed files under one root (blocking I/O: call from a worker thread)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_artifact_cache_dir()

    def path(self, digest: str) -> Path:
        """Where the bytes of `digest` live (whether or not they are there)."""
        if not is_digest(digest):
            raise ArtifactError(f"not a sha256 digest: {digest!r}")
        return self.root / "sha256" / digest.removeprefix("sha256:")

    def has(self, digest: str) -> bool:
        """Whether an entry for `digest` exists (not checked: `get` checks)."""
        return self.path(digest).is_file()

    def get(self, digest: str, max_size: int | None = None) -> bytes | None:
        """The cached bytes of `digest`, checked against it; None if absent, damaged or too large."""
        path = self.path(digest)
        try:
            if max_size is not None and path.stat().st_size > max_size:
                return None
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("artifact cache: cannot read %s: %s", path, e.strerror)
            return None
        if sha256_digest(data) != digest:
            log.warning("artifact cache: %s does not match its digest; removing it", path)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return data

    def put(self, digest: str, data: bytes | bytearray, verified: bool = False) -> Path:
        """Store `data` under `digest` (which it must match; `verified`: the caller has checked)."""
        actual = digest if verified else sha256_digest(data)
        if actual != digest:
            raise ArtifactError(f"refusing to cache bytes with digest {actual} under {digest}")
        path = self.path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)  # atomic: readers see the old state or the whole file
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return path


class CacheWriter:
    """The bytes of one digest written to a temporary file as they arrive; `commit` renames it into
    place once the caller has checked the digest, `abort` removes it.

    Blocking I/O: call from a worker thread (`write` runs on the pull's hashing thread). A failure to
    create or write the file (a full or read-only disk) only stops the caching: it costs a download
    next time, never the pull; `error` keeps the reason. `abort` may run while a `write` is under way
    in another thread (a pull cancelled half way), hence the lock.
    """

    def __init__(self, cache: ArtifactCache, digest: str) -> None:
        self.path = cache.path(digest)
        self.error: OSError | None = None
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._tmp = ""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-")
            self._file = os.fdopen(fd, "wb")
        except OSError as e:
            self._fail(e)

    def write(self, chunk: bytes | memoryview) -> None:
        """Append `chunk` (nothing once writing has failed or been aborted)."""
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(chunk)
            except OSError as e:
                self._fail(e)

    def commit(self) -> Path | None:
        """Rename the finished file into place (atomic: readers see no file or the whole one); the
        path, or None if writing failed."""
        with self._lock:
            if self._file is None:
                return None
            try:
                self._file.close()
                self._file = None
                os.replace(self._tmp, self.path)
                self._tmp = ""
            except OSError as e:
                self._fail(e)
                return None
            return self.path

    def abort(self) -> None:
        """Drop the temporary file."""
        with self._lock:
            self._discard()

    def _fail(self, e: OSError) -> None:
        if self.error is None:
            self.error = e
            log.warning("artifact cache: cannot store %s: %s", self.path.name, e)
        self._discard()

    def _discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._tmp:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = ""
