"""The `builtin://keyvalue-nats` backend: buckets are JetStream KV buckets on the host's connection."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from wasmlattice.capabilities.base import CapabilityError
from wasmlattice.capabilities.kv_backend import (
    DEFAULT_MAX_VALUE_BYTES,
    DEFAULT_PAGE_SIZE,
    MAX_QUEUED_CHANGES,
    Emit,
    KvBucket,
    KvError,
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
from wasmlattice.protocol.kv import KvBucket as LatticeKvBucket
from wasmlattice.protocol.kv import KvError as LatticeKvError
from wasmlattice.protocol.kv import create_replicated
from wasmlattice.protocol.models import Link, StrMap

# Keys nats-py stores as they are; other keys are stored base64url-encoded behind this prefix.
_NATS_KEY_RE = re.compile(r"^[-/_=.a-zA-Z0-9]+$")
ENCODED_PREFIX = "=b64."


def nats_key(key: str) -> str:
    """The JetStream KV key storing `key`: the key itself when nats-py accepts it, else an encoding."""
    if (
        _NATS_KEY_RE.match(key)
        and not key.startswith(".")
        and not key.endswith(".")
        and ".." not in key
        and not key.startswith(ENCODED_PREFIX)
    ):
        return key
    return ENCODED_PREFIX + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def key_from_nats(stored: str) -> str:
    """The key that `nats_key` stored as `stored` (keys written by other clients come back unchanged)."""
    if not stored.startswith(ENCODED_PREFIX):
        return stored
    data = stored[len(ENCODED_PREFIX) :]
    try:
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode()
    except (binascii.Error, ValueError):
        return stored


class NatsBucket(KvBucket):
    """A JetStream KV bucket; keys nats-py refuses are stored encoded (see `nats_key`)."""

    def __init__(self, name: str, kv: Any, js: Any = None) -> None:
        self.name = name
        self.kv = kv
        self.js = js

    async def watch(self, emit: Emit, ready: Callable[[], None] | None = None) -> None:
        """Emit the bucket's changes from now on: an ordered consumer delivering only new entries.

        `ready()` runs once the consumer exists: changes before it are not delivered.
        """
        from nats.js import api

        if self.js is None:
            raise KvError(f"bucket {self.name!r} has no JetStream context to watch it with")
        prefix: str = getattr(self.kv, "_pre", f"$KV.{self.name}.")
        stream: str = getattr(self.kv, "_stream", f"KV_{self.name}")
        queue: asyncio.Queue[tuple[str, bytes | None]] = asyncio.Queue(MAX_QUEUED_CHANGES)
        what = f"JetStream KV bucket {self.name!r}"

        async def on_entry(msg: Any) -> None:
            headers = msg.headers or {}
            # Deletes and purges are marker entries; so are server-placed expiry markers (2.11+).
            deleted = headers.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in headers
            key = key_from_nats(msg.subject[len(prefix) :])
            queue_change(queue, what, key, None if deleted else bytes(msg.data or b""))

        sub = await self.js.subscribe(
            prefix + ">",
            stream=stream,
            cb=on_entry,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
        )
        if ready is not None:
            ready()
        try:
            await drain_changes(queue, emit)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def get(self, key: str) -> bytes | None:
        """The value of `key`, or None."""
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self.kv.get(nats_key(key))
        except KeyNotFoundError:
            return None
        return bytes(entry.value or b"")

    async def set(self, key: str, value: bytes) -> None:
        """Set `key`."""
        await self.kv.put(nats_key(key), value)

    async def delete(self, key: str) -> None:
        """Put a delete marker on `key`."""
        await self.kv.delete(nats_key(key))

    async def list_keys(self, cursor: int | None, size: int) -> tuple[list[str], int | None]:
        """A page of the sorted keys (JetStream lists them all; the cursor is an offset).

        nats-py's own `KeyValue.keys()` can end its listing early: its watcher signals "no more
        keys" when the consumer reports nothing pending before its callback has counted the
        messages already pushed, so a page went missing now and then. Our lattice KV watch takes
        the pending count from the consumer's creation reply and reads in order, so it cannot.
        """
        if self.js is None:
            raise KvError(f"bucket {self.name!r} has no JetStream context to list it with")
        try:
            stored = await LatticeKvBucket(self.js, self.kv, self.name).keys()
        except LatticeKvError as e:
            raise KvError(str(e)) from None
        return page(sorted(key_from_nats(k) for k in stored), cursor, size)

    async def increment(self, key: str, delta: int, lo: int, hi: int) -> int:
        """Read, add, and write only if nobody wrote in between (retried on conflict)."""
        from nats.js.errors import KeyWrongLastSequenceError

        for _ in range(100):
            value, revision = await self.cas_read(key)
            new = check_range(key, parse_counter(key, value) + delta, lo, hi)
            try:
                if await self.cas_write(key, str(new).encode(), revision):
                    return new
            except KeyWrongLastSequenceError:
                pass
        raise KvError(f"cannot increment key {key!r}: too many concurrent writers, try again")

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values, read concurrently."""
        return list(await _gather([self.get(k) for k in keys]))

    async def set_many(self, pairs: Sequence[tuple[str, bytes]]) -> None:
        """Set every pair (the puts are in flight together)."""
        await _gather([self.set(k, v) for k, v in pairs])

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Delete every key."""
        await _gather([self.delete(k) for k in keys])

    async def cas_read(self, key: str) -> tuple[bytes | None, Any]:
        """The value and its revision (0: unset or deleted)."""
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self.kv.get(nats_key(key))
        except KeyNotFoundError:
            return None, 0
        return bytes(entry.value or b""), entry.revision

    async def cas_write(self, key: str, value: bytes, version: Any) -> bool:
        """Update at the revision read (or create if it was unset)."""
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            if version:
                await self.kv.update(nats_key(key), value, last=version)
            else:
                # `create` also recreates a key whose last entry is a delete marker.
                await self.kv.create(nats_key(key), value)
        except KeyWrongLastSequenceError:
            return False
        return True


async def _gather(aws: list[Any]) -> list[Any]:
    import asyncio

    return list(await asyncio.gather(*aws))


class NatsKvLink(KvLink):
    """A link to JetStream KV over the host's NATS connection."""

    def __init__(self, js: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.js = js

    async def _open(self, name: str) -> KvBucket:
        from nats.js.errors import BucketNotFoundError

        try:
            kv = await self.js.key_value(name)
        except BucketNotFoundError:
            # Creating an identical bucket is idempotent, so hosts racing here all succeed.
            kv = await create_replicated(
                self.js,
                f"KV bucket {name}",
                lambda n: self.js.create_key_value(bucket=name, history=1, replicas=n),
            )
        return NatsBucket(name, kv, self.js)


class NatsKvProvider(WatchingKvProvider):
    """`builtin://keyvalue-nats`: JetStream KV buckets on the host's NATS connection (created if missing)."""

    kind = "keyvalue-nats"

    async def open_backend(self, link: Link, config: StrMap) -> KvLink:
        """A link's buckets on JetStream; values are capped at the server's max payload."""
        if self.services.js is None:
            raise CapabilityError(f"{self.provider_id}: this host has no JetStream connection")
        cfg = link_settings(self, config)
        limit = int_config(cfg, "max_value_bytes", DEFAULT_MAX_VALUE_BYTES)
        nc = self.services.nc
        max_payload = getattr(nc, "max_payload", None) if nc is not None else None
        if isinstance(max_payload, int) and max_payload > 0:
            limit = min(limit, max_payload)
        return NatsKvLink(
            self.services.js,
            kind=self.kind,
            bucket=bucket_setting(cfg),
            max_value_bytes=limit,
            page_size=int_config(cfg, "list_page_size", DEFAULT_PAGE_SIZE),
        )
