"""Keeping deployed applications running: observe the lattice, compare with the manifests, act.

Reference: docs/wadm.md#watching-the-lattice, docs/wadm.md#reconciling and
docs/wadm.md#hosts-going-away. Where wadm keeps a replicated event-sourced state and reacts to each
event, this reconciler takes a fresh look at the lattice on every round (host pings, inventories,
links) and computes, per deployed application, what each scaler wants:

- a **spread** of a component: its instances split over the spreads by weight, each spread's
  share placed on one eligible host (a host whose labels include every requirement), preferring
  one that already runs it; instances on hosts that match no spread are scaled to 0;
- a **daemon** component: `instances` on every eligible host;
- a **provider** (capability): one copy on as many eligible hosts as `instances` (spread) or on
  every eligible host (daemon); a provider with the same ID and image on a host counts whoever
  started it, so apps share providers;
- **config** with `properties`: the named config `<app>-<name>`, kept equal to the manifest;
- **links**: each link trait, with its configs.

Commands carry wadm's annotations (`wasmcloud.dev/managed-by`, `appspec`, `scaler`,
`spread_name`); only instances carrying an app's annotations count as its own, and undeploying
removes only those. A command is not repeated while its effect is expected (5 s for components,
links and config, 30 s for providers); a failure event for it marks the scaler `failed` with the
host's reason. A host that stops is dropped at once (its `host_stopped` event), and so is one whose
inventory request finds nobody listening (its process died, so NATS dropped its subscriptions);
one that stops answering without leaving NATS (hung, cut off) is dropped when it has not answered
a ping for `host_timeout` seconds (10 s by default, where wadm waits 70 s). Its work is placed on
the remaining eligible hosts in the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wasmlattice.apps.manifest import Component, LinkTrait, Manifest, SecretProperty, distribute
from wasmlattice.client.ctl import CtlClient, CtlError, CtlNoHostError
from wasmlattice.protocol.models import HostInventory, Link

log = logging.getLogger(__name__)

MANAGED_BY = "wasmcloud.dev/managed-by"
APPSPEC = "wasmcloud.dev/appspec"
SCALER = "wasmcloud.dev/scaler"
SPREAD = "wasmcloud.dev/spread_name"

DEFAULT_HOST_TIMEOUT_S = 10.0
ROUND_INTERVAL_S = 1.0
EXPECT_COMPONENT_S = 5.0
EXPECT_PROVIDER_S = 30.0
FAILURE_HOLD_S = 5.0

# Precedence of scaler states in an app's status (docs/wadm.md#status).
PRECEDENCE = ["failed", "undeployed", "waiting", "reconciling", "unhealthy", "deployed"]


@dataclass
class HostView:
    """One live host as the last round saw it."""

    host_id: str
    labels: dict[str, str]
    last_seen: float
    inventory: HostInventory | None = None


@dataclass
class ScalerStatus:
    """One scaler's entry in an app status."""

    id: str
    kind: str
    name: str
    state: str = "reconciling"
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        """wadm's scaler status shape (docs/wadm.md#api)."""
        status: dict[str, Any] = {"type": self.state}
        if self.message:
            status["message"] = self.message
        return {"id": self.id, "kind": self.kind, "name": self.name, "status": status}


@dataclass
class AppState:
    """A deployed app as the reconciler tracks it."""

    manifest: Manifest
    scalers: dict[str, ScalerStatus] = field(default_factory=dict)
    previous: Manifest | None = None  # the version replaced by an upgrade, until it is cleaned up


def scaler_id(*parts: Any) -> str:
    """A stable ID for a scaler from what defines it (as wadm: a SHA-256 of its fields)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def eligible(labels: dict[str, str], requirements: dict[str, str]) -> bool:
    """Whether a host with `labels` meets every requirement."""
    return all(labels.get(k) == v for k, v in requirements.items())


def combine(states: list[str]) -> str:
    """An app's state from its scalers' states, by wadm's precedence (docs/wadm.md#status)."""
    if not states:
        return "undeployed"
    return min(states, key=PRECEDENCE.index)


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
        self._expect: dict[str, float] = {}  # command key -> until when its effect is awaited
        self._failures: dict[str, tuple[str, float]] = {}  # scaler id -> (reason, until)
        self._emitted: dict[str, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._sub: Any = None
        self.active = True  # False while another manager holds the lease: observe, do not act

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
        self.statuses[name] = {
            "status": {"type": "undeployed", "message": "Manifest has been undeployed"},
            "scalers": [],
            "version": "",
            "components": [],
        }
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
            await asyncio.wait_for(self._wake.wait(), self.interval)

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
        elif kind in ("host_started", "host_heartbeat") and host_id in self.hosts:
            self.hosts[host_id].last_seen = now
        elif kind in ("component_scale_failed", "provider_start_failed"):
            annotations = data.get("annotations") or {}
            sid = annotations.get(SCALER)
            if sid:
                self._failures[sid] = (str(data.get("error", "failed")), now + FAILURE_HOLD_S)
        self.poke()

    # -- one round ----------------------------------------------------------------------------

    async def observe(self) -> None:
        """Refresh the live hosts (ping), their inventories, and drop hosts silent too long."""
        now = time.monotonic()
        for host in await self.ctl.ping_hosts(wait=0.25):
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
        """Observe once and bring every deployed app closer to its manifest."""
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

    # -- per app --------------------------------------------------------------------------------

    async def _reconcile_app(self, name: str, state: AppState, links: list[Link]) -> None:
        manifest = state.manifest
        statuses: dict[str, ScalerStatus] = {}
        if not self.hosts:
            self._set_status(
                name, "waiting", "Waiting for status: Lattice contains no hosts, deployment not started."
            )
            await self._emit(name)
            return
        # Config and secret references first: the components and links below name them.
        for comp in manifest.components:
            for secret in comp.secrets:
                st = await self._secret_ref(manifest, secret)
                statuses[st.id] = st
            for cfg in comp.config:
                if cfg.properties is not None:
                    st = await self._config(manifest, cfg.name, cfg.properties)
                    statuses[st.id] = st
            for lt in comp.links:
                for cfg in (*lt.source_config, *lt.target_config):
                    if cfg.properties is not None:
                        st = await self._config(manifest, cfg.name, cfg.properties)
                        statuses[st.id] = st
        for comp in manifest.components:
            if comp.scaler is not None and comp.image is not None:
                if comp.kind == "capability":
                    st = await self._provider(name, manifest, comp)
                else:
                    st = await self._component(name, manifest, comp)
                statuses[st.id] = st
            for lt in comp.links:
                st = await self._link(manifest, comp, lt, links)
                statuses[st.id] = st
        now = time.monotonic()
        for sid, st in statuses.items():
            failure = self._failures.get(sid)
            if failure is not None and failure[1] > now:
                st.state, st.message = "failed", failure[0]
        state.scalers = statuses
        app_state = combine([s.state for s in statuses.values()])
        message = ", ".join(s.message for s in statuses.values() if s.message and s.state != "deployed")
        self.statuses[name] = {
            "status": {"type": app_state, **({"message": message} if message else {})},
            "scalers": [s.to_json() for s in statuses.values()],
            "version": "",
            "components": [],
        }
        await self._emit(name)

    def _config_names(self, manifest: Manifest, configs: Any) -> list[str]:
        return [manifest.config_name(c.name) if c.properties is not None else c.name for c in configs]

    async def _config(self, manifest: Manifest, name: str, values: dict[str, str]) -> ScalerStatus:
        full = manifest.config_name(name)
        st = ScalerStatus(scaler_id("config", manifest.name, full, values), "ConfigScaler", full)
        return await self._keep_config(full, values, st)

    async def _keep_config(self, full: str, values: dict[str, str], st: ScalerStatus) -> ScalerStatus:
        """Put named config `full` unless it already holds `values`; `st` says which."""
        current = await self.ctl.get_config(full)
        if current == values:
            self._expect.pop(f"config:{full}", None)
            st.state = "deployed"
        elif self._due(f"config:{full}", EXPECT_COMPONENT_S):
            await self.ctl.put_config(full, values)
        return st

    async def _secret_ref(self, manifest: Manifest, secret: SecretProperty) -> ScalerStatus:
        """Keep the `SECRET_<app>-<name>` reference of a component's secret (docs/protocol.md#kv-layout)."""
        full = manifest.secret_name(secret.name)
        st = ScalerStatus(scaler_id("secret", manifest.name, full, secret), "SecretScaler", full)
        policy = next((p for p in manifest.policies if p.name == secret.policy), None)
        if policy is None:
            st.state, st.message = "failed", f"secret {secret.name}: no policy named {secret.policy}"
            return st
        props = dict(policy.properties)
        values = {
            "name": secret.name,
            "type": "secret.wasmcloud.dev/v1alpha1",
            "backend": props.pop("backend", ""),
            "key": secret.key,
            "policy": json.dumps({"type": "properties.secret.wasmcloud.dev/v1alpha1", "properties": props}),
        }
        if secret.field:
            values["field"] = secret.field
        if secret.version:
            values["version"] = secret.version
        return await self._keep_config(full, values, st)

    def _due(self, key: str, expect: float) -> bool:
        """Whether a command may be sent now (none with the same key awaits its effect); records it."""
        now = time.monotonic()
        if self._expect.get(key, 0.0) > now:
            return False
        self._expect[key] = now + expect
        return True

    def _annotations(self, app: str, sid: str, spread: str | None) -> dict[str, str]:
        out = {MANAGED_BY: "wadm", APPSPEC: app, SCALER: sid}
        if spread is not None:
            out[SPREAD] = spread
        return out

    def _live_hosts(self) -> list[HostView]:
        return sorted((v for v in self.hosts.values() if v.inventory is not None), key=lambda v: v.host_id)

    async def _component(self, app: str, manifest: Manifest, comp: Component) -> ScalerStatus:
        scaler = comp.scaler
        assert scaler is not None and comp.image is not None
        cid = manifest.component_id(comp)
        config = self._config_names(manifest, comp.config) + [
            manifest.secret_name(x.name) for x in comp.secrets
        ]
        kind = "SpreadScaler" if scaler.kind == "spreadscaler" else "DaemonScaler"
        sid = scaler_id(
            kind,
            manifest.name,
            comp.name,
            cid,
            comp.image,
            config,
            scaler.instances,
            [(s.name, s.requirements, s.weight) for s in scaler.spread],
        )
        st = ScalerStatus(sid, kind, cid)
        hosts = self._live_hosts()
        running: dict[str, int] = {}  # host -> instances carrying this scaler's annotations
        spread_now: dict[str, str] = {}  # host -> the spread those instances were placed for
        for v in hosts:
            assert v.inventory is not None
            for c in v.inventory.components:
                ann = c.annotations or {}
                if c.id == cid and ann.get(SCALER) == sid:
                    running[v.host_id] = c.max_instances
                    spread_now[v.host_id] = ann.get(SPREAD, "")
        spreads = scaler.spread or []
        if scaler.kind == "daemonscaler":
            wanted = {
                v.host_id: scaler.instances
                for v in hosts
                if not spreads or any(eligible(v.labels, s.requirements) for s in spreads)
            }
            spread_of = {h: (spreads[0].name if spreads else "default") for h in wanted}
            if not wanted:
                st.state, st.message = "failed", f"No eligible hosts found for daemonscaler of {cid}"
        else:
            wanted, spread_of = {}, {}
            shares = distribute(scaler.instances, spreads) if spreads else []
            if not spreads:
                from wasmlattice.apps.manifest import Spread

                shares = [(Spread("default", {}, None), scaler.instances)]
            # Spreads that already run on a fitting host stay there; then the others are placed,
            # so that losing one host moves only its spread (no reshuffle of the rest).
            placed_here = {
                spread.name: v.host_id
                for spread, _ in shares
                for v in hosts
                if spread_now.get(v.host_id) == spread.name and eligible(v.labels, spread.requirements)
            }
            for spread, count in sorted(shares, key=lambda sc: sc[0].name not in placed_here):
                if count == 0:
                    continue
                fitting = [v for v in hosts if eligible(v.labels, spread.requirements)]
                if not fitting:
                    st.state = "failed"
                    st.message = (
                        f"Could not satisfy spread {spread.name} for {comp.image}, 0/1 eligible hosts found."
                    )
                    continue
                # Else the least loaded host no other spread took; else share a host with another
                # spread (one entry per host holds their sum).
                home = placed_here.get(spread.name)
                free = [v for v in fitting if v.host_id not in wanted]
                if home is not None and home not in wanted:
                    pick = next(v for v in fitting if v.host_id == home)
                elif free:
                    pick = min(free, key=lambda v: len(v.inventory.components if v.inventory else []))
                else:
                    pick = min(fitting, key=lambda v: wanted[v.host_id])
                wanted[pick.host_id] = wanted.get(pick.host_id, 0) + count
                spread_of.setdefault(pick.host_id, spread.name)
        sent = False
        for v in hosts:
            have = running.get(v.host_id, 0)
            want = wanted.get(v.host_id, 0)
            key = f"component:{sid}:{v.host_id}"
            if have == want:
                self._expect.pop(key, None)  # the effect arrived: a later change may act at once
                continue
            if self._due(key, EXPECT_COMPONENT_S):
                await self.ctl.scale_component(
                    v.host_id,
                    comp.image,
                    cid,
                    want,
                    annotations=self._annotations(app, sid, spread_of.get(v.host_id, "default")),
                    config=config,
                )
            sent = True
        if st.state != "failed":
            st.state = "reconciling" if sent else "deployed"
        return st

    async def _provider(self, app: str, manifest: Manifest, comp: Component) -> ScalerStatus:
        scaler = comp.scaler
        assert scaler is not None and comp.image is not None
        pid = manifest.component_id(comp)
        config = self._config_names(manifest, comp.config)
        kind = "SpreadScaler" if scaler.kind == "spreadscaler" else "DaemonScaler"
        sid = scaler_id(
            "provider",
            kind,
            manifest.name,
            comp.name,
            pid,
            comp.image,
            config,
            scaler.instances,
            [(s.name, s.requirements) for s in scaler.spread],
        )
        st = ScalerStatus(sid, kind, pid)
        hosts = self._live_hosts()
        spreads = scaler.spread or []

        def matches(v: HostView) -> bool:
            return not spreads or any(eligible(v.labels, s.requirements) for s in spreads)

        candidates = [v for v in hosts if matches(v)]
        has = {
            v.host_id
            for v in hosts
            if v.inventory is not None
            and any(p.id == pid and p.image_ref == comp.image for p in v.inventory.providers)
        }
        target = len(candidates) if scaler.kind == "daemonscaler" else scaler.instances
        running = [v for v in candidates if v.host_id in has]
        for v in running:
            self._expect.pop(f"provider:{pid}:{v.host_id}", None)
        missing = max(0, target - len(running))
        free = [v for v in candidates if v.host_id not in has]
        sent = False
        for v in free[:missing]:
            if self._due(f"provider:{pid}:{v.host_id}", EXPECT_PROVIDER_S):
                await self.ctl.start_provider(
                    v.host_id, comp.image, pid, config=config, annotations=self._annotations(app, sid, None)
                )
            sent = True
        if len(candidates) < target:
            st.state = "failed"
            st.message = (
                f"Could not start provider {pid} for {comp.image}: "
                f"{len(candidates)}/{target} eligible hosts found."
            )
        else:
            st.state = "reconciling" if sent else "deployed"
        return st

    def _link_of(self, manifest: Manifest, comp: Component, lt: LinkTrait) -> Link | None:
        by_name = {c.name: c for c in manifest.components}
        target = by_name.get(lt.target)
        if target is None:
            return None
        shared = {n: st.manifest for n, st in self.apps.items()}
        return Link(
            source_id=manifest.component_id(comp, shared),
            target=manifest.component_id(target, shared),
            name=lt.name,
            wit_namespace=lt.namespace,
            wit_package=lt.package,
            interfaces=list(lt.interfaces),
            source_config=self._config_names(manifest, lt.source_config),
            target_config=self._config_names(manifest, lt.target_config),
        )

    async def _link(
        self, manifest: Manifest, comp: Component, lt: LinkTrait, links: list[Link]
    ) -> ScalerStatus:
        want = self._link_of(manifest, comp, lt)
        name = f"{manifest.component_id(comp)} -({lt.namespace}:{lt.package})-> {lt.target}"
        sid = scaler_id("link", manifest.name, want.model_dump() if want is not None else lt.target)
        st = ScalerStatus(sid, "LinkScaler", name)
        if want is None:
            st.state, st.message = "failed", f"link target {lt.target} is not a component of {manifest.name}"
            return st
        if any(_same_link(want, have) for have in links):
            self._expect.pop(f"link:{sid}", None)
            st.state = "deployed"
            return st
        if self._due(f"link:{sid}", EXPECT_COMPONENT_S):
            try:
                await self.ctl.put_link(want)
            except CtlError as e:
                st.state, st.message = "failed", e.message
        return st

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
                    lk = self._link_of(keep, c, lt)
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
                    lk = self._link_of(manifest, comp, lt)
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
        self.statuses[name] = {
            "status": {"type": state, **({"message": message} if message else {})},
            "scalers": [],
            "version": "",
            "components": [],
        }

    async def _emit(self, name: str) -> None:
        # Published only when it changed (docs/wadm.md#status).
        status = self.statuses[name]
        if self._publish_status is None or self._emitted.get(name) == status:
            return
        self._emitted[name] = json.loads(json.dumps(status))
        res = self._publish_status(name, status)
        if asyncio.iscoroutine(res):
            await res


def _same_link(a: Link, b: Link) -> bool:
    return (
        a.source_id == b.source_id
        and a.target == b.target
        and a.name == b.name
        and a.wit_namespace == b.wit_namespace
        and a.wit_package == b.wit_package
        and sorted(a.interfaces) == sorted(b.interfaces)
        and list(a.source_config) == list(b.source_config)
        and list(a.target_config) == list(b.target_config)
    )
