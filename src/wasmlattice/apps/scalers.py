"""One step of each scaler of a deployed app: compare the lattice with the manifest, send what is missing.

The scalers are wadm's (see docs/apps.md, "How apps are kept running"): config with `properties` and
secret references (named configs kept equal to the manifest), components (spread or daemon placement,
from `placement.py`), providers (one copy per host) and links. Each step returns the scaler's status.
Commands carry wadm's annotations (`wasmcloud.dev/managed-by`, `appspec`, `scaler`, `spread_name`), so
that only instances carrying an app's annotations count as its own. A command is not repeated while its
effect is expected (5 s for components, links and config, 30 s for providers).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from wasmlattice.apps.manifest.model import (
    Component,
    ConfigProperty,
    LinkTrait,
    Manifest,
    SecretProperty,
)
from wasmlattice.apps.placement import HostView, place_daemon, place_provider, place_spreads
from wasmlattice.apps.status import ScalerStatus
from wasmlattice.client.ctl import CtlClient, CtlError, CtlNoHostError, CtlTimeoutError
from wasmlattice.protocol.models import Link

MANAGED_BY = "wasmcloud.dev/managed-by"
APPSPEC = "wasmcloud.dev/appspec"
SCALER = "wasmcloud.dev/scaler"
SPREAD = "wasmcloud.dev/spread_name"

EXPECT_COMPONENT_S = 5.0
EXPECT_PROVIDER_S = 30.0


def scaler_id(*parts: Any) -> str:
    """A stable ID for a scaler from what defines it (as wadm: a SHA-256 of its fields)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def config_names(manifest: Manifest, configs: Iterable[ConfigProperty]) -> list[str]:
    """The names configs are stored under: `<app>-<name>` for owned ones, the name itself otherwise."""
    return [manifest.config_name(c.name) if c.properties is not None else c.name for c in configs]


def desired_link(
    manifest: Manifest, comp: Component, lt: LinkTrait, shared: Mapping[str, Manifest]
) -> Link | None:
    """The link that trait `lt` of `comp` asks for (None if its target is not in the manifest).

    `shared` holds the deployed manifests by name, for the IDs of shared components.
    """
    by_name = {c.name: c for c in manifest.components}
    target = by_name.get(lt.target)
    if target is None:
        return None
    return Link(
        source_id=manifest.component_id(comp, shared),
        target=manifest.component_id(target, shared),
        name=lt.name,
        wit_namespace=lt.namespace,
        wit_package=lt.package,
        interfaces=list(lt.interfaces),
        source_config=config_names(manifest, lt.source_config),
        target_config=config_names(manifest, lt.target_config),
    )


def annotations_for(app: str, sid: str, spread: str | None) -> dict[str, str]:
    """The annotations that mark an instance as scaler `sid`'s of app `app` (wadm's names)."""
    out = {MANAGED_BY: "wadm", APPSPEC: app, SCALER: sid}
    if spread is not None:
        out[SPREAD] = spread
    return out


class Scalers:
    """Runs one step of any scaler, remembering which commands still await their effect."""

    def __init__(self, ctl: CtlClient) -> None:
        self.ctl = ctl
        self._expect: dict[str, float] = {}  # command key -> until when its effect is awaited

    def _due(self, key: str, expect: float) -> bool:
        """Whether a command may be sent now (none with the same key awaits its effect); records it."""
        now = time.monotonic()
        if self._expect.get(key, 0.0) > now:
            return False
        self._expect[key] = now + expect
        return True

    async def config(self, manifest: Manifest, name: str, values: dict[str, str]) -> ScalerStatus:
        """Keep owned config `name` (stored as `<app>-<name>`) equal to `values`."""
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

    async def secret_ref(self, manifest: Manifest, secret: SecretProperty) -> ScalerStatus:
        """Keep the `SECRET_<app>-<name>` reference of a component's secret (see docs/apps.md)."""
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

    async def component(
        self, app: str, manifest: Manifest, comp: Component, hosts: list[HostView]
    ) -> ScalerStatus:
        """Scale component `comp` on the live `hosts` to what its spread or daemon scaler places there."""
        scaler = comp.scaler
        assert scaler is not None and comp.image is not None
        cid = manifest.component_id(comp)
        config = config_names(manifest, comp.config) + [manifest.secret_name(x.name) for x in comp.secrets]
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
            *([sorted(comp.annotations.items())] if comp.annotations else []),
        )
        st = ScalerStatus(sid, kind, cid)
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
            placement = place_daemon(scaler.instances, spreads, hosts)
            if not placement.wanted:
                st.state, st.message = "failed", f"No eligible hosts found for daemonscaler of {cid}"
        else:
            placement = place_spreads(scaler.instances, spreads, hosts, spread_now)
            if placement.unplaced:
                st.state = "failed"
                st.message = (
                    f"Could not satisfy spread {placement.unplaced[-1].name} for {comp.image}, "
                    "0/1 eligible hosts found."
                )
        sent = False
        for v in hosts:
            have = running.get(v.host_id, 0)
            want = placement.wanted.get(v.host_id, 0)
            key = f"component:{sid}:{v.host_id}"
            if have == want:
                self._expect.pop(key, None)  # the effect arrived: a later change may act at once
                continue
            if self._due(key, EXPECT_COMPONENT_S):
                try:
                    await self.ctl.scale_component(
                        v.host_id,
                        comp.image,
                        cid,
                        want,
                        # The component's own annotations, under wadm's (which win).
                        annotations={
                            **comp.annotations,
                            **annotations_for(app, sid, placement.spread_of.get(v.host_id, "default")),
                        },
                        config=config,
                    )
                except (CtlNoHostError, CtlTimeoutError):
                    raise
                except CtlError as e:
                    # A host may refuse in its reply (a `file://` image outside what it allows):
                    # that is this scaler's failure, not the whole round's.
                    st.state, st.message = "failed", e.message
            sent = True
        if st.state != "failed":
            st.state = "reconciling" if sent else "deployed"
        return st

    async def provider(
        self, app: str, manifest: Manifest, comp: Component, hosts: list[HostView]
    ) -> ScalerStatus:
        """Start capability `comp` on as many eligible `hosts` as its scaler wants (counting any copy)."""
        scaler = comp.scaler
        assert scaler is not None and comp.image is not None
        pid = manifest.component_id(comp)
        config = config_names(manifest, comp.config)
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
        has = {
            v.host_id
            for v in hosts
            if v.inventory is not None
            and any(p.id == pid and p.image_ref == comp.image for p in v.inventory.providers)
        }
        placement = place_provider(
            scaler.instances, scaler.kind == "daemonscaler", scaler.spread or [], hosts, has
        )
        for v in placement.running:
            self._expect.pop(f"provider:{pid}:{v.host_id}", None)
        sent = False
        for v in placement.start:
            if self._due(f"provider:{pid}:{v.host_id}", EXPECT_PROVIDER_S):
                await self.ctl.start_provider(
                    v.host_id, comp.image, pid, config=config, annotations=annotations_for(app, sid, None)
                )
            sent = True
        if len(placement.eligible) < placement.target:
            st.state = "failed"
            st.message = (
                f"Could not start provider {pid} for {comp.image}: "
                f"{len(placement.eligible)}/{placement.target} eligible hosts found."
            )
        else:
            st.state = "reconciling" if sent else "deployed"
        return st

    async def link(
        self,
        manifest: Manifest,
        comp: Component,
        lt: LinkTrait,
        links: list[Link],
        shared: Mapping[str, Manifest],
    ) -> ScalerStatus:
        """Put the link of trait `lt` unless `links` (the lattice's) already hold it."""
        want = desired_link(manifest, comp, lt, shared)
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
