"""The lattice as wadm stores it: `host_<lattice>`, `component_<lattice>`, `provider_<lattice>`.

wadm keeps its view of a lattice in the `wadm_state` KV bucket, one key per kind, each a JSON map
ID -> object (docs/apps.md, "wadm's lattice state"; wadm's `crates/wadm/src/storage/state.rs` and
`nats_kv.rs`, https://github.com/wasmCloud/wadm). Tools
written for wadm read the lattice from there (washboard did), so the leading app manager writes
the same keys, in the same shapes, from what its reconcile round saw:

    host_<lattice>:      {host_id: {"components": {component_id: max_instances}, "friendly_name",
                          "labels", "providers": [{"provider_id", "provider_ref", "annotations"}],
                          "uptime_seconds", "version": semver | null, "id", "last_seen": RFC 3339}}
    component_<lattice>: {component_id: {"id", "name", "issuer", "instances":
                          {host_id: [{"annotations": {...}, "count": max_instances}]}, "reference"}}
    provider_<lattice>:  {provider_id: {"id", "name", "issuer", "reference",
                          "hosts": {host_id: "Pending" | "Running" | "Failed"}}}

A provider is `Pending` until a health event is seen for it, then `Running`, `Failed` after a
failed check (as wadm decides it). `issuer` is empty: the inventory does not say who signed what,
and wadm leaves it empty for unsigned components too. A key is written when its content changed,
and every `REFRESH_S` regardless (so `last_seen` and `uptime_seconds` stay fresh, as wadm's
heartbeat handling keeps them).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from wasmlattice.apps.placement import HostView

log = logging.getLogger(__name__)

REFRESH_S = 30.0
KINDS = ("host", "component", "provider")
# semver 2.0.0 (https://semver.org): wadm's Host.version is a `semver::Version` or null, and a
# reader fails on the whole map if one host's version does not parse.
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def state_key(kind: str, lattice: str) -> str:
    """wadm's key of one kind's map: `host_<lattice>`, `component_<lattice>`, `provider_<lattice>`."""
    return f"{kind}_{lattice}"


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def provider_status(kind: str, current: str | None) -> str | None:
    """A provider copy's wadm status after a health event of `kind` (None: forget it)."""
    if kind == "health_check_failed":
        return "Failed"
    if kind == "health_check_passed":
        return "Running"
    if kind == "health_check_status":
        # wadm: a status report for a copy pending (or never seen) means it runs; a failed one
        # stays failed until a check passes.
        return current if current == "Failed" else "Running"
    if kind == "provider_stopped":
        return None
    return current


def build_state(
    hosts: Iterable[HostView],
    provider_health: Mapping[tuple[str, str], str],
    *,
    now: float | None = None,
    now_mono: float | None = None,
) -> dict[str, dict[str, Any]]:
    """The three maps (kind -> ID -> object) for the hosts whose inventory is known."""
    wall = time.time() if now is None else now
    mono = time.monotonic() if now_mono is None else now_mono
    host_map: dict[str, Any] = {}
    components: dict[str, Any] = {}
    providers: dict[str, Any] = {}
    for view in sorted(hosts, key=lambda v: v.host_id):
        inv = view.inventory
        if inv is None:
            continue
        host_id = view.host_id
        version = inv.version if _SEMVER.match(inv.version or "") else None
        # Field order as wadm serializes its structs (serde keeps declaration order).
        host_map[host_id] = {
            "components": {c.id: c.max_instances for c in inv.components},
            "friendly_name": inv.friendly_name,
            "labels": dict(inv.labels),
            "providers": [
                {
                    "provider_id": p.id,
                    "provider_ref": p.image_ref or "",
                    "annotations": dict(sorted((p.annotations or {}).items())),
                }
                for p in inv.providers
            ],
            "uptime_seconds": inv.uptime_seconds,
            "version": version,
            "id": host_id,
            "last_seen": _rfc3339(wall - max(0.0, mono - view.last_seen)),
        }
        for c in inv.components:
            comp = components.setdefault(
                c.id,
                {"id": c.id, "name": c.name or "", "issuer": "", "instances": {}, "reference": c.image_ref},
            )
            if not comp["name"] and c.name:
                comp["name"] = c.name
            comp["instances"][host_id] = [
                {"annotations": dict(sorted((c.annotations or {}).items())), "count": c.max_instances}
            ]
        for p in inv.providers:
            prov = providers.setdefault(
                p.id,
                {"id": p.id, "name": p.name or "", "issuer": "", "reference": p.image_ref or "", "hosts": {}},
            )
            prov["hosts"][host_id] = provider_health.get((host_id, p.id), "Pending")
    return {"host": host_map, "component": components, "provider": providers}


def _stable(kind: str, value: dict[str, Any]) -> str:
    """The content of one map without what changes every round (last seen, uptime)."""
    if kind == "host":
        moving = ("last_seen", "uptime_seconds")
        value = {k: {f: v for f, v in h.items() if f not in moving} for k, h in value.items()}
    return json.dumps(value, sort_keys=True)


class WadmStateWriter:
    """Writes the three keys into the `wadm_state` bucket when their content changes."""

    def __init__(self, kv: Any, lattice: str, refresh: float = REFRESH_S) -> None:
        self.kv = kv
        self.lattice = lattice
        self.refresh = refresh
        self._written: dict[str, tuple[str, float]] = {}  # kind -> (stable content, when written)
        self._failing = False

    def forget(self) -> None:
        """Write every key at the next update (this manager just took the lease)."""
        self._written.clear()

    async def update(
        self, hosts: Iterable[HostView], provider_health: Mapping[tuple[str, str], str]
    ) -> list[str]:
        """Write the keys whose content changed (or is older than `refresh`); the kinds written."""
        state = build_state(hosts, provider_health)
        now = time.monotonic()
        written: list[str] = []
        try:
            for kind in KINDS:
                stable = _stable(kind, state[kind])
                last = self._written.get(kind)
                if last is not None and last[0] == stable and now - last[1] < self.refresh:
                    continue
                body = json.dumps(state[kind], separators=(",", ":")).encode()
                await self.kv.put(state_key(kind, self.lattice), body)
                self._written[kind] = (stable, now)
                written.append(kind)
        except Exception as e:
            if not self._failing:
                log.warning("wadm_state of lattice %s not updated: %s", self.lattice, e)
            self._failing = True
            return written
        if self._failing:
            log.info("wadm_state of lattice %s updated again", self.lattice)
            self._failing = False
        return written
