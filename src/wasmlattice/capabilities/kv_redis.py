"""The `builtin://keyvalue-redis` backend: buckets are key prefixes on a Redis server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wasmlattice.capabilities.base import CapabilityError
from wasmlattice.capabilities.kv_backend import (
    DEFAULT_MAX_VALUE_BYTES,
    DEFAULT_PAGE_SIZE,
    KvBucket,
    KvError,
    KvLink,
    bucket_setting,
    check_range,
    int_config,
    link_settings,
)
from wasmlattice.capabilities.kv_watch import WatchingKvProvider
from wasmlattice.protocol.models import Link, StrMap

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"

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

        cfg = link_settings(self, config)
        url = cfg.get("url") or DEFAULT_REDIS_URL
        try:
            client = aioredis.Redis.from_url(url, socket_connect_timeout=5.0)
        except ValueError as e:
            raise CapabilityError(f"link config `url` {url!r} is not a Redis URL: {e}") from None
        return RedisKvLink(
            client,
            kind=self.kind,
            bucket=bucket_setting(cfg),
            max_value_bytes=int_config(cfg, "max_value_bytes", DEFAULT_MAX_VALUE_BYTES),
            page_size=int_config(cfg, "list_page_size", DEFAULT_PAGE_SIZE),
        )
