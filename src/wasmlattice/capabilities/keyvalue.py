"""`wasi:keyvalue` store, atomics and batch, for 0.2.0-draft (wasmCloud) and 0.2.0-draft2 (Spin, WASI).

`open` resolves the calling component's link for `wasi:keyvalue/store` (by its current link name)
to a provider and the backend that link selects (`kv_memory`, `kv_nats`, `kv_redis`, each a
`kv_backend.KvLink`); the bucket handle it returns keeps that backend, so later calls on it (and
atomics/batch calls given it) go straight there. The two versions differ in a few types (list-keys
cursors, the increment delta, the get-many result, CAS in draft2); each version is one
`HostInterface` with its signatures, so an import binds to the one its types match, and a mismatch
is refused at link time naming the function.

Every failure reaches the guest as `error::other(message)` and is logged with the component's ID:
a missing link, a stopped provider, a backend error, or input the backend cannot take (empty or
too long keys, values over the link's limit). Nothing traps; the host keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from wasmlattice.capabilities.base import (
    CapabilityError,
    ComponentContext,
    LinkTargetProvider,
    capability_span,
    component,
)
from wasmlattice.capabilities.config_keys import KeySet, ProviderKeys
from wasmlattice.capabilities.kv_backend import Bucket, KvBucket, KvError, KvLink
from wasmlattice.capabilities.kv_memory import MemoryKvProvider
from wasmlattice.capabilities.kv_nats import NatsKvProvider
from wasmlattice.capabilities.kv_redis import RedisKvProvider
from wasmlattice.observability import tracing
from wasmlattice.protocol.models import Link
from wasmlattice.runtime.linking import HostFunc, HostInterface
from wasmlattice.runtime.witypes import (
    BOOL,
    BYTES,
    S64,
    STRING,
    U64,
    Err,
    FuncSig,
    WitType,
    borrow,
    func,
    lst,
    option,
    own,
    record,
    result,
    tup,
    variant,
)

log = logging.getLogger("wasmlattice.capabilities")

T = TypeVar("T")

STORE = "wasi:keyvalue/store"
U64_RANGE = (0, 2**64 - 1)
S64_RANGE = (-(2**63), 2**63 - 1)


class Cas:
    """A compare-and-swap in progress (draft2): the key, the value read, and its version."""

    __slots__ = ("bucket", "key", "value", "version")

    def __init__(self, bucket: Bucket, key: str, value: bytes | None, version: Any) -> None:
        self.bucket, self.key, self.value, self.version = bucket, key, value, version


def _other(message: str) -> Err:
    return Err(("other", message))


def _run(
    src: Bucket | ComponentContext, what: str, make: Callable[[], Awaitable[T]], link: Link | None = None
) -> T:
    """Run a backend operation on the loop; any failure becomes `error::other` (and is logged).

    `what` starts with the operation's name (`get`, `set`, ...), which names its span when traced.
    """
    if isinstance(src, Bucket):
        comp, link = src.comp, src.route
    else:
        comp = src
    if not tracing.enabled():
        return _run_on(comp, what, make)
    op = what.partition(" ")[0]
    backend = src.link.kind if isinstance(src, Bucket) else None
    with capability_span(comp, "wasi:keyvalue", "open" if op == "opening" else op, link, backend):
        return _run_on(comp, what, make)


def _run_on(comp: ComponentContext, what: str, make: Callable[[], Awaitable[T]]) -> T:

    async def guarded() -> T:
        try:
            return await make()
        except (CapabilityError, KvError) as e:
            raise CapabilityError(str(e)) from None
        except Exception as e:
            raise CapabilityError(f"{what} failed: {type(e).__name__}: {e}") from None

    try:
        return comp.run(guarded)
    except CapabilityError as e:
        raise _other(str(comp.error(str(e)))) from None


# -- input checks (before anything leaves the guest's thread) -------------------------------------


def _check_key(b: Bucket, key: str) -> None:
    size = len(key.encode())
    if 0 < size <= b.link.max_key_bytes:
        return
    shown = key if len(key) <= 40 else key[:40] + "..."
    raise _other(
        str(
            b.comp.error(
                f"invalid key {shown!r} ({size} bytes): a key must be 1 to {b.link.max_key_bytes} bytes "
                "of UTF-8 text"
            )
        )
    )


def _check_value(b: Bucket, key: str, value: bytes) -> None:
    if len(value) > b.link.max_value_bytes:
        raise _other(
            str(
                b.comp.error(
                    f"value of {len(value)} bytes for key {key!r} exceeds the limit of "
                    f"{b.link.max_value_bytes} bytes of {b.link.kind} (link config `max_value_bytes`)"
                )
            )
        )


def _check_keys(b: Bucket, keys: Sequence[str]) -> None:
    for k in keys:
        _check_key(b, k)


# -- store -----------------------------------------------------------------------------------------


def open_bucket(identifier: str) -> Bucket:
    """`store.open`: the bucket the caller's current link for `wasi:keyvalue/store` selects."""
    comp = component()
    try:
        lk, provider = comp.target(STORE)
    except CapabilityError as e:  # already logged
        raise _other(str(e)) from None
    if not isinstance(provider, LinkTargetProvider):
        raise _other(str(comp.error(f"`{lk.target}` (link `{lk.name}`) does not serve `{STORE}`")))

    async def opening() -> tuple[KvLink, KvBucket]:
        kv_link: KvLink = await provider.backend(lk)
        return kv_link, await kv_link.open(identifier)

    kv_link, backend = _run(comp, f"opening bucket {identifier!r} on `{lk.target}`", opening, lk)
    return Bucket(comp, kv_link, backend, lk)


def _get(b: Bucket, key: str) -> bytes | None:
    _check_key(b, key)
    return _run(b, f"get {key!r} from bucket {b.backend.name!r}", lambda: b.backend.get(key))


def _set(b: Bucket, key: str, value: bytes) -> None:
    _check_key(b, key)
    _check_value(b, key, value)
    _run(b, f"set {key!r} in bucket {b.backend.name!r}", lambda: b.backend.set(key, value))


def _delete(b: Bucket, key: str) -> None:
    _check_key(b, key)
    _run(b, f"delete {key!r} from bucket {b.backend.name!r}", lambda: b.backend.delete(key))


def _exists(b: Bucket, key: str) -> bool:
    _check_key(b, key)
    return _run(b, f"exists {key!r} in bucket {b.backend.name!r}", lambda: b.backend.exists(key))


def _list_keys(b: Bucket, cursor: int | None) -> tuple[list[str], int | None]:
    size = b.link.page_size
    return _run(b, f"list-keys of bucket {b.backend.name!r}", lambda: b.backend.list_keys(cursor, size))


def _list_keys_u64(b: Bucket, cursor: int | None) -> tuple[list[str], int | None]:
    return _list_keys(b, cursor)


def _list_keys_text(b: Bucket, cursor: str | None) -> tuple[list[str], str | None]:
    start: int | None = None
    if cursor is not None and cursor != "":
        if not cursor.isdigit():
            raise _other(
                str(b.comp.error(f"invalid list-keys cursor {cursor!r}: pass a cursor list-keys returned"))
            )
        start = int(cursor)
    keys, nxt = _list_keys(b, start)
    return keys, None if nxt is None else str(nxt)


# -- atomics ---------------------------------------------------------------------------------------


def _increment(b: Bucket, key: str, delta: int, bounds: tuple[int, int]) -> int:
    _check_key(b, key)
    lo, hi = bounds
    return _run(
        b,
        f"increment {key!r} in bucket {b.backend.name!r}",
        lambda: b.backend.increment(key, delta, lo, hi),
    )


def _cas_new(b: Bucket, key: str) -> Cas:
    _check_key(b, key)
    value, version = _run(
        b, f"cas.new on {key!r} in bucket {b.backend.name!r}", lambda: b.backend.cas_read(key)
    )
    return Cas(b, key, value, version)


def _cas_current(c: Cas) -> bytes | None:
    return c.value


def _swap(c: Cas, value: bytes) -> None:
    b = c.bucket
    try:
        _check_value(b, c.key, value)
        done = _run(
            b,
            f"swap {c.key!r} in bucket {b.backend.name!r}",
            lambda: b.backend.cas_write(c.key, value, c.version),
        )
        if done:
            return
        fresh = _cas_new(b, c.key)
    except Err as e:
        raise Err(("store-error", e.value)) from None
    raise Err(("cas-failed", fresh))


# -- batch -----------------------------------------------------------------------------------------


def _get_values(b: Bucket, keys: list[str]) -> list[bytes | None]:
    _check_keys(b, keys)
    return _run(
        b,
        f"get-many of {len(keys)} keys from bucket {b.backend.name!r}",
        lambda: b.backend.get_many(keys),
    )


def _get_many_draft(b: Bucket, keys: list[str]) -> list[tuple[str, bytes] | None]:
    return [None if v is None else (k, v) for k, v in zip(keys, _get_values(b, keys), strict=True)]


def _get_many_draft2(b: Bucket, keys: list[str]) -> list[tuple[str, bytes | None]]:
    return list(zip(keys, _get_values(b, keys), strict=True))


def _set_many(b: Bucket, pairs: list[tuple[str, bytes]]) -> None:
    for k, v in pairs:
        _check_key(b, k)
        _check_value(b, k, v)
    _run(
        b,
        f"set-many of {len(pairs)} keys in bucket {b.backend.name!r}",
        lambda: b.backend.set_many(pairs),
    )


def _delete_many(b: Bucket, keys: list[str]) -> None:
    _check_keys(b, keys)
    _run(
        b,
        f"delete-many of {len(keys)} keys from bucket {b.backend.name!r}",
        lambda: b.backend.delete_many(keys),
    )


# -- the interfaces ----------------------------------------------------------------------------------

ERROR = variant("no-such-store", "access-denied", ("other", STRING))
BUCKET = borrow("bucket")


def _store(cursor: WitType, list_keys: HostFunc, version: str) -> HostInterface:
    key_response = record(keys=lst(STRING), cursor=option(cursor))
    functions: dict[str, HostFunc] = {
        "open": open_bucket,
        "[method]bucket.get": _get,
        "[method]bucket.set": _set,
        "[method]bucket.delete": _delete,
        "[method]bucket.exists": _exists,
        "[method]bucket.list-keys": list_keys,
    }
    signatures: dict[str, FuncSig] = {
        "open": func(STRING, returns=result(own("bucket"), ERROR)),
        "[method]bucket.get": func(BUCKET, STRING, returns=result(option(BYTES), ERROR)),
        "[method]bucket.set": func(BUCKET, STRING, BYTES, returns=result(None, ERROR)),
        "[method]bucket.delete": func(BUCKET, STRING, returns=result(None, ERROR)),
        "[method]bucket.exists": func(BUCKET, STRING, returns=result(BOOL, ERROR)),
        "[method]bucket.list-keys": func(BUCKET, option(cursor), returns=result(key_response, ERROR)),
    }
    return HostInterface(STORE, functions, versions=(version,), signatures=signatures)


def _batch(get_many: HostFunc, get_many_result: WitType, version: str) -> HostInterface:
    functions: dict[str, HostFunc] = {
        "get-many": get_many,
        "set-many": _set_many,
        "delete-many": _delete_many,
    }
    signatures = {
        "get-many": func(BUCKET, lst(STRING), returns=result(get_many_result, ERROR)),
        "set-many": func(BUCKET, lst(tup(STRING, BYTES)), returns=result(None, ERROR)),
        "delete-many": func(BUCKET, lst(STRING), returns=result(None, ERROR)),
    }
    return HostInterface("wasi:keyvalue/batch", functions, versions=(version,), signatures=signatures)


def _atomics_draft() -> HostInterface:
    return HostInterface(
        "wasi:keyvalue/atomics",
        {"increment": lambda b, key, delta: _increment(b, key, delta, U64_RANGE)},
        versions=("0.2.0-draft",),
        signatures={"increment": func(BUCKET, STRING, U64, returns=result(U64, ERROR))},
    )


def _atomics_draft2() -> HostInterface:
    cas_error = variant(("store-error", ERROR), ("cas-failed", own("cas")))
    return HostInterface(
        "wasi:keyvalue/atomics",
        {
            "increment": lambda b, key, delta: _increment(b, key, delta, S64_RANGE),
            "[static]cas.new": _cas_new,
            "[method]cas.current": _cas_current,
            "swap": _swap,
        },
        versions=("0.2.0-draft2",),
        signatures={
            "increment": func(BUCKET, STRING, S64, returns=result(S64, ERROR)),
            "[static]cas.new": func(BUCKET, STRING, returns=result(own("cas"), ERROR)),
            "[method]cas.current": func(borrow("cas"), returns=result(option(BYTES), ERROR)),
            "swap": func(own("cas"), BYTES, returns=result(None, cas_error)),
        },
    )


def interfaces() -> list[HostInterface]:
    """store, atomics and batch of both versions (draft2 first: "0.2.0-draft" prefixes it)."""
    return [
        _store(STRING, _list_keys_text, "0.2.0-draft2"),
        _store(U64, _list_keys_u64, "0.2.0-draft"),
        _atomics_draft2(),
        _atomics_draft(),
        _batch(_get_many_draft2, lst(tup(STRING, option(BYTES))), "0.2.0-draft2"),
        _batch(_get_many_draft, lst(option(tup(STRING, BYTES))), "0.2.0-draft"),
    ]


# Canonical reference -> factory, and wasmCloud-style spellings of the same providers.
PROVIDERS: dict[str, Any] = {
    "builtin://keyvalue-nats": NatsKvProvider,
    "builtin://keyvalue-redis": RedisKvProvider,
    "builtin://keyvalue-memory": MemoryKvProvider,
}
ALIASES: dict[str, str] = {f"wasmcloud+{ref}": ref for ref in PROVIDERS}

# The keys of a link's config (target side; the source side of watcher links), merged over the
# provider's own config, so the same keys serve all three (kv_backend.link_settings).
_KV_KEYS = ("bucket", "max_value_bytes", "list_page_size")
# wasmCloud's keyvalue-nats reads these to open its own connection; ours uses the host's.
_NATS_FOREIGN = (
    "cluster_uri",
    "js_domain",
    "client_jwt",
    "client_seed",
    "tls_ca",
    "tls_ca_file",
    "enable_bucket_auto_create",
    "config_b64",
    "config_json",
)


def _kv_keys(name: str, known: tuple[str, ...], foreign: tuple[str, ...] = ()) -> ProviderKeys:
    keys = KeySet(known, foreign)
    return ProviderKeys(name, provider=keys, source=keys, target=keys)


# Every config these providers read (capabilities/config_keys.py).
CONFIG_KEYS: dict[str, ProviderKeys] = {
    "builtin://keyvalue-nats": _kv_keys("keyvalue-nats", _KV_KEYS, _NATS_FOREIGN),
    "builtin://keyvalue-redis": _kv_keys("keyvalue-redis", ("url", *_KV_KEYS)),
    "builtin://keyvalue-memory": _kv_keys("keyvalue-memory", _KV_KEYS),
}
