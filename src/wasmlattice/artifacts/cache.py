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

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

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


# A pulled layer is written to the cache after the pull has handed its checked bytes to the caller,
# on a thread of its own, so the host starts compiling while the file is written. Writes under way
# are known per file, so a later fetch of the same digest in this process waits for the file
# instead of downloading it again; another process that looks meanwhile sees no file (the rename
# is atomic) and pulls, which costs time, never correctness. The thread is joined at interpreter
# exit (concurrent.futures does that), so a command that pulled leaves the file behind.
_WRITES = ThreadPoolExecutor(max_workers=1, thread_name_prefix="artifact-cache-write")
_pending: dict[Path, Future[None]] = {}
_pending_lock = threading.Lock()


def _forget(path: Path, done: Future[None]) -> None:
    with _pending_lock:
        if _pending.get(path) is done:
            del _pending[path]


class PendingWrites:
    """The cache writes one fetcher started, so closing it can wait for them."""

    def __init__(self) -> None:
        self._futures: set[Future[None]] = set()

    def put_later(self, cache: ArtifactCache, digest: str, data: bytes | bytearray, verified: bool) -> None:
        """Write `data` under `digest` on the cache's writer thread; a failure is logged, not raised."""
        path = cache.path(digest)
        future = _WRITES.submit(_put_quietly, cache, digest, data, verified)
        with _pending_lock:
            _pending[path] = future
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        future.add_done_callback(lambda f: _forget(path, f))

    async def wait(self) -> None:
        """Until every write started here has ended."""
        while self._futures:
            await asyncio.wrap_future(next(iter(self._futures)))


async def written(cache: ArtifactCache, digest: str) -> None:
    """Until a write of `digest` under way in this process (if any) has ended."""
    with _pending_lock:
        future = _pending.get(cache.path(digest))
    if future is not None:
        await asyncio.wrap_future(future)


def _put_quietly(cache: ArtifactCache, digest: str, data: bytes | bytearray, verified: bool) -> None:
    try:
        cache.put(digest, data, verified)
    except (OSError, ArtifactError) as e:  # a full or read-only cache costs a re-download, not the pull
        log.warning("artifact cache: cannot store %s: %s", digest, e)
