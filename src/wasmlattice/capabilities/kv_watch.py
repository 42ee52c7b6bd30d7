"""Watcher links of `wasi:keyvalue`: a provider follows a bucket and tells a component of changes.

Watcher links (provider -> component, `wasi:keyvalue` `["watcher"]`, source config `bucket`) make
the memory and JetStream providers watch that bucket and call the component's export
`wasi:keyvalue/watcher` `on-set` / `on-delete` for every change made after the watch started
(`WatchingKvProvider`). The component gets a bucket handle as `store.open` would give it, on the
same backend. Redis buckets cannot be watched (a warning says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from wasmlattice.capabilities.base import (
    CapabilityError,
    LinkTargetProvider,
    ProviderSpec,
    call_here_or_failure,
)
from wasmlattice.capabilities.kv_backend import Bucket, KvBucket, KvError, KvLink
from wasmlattice.protocol.models import Link, StrMap

log = logging.getLogger("wasmlattice.capabilities")

WATCHER = "wasi:keyvalue/watcher"


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
        self._watch_resync = self.sup.resync(
            "watches",
            self.sync_watches,
            what=f"{self.kind} {self.provider_id}",
            failure="applying lattice changes failed",
        )
        self._unsupported_warned: set[tuple[str, str]] = set()

    async def start(self) -> None:
        """Watch the buckets of the watcher links already known, and follow link changes."""
        await super().start()
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
                    watch.task = self.sup.spawn(f"watch {link.name} to {link.target}", self._run_watch(watch))
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

            # Logged once the watch is in place, so that whoever waits for this line (a user, a
            # test) knows every later change reaches the component.
            await backend.watch(deliver, lambda: log.info("%s: watching bucket %r", what, backend.name))
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
        component_id = link.target
        router = self.services.router
        context = None if router is None else router.context(component_id)
        if router is None or context is None:
            log.debug("%s: change of %r skipped: %s is not running here", self._what(link), key, component_id)
            return
        handle = Bucket(context, kv_link, backend)
        func = "on-delete" if value is None else "on-set"
        args: tuple[Any, ...] = (handle, key) if value is None else (handle, key, value)
        _, failure = await call_here_or_failure(router, component_id, WATCHER, func, *args)
        if failure is None:
            return
        what = {"trapped": "trapped in", "unavailable": "could not be called:"}.get(failure.kind, "failed in")
        reason = failure.reason
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
