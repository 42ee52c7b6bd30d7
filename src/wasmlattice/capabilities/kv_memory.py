"""The `builtin://keyvalue-memory` backend: buckets are dicts in the host's process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from wasmlattice.capabilities.base import ProviderSpec
from wasmlattice.capabilities.kv_backend import (
    DEFAULT_MAX_VALUE_BYTES,
    DEFAULT_PAGE_SIZE,
    MAX_QUEUED_CHANGES,
    Emit,
    KvBucket,
    KvLink,
    bucket_setting,
    check_range,
    drain_changes,
    int_config,
    link_settings,
    page,
    parse_counter,
    queue_change,
)
from wasmlattice.capabilities.kv_watch import WatchingKvProvider
from wasmlattice.protocol.models import Link, StrMap


class MemoryBucket(KvBucket):
    """A dict shared by every link naming this bucket on one provider."""

    def __init__(self, name: str, data: dict[str, tuple[bytes, int]]) -> None:
        self.name = name
        self.data = data  # key -> (value, version)
        self._version = 0
        # Called (on the loop, synchronously) with every change: the watches of this bucket.
        self.watchers: list[Callable[[str, bytes | None], None]] = []

    def _put(self, key: str, value: bytes) -> None:
        self._version += 1
        self.data[key] = (value, self._version)
        self._changed(key, value)

    def _changed(self, key: str, value: bytes | None) -> None:
        for notify in list(self.watchers):
            notify(key, value)

    async def watch(self, emit: Emit, ready: Callable[[], None] | None = None) -> None:
        """Emit this bucket's changes from now on (until cancelled); `ready()` once watching."""
        queue: asyncio.Queue[tuple[str, bytes | None]] = asyncio.Queue(MAX_QUEUED_CHANGES)
        what = f"memory bucket {self.name!r}"

        def notify(key: str, value: bytes | None) -> None:
            queue_change(queue, what, key, value)

        self.watchers.append(notify)
        if ready is not None:
            ready()
        try:
            await drain_changes(queue, emit)
        finally:
            self.watchers.remove(notify)

    async def get(self, key: str) -> bytes | None:
        """The value of `key`, or None."""
        found = self.data.get(key)
        return None if found is None else found[0]

    async def set(self, key: str, value: bytes) -> None:
        """Set `key`."""
        self._put(key, value)

    async def delete(self, key: str) -> None:
        """Remove `key` (watchers are told even if it was unset, as JetStream's delete markers do)."""
        self.data.pop(key, None)
        self._changed(key, None)

    async def list_keys(self, cursor: int | None, size: int) -> tuple[list[str], int | None]:
        """A page of the sorted keys."""
        return page(sorted(self.data), cursor, size)

    async def increment(self, key: str, delta: int, lo: int, hi: int) -> int:
        """Add `delta` (no await between read and write, so it is atomic on the loop)."""
        found = self.data.get(key)
        new = check_range(key, parse_counter(key, None if found is None else found[0]) + delta, lo, hi)
        self._put(key, str(new).encode())
        return new

    async def cas_read(self, key: str) -> tuple[bytes | None, Any]:
        """The value and its version (0: unset)."""
        found = self.data.get(key)
        return (None, 0) if found is None else found

    async def cas_write(self, key: str, value: bytes, version: Any) -> bool:
        """Set if the version is unchanged."""
        found = self.data.get(key)
        if (0 if found is None else found[1]) != version:
            return False
        self._put(key, value)
        return True


class MemoryKvLink(KvLink):
    """A link to the memory provider: buckets are the provider's dicts."""

    def __init__(self, provider: MemoryKvProvider, **kw: Any) -> None:
        super().__init__(**kw)
        self.provider = provider

    async def _open(self, name: str) -> KvBucket:
        return self.provider.shared_bucket(name)


class MemoryKvProvider(WatchingKvProvider):
    """`builtin://keyvalue-memory`: buckets in this process, shared by links naming the same bucket."""

    kind = "keyvalue-memory"

    def __init__(self, spec: ProviderSpec) -> None:
        super().__init__(spec)
        self.buckets: dict[str, MemoryBucket] = {}

    def shared_bucket(self, name: str) -> MemoryBucket:
        """The bucket `name` of this provider (one version counter per bucket)."""
        bucket = self.buckets.get(name)
        if bucket is None:
            bucket = self.buckets[name] = MemoryBucket(name, {})
        return bucket

    async def open_backend(self, link: Link, config: StrMap) -> KvLink:
        """A link's view of this provider's buckets."""
        cfg = link_settings(self, config)
        return MemoryKvLink(
            self,
            kind=self.kind,
            bucket=bucket_setting(cfg),
            max_value_bytes=int_config(cfg, "max_value_bytes", DEFAULT_MAX_VALUE_BYTES),
            page_size=int_config(cfg, "list_page_size", DEFAULT_PAGE_SIZE),
        )
