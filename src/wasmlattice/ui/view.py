"""The dashboard's picture of one lattice, kept live from NATS and pushed to every open page.

Sources, all through our client API or the lattice's own subjects:
- lattice events (`wasmbus.evt.<lattice>.>`, docs/protocol.md#events): a heartbeat carries a host's
  whole inventory; other events name what changed, and only that section is asked for again
  (`host.get` of that host, `link.get`, the config bucket's keys, the app list);
- the app manager's status (`wadm.status.<lattice>.*`) and manifest events (`wadm.evt.<lattice>.>`);
- guest and host log records (`wasmlattice.logs.<lattice>.<host_id>.<component_id>`, docs/ui.md);
- a slow full refresh (every `refresh_interval`, 10 s by default) that pings the hosts: a host killed
  without a `host_stopped` event is dropped when `host.get` finds nobody listening, or after it
  misses two pings.

A page gets `snapshot()` once and then `Update`s: whole sections (hosts, links, ...), which are small,
or one event or log record. Config values and secrets are never read: only the config names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from wasmlattice.apps.client import AppApiError, AppClient, ModelSummary
from wasmlattice.client.ctl import CtlClient, CtlError, CtlNoHostError, to_json
from wasmlattice.protocol import subjects as sj
from wasmlattice.protocol.kv import KvError, open_bucket
from wasmlattice.protocol.models import HostInventory
from wasmlattice.protocol.wire import PayloadError, validate_obj
from wasmlattice.ui.metrics import MetricsSource, NoMetrics

log = logging.getLogger(__name__)

LOG_SUBJECT_PREFIX = "wasmlattice.logs"
WADM_STATUS_PREFIX = "wadm.status"
WADM_EVENT_PREFIX = "wadm.evt"
DEFAULT_REFRESH_INTERVAL_S = 10.0
# Bounds on what one dashboard keeps, whatever the lattice sends.
MAX_EVENTS = 200
MAX_LOG_LINES = 200  # per component
MAX_LOG_COMPONENTS = 500
MAX_LOG_MESSAGE = 4096
MAX_EVENT_DATA = 2048
# A page that cannot keep up is dropped (it reconnects and starts again from a snapshot).
MAX_QUEUED_UPDATES = 2000
SECTIONS = ("hosts", "links", "configs", "apps", "metrics", "problems")


def log_subject(lattice: str, host_id: str = "*", component_id: str = "*") -> str:
    """The subject of log records: `wasmlattice.logs.<lattice>.<host_id>.<component_id>`."""
    return f"{LOG_SUBJECT_PREFIX}.{lattice}.{host_id}.{component_id}"


@dataclass
class HostRow:
    """One host as the dashboard knows it: its ping answer, its last inventory, when it was seen."""

    host_id: str
    friendly_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    version: str = ""
    uptime_seconds: int = 0
    uptime_at: float = field(default_factory=time.time)
    inventory: HostInventory | None = None
    missed_pings: int = 0


@dataclass(frozen=True)
class Update:
    """One message to the pages: a section's new content, or one event or log record."""

    kind: str
    data: Any

    def to_sse(self) -> bytes:
        """The update as one Server-Sent Events message (`event:` kind, `data:` JSON on one line)."""
        return f"event: {self.kind}\ndata: {json.dumps(self.data, separators=(',', ':'))}\n\n".encode()


class Subscriber:
    """One open page: a bounded queue of updates; `dropped` once it fell too far behind."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Update] = asyncio.Queue(MAX_QUEUED_UPDATES)
        self.dropped = False

    def offer(self, update: Update) -> None:
        """Queue `update`, or mark the page dropped when its queue is full."""
        if self.dropped:
            return
        try:
            self.queue.put_nowait(update)
        except asyncio.QueueFull:
            self.dropped = True


class LatticeView:
    """The live state of lattice `lattice` over connection `nc` (see the module docstring)."""

    def __init__(
        self,
        nc: Any,
        lattice: str,
        *,
        js: Any = None,
        timeout: float = 3.0,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL_S,
        metrics: MetricsSource | None = None,
    ) -> None:
        self.nc = nc
        self.lattice = sj.check_token(lattice)
        self.js = js if js is not None else nc.jetstream()
        self.ctl = CtlClient(nc, lattice, timeout=timeout)
        self.apps = AppClient(nc, lattice, timeout=timeout)
        self.refresh_interval = refresh_interval
        self.metrics_source: MetricsSource = metrics or NoMetrics()
        self.hosts: dict[str, HostRow] = {}
        self.links: list[Any] = []
        self.configs: list[str] = []
        self.app_list: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] = {"available": False, "components": {}}
        # What could not be read, by section: shown on the page rather than stale data passing as live.
        self.problems: dict[str, str] = {}
        self.provider_health: dict[tuple[str, str], str] = {}
        self.component_errors: dict[tuple[str, str], str] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.logs: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()
        self.subscribers: set[Subscriber] = set()
        self._published: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._subs: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to events, statuses and logs, read everything once, and start following."""
        subjects: list[tuple[str, Callable[[Any], Awaitable[None]]]] = [
            (sj.events_wildcard(self.lattice), self._on_lattice_event),
            (f"{WADM_STATUS_PREFIX}.{self.lattice}.*", self._on_app_change),
            (f"{WADM_EVENT_PREFIX}.{self.lattice}.>", self._on_wadm_event),
            (f"{LOG_SUBJECT_PREFIX}.{self.lattice}.>", self._on_log),
        ]
        for subject, cb in subjects:
            self._subs.append(await self.nc.subscribe(subject, cb=cb))
        await self.nc.flush()
        await self.refresh(set(SECTIONS) | {"ping"})
        self._tasks.append(asyncio.create_task(self._refresher(), name="ui-refresher"))
        self._tasks.append(asyncio.create_task(self._ticker(), name="ui-ticker"))

    async def stop(self) -> None:
        """Stop following the lattice and end every page's stream."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._tasks.clear()
        self._subs.clear()

    def subscribe(self) -> Subscriber:
        """A new page's subscription (take `snapshot()` right after, on the same loop turn)."""
        sub = Subscriber()
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a page."""
        self.subscribers.discard(sub)

    def mark(self, *sections: str) -> None:
        """Ask for `sections` (or `host:<id>`, `ping`; `publish` reads nothing) to be read again soon.

        Bursts are merged into one round, which then pushes every section that changed.
        """
        self._dirty.update(sections)
        self._wake.set()

    # -- what the pages see ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything a page shows, as JSON data."""
        return {
            "lattice": self.lattice,
            **{name: self.section(name) for name in SECTIONS},
            "events": list(self.events),
            "logs": {cid: list(lines) for cid, lines in self.logs.items()},
        }

    def section(self, name: str) -> Any:
        """One section's JSON data."""
        if name == "hosts":
            return [self._host_json(h) for h in sorted(self.hosts.values(), key=lambda h: h.host_id)]
        if name == "links":
            return to_json(self.links)
        if name == "configs":
            return list(self.configs)
        if name == "apps":
            return list(self.app_list)
        if name == "metrics":
            return self.metrics
        if name == "problems":
            return dict(self.problems)
        raise KeyError(name)

    def _host_json(self, row: HostRow) -> dict[str, Any]:
        inv = row.inventory
        components: list[dict[str, Any]] = []
        providers: list[dict[str, Any]] = []
        seen: set[str] = set()
        if inv is not None:
            for c in inv.components:
                seen.add(c.id)
                error = self.component_errors.get((row.host_id, c.id))
                components.append(
                    {
                        "id": c.id,
                        "name": c.name or "",
                        "image_ref": c.image_ref,
                        "max_instances": c.max_instances,
                        "revision": c.revision,
                        "annotations": dict(c.annotations or {}),
                        "health": "failed" if error else "ok",
                        "error": error or "",
                    }
                )
            for p in inv.providers:
                providers.append(
                    {
                        "id": p.id,
                        "name": p.name or "",
                        "image_ref": p.image_ref or "",
                        "annotations": dict(p.annotations or {}),
                        "health": self.provider_health.get((row.host_id, p.id), "unknown"),
                    }
                )
        # A component that failed to start is in no inventory: show it with its reason.
        for (host_id, cid), error in sorted(self.component_errors.items()):
            if host_id == row.host_id and cid not in seen:
                components.append(
                    {
                        "id": cid,
                        "name": "",
                        "image_ref": "",
                        "max_instances": 0,
                        "revision": 0,
                        "annotations": {},
                        "health": "failed",
                        "error": error,
                    }
                )
        return {
            "id": row.host_id,
            "friendly_name": row.friendly_name,
            "labels": dict(row.labels),
            "version": row.version,
            "uptime_seconds": row.uptime_seconds,
            # Pages count the uptime on from this moment (ms since the epoch).
            "uptime_at": int(row.uptime_at * 1000),
            "components": components,
            "providers": providers,
        }

    def _publish(self, update: Update) -> None:
        for sub in list(self.subscribers):
            sub.offer(update)

    def _publish_section(self, name: str) -> None:
        data = self.section(name)
        text = json.dumps(data, sort_keys=True)
        if self._published.get(name) == text:
            return  # unchanged: pages need not redraw
        self._published[name] = text
        self._publish(Update(name, data))

    # -- refreshing ------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            self.mark(*SECTIONS, "ping")

    async def _refresher(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(0.05)  # merge a burst of events into one round
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            try:
                await self.refresh(dirty)
            except Exception:
                log.exception("dashboard refresh failed")

    async def refresh(self, dirty: set[str]) -> None:
        """Read the `dirty` sections again and push those that changed."""
        jobs: list[Awaitable[None]] = []
        if "ping" in dirty:
            jobs.append(self._refresh_hosts())
        else:
            jobs += [self._refresh_inventory(d.split(":", 1)[1]) for d in dirty if d.startswith("host:")]
        if "links" in dirty:
            jobs.append(self._refresh_links())
        if "configs" in dirty:
            jobs.append(self._refresh_configs())
        if "apps" in dirty:
            jobs.append(self._refresh_apps())
        if "metrics" in dirty:
            jobs.append(self._refresh_metrics())
        await asyncio.gather(*jobs)
        for name in SECTIONS:
            self._publish_section(name)

    def _problem(self, section: str, message: str | None) -> None:
        if message is None:
            self.problems.pop(section, None)
        else:
            self.problems[section] = message

    async def _refresh_hosts(self) -> None:
        try:
            answered = await self.ctl.ping_hosts(wait=1.0)
        except Exception as e:
            self._problem("hosts", f"cannot ping the hosts: {_describe(e)}")
            return
        self._problem("hosts", None)
        now = time.time()
        ids = {h.id for h in answered}
        for h in answered:
            row = self.hosts.setdefault(h.id, HostRow(h.id))
            row.friendly_name, row.labels, row.version = h.friendly_name, dict(h.labels), h.version or ""
            row.uptime_seconds, row.uptime_at, row.missed_pings = h.uptime_seconds, now, 0
        for host_id, row in list(self.hosts.items()):
            if host_id not in ids:
                row.missed_pings += 1
                if row.missed_pings >= 2:
                    self._drop_host(host_id)
        await asyncio.gather(*(self._refresh_inventory(h) for h in list(self.hosts)))

    async def _refresh_inventory(self, host_id: str) -> None:
        try:
            inv = await self.ctl.get_host_inventory(host_id)
        except CtlNoHostError:
            # Nobody listens on the host's subject any more: it has died or left.
            self._drop_host(host_id)
            return
        except Exception as e:
            if host_id in self.hosts:
                log.debug("inventory of %s: %s", host_id, _describe(e))
            return
        self._set_inventory(inv)

    def _set_inventory(self, inv: HostInventory) -> None:
        row = self.hosts.setdefault(inv.host_id, HostRow(inv.host_id))
        row.inventory = inv
        row.friendly_name, row.labels = inv.friendly_name, dict(inv.labels)
        row.version = inv.version or row.version
        row.uptime_seconds, row.uptime_at, row.missed_pings = inv.uptime_seconds, time.time(), 0

    def _drop_host(self, host_id: str) -> None:
        self.hosts.pop(host_id, None)
        for key in [k for k in self.provider_health if k[0] == host_id]:
            del self.provider_health[key]
        for key in [k for k in self.component_errors if k[0] == host_id]:
            del self.component_errors[key]

    async def _refresh_links(self) -> None:
        try:
            self.links = await self.ctl.get_links()
            self._problem("links", None)
        except CtlNoHostError:
            self.links = []  # no host, so no one keeps links: nothing to show
            self._problem("links", None)
        except Exception as e:
            self._problem("links", f"cannot read the links: {_describe(e)}")

    async def _refresh_configs(self) -> None:
        try:
            bucket = await open_bucket(self.js, sj.config_data_bucket(self.lattice), create=False)
            # Names only (the keys, read without their values); see the module docstring.
            self.configs = sorted(await bucket.keys(timeout=5.0))
            self._problem("configs", None)
        except KvError as e:
            if "does not exist" in str(e):
                self.configs = []
                self._problem("configs", None)
            else:
                self._problem("configs", f"cannot read the config names: {e}")
        except Exception as e:
            self._problem("configs", f"cannot read the config names: {_describe(e)}")

    async def _refresh_apps(self) -> None:
        try:
            models = await self.apps.list()
            self.app_list = [_app_json(m) for m in sorted(models, key=lambda m: m.name)]
            self._problem("apps", None)
        except AppApiError as e:
            self._problem("apps", e.message)

    async def _refresh_metrics(self) -> None:
        try:
            self.metrics = await self.metrics_source.snapshot(list(self.hosts))
        except Exception as e:
            self.metrics = {"available": False, "components": {}, "error": _describe(e)}

    # -- what NATS brings ------------------------------------------------------------------------

    async def _on_lattice_event(self, msg: Any) -> None:
        try:
            event = json.loads(msg.data)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = str(event.get("type", "")).rsplit(".", 1)[-1]
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        assert isinstance(data, dict)
        source = str(event.get("source") or "")
        host_id = str(data.get("host_id") or source)
        self._record_event(kind, source, str(event.get("time") or ""), data)
        if kind == "host_heartbeat":
            try:
                self._set_inventory(validate_obj(HostInventory, data, "host_heartbeat"))
            except PayloadError:
                self.mark(f"host:{host_id}")
            self.mark("metrics")
        elif kind == "host_stopped":
            self._drop_host(host_id)
            self.mark("publish")  # nothing to read again: the next round pushes the host section
        elif kind == "host_started":
            row = self.hosts.setdefault(host_id, HostRow(host_id))
            row.friendly_name = str(data.get("friendly_name") or row.friendly_name)
            labels = data.get("labels")
            row.labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
            row.version = str(data.get("version") or row.version)
            row.uptime_seconds, row.uptime_at = 0, time.time()
            self.mark(f"host:{host_id}", "links", "configs")
        elif kind.startswith("linkdef_"):
            self.mark("links")
        elif kind.startswith("config_"):
            self.mark("configs")
        else:
            self._track_health(kind, host_id, data)
            self.mark(f"host:{host_id}")

    def _track_health(self, kind: str, host_id: str, data: dict[str, Any]) -> None:
        provider_id = str(data.get("provider_id") or "")
        component_id = str(data.get("component_id") or data.get("actor_id") or "")
        if kind == "component_scale_failed" and component_id:
            self.component_errors[(host_id, component_id)] = str(data.get("error") or "scale failed")
        elif kind == "component_scaled" and component_id:
            self.component_errors.pop((host_id, component_id), None)
        elif provider_id:
            key = (host_id, provider_id)
            if kind == "health_check_passed":
                self.provider_health[key] = "healthy"
            elif kind == "health_check_failed":
                self.provider_health[key] = "unhealthy"
            elif kind == "health_check_status":
                self.provider_health.setdefault(key, "unknown")
            elif kind == "provider_started":
                self.provider_health[key] = "starting"
            elif kind in ("provider_stopped", "provider_start_failed"):
                self.provider_health.pop(key, None)

    def _record_event(self, kind: str, source: str, when: str, data: dict[str, Any]) -> None:
        shown: Any = data
        if kind == "host_heartbeat":
            # The whole inventory is in the host section; the stream says only that it beat.
            shown = {
                "components": len(data.get("components") or []),
                "providers": len(data.get("providers") or []),
            }
        text = json.dumps(shown)
        if len(text) > MAX_EVENT_DATA:
            shown = {"truncated": text[:MAX_EVENT_DATA]}
        record = {"time": when, "type": kind, "source": source, "data": shown}
        self.events.append(record)
        self._publish(Update("event", record))

    async def _on_app_change(self, msg: Any) -> None:
        self.mark("apps")

    async def _on_wadm_event(self, msg: Any) -> None:
        try:
            event = json.loads(msg.data)
        except ValueError:
            return
        if isinstance(event, dict):
            data = event.get("data") if isinstance(event.get("data"), dict) else {}
            assert isinstance(data, dict)
            kind = str(event.get("type", "")).rsplit(".", 1)[-1]
            self._record_event(
                kind,
                str(event.get("source") or "app-manager"),
                str(event.get("time") or ""),
                {"name": data.get("name") or (data.get("metadata") or {}).get("name")},
            )
        self.mark("apps")

    async def _on_log(self, msg: Any) -> None:
        record = parse_log_record(msg.data, msg.subject)
        if record is None:
            return
        cid = record["component_id"]
        lines = self.logs.get(cid)
        if lines is None:
            lines = self.logs[cid] = deque(maxlen=MAX_LOG_LINES)
            while len(self.logs) > MAX_LOG_COMPONENTS:
                self.logs.popitem(last=False)
        else:
            self.logs.move_to_end(cid)
        lines.append(record)
        self._publish(Update("log", record))


LOG_FIELDS = ("time", "level", "host_id", "component_id", "stream", "trace_id", "span_id", "message")


def parse_log_record(data: bytes, subject: str) -> dict[str, Any] | None:
    """A log record from its JSON body (the shape in docs/ui.md), or None if it is not one.

    Host and component IDs come from the subject when the body lacks them; the message is cut at
    MAX_LOG_MESSAGE characters.
    """
    try:
        body = json.loads(data)
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return None
    parts = subject.split(".")
    from_subject = {"host_id": parts[3], "component_id": parts[4]} if len(parts) == 5 else {}
    record: dict[str, Any] = {}
    for key in LOG_FIELDS:
        value = body.get(key, from_subject.get(key))
        record[key] = None if value is None else str(value)
    if not record["component_id"]:
        return None
    record["message"] = record["message"][:MAX_LOG_MESSAGE]
    return record


def _app_json(m: ModelSummary) -> dict[str, Any]:
    st = m.detailed_status
    return {
        "name": m.name,
        "version": m.version,
        "description": m.description,
        "deployed_version": m.deployed_version,
        "status": st.status,
        "message": st.message,
        "scalers": [
            {"name": s.name, "kind": s.kind, "status": s.status, "message": s.message} for s in st.scalers
        ],
    }


def _describe(e: BaseException) -> str:
    if isinstance(e, CtlError):
        return e.message
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
