"""What a `wasi:keyvalue` backend implements, and the rules every backend shares.

Each provider opens one `KvLink` per link (its merged target config picks the bucket, URL and
limits); `KvLink.open(identifier)` gives the `KvBucket` a guest's `open` returns. Buckets are
asyncio objects used on the host's loop only. Failures the guest should read are `KvError`s;
anything else a backend raises is reported by the caller with the operation that failed.

Cursors of `list-keys` are numbers on every backend (an offset into the sorted keys, or Redis's
SCAN cursor), so both interface versions (`option<u64>`, `option<string>`) carry them.

The backends: `kv_memory` (in-process dict), `kv_nats` (JetStream KV), `kv_redis` (Redis);
`kv_watch` serves watcher links on top of them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wasmlattice.capabilities.base import CapabilityError, ComponentContext, LinkTargetProvider, lower_config
from wasmlattice.protocol.models import Link, StrMap

log = logging.getLogger("wasmlattice.capabilities")

# A value limit keeps one call from filling the host's memory; 1 MiB is NATS's default max payload.
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
# Long keys make long NATS subjects (the control line is limited to 4 KiB); one rule for every backend.
MAX_KEY_BYTES = 1024
DEFAULT_PAGE_SIZE = 1000

# Bucket names that are valid everywhere: JetStream's rule, and free of Redis's `:` separator.
_BUCKET_RE = re.compile(r"^[a-zA-Z0-9_-]{1,200}$")
# Changes waiting for a watcher component, per watch; beyond it changes are dropped (and logged)
# rather than growing memory without bound behind a slow component.
MAX_QUEUED_CHANGES = 10_000

# A change: the key and its new value (None: deleted).
Emit = Callable[[str, bytes | None], Awaitable[None]]


class KvError(Exception):
    """A key-value operation failed in a way the guest is told about (the message says why)."""


# -- pure helpers --------------------------------------------------------------------------------


def check_bucket_name(name: str, source: str) -> str:
    """`name` if it is a valid bucket name, else `CapabilityError` saying the rule and where it came from."""
    if not _BUCKET_RE.match(name):
        raise CapabilityError(
            f"invalid bucket name {name!r} ({source}): bucket names are 1 to 200 letters, digits, `_` or `-`"
        )
    return name


def page(keys: Sequence[str], cursor: int | None, size: int) -> tuple[list[str], int | None]:
    """One page of `keys` (sorted by the caller) from offset `cursor`, and the next offset if any."""
    start = cursor or 0
    chunk = list(keys[start : start + size])
    end = start + len(chunk)
    return chunk, (end if end < len(keys) else None)


def parse_counter(key: str, raw: bytes | None) -> int:
    """The number stored at `key` by `increment` (decimal text), 0 if unset."""
    if raw is None:
        return 0
    try:
        return int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise KvError(f"cannot increment key {key!r}: its value is not a decimal integer") from None


def check_range(key: str, value: int, lo: int, hi: int) -> int:
    """`value` if within [lo, hi], else `KvError` (the interface's integer type cannot carry it)."""
    if not lo <= value <= hi:
        raise KvError(f"cannot increment key {key!r}: the result {value} is outside [{lo}, {hi}]")
    return value


def int_config(cfg: Mapping[str, str], key: str, default: int) -> int:
    """The positive integer setting `key` of link config `cfg` (`default` if unset or empty)."""
    raw = cfg.get(key)
    if raw is None or raw == "":
        return default
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n <= 0:
        raise CapabilityError(f"link config `{key}` must be a positive integer, got {raw!r}")
    return n


# -- the shape every backend has -----------------------------------------------------------------


class KvBucket:
    """One open bucket; every method runs on the host's loop."""

    name = ""

    async def get(self, key: str) -> bytes | None:
        """The value of `key`, or None."""
        raise NotImplementedError

    async def set(self, key: str, value: bytes) -> None:
        """Set `key`."""
        raise NotImplementedError

    async def delete(self, key: str) -> None:
        """Remove `key` (no error if unset)."""
        raise NotImplementedError

    async def exists(self, key: str) -> bool:
        """Whether `key` is set."""
        return await self.get(key) is not None

    async def list_keys(self, cursor: int | None, size: int) -> tuple[list[str], int | None]:
        """About `size` keys from `cursor`, and the cursor of the next page (None: last page)."""
        raise NotImplementedError

    async def increment(self, key: str, delta: int, lo: int, hi: int) -> int:
        """Add `delta` to the decimal number at `key` atomically; the new number (within [lo, hi])."""
        raise NotImplementedError

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys`, None where unset."""
        return [await self.get(k) for k in keys]

    async def set_many(self, pairs: Sequence[tuple[str, bytes]]) -> None:
        """Set every pair."""
        for k, v in pairs:
            await self.set(k, v)

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Remove every key."""
        for k in keys:
            await self.delete(k)

    async def cas_read(self, key: str) -> tuple[bytes | None, Any]:
        """The value of `key` and a version token that `cas_write` checks."""
        raise NotImplementedError

    async def cas_write(self, key: str, value: bytes, version: Any) -> bool:
        """Set `key` if it is still at `version`; whether it was set."""
        raise NotImplementedError

    async def watch(self, emit: Emit, ready: Callable[[], None] | None = None) -> None:
        """Await `emit` for every change made after `ready()` is called, in order, until cancelled.

        `ready` runs once the watch is in place: a change made after it is never missed.
        """
        raise KvError(f"bucket {self.name!r} cannot be watched")


def queue_change(
    queue: asyncio.Queue[tuple[str, bytes | None]], what: str, key: str, value: bytes | None
) -> None:
    """Queue a change for a watcher; a full queue drops it with a warning naming `what`."""
    try:
        queue.put_nowait((key, value))
    except asyncio.QueueFull:
        log.warning(
            "%s: the watcher is %d changes behind; the change of %r is dropped", what, queue.maxsize, key
        )


async def drain_changes(queue: asyncio.Queue[tuple[str, bytes | None]], emit: Emit) -> None:
    """Await `emit` for every queued change, in order, until cancelled."""
    while True:
        key, value = await queue.get()
        await emit(key, value)


@dataclass
class KvLink:
    """What one link selects: a backend client, an optional fixed bucket, and limits."""

    kind: str
    bucket: str | None
    max_value_bytes: int
    page_size: int
    max_key_bytes: int = MAX_KEY_BYTES
    _buckets: dict[str, KvBucket] = field(default_factory=dict)

    def bucket_name(self, identifier: str) -> str:
        """The bucket an `open(identifier)` reaches: the link's `bucket` config, else the identifier."""
        if self.bucket is not None:
            return self.bucket
        return check_bucket_name(identifier, "the identifier passed to `open`; or set `bucket` on the link")

    async def open(self, identifier: str) -> KvBucket:
        """The bucket for `open(identifier)` (opened once per link and name)."""
        name = self.bucket_name(identifier)
        found = self._buckets.get(name)
        if found is None:
            found = await self._open(name)
            self._buckets[name] = found
        return found

    async def _open(self, name: str) -> KvBucket:
        raise NotImplementedError

    async def close(self) -> None:
        """Release the backend's connections."""


def link_settings(provider: LinkTargetProvider, config: StrMap) -> dict[str, str]:
    """The provider's config merged with a link's config, keys lower-cased."""
    # Link config wins over the provider's own config; keys are case-insensitive.
    return {**lower_config(provider.config), **lower_config(config)}


def bucket_setting(cfg: Mapping[str, str]) -> str | None:
    """The bucket a link's `bucket` config fixes, or None (the guest's `open` names it)."""
    raw = cfg.get("bucket")
    return None if not raw else check_bucket_name(raw, "link config `bucket`")


class Bucket:
    """A bucket as a guest holds it: the caller, and the backend its link selected at `open`."""

    __slots__ = ("backend", "comp", "link", "route")

    def __init__(
        self, comp: ComponentContext, link: KvLink, backend: KvBucket, route: Link | None = None
    ) -> None:
        self.comp = comp
        self.link = link
        self.backend = backend
        self.route = route  # the lattice link it was opened through (named on traces)
