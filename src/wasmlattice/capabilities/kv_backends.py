"""Key-value backends behind `wasi:keyvalue`: JetStream KV, Redis, and an in-process dict.

Each provider opens one `KvLink` per link (its merged target config picks the bucket, URL and
limits); `KvLink.open(identifier)` gives the `KvBucket` a guest's `open` returns. Buckets are
asyncio objects used on the host's loop only. Failures the guest should read are `KvError`s;
anything else a backend raises is reported by the caller with the operation that failed.

Cursors of `list-keys` are numbers on every backend (an offset into the sorted keys, or Redis's
SCAN cursor), so both interface versions (`option<u64>`, `option<string>`) carry them.

Watcher links (provider -> component, `wasi:keyvalue` `["watcher"]`, source config `bucket`) make
the memory and JetStream providers watch that bucket and call the component's export
`wasi:keyvalue/watcher` `on-set` / `on-delete` for every change made after the watch started
(`KvWatchers`). The component gets a bucket handle as `store.open` would give it, on the same
backend. Redis buckets cannot be watched (a warning says so).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wasmlattice.capabilities.base import (
    CapabilityError,
    InvokeError,
    LinkTargetProvider,
    ProviderSpec,
    Resync,
    lower_config,
)
from wasmlattice.protocol.models import Link, StrMap
from wasmlattice.runtime.fastcall import GuestTrap

log = logging.getLogger("wasmlattice.capabilities")

# A value limit keeps one call from filling the host's memory; 1 MiB is NATS's default max payload.
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
# Long keys make long NATS subjects (the control line is limited to 4 KiB); one rule for every backend.
MAX_KEY_BYTES = 1024
DEFAULT_PAGE_SIZE = 1000
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"

# Bucket names that are valid everywhere: JetStream's rule, and free of Redis's `:` separator.
_BUCKET_RE = re.compile(r"^[a-zA-Z0-9_-]{1,200}$")
# Keys nats-py stores as they are; other keys are stored base64url-encoded behind this prefix.
_NATS_KEY_RE = re.compile(r"^[-/_=.a-zA-Z0-9]+$")
ENCODED_PREFIX = "=b64."
WATCHER = "wasi:keyvalue/watcher"
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


def _int_config(cfg: Mapping[str, str], key: str, default: int) -> int:
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

    async def watch(self, emit: Emit) -> None:
        """Await `emit` for every change made after the call, in order, until cancelled."""
        raise KvError(f"bucket {self.name!r} cannot be watched")


def _queue_change(
    queue: asyncio.Queue[tuple[str, bytes | None]], what: str, key: str, value: bytes | None
) -> None:
    try:
        queue.put_nowait((key, value))
    except asyncio.QueueFull:
        log.warning(
            "%s: the watcher is %d changes behind; the change of %r is dropped", what, queue.maxsize, key
        )


async def _drain(queue: asyncio.Queue[tuple[str, bytes | None]], emit: Emit) -> None:
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


def _link_settings(provider: LinkTargetProvider, config: StrMap) -> dict[str, str]:
    # Link config wins over the provider's own config; keys are case-insensitive.
    return {**lower_config(provider.config), **lower_config(config)}


def _bucket_setting(cfg: Mapping[str, str]) -> str | None:
    raw = cfg.get("bucket")
    return None if not raw else check_bucket_name(raw, "link config `bucket`")


# -- watcher links (provider -> component) -------------------------------------------------------


def is_watcher_link(link: Link, provider_id: str) -> bool:
    """Whether `link` tells a component about changes in a bucket of this provider."""
    return (
        link.source_id == provider_id
        and link.wit_namespace == "wasi"
        and link.wit_package == "keyvalue"
        and "watcher" in link.interfaces
    )


@dataclass
class _Watch:
    """One watcher link: the task watching its bucket, and the backend it opened."""

    link: Link
    config: StrMap
    task: asyncio.Task[None] | None = None
    kv_link: KvLink | None = None


class WatchingKvProvider(LinkTargetProvider):
    """A key-value provider that also serves watcher links (one watch per link, followed live)."""

    watch_supported = True

    def __init__(self, spec: ProviderSpec) -> None:
        super().__init__(spec)
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._watch_lock = asyncio.Lock()
        self._watch_resync = Resync(self.sync_watches, f"{self.kind} {self.provider_id}")
        self._unsupported_warned: set[tuple[str, str]] = set()

    async def start(self) -> None:
        """Watch the buckets of the watcher links already known, and follow link changes."""
        self.services.state.listeners.append(self._watch_resync.poke)
        await self.sync_watches()

    async def stop(self) -> None:
        """Stop every watch, then close the backends."""
        self._stopped = True
        with contextlib.suppress(ValueError):
            self.services.state.listeners.remove(self._watch_resync.poke)
        await self._watch_resync.stop()
        async with self._watch_lock:
            for key in list(self._watches):
                await self._stop_watch(self._watches.pop(key))
        await super().stop()

    def watching(self) -> list[tuple[str, str]]:
        """(link name, component ID) of every watch running now."""
        return sorted(k for k, w in self._watches.items() if w.task is not None and not w.task.done())

    async def sync_watches(self) -> None:
        """Make the watches match this provider's watcher links in the lattice state."""
        async with self._watch_lock:
            wanted: dict[tuple[str, str], tuple[Link, StrMap]] = {}
            for link in self.services.state.links():
                if not is_watcher_link(link, self.provider_id):
                    continue
                key = (link.name, link.target)
                if not self.watch_supported:
                    if key not in self._unsupported_warned:
                        self._unsupported_warned.add(key)
                        log.warning(
                            "%s %s: watcher link `%s` to %s is not served: %s buckets cannot be watched; "
                            "use builtin://keyvalue-nats or builtin://keyvalue-memory",
                            self.kind,
                            self.provider_id,
                            link.name,
                            link.target,
                            self.kind,
                        )
                    continue
                try:
                    cfg = await self.services.state.merged_config(link.source_config)
                except Exception as e:
                    log.error(
                        "%s %s: watcher link `%s` to %s not served: its source config: %s",
                        self.kind,
                        self.provider_id,
                        link.name,
                        link.target,
                        e,
                    )
                    continue
                wanted[key] = (link, dict(cfg))
            for key, current in list(self._watches.items()):
                if wanted.get(key) != (current.link, current.config):
                    del self._watches[key]
                    await self._stop_watch(current)
            for key, (link, cfg) in wanted.items():
                if key not in self._watches:
                    watch = _Watch(link, cfg)
                    watch.task = asyncio.get_running_loop().create_task(self._run_watch(watch))
                    self._watches[key] = watch

    def _what(self, link: Link) -> str:
        return f"{self.kind} {self.provider_id} watcher link `{link.name}` to {link.target}"

    async def _run_watch(self, watch: _Watch) -> None:
        link, what = watch.link, self._what(watch.link)
        try:
            kv_link = watch.kv_link = await self.open_backend(link, watch.config)
            if kv_link.bucket is None:
                raise CapabilityError("its source config has no `bucket`; name the bucket to watch")
            backend = await kv_link.open(kv_link.bucket)

            async def deliver(key: str, value: bytes | None) -> None:
                await self._deliver(link, kv_link, backend, key, value)

            log.info("%s: watching bucket %r", what, backend.name)
            await backend.watch(deliver)
        except asyncio.CancelledError:
            raise
        except (CapabilityError, KvError) as e:
            log.error("%s: not served: %s", what, e)
        except Exception as e:
            log.error("%s: the watch failed: %s: %s", what, type(e).__name__, e)

    async def _stop_watch(self, watch: _Watch) -> None:
        task, watch.task = watch.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        kv_link, watch.kv_link = watch.kv_link, None
        if kv_link is not None:
            try:
                await kv_link.close()
            except Exception:
                log.exception("%s: closing its backend failed", self._what(watch.link))
        log.info("%s: stopped watching", self._what(watch.link))

    async def _deliver(
        self, link: Link, kv_link: KvLink, backend: KvBucket, key: str, value: bytes | None
    ) -> None:
        """Call the component's `on-set` / `on-delete` with a bucket handle; log what goes wrong."""
        # Imported here: `keyvalue` (the guest-facing bucket) imports this module.
        from wasmlattice.capabilities.keyvalue import Bucket

        component_id = link.target
        router = self.services.router
        context = None if router is None else router.context(component_id)
        if router is None or context is None:
            log.debug("%s: change of %r skipped: %s is not running here", self._what(link), key, component_id)
            return
        handle = Bucket(context, kv_link, backend)
        func = "on-delete" if value is None else "on-set"
        args: tuple[Any, ...] = (handle, key) if value is None else (handle, key, value)
        try:
            await router.call_here(component_id, WATCHER, func, *args)
            return
        except GuestTrap as e:
            what, reason = "trapped in", e.reason
        except InvokeError as e:
            what, reason = "could not be called:", str(e)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            what, reason = "failed in", f"{type(e).__name__}: {e}"
        log.error(
            "%s: component %s %s %s for key %r of bucket %r: %s",
            self._what(link),
            component_id,
            what,
            func,
            key,
            backend.name,
            reason,
        )


# -- in-process memory ---------------------------------------------------------------------------


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

    async def watch(self, emit: Emit) -> None:
        """Emit this bucket's changes from now on (until cancelled)."""
        queue: asyncio.Queue[tuple[str, bytes | None]] = asyncio.Queue(MAX_QUEUED_CHANGES)
        what = f"memory bucket {self.name!r}"

        def notify(key: str, value: bytes | None) -> None:
            _queue_change(queue, what, key, value)

        self.watchers.append(notify)
        try:
            await _drain(queue, emit)
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
        cfg = _link_settings(self, config)
        return MemoryKvLink(
            self,
            kind=self.kind,
            bucket=_bucket_setting(cfg),
            max_value_bytes=_int_config(cfg, "max_value_bytes", DEFAULT_MAX_VALUE_BYTES),
            page_size=_int_config(cfg, "list_page_size", DEFAULT_PAGE_SIZE),
        )


# -- JetStream KV --------------------------------------------------------------------------------


class NatsBucket(KvBucket):
    """A JetStream KV bucket; keys nats-py refuses are stored encoded (see `nats_key`)."""

    def __init__(self, name: str, kv: Any, js: Any = None) -> None:
        self.name = name
        self.kv = kv
        self.js = js

    async def watch(self, emit: Emit) -> None:
        """Emit the bucket's changes from now on: an ordered consumer delivering only new entries."""
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
            _queue_change(queue, what, key, None if deleted else bytes(msg.data or b""))

        sub = await self.js.subscribe(
            prefix + ">",
            stream=stream,
            cb=on_entry,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
        )
        try:
            await _drain(queue, emit)
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
        """A page of the sorted keys (JetStream lists them all; the cursor is an offset)."""
        from nats.js.errors import NoKeysError

        try:
            stored = await self.kv.keys()
        except NoKeysError:
            stored = []
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
            kv = await self.js.create_key_value(bucket=name, history=1)
        return NatsBucket(name, kv, self.js)


class NatsKvProvider(WatchingKvProvider):
    """`builtin://keyvalue-nats`: JetStream KV buckets on the host's NATS connection (created if missing)."""

    kind = "keyvalue-nats"

    async def open_backend(self, link: Link, config: StrMap) -> KvLink:
        """A link's buckets on JetStream; values are capped at the server's max payload."""
        if self.services.js is None:
            raise CapabilityError(f"{self.provider_id}: this host has no JetStream connection")
        cfg = _link_settings(self, config)
        limit = _int_config(cfg, "max_value_bytes", DEFAULT_MAX_VALUE_BYTES)
        nc = self.services.nc
        max_payload = getattr(nc, "max_payload", None) if nc is not None else None
        if isinstance(max_payload, int) and max_payload > 0:
            limit = min(limit, max_payload)
        return NatsKvLink(
            self.services.js,
            kind=self.kind,
            bucket=_bucket_setting(cfg),
            max_value_bytes=limit,
            page_size=_int_config(cfg, "list_page_size", DEFAULT_PAGE_SIZE),
        )


# -- Redis ---------------------------------------------------------------------------------------

# Set KEYS[1] to ARGV[3] if it is unset (ARGV[1] == "0") or still equals ARGV[2]; 1 if it was set.
_CAS_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if cur then return 0 end
elseif cur ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
"""
_S64_MAX = 2**63 - 1


class RedisBucket(KvBucket):
    """Keys of one bucket in a Redis database, isolated by the prefix `<bucket>:`."""

    def __init__(self, name: str, client: Any) -> None:
        self.name = name
        self.client = client
        self.prefix = f"{name}:"

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def get(self, key: str) -> bytes | None:
        """The value of `key`, or None."""
        value = await self.client.get(self._k(key))
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes) -> None:
        """Set `key`."""
        await self.client.set(self._k(key), value)

    async def delete(self, key: str) -> None:
        """Remove `key`."""
        await self.client.delete(self._k(key))

    async def exists(self, key: str) -> bool:
        """Whether `key` is set."""
        return bool(await self.client.exists(self._k(key)))

    async def list_keys(self, cursor: int | None, size: int) -> tuple[list[str], int | None]:
        """One SCAN step over the bucket's prefix (a page may be empty while the cursor goes on)."""
        nxt, raw = await self.client.scan(cursor or 0, match=f"{self.prefix}*", count=size)
        n = len(self.prefix)
        keys = sorted(bytes(k)[n:].decode("utf-8", "replace") for k in raw)
        return keys, (int(nxt) or None)

    async def increment(self, key: str, delta: int, lo: int, hi: int) -> int:
        """INCRBY (Redis counters are signed 64-bit)."""
        from redis.exceptions import ResponseError

        if delta > _S64_MAX:
            raise KvError(f"cannot increment key {key!r} by {delta}: Redis counters are signed 64-bit")
        try:
            new = int(await self.client.incrby(self._k(key), delta))
        except ResponseError as e:
            raise KvError(f"cannot increment key {key!r}: {e}") from None
        return check_range(key, new, lo, hi)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """MGET."""
        if not keys:
            return []
        values = await self.client.mget([self._k(k) for k in keys])
        return [None if v is None else bytes(v) for v in values]

    async def set_many(self, pairs: Sequence[tuple[str, bytes]]) -> None:
        """MSET (later duplicates win, as sequential sets would)."""
        if pairs:
            await self.client.mset({self._k(k): v for k, v in pairs})

    async def delete_many(self, keys: Sequence[str]) -> None:
        """DEL."""
        if keys:
            await self.client.delete(*[self._k(k) for k in keys])

    async def cas_read(self, key: str) -> tuple[bytes | None, Any]:
        """The value; it is its own version (compared by the script)."""
        value = await self.get(key)
        return value, value

    async def cas_write(self, key: str, value: bytes, version: Any) -> bool:
        """Set if the value is still the one read."""
        unset = version is None
        done = await self.client.eval(
            _CAS_SCRIPT, 1, self._k(key), "0" if unset else "1", b"" if unset else version, value
        )
        return bool(done)


class RedisKvLink(KvLink):
    """A link to a Redis server (one client per link)."""

    def __init__(self, client: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.client = client

    async def _open(self, name: str) -> KvBucket:
        return RedisBucket(name, self.client)

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()


class RedisKvProvider(WatchingKvProvider):
    """`builtin://keyvalue-redis`: buckets as key prefixes on a Redis server (link config `url`)."""

    kind = "keyvalue-redis"
    watch_supported = False

    async def open_backend(self, link: Link, config: StrMap) -> KvLink:
        """A Redis client for the link's `url` (default redis://127.0.0.1:6379)."""
        import redis.asyncio as aioredis

        cfg = _link_settings(self, config)
        url = cfg.get("url") or DEFAULT_REDIS_URL
        try:
            client = aioredis.Redis.from_url(url, socket_connect_timeout=5.0)
        except ValueError as e:
            raise CapabilityError(f"link config `url` {url!r} is not a Redis URL: {e}") from None
        return RedisKvLink(
            client,
            kind=self.kind,
            bucket=_bucket_setting(cfg),
            max_value_bytes=_int_config(cfg, "max_value_bytes", DEFAULT_MAX_VALUE_BYTES),
            page_size=_int_config(cfg, "list_page_size", DEFAULT_PAGE_SIZE),
        )


# Canonical reference -> factory, and wasmCloud-style spellings of the same providers.
PROVIDERS: dict[str, Any] = {
    "builtin://keyvalue-nats": NatsKvProvider,
    "builtin://keyvalue-redis": RedisKvProvider,
    "builtin://keyvalue-memory": MemoryKvProvider,
}
ALIASES: dict[str, str] = {f"wasmcloud+{ref}": ref for ref in PROVIDERS}
