"""wadm's lattice state layout (`wadm_state` keys), pinned to wadm's JSON shapes.

The golden document below is what wadm's serde derives produce for its `Host`, `Component` and
`Provider` structs (wadm `crates/wadm/src/storage/state.rs`, `events/data.rs` for `ProviderInfo`):
field names, nesting and order, provider statuses as unit variant names.
"""

from __future__ import annotations

import json
from typing import Any

from wasmlattice.apps.placement import HostView
from wasmlattice.apps.wadm_state import WadmStateWriter, build_state, provider_status, state_key
from wasmlattice.protocol.models import ComponentDescription, HostInventory, ProviderDescription

HOST_A = "NAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
HOST_B = "NBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
APP = {"wasmcloud.dev/appspec": "shop", "wasmcloud.dev/managed-by": "wadm"}


def views() -> list[HostView]:
    a = HostInventory(
        host_id=HOST_A,
        friendly_name="quiet-river-1234",
        labels={"zone": "a"},
        version="0.1.0",
        uptime_seconds=42,
        components=[
            ComponentDescription(
                id="shop-api", image_ref="ghcr.io/x/api:1", name="api", annotations=APP, max_instances=3
            )
        ],
        providers=[
            ProviderDescription(id="http", image_ref="builtin://http-server", name="http", annotations=APP)
        ],
    )
    b = HostInventory(
        host_id=HOST_B,
        friendly_name="loud-sea-5678",
        labels={},
        version="not semver",
        uptime_seconds=7,
        components=[
            ComponentDescription(id="shop-api", image_ref="ghcr.io/x/api:1", annotations=APP, max_instances=2)
        ],
        providers=[],
    )
    # last_seen is monotonic in the view: 2 s before "now" for A, 10 s for B.
    return [HostView(HOST_A, {}, 98.0, a), HostView(HOST_B, {}, 90.0, b), HostView("NGONE", {}, 99.0, None)]


GOLDEN: dict[str, Any] = {
    "host": {
        HOST_A: {
            "components": {"shop-api": 3},
            "friendly_name": "quiet-river-1234",
            "labels": {"zone": "a"},
            "providers": [
                {"provider_id": "http", "provider_ref": "builtin://http-server", "annotations": APP}
            ],
            "uptime_seconds": 42,
            "version": "0.1.0",
            "id": HOST_A,
            "last_seen": "2024-01-01T00:00:00.000000Z",
        },
        HOST_B: {
            "components": {"shop-api": 2},
            "friendly_name": "loud-sea-5678",
            "labels": {},
            "providers": [],
            "uptime_seconds": 7,
            "version": None,
            "id": HOST_B,
            "last_seen": "2023-12-31T23:59:52.000000Z",
        },
    },
    "component": {
        "shop-api": {
            "id": "shop-api",
            "name": "api",
            "issuer": "",
            "instances": {
                HOST_A: [{"annotations": APP, "count": 3}],
                HOST_B: [{"annotations": APP, "count": 2}],
            },
            "reference": "ghcr.io/x/api:1",
        }
    },
    "provider": {
        "http": {
            "id": "http",
            "name": "http",
            "issuer": "",
            "reference": "builtin://http-server",
            "hosts": {HOST_A: "Running"},
        }
    },
}
NOW = 1704067202.0  # 2024-01-01T00:00:02Z


def test_state_matches_wadms_shapes_field_for_field_and_in_order() -> None:
    state = build_state(views(), {(HOST_A, "http"): "Running"}, now=NOW, now_mono=100.0)
    assert state == GOLDEN
    # serde writes struct fields in declaration order; so do we.
    assert list(state["host"][HOST_A]) == list(GOLDEN["host"][HOST_A])
    assert list(state["component"]["shop-api"]) == ["id", "name", "issuer", "instances", "reference"]
    assert list(state["provider"]["http"]) == ["id", "name", "issuer", "reference", "hosts"]
    assert list(state["host"][HOST_A]["providers"][0]) == ["provider_id", "provider_ref", "annotations"]


def test_provider_statuses_follow_wadms_rules() -> None:
    assert build_state(views(), {}, now=NOW, now_mono=100.0)["provider"]["http"]["hosts"] == {
        HOST_A: "Pending"
    }
    s = provider_status("health_check_status", None)
    assert s == "Running"
    s = provider_status("health_check_failed", s)
    assert s == "Failed"
    assert provider_status("health_check_status", s) == "Failed"
    assert provider_status("health_check_passed", s) == "Running"
    assert provider_status("provider_stopped", "Running") is None
    assert provider_status("linkdef_set", "Failed") == "Failed"


class MemoryKv:
    """The two KV calls the writer makes, kept in a dict (the integration test uses real JetStream)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.puts: list[str] = []

    async def put(self, key: str, value: bytes) -> int:
        self.data[key] = value
        self.puts.append(key)
        return len(self.puts)


async def test_keys_are_written_only_when_their_content_changes() -> None:
    kv = MemoryKv()
    writer = WadmStateWriter(kv, "prod", refresh=3600)
    hs = views()
    assert await writer.update(hs, {}) == ["host", "component", "provider"]
    assert sorted(kv.data) == [state_key(k, "prod") for k in ("component", "host", "provider")]
    assert json.loads(kv.data["host_prod"])[HOST_A]["id"] == HOST_A
    # Only last_seen and uptime moved: nothing is written.
    hs[0].last_seen += 5
    assert hs[0].inventory is not None
    hs[0].inventory.uptime_seconds += 5
    assert await writer.update(hs, {}) == []
    # A provider became healthy: only the provider key changes.
    assert await writer.update(hs, {(HOST_A, "http"): "Running"}) == ["provider"]
    # A host left: its components and providers go with it.
    assert await writer.update(hs[1:], {}) == ["host", "component", "provider"]
    assert json.loads(kv.data["provider_prod"]) == {}
    assert list(json.loads(kv.data["host_prod"])) == [HOST_B]
    # After `forget` (a new leader) everything is written once.
    writer.forget()
    assert await writer.update(hs[1:], {}) == ["host", "component", "provider"]
