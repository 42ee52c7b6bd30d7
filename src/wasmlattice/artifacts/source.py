"""The port every artifact source implements (an OCI registry, the lattice's own store).

The fetcher (`artifacts/fetch.py`) owns the policy around a source: which references are allowed,
the digest check and the on-disk cache. A source only answers two questions, so a reference pinned
by digest and already cached never reaches it.
"""

from __future__ import annotations

from typing import Protocol


class ArtifactError(Exception):
    """An artifact could not be resolved, fetched or trusted; the message says which and why."""


class ArtifactSource(Protocol):
    """Where artifacts of one reference scheme come from."""

    async def resolve(self, ref: str) -> str:
        """The digest (`sha256:<64 hex>`) of the component bytes `ref` names now."""
        ...

    async def pull(self, ref: str, digest: str) -> bytes | bytearray:
        """The component bytes of `ref` at `digest` (the fetcher verifies the digest)."""
        ...
