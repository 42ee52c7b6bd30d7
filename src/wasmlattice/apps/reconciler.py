"""Keeping deployed applications running: observe the lattice, compare with the manifests, act.

Where wadm keeps a replicated event-sourced state and reacts to each event, this reconciler takes a
fresh look at the lattice on every round (host pings, inventories, links) and runs one step of every
scaler of every deployed application (`scalers.py`; where instances go is `placement.py`; see
docs/apps.md, "How apps are kept running"):

- a **spread** of a component: its instances split over the spreads by weight, each spread's
  share placed on one eligible host (a host whose labels include every requirement), preferring
  one that already runs it; instances on hosts that match no spread are scaled to 0;
- a **daemon** component: `instances` on every eligible host;
- a **provider** (capability): one copy on as many eligible hosts as `instances` (spread) or on
  every eligible host (daemon); a provider with the same ID and image on a host counts whoever
  started it, so apps share providers;
- **config** with `properties`: the named config `<app>-<name>`, kept equal to the manifest;
- **links**: each link trait, with its configs.

Only instances carrying an app's annotations count as its own, and undeploying removes only those.
A failure event for a command marks its scaler `failed` with the host's reason until it is
deployed. A host that stops is dropped at once (its `host_stopped` event), and so is one whose
inventory request finds nobody
listening (its process died, so NATS dropped its subscriptions); one that stops answering without
leaving NATS (hung, cut off) is dropped when it has not answered a ping for `host_timeout` seconds
(10 s by default, where wadm waits 70 s). Its work is placed on the remaining eligible hosts in the
next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wasmlattice.aio import wait_for
from wasmlattice.apps.manifest.model import Component, Manifest
from wasmlattice.apps.placement import HostView
from wasmlattice.apps.scalers import APPSPEC, SCALER, Scalers, desired_link
from wasmlattice.apps.status import NO_STATUS_MESSAGE, ScalerStatus, combine, status_json
from wasmlattice.apps.wadm_state import provider_status
from wasmlattice.client.ctl import CtlClient, CtlError, CtlNoHostError
from wasmlattice.protocol.models import Link
from wasmlattice.protocol.subjects import provider_health

if TYPE_CHECKING:  # the OpenTelemetry SDK is imported only when metrics are on
    from wasmlattice.observability.metrics import AppMetrics

log = logging.getLogger(__name__)

DEFAULT_HOST_TIMEOUT_S = 10.0
ROUND_INTERVAL_S = 1.0
# How long a round's ping waits for hosts it does not know yet. A round stops waiting as soon as
# every known host has answered, and waits the full time every DISCOVER_EVERY_S or when an event
# names a host it does not know: a 20-host round then costs ~50 ms, not the wait.
PING_WAIT_S = 0.25
DISCOVER_EVERY_S = 5.0


@dataclass
class AppState:
    """A deployed app as the reconciler tracks it."""

    manifest: Manifest
    scalers: dict[str, ScalerStatus] = field(default_factory=dict)
    previous: Manifest | None = None  # the version replaced by an upgrade, until it is cleaned up


class Reconciler:
    """Runs deployed applications on a lattice (one instance acts at a time: see `manager.py`)."""

    def __init__(
        self,
        nc: Any,
        lattice: str,
        *,
        host_timeout: float = DEFAULT_HOST_TIMEOUT_S,
        interval: float = ROUND_INTERVAL_S,
        publish_status: Callable[[str, dict[str, Any]], Any] | None = None,
    ) -> None:
        self.nc = nc
        self.lattice = lattice
        self.ctl = CtlClient(nc, lattice, timeout=5.0)
        self.host_timeout = host_timeout
        self.interval = interval
        self.apps: dict[str, AppState] = {}
        self.hosts: dict[str, HostView] = {}
        self.statuses: dict[str, dict[str, Any]] = {}
        self._publish_status = publish_status
        self.scalers = Scalers(self.ctl)
        self._failures: dict[str, str] = {}  # scaler id -> the host's reason, until it is deployed
        # Providers whose last health check failed: (host ID, provider ID) -> why ("" until asked).
        self._unhealthy: dict[tuple[str, str], str] = {}
        self._passed: set[tuple[str, str]] = set()  # copies seen passing a health check
        # Each provider copy's status as wadm records it (apps/wadm_state.py): (host, provider) -> status.
        self.provider_health: dict[tuple[str, str], str] = {}
        self._emitted: dict[str, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._discover_at = 0.0  # time.monotonic() of the next full-wait ping
        self._sub: Any = None
        self.active = True  # False while another manager holds the lease: observe, do not act
        # Where rounds are counted (set by the app manager; None: metrics are off).
        self.metrics: AppMetrics | None = None

    # -- hooks (the API server calls these) -------------------------------------------------

    async def deployed(self, name: str, manifest: Manifest) -> None:
        """Run `manifest` as app `name` (an upgrade when another version runs)."""
        current = self.apps.get(name)
        if current is not None and current.manifest.version != manifest.version:
            self.apps[name] = AppState(manifest, previous=current.manifest)
        elif current is None:
            self.apps[name] = AppState(manifest)
        self._set_status(name, "reconciling", "Deployment in progress")
        self.poke()

    async def undeployed(self, name: str) -> None:
        """Stop app `name`, removing what it created."""
        state = self.apps.pop(name, None)
        if state is not None and self.active:
            await self._cleanup(
                name, [state.manifest] + ([state.previous] if state.previous else []), keep=None
            )
        self.statuses[name] = status_json("undeployed", "Manifest has been undeployed")
        await self._emit(name)

    def status(self, name: str) -> dict[str, Any] | None:
        """The last status of app `name`, if any."""
        return self.statuses.get(name)

    def poke(self) -> None:
        """Run a round soon."""
        self._wake.set()

    def republish(self) -> None:
        """Publish every status again at the next round (managers that started since learn them)."""
        self._emitted.clear()

    async def idle(self) -> None:
        """Wait for the next round: `interval` seconds, or less after a relevant event."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await wait_for(self._wake.wait(), self.interval)

    # -- the loop -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow lattice events (they make rounds happen sooner)."""
        self._sub = await self.nc.subscribe(f"wasmbus.evt.{self.lattice}.>", cb=self._on_event)

    async def stop(self) -> None:
        """Stop following events."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_event(self, msg: Any) -> None:
        try:
            event = json.loads(msg.data)
        except ValueError:
            return
        kind = str(event.get("type", "")).rsplit(".", 1)[-1]
        data = event.get("data") or {}
        host_id = data.get("host_id") or event.get("source", "")
        now = time.monotonic()
        if kind == "host_stopped":
            self.hosts.pop(host_id, None)  # a clean stop needs no time-out
        elif kind in ("host_started", "host_heartbeat"):
            if host_id in self.hosts:
                self.hosts[host_id].last_seen = now
            else:
                self._discover_at = 0.0  # a host we don't know: the next ping waits for it
        elif kind.startswith("health_check_") or kind == "provider_stopped":
            self._on_health(kind, str(host_id), str(data.get("provider_id") or ""))
        elif kind in ("component_scale_failed", "provider_start_failed"):
            annotations = data.get("annotations") or {}
            sid = annotations.get(SCALER)
            if sid:
                self._failures[sid] = str(data.get("error", "failed"))
        self.poke()

    def _on_health(self, kind: str, host_id: str, provider_id: str) -> None:
        """Track which provider copies are unhealthy from the host's health events.

        A provider starts unhealthy and `health_check_passed` marks its first healthy check, so a
        `health_check_status` for a copy never seen passing may be one that never became healthy
        (a listener that could not bind): the round asks its health subject to be sure.
        """
        if not provider_id:
            return
        key = (host_id, provider_id)
        wadm_status = provider_status(kind, self.provider_health.get(key))
        if wadm_status is None:
            self.provider_health.pop(key, None)
        else:
            self.provider_health[key] = wadm_status
        if kind == "health_check_passed":
            self._unhealthy.pop(key, None)
            self._passed.add(key)
        elif kind == "health_check_failed":
            self._unhealthy[key] = ""
            self._passed.discard(key)
        elif kind == "health_check_status" and key not in self._passed:
            self._unhealthy.setdefault(key, "")
        elif kind == "provider_stopped":
            self._unhealthy.pop(key, None)
            self._passed.discard(key)

    # -- one round ----------------------------------------------------------------------------

    async def observe(self) -> None:
        """Refresh the live hosts (ping), their inventories, and drop hosts silent too long."""
        now = time.monotonic()
        expect: Collection[str] = ()
        if now < self._discover_at and self.hosts:
            expect = set(self.hosts)
        else:
            self._discover_at = now + DISCOVER_EVERY_S
        for host in await self.ctl.ping_hosts(wait=PING_WAIT_S, expect=expect):
            view = self.hosts.get(host.id)
            if view is None:
                self.hosts[host.id] = HostView(host.id, dict(host.labels), now)
            else:
                view.labels, view.last_seen = dict(host.labels), now
        for host_id, view in list(self.hosts.items()):
            if now - view.last_seen > self.host_timeout:
                log.warning(
                    "host %s has not answered for %.0fs; its work moves elsewhere",
                    host_id,
                    now - view.last_seen,
                )
                del self.hosts[host_id]

        async def inventory(view: HostView) -> None:
            try:
                view.inventory = await self.ctl.get_host_inventory(view.host_id)
            except CtlNoHostError:
                # Nobody listens for this host any more (it died or left): its work moves now,
                # without waiting for the ping time-out.
                view.inventory = None
            except (CtlError, TimeoutError, OSError) as e:
                # A slow answer is not a dead host: keep what we knew, so work does not churn.
                log.debug("inventory of host %s not refreshed: %s", view.host_id, e)

        await asyncio.gather(*(inventory(v) for v in list(self.hosts.values())))

    async def round(self) -> None:
        """Observe once and bring every deployed app closer to its manifest (counted, with metrics)."""
        metrics = self.metrics
        if metrics is None:
            await self._round()
            return
        leader = self.active
        try:
            await self._round()
        except asyncio.CancelledError:
            raise
        except BaseException:
            metrics.reconcile_round(leader, False)
            raise
        metrics.reconcile_round(leader, True)

    async def _round(self) -> None:
        await self.observe()
        if not self.active:
            return
        # With no hosts there is nobody to ask for links (apps show `waiting`).
        links = await self.ctl.get_links() if self.hosts else []
        for name, state in list(self.apps.items()):
            await self._reconcile_app(name, state, links)
            if state.previous is not None:
                await self._cleanup(name, [state.previous], keep=state.manifest)
                state.previous = None
        self._forget_the_gone()

    def _forget_the_gone(self) -> None:
        """Drop failures and health of what no app and no host has any more.

        They come from lattice events, which any client may publish: only what the apps' scalers
        and the hosts' inventories name is kept, so they cannot grow this manager without end.
        """
        live = {sid for st in self.apps.values() for sid in st.scalers}
        for sid in [s for s in self._failures if s not in live]:
            del self._failures[sid]

        def running(key: tuple[str, str]) -> bool:
            view = self.hosts.get(key[0])
            if view is None:
                return False
            return view.inventory is None or any(p.id == key[1] for p in view.inventory.providers)

        for key in [k for k in self._unhealthy if not running(k)]:
            del self._unhealthy[key]
        self._passed = {k for k in self._passed if running(k)}

    # -- per app --------------------------------------------------------------------------------

    async def _reconcile_app(self, name: str, state: AppState, links: list[Link]) -> None:
        manifest = state.manifest
        statuses: dict[str, ScalerStatus] = {}
        if not self.hosts:
            self._set_status(name, "waiting", NO_STATUS_MESSAGE)
            await self._emit(name)
            return
        # Config and secret references first: the components and links below name them.
        for comp in manifest.components:
            for secret in comp.secrets:
                st = await self.scalers.secret_ref(manifest, secret)
                statuses[st.id] = st
            for cfg in comp.config:
                if cfg.properties is not None:
                    st = await self.scalers.config(manifest, cfg.name, cfg.properties)
                    statuses[st.id] = st
            for lt in comp.links:
                for cfg in (*lt.source_config, *lt.target_config):
                    if cfg.properties is not None:
                        st = await self.scalers.config(manifest, cfg.name, cfg.properties)
                        statuses[st.id] = st
        for comp in manifest.components:
            if comp.scaler is not None and comp.image is not None:
                if comp.kind == "capability":
                    st = await self.scalers.provider(name, manifest, comp, self._live_hosts())
                    await self._report_unhealthy(st, manifest.component_id(comp))
                else:
                    st = await self.scalers.component(name, manifest, comp, self._live_hosts())
                statuses[st.id] = st
            for lt in comp.links:
                st = await self.scalers.link(manifest, comp, lt, links, self._shared())
                statuses[st.id] = st
        for sid, st in statuses.items():
            # A host's refusal stands until the scaler has what it wants: a retry in flight is no
            # success, however long the host takes to refuse again (a load, a policy time-out).
            failure = self._failures.get(sid)
            if failure is None:
                continue
            if st.state == "deployed":
                del self._failures[sid]
            else:
                st.state, st.message = "failed", failure
        state.scalers = statuses
        app_state = combine([s.state for s in statuses.values()])
        message = ", ".join(s.message for s in statuses.values() if s.message and s.state != "deployed")
        self.statuses[name] = status_json(app_state, message, [s.to_json() for s in statuses.values()])
        await self._emit(name)

    async def _report_unhealthy(self, st: ScalerStatus, provider_id: str) -> None:
        """Mark a provider scaler `failed` while a copy of it fails its health check, saying why.

        A provider that started but cannot do its job (an HTTP listener whose port is taken) is not
        deployed; the health event carries no reason, so the provider's health subject is asked.
        """
        for (host_id, pid), why in list(self._unhealthy.items()):
            if pid != provider_id or host_id not in self.hosts:
                continue
            if not why:
                asked = await self._health_message(provider_id)
                if asked is None:  # healthy after all (a status event of a copy seen passing earlier)
                    self._unhealthy.pop((host_id, pid), None)
                    self._passed.add((host_id, pid))
                    continue
                why = asked
                if (host_id, pid) in self._unhealthy:
                    self._unhealthy[(host_id, pid)] = why
            st.state = "failed"
            st.message = f"provider {provider_id} on host {host_id} is unhealthy: {why}"
            return

    async def _health_message(self, provider_id: str) -> str | None:
        """What the provider's health subject says is wrong (`{healthy, message}`); None if healthy."""
        try:
            reply = await self.nc.request(provider_health(provider_id, self.lattice), b"", timeout=1.0)
            body = json.loads(reply.data)
        except Exception as e:  # no answer or not JSON: the event alone is still the truth
            log.debug("health of provider %s not read: %s", provider_id, e)
            return "its health check failed"
        if isinstance(body, dict) and body.get("healthy") is True:
            return None
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])[:1000]
        return "its health check failed"

    def _live_hosts(self) -> list[HostView]:
        return sorted((v for v in self.hosts.values() if v.inventory is not None), key=lambda v: v.host_id)

    def _shared(self) -> dict[str, Manifest]:
        # Every deployed manifest by name: a shared component's ID is its owner's.
        return {n: st.manifest for n, st in self.apps.items()}

    # -- cleanup --------------------------------------------------------------------------------

    async def _cleanup(self, app: str, manifests: list[Manifest], keep: Manifest | None) -> None:
        """Remove what `manifests` created and `keep` (the version now deployed, if any) does not want."""
        await self.observe()
        keep_components = {keep.component_id(c) for c in keep.components} if keep else set()
        keep_links = set()
        keep_configs = set()
        if keep is not None:
            for c in keep.components:
                for lt in c.links:
                    lk = desired_link(keep, c, lt, self._shared())
                    if lk is not None:
                        keep_links.add((lk.source_id, lk.wit_namespace, lk.wit_package, lk.name))
                keep_configs |= {keep.config_name(x.name) for x in c.config if x.properties is not None}
                for lt in c.links:
                    keep_configs |= {
                        keep.config_name(x.name)
                        for x in (*lt.source_config, *lt.target_config)
                        if x.properties is not None
                    }
        wanted_providers = self._providers_wanted_by_others(app)
        for manifest in manifests:
            for comp in manifest.components:
                for lt in comp.links:
                    lk = desired_link(manifest, comp, lt, self._shared())
                    if lk is None or (lk.source_id, lk.wit_namespace, lk.wit_package, lk.name) in keep_links:
                        continue
                    with contextlib.suppress(CtlError, TimeoutError):
                        await self.ctl.delete_link(lk.source_id, lk.wit_namespace, lk.wit_package, lk.name)
            for view in self._live_hosts():
                assert view.inventory is not None
                for desc in view.inventory.components:
                    ann = desc.annotations or {}
                    if ann.get(APPSPEC) != app or (
                        desc.id in keep_components
                        and keep is not None
                        and self._still_wanted(keep, desc.id, ann)
                    ):
                        continue
                    if any(manifest.component_id(x) == desc.id for x in manifest.components):
                        with contextlib.suppress(CtlError, TimeoutError):
                            await self.ctl.scale_component(
                                view.host_id, desc.image_ref, desc.id, 0, annotations=ann
                            )
                mine = {
                    (manifest.component_id(x), x.image) for x in manifest.components if x.kind == "capability"
                }
                for p in view.inventory.providers:
                    ann = p.annotations or {}
                    # Ours: started for this app, or the same provider this app declared (another
                    # app may have started the copy they shared). Kept while another app wants it.
                    ours = ann.get(APPSPEC) == app or (p.id, p.image_ref) in mine
                    if not ours or p.id in keep_components or (p.id, p.image_ref) in wanted_providers:
                        continue
                    with contextlib.suppress(CtlError, TimeoutError):
                        await self.ctl.stop_provider(view.host_id, p.id)
            for comp in manifest.components:
                for secret in comp.secrets:
                    ref = manifest.secret_name(secret.name)
                    if keep is None or ref not in {
                        keep.secret_name(x.name) for c in keep.components for x in c.secrets
                    }:
                        with contextlib.suppress(CtlError, TimeoutError):
                            await self.ctl.delete_config(ref)
                owned = [x.name for x in comp.config if x.properties is not None]
                for lt in comp.links:
                    owned += [
                        x.name for x in (*lt.source_config, *lt.target_config) if x.properties is not None
                    ]
                for cfg in owned:
                    full = manifest.config_name(cfg)
                    if full not in keep_configs:
                        with contextlib.suppress(CtlError, TimeoutError):
                            await self.ctl.delete_config(full)

    def _still_wanted(self, keep: Manifest, cid: str, annotations: dict[str, str]) -> bool:
        # An instance of the new version's scaler stays; one of an old scaler (other image, count
        # or spreads) goes: the new scaler places its own instances.
        for comp in keep.components:
            if keep.component_id(comp) != cid or comp.scaler is None or comp.image is None:
                continue
            return annotations.get(SCALER) in self._scaler_ids(keep, comp)
        return False

    def _scaler_ids(self, manifest: Manifest, comp: Component) -> set[str]:
        state = self.apps.get(manifest.name)
        if state is None:
            return set()
        return {s.id for s in state.scalers.values() if s.name == manifest.component_id(comp)}

    def _providers_wanted_by_others(self, app: str) -> set[tuple[str, str | None]]:
        out: set[tuple[str, str | None]] = set()
        for name, state in self.apps.items():
            if name == app:
                continue
            for comp in state.manifest.components:
                if comp.kind == "capability":
                    out.add((state.manifest.component_id(comp), comp.image))
        return out

    # -- status -----------------------------------------------------------------------------------

    def _set_status(self, name: str, state: str, message: str) -> None:
        self.statuses[name] = status_json(state, message)

    async def _emit(self, name: str) -> None:
        # Published only when it changed, as wadm does.
        status = self.statuses[name]
        if self._publish_status is None or self._emitted.get(name) == status:
            return
        before = self._emitted.get(name, {}).get("status")
        if before != status["status"]:  # the app's own state changed (not only a scaler's): log it
            info = status["status"]
            reason = f": {info['message']}" if info.get("message") else ""
            log.info("app %s: %s%s", name, info["type"], reason)
        self._emitted[name] = json.loads(json.dumps(status))
        res = self._publish_status(name, status)
        if asyncio.iscoroutine(res):
            await res
