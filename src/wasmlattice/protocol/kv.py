"""Typed async access to JetStream KV buckets, with a watch that survives NATS reconnects.

Lattice state (wasmCloud's `LATTICEDATA_<lattice>` and `CONFIGDATA_<lattice>` buckets) lives here.
Reads and writes go through nats-py's `KeyValue`. Watches don't: nats-py's watcher is an ordered
consumer that silently stops when the server restarts and forgets its ephemeral consumer. `KvWatch`
runs its own push consumer instead, tracks the last revision it delivered, and when the connection
comes back (or heartbeats stop, or a sequence gap shows) it makes a new consumer that starts right
after that revision, so no update is lost and none is delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import nats.errors
import nats.js.errors
from nats.js import api

from wasmlattice.aio import wait_for
from wasmlattice.supervision import Supervised, Supervisor

log = logging.getLogger(__name__)

_KV_OP = "KV-Operation"
_MARKER_REASON = "Nats-Marker-Reason"
_STATUS = "Status"
_DESCRIPTION = "Description"
_LAST_CONSUMER = "Nats-Last-Consumer"
_STALLED = "Nats-Consumer-Stalled"
_DELETE_OPS = frozenset({"DEL", "PURGE"})
_VALID_BUCKET = re.compile(r"^[a-zA-Z0-9_-]+$")
_VALID_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")
_VALID_PREFIX = re.compile(r"^[-/_=.a-zA-Z0-9]*$")


class KvError(RuntimeError):
    """A KV operation failed; the message names the bucket, the key and the cause."""


# -- replicas (docs/nats.md#replicas) ------------------------------------------------------------

# The most replicas chosen without `--js-replicas`: three survive the loss of any one server (a
# majority of three is two) and are what the NATS docs recommend for production
# (https://docs.nats.io/nats-concepts/jetstream/streams#replicas); more cost writes and buy little.
AUTO_REPLICAS_MAX = 3
# JetStream's answers when it cannot place the replicas asked for: no suitable peers for placement,
# insufficient resources, replicas > 1 not supported in non-clustered mode
# (https://github.com/nats-io/nats-server/blob/main/server/errors.json).
_PLACEMENT_ERRORS = frozenset({10005, 10023, 10074})
_T = TypeVar("_T")
# Buckets whose replicas this process has compared with what it wants (said once, not per open).
_replicas_checked: set[str] = set()


class ReplicaPlacementError(KvError):
    """JetStream cannot place the replicas that `--js-replicas` asked for."""


def cluster_size(nc: Any) -> int:
    """How many servers the cluster of `nc`'s server has, by its INFO (itself included); 1 alone.

    nats-server lists the client URLs of every server of its cluster in `connect_urls` (and nats-py
    adds them to its server pool, so a client reconnects to the survivors). nats-py keeps the INFO
    only in a private field. A cluster started with `no_advertise` announces none: 1 then.
    """
    info = getattr(nc, "_server_info", None)
    if not isinstance(info, dict) or not info.get("cluster"):
        return 1
    urls = info.get("connect_urls")
    return max(1, len(urls)) if isinstance(urls, list) else 1


def bucket_replicas(js: Any) -> tuple[int, bool]:
    """The replicas for a bucket or object store created on `js`, and whether they were asked for.

    `--js-replicas` (the connection's `js_replicas`) when given; otherwise the cluster's size, at
    most `AUTO_REPLICAS_MAX`.
    """
    # nats-py exposes no public accessor for the JetStream context's connection.
    nc = getattr(js, "_nc", None)
    asked = getattr(nc, "js_replicas", None)
    if isinstance(asked, int) and asked > 0:
        return asked, True
    return min(AUTO_REPLICAS_MAX, cluster_size(nc)), False


async def create_replicated(
    js: Any, what: str, create: Callable[[int], Awaitable[_T]], replicas: int | None = None
) -> _T:
    """`create(n)` for the stream behind `what`, with `replicas` or else `bucket_replicas(js)`.

    A number the user chose (`replicas`, `--js-replicas`) that JetStream cannot place is a
    `ReplicaPlacementError`; a number chosen from the cluster's size (some of its servers may run
    without JetStream, or be down) is lowered until it can, with a warning.
    """
    if replicas is not None:
        n, asked = replicas, True
    else:
        n, asked = bucket_replicas(js)
    while True:
        try:
            return await create(n)
        except nats.js.errors.APIError as e:
            if e.err_code not in _PLACEMENT_ERRORS:
                raise
            if asked or n <= 1:
                hint = " (--js-replicas)" if asked else ""
                raise ReplicaPlacementError(
                    f"cannot create {what} with {n} replicas{hint}: JetStream says {e.description!r}; "
                    "the cluster needs that many servers with JetStream running"
                ) from None
            log.warning("cannot create %s with %d replicas (%s); trying %d", what, n, e.description, n - 1)
            n -= 1


def note_replicas(what: str, have: int, js: Any, replicas: int | None = None) -> None:
    """Log at INFO, once per process, that existing `what` keeps `have` replicas, not the ones wanted."""
    wanted = replicas if replicas is not None else bucket_replicas(js)[0]
    if what in _replicas_checked:
        return
    _replicas_checked.add(what)
    if have != wanted:
        log.info(
            "%s exists with %d replica(s), not the %d this host would create; kept as it is "
            "(change it with `nats stream edit`)",
            what,
            have,
            wanted,
        )


class KvEvent(NamedTuple):
    """One change seen by a watch: the key, its value (None when deleted or purged), its revision."""

    key: str
    value: bytes | None
    revision: int


def _check_bucket(name: str) -> None:
    if not _VALID_BUCKET.match(name):
        raise KvError(f"invalid KV bucket name {name!r}: use letters, digits, '_' and '-'")


def _check_key(bucket: str, key: str) -> None:
    if not _VALID_KEY.match(key) or key.startswith(".") or key.endswith(".") or ".." in key:
        raise KvError(
            f"invalid key {key!r} for KV bucket {bucket}: use letters, digits and '-/_=.' "
            "(no leading, trailing or doubled '.')"
        )


async def open_bucket(
    js: Any,
    name: str,
    *,
    create: bool = True,
    history: int = 1,
    ttl: float | None = None,
    max_value_size: int | None = None,
    max_bytes: int | None = None,
    replicas: int | None = None,
    description: str | None = None,
) -> KvBucket:
    """Open KV bucket `name` on JetStream context `js`, creating it (history 1 by default) if absent.

    A new bucket gets `replicas`, or else `bucket_replicas(js)` (`--js-replicas`, or the cluster's
    size up to 3); an existing one is kept as it is.
    """
    _check_bucket(name)
    try:
        kv = await js.key_value(name)
        if f"KV bucket {name}" not in _replicas_checked:
            await _note_bucket_replicas(js, name, replicas)
        return KvBucket(js, kv, name)
    except nats.js.errors.BucketNotFoundError:
        if not create:
            raise KvError(f"KV bucket {name} does not exist (and create=False)") from None
    except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
        # Both mean nothing answered the JetStream API on the prefix we used: JetStream is off,
        # or a JetStream domain was given that this server (or its cluster) does not have.
        raise KvError(
            f"cannot open KV bucket {name}: JetStream did not answer; check that the NATS server runs "
            "with JetStream enabled (`nats-server -js`) and, if a JetStream domain is set "
            "(--js-domain), that it is the server's domain"
        ) from None
    except (nats.errors.Error, TimeoutError) as e:
        raise KvError(f"cannot open KV bucket {name}: {type(e).__name__}: {e}") from e

    async def make(n: int) -> Any:
        kv = await js.create_key_value(
            bucket=name,
            history=history,
            ttl=ttl,
            max_value_size=max_value_size,
            max_bytes=max_bytes,
            replicas=n,
            description=description,
        )
        log.info("created KV bucket %s (history %d, %d replica(s))", name, history, n)
        return kv

    try:
        kv = await create_replicated(js, f"KV bucket {name}", make, replicas)
    except nats.js.errors.BadRequestError:
        # Another host created it first with different settings (replicas): use theirs.
        try:
            kv = await js.key_value(name)
        except (nats.errors.Error, TimeoutError) as e:
            raise KvError(f"cannot create or open KV bucket {name}: {type(e).__name__}: {e}") from e
        await _note_bucket_replicas(js, name, replicas)
    except (nats.errors.Error, TimeoutError) as e:
        raise KvError(f"cannot create KV bucket {name}: {type(e).__name__}: {e}") from e
    return KvBucket(js, kv, name)


async def _note_bucket_replicas(js: Any, name: str, replicas: int | None) -> None:
    """`note_replicas` for KV bucket `name` (best effort: a failed look-up only skips the note)."""
    try:
        info = await js.stream_info(f"KV_{name}")
    except (nats.errors.Error, TimeoutError):
        return
    note_replicas(f"KV bucket {name}", int(info.config.num_replicas or 1), js, replicas)


class KvBucket:
    """One JetStream KV bucket: get, put, delete, keys and watch."""

    def __init__(self, js: Any, kv: Any, name: str) -> None:
        self._js = js
        self._kv = kv
        self.name = name

    @property
    def stream(self) -> str:
        """The JetStream stream that backs the bucket (`KV_<name>`)."""
        return f"KV_{self.name}"

    @property
    def subject_prefix(self) -> str:
        """The subject prefix of the bucket's keys (`$KV.<name>.`)."""
        return f"$KV.{self.name}."

    async def get(self, key: str) -> bytes | None:
        """The current value of `key`, or None if it was never set or has been deleted."""
        entry = await self.get_entry(key)
        return None if entry is None else entry[0]

    async def get_entry(self, key: str) -> tuple[bytes, int] | None:
        """The current value of `key` and its revision, or None if absent or deleted."""
        _check_key(self.name, key)
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:  # also covers KeyDeletedError
            return None
        except (nats.errors.Error, TimeoutError) as e:
            raise KvError(f"KV get {self.name}/{key} failed: {type(e).__name__}: {e}") from e
        return (entry.value or b"", int(entry.revision))

    async def put(self, key: str, value: bytes) -> int:
        """Set `key` to `value`; the new revision."""
        _check_key(self.name, key)
        try:
            return int(await self._kv.put(key, value))
        except (nats.errors.Error, TimeoutError) as e:
            raise KvError(f"KV put {self.name}/{key} failed: {type(e).__name__}: {e}") from e

    async def delete(self, key: str) -> None:
        """Delete `key` (a delete marker, so watchers see it); deleting an absent key is fine."""
        _check_key(self.name, key)
        try:
            await self._kv.delete(key)
        except (nats.errors.Error, TimeoutError) as e:
            raise KvError(f"KV delete {self.name}/{key} failed: {type(e).__name__}: {e}") from e

    async def purge(self, key: str) -> None:
        """Delete `key` and its history."""
        _check_key(self.name, key)
        try:
            await self._kv.purge(key)
        except (nats.errors.Error, TimeoutError) as e:
            raise KvError(f"KV purge {self.name}/{key} failed: {type(e).__name__}: {e}") from e

    async def keys(self, prefix: str | None = None, *, timeout: float = 10.0) -> list[str]:
        """The live keys (those starting with `prefix` if given), in revision order."""
        found: list[str] = []
        async with KvWatch(self, prefix, headers_only=True) as w:
            await w.wait_initial(timeout)
            found = [ev.key for ev in w.drain()]
        return found

    def watch(self, prefix: str | None = None, *, key: str | None = None, heartbeat: float = 1.0) -> KvWatch:
        """A watch over keys starting with `prefix` (or exactly `key`): current values, then changes."""
        if key is not None:
            _check_key(self.name, key)
        return KvWatch(self, prefix, key=key, heartbeat=heartbeat)


class _Stop:
    """Queue sentinel: the watch has ended."""


class KvWatch:
    """An async iterator of `KvEvent`: the matching keys' current values, then every later change.

    Use `async with bucket.watch(...) as w: async for key, value, revision in w: ...`. Deleted keys
    are not part of the initial values; deletes and purges after that arrive with `value=None`.
    `wait_initial()` returns once every initial value is queued. The queue is unbounded: a reader
    that stops reading makes it grow.
    """

    def __init__(
        self,
        bucket: KvBucket,
        prefix: str | None = None,
        *,
        key: str | None = None,
        heartbeat: float = 1.0,
        headers_only: bool = False,
    ) -> None:
        if prefix is not None and not _VALID_PREFIX.match(prefix):
            raise KvError(f"invalid key prefix {prefix!r} for KV bucket {bucket.name}")
        self.bucket = bucket
        self.prefix = prefix or ""
        self.key = key
        self.heartbeat = heartbeat
        self._headers_only = headers_only
        self._js = bucket._js
        # nats-py exposes no public accessor for the JetStream context's connection.
        self._nc: Any = bucket._js._nc
        self._queue: asyncio.Queue[KvEvent | BaseException | _Stop] = asyncio.Queue()
        self._initial = asyncio.Event()
        # Owns the task that follows the consumer; a failed resubscribe is retried with backoff.
        self._supervisor = Supervisor(f"kv-watch:{bucket.name}:{self.prefix}", logger=log)
        self._started = False
        self._follower: Supervised | None = None
        self._sub: Any = None
        self._consumer: str | None = None
        self._cseq = 0
        self._last_revision = 0
        self._reconnects_seen = 0
        self._closed = False
        self.resubscribes = 0

    @property
    def last_revision(self) -> int:
        """The stream revision of the last change this watch has seen."""
        return self._last_revision

    @property
    def initial_done(self) -> bool:
        """Whether all initial values have been queued."""
        return self._initial.is_set()

    def _filter_subject(self) -> str:
        pre = self.bucket.subject_prefix
        if self.key is not None:
            return pre + self.key
        # Subject filters match whole tokens only, so a prefix like `COMPONENT_` is filtered here.
        if self.prefix.endswith(".") or not self.prefix:
            return pre + self.prefix + ">"
        return pre + ">"

    async def start(self) -> KvWatch:
        """Create the consumer (errors surface here) and start following it."""
        if self._started:
            return self
        self._reconnects_seen = self._nc.stats.get("reconnects", 0)
        await self._subscribe()
        self._started = True
        await self._supervisor.start()
        self._follower = self._supervisor.supervise(
            "follow", self._run, restart="transient", first_retry=0.05, max_retry=2.0
        )
        return self

    async def stop(self) -> None:
        """Stop watching: end the iteration and remove the consumer."""
        self._closed = True
        await self._supervisor.stop()
        await self._unsubscribe()
        self._queue.put_nowait(_Stop())

    async def wait_initial(self, timeout: float) -> None:
        """Wait until every initial value is queued."""
        try:
            await wait_for(self._initial.wait(), timeout)
        except TimeoutError:
            raise KvError(f"KV watch on {self.bucket.name} got no initial values within {timeout}s") from None

    def drain(self) -> list[KvEvent]:
        """The events queued so far, without waiting."""
        out: list[KvEvent] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, KvEvent):
                out.append(item)
        return out

    async def next(self, timeout: float) -> KvEvent:
        """The next event, waiting at most `timeout` seconds."""
        try:
            return await wait_for(self.__anext__(), timeout)
        except TimeoutError:
            raise KvError(f"no change on KV bucket {self.bucket.name} within {timeout}s") from None

    def __aiter__(self) -> AsyncIterator[KvEvent]:
        return self

    async def __anext__(self) -> KvEvent:
        if not self._started and not self._closed:
            await self.start()
        item = await self._queue.get()
        if isinstance(item, _Stop):
            self._queue.put_nowait(item)  # keep later calls ending too
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def __aenter__(self) -> KvWatch:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- consumer management ---------------------------------------------------------------------

    async def _subscribe(self) -> None:
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        if self._last_revision == 0:
            policy: dict[str, Any] = {"deliver_policy": api.DeliverPolicy.LAST_PER_SUBJECT}
        else:
            policy = {
                "deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE,
                "opt_start_seq": self._last_revision + 1,
            }
        config = api.ConsumerConfig(
            deliver_subject=inbox,
            filter_subject=self._filter_subject(),
            ack_policy=api.AckPolicy.NONE,
            flow_control=True,
            idle_heartbeat=self.heartbeat,
            headers_only=self._headers_only or None,
            mem_storage=True,
            # The server drops a consumer nobody listens to; we resubscribe long before this.
            inactive_threshold=max(30.0, 10 * self.heartbeat),
            num_replicas=1,
            **policy,
        )
        try:
            info = await self._js.add_consumer(self.bucket.stream, config)
        except nats.js.errors.NotFoundError:
            await sub.unsubscribe()
            raise KvError(f"cannot watch KV bucket {self.bucket.name}: it does not exist") from None
        except BaseException:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            raise
        self._sub, self._consumer, self._cseq = sub, info.name, 0
        delivered = info.delivered.consumer_seq if info.delivered else 0
        if not self._initial.is_set() and not info.num_pending and not delivered:
            self._initial.set()

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        name, self._consumer = self._consumer, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if name is not None and self._nc.is_connected:
            # Best effort: the server also drops it after inactive_threshold.
            with contextlib.suppress(Exception):
                await wait_for(self._js.delete_consumer(self.bucket.stream, name), 1.0)

    async def _run(self) -> None:
        """Follow the consumer, replacing it when it must be; a failed resubscribe raises (and is retried).

        A `KvError` (the bucket is gone, the connection closed) or a failure while following ends
        the watch: the iteration raises it.
        """
        while not self._closed:
            if self._sub is None:
                try:
                    if self._nc.is_closed:
                        raise KvError(f"KV watch on {self.bucket.name} ended: the NATS connection was closed")
                    self._reconnects_seen = self._nc.stats.get("reconnects", 0)
                    await self._subscribe()
                except KvError as e:
                    self._queue.put_nowait(e)
                    return
                self.resubscribes += 1
                if self._follower is not None:
                    self._follower.healthy()  # resets the resubscribe backoff
            try:
                reason = await self._follow()
            except Exception as e:
                self._queue.put_nowait(e)
                return
            log.info(
                "KV watch on %s: %s; resuming after revision %d",
                self.bucket.name,
                reason,
                self._last_revision,
            )
            await self._unsubscribe()

    async def _follow(self) -> str:
        """Deliver messages until the consumer must be replaced; why it must."""
        sub = self._sub
        last_activity = time.monotonic()
        while True:
            try:
                msg = await sub.next_msg(timeout=self.heartbeat)
            except nats.errors.TimeoutError:
                msg = None
            except nats.errors.ConnectionClosedError:
                return "connection closed"
            except nats.errors.Error as e:
                return f"subscription error: {type(e).__name__}: {e}"
            if self._nc.stats.get("reconnects", 0) != self._reconnects_seen:
                return "NATS reconnected"
            now = time.monotonic()
            if msg is None:
                if now - last_activity > 3 * self.heartbeat:
                    return f"no heartbeat for {now - last_activity:.1f}s"
                continue
            last_activity = now
            headers = msg.headers or {}
            status = headers.get(_STATUS)
            if status == "100":
                # Flow-control requests and stalled-consumer heartbeats both expect an empty reply.
                reply = msg.reply or headers.get(_STALLED)
                if reply:
                    # A failed reply only delays the server; the heartbeat check catches a real stall.
                    with contextlib.suppress(nats.errors.Error):
                        await self._nc.publish(reply, b"")
                last = headers.get(_LAST_CONSUMER)
                if last is not None and int(last) != self._cseq:
                    return f"missed messages (consumer at {last}, seen {self._cseq})"
                continue
            if status is not None:
                return f"server status {status} {headers.get(_DESCRIPTION, '')}".rstrip()
            meta = msg.metadata
            if meta.sequence.consumer != self._cseq + 1:
                return f"sequence gap (expected {self._cseq + 1}, got {meta.sequence.consumer})"
            self._cseq = meta.sequence.consumer
            self._deliver(msg, headers, int(meta.sequence.stream))
            if not self._initial.is_set() and meta.num_pending == 0:
                self._initial.set()

    def _deliver(self, msg: Any, headers: dict[str, str], revision: int) -> None:
        if revision <= self._last_revision:
            return  # already delivered before a resubscribe
        self._last_revision = revision
        key = msg.subject[len(self.bucket.subject_prefix) :]
        if not key.startswith(self.prefix):
            return
        op = headers.get(_KV_OP)
        reason = headers.get(_MARKER_REASON)
        if op is None and reason is not None:
            if reason not in ("MaxAge", "Purge", "Remove"):
                return  # a marker kind we don't know: not a value, so skip rather than misreport
            op = "PURGE"  # server-placed TTL markers (nats-server 2.11+)
        deleted = op in _DELETE_OPS
        if deleted and not self._initial.is_set():
            return  # a deleted key is not a current value
        self._queue.put_nowait(KvEvent(key, None if deleted else bytes(msg.data), revision))
