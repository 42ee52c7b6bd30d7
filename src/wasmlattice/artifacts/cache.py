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


def sha256_digest(data: bytes) -> str:
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

    def put(self, digest: str, data: bytes, verified: bool = False) -> Path:
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
