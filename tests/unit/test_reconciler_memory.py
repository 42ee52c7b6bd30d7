"""The app manager keeps what lattice events tell it only while an app or a host still has it:
events may come from any client of the lattice, so they must not grow its memory without end."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from wasmlattice.apps.placement import HostView
from wasmlattice.apps.reconciler import AppState, Reconciler
from wasmlattice.apps.scalers import SCALER
from wasmlattice.apps.status import ScalerStatus
from wasmlattice.protocol.models import HostInventory, ProviderDescription


def event(kind: str, **data: object) -> SimpleNamespace:
    """A lattice event as NATS delivers it (only `data` is read)."""
    return SimpleNamespace(data=json.dumps({"type": f"com.wasmcloud.lattice.{kind}", "data": data}).encode())


async def test_events_about_unknown_scalers_hosts_and_providers_are_forgotten() -> None:
    rec = Reconciler(None, "test")
    inventory = HostInventory(host_id="H1", providers=[ProviderDescription(id="web")])
    rec.hosts["H1"] = HostView("H1", {}, time.monotonic(), inventory)
    app = AppState(manifest=None)  # type: ignore[arg-type]
    app.scalers = {"s-live": ScalerStatus("s-live", "SpreadScaler", "app-c")}
    rec.apps["app"] = app

    for i in range(1000):
        ann = {SCALER: f"s-{i}"}
        await rec._on_event(event("component_scale_failed", host_id="H1", annotations=ann, error="no"))
        await rec._on_event(event("health_check_failed", host_id="H1", provider_id=f"p{i}"))
        await rec._on_event(event("health_check_passed", host_id=f"ghost{i}", provider_id="web"))
    await rec._on_event(
        event("component_scale_failed", host_id="H1", annotations={SCALER: "s-live"}, error="x")
    )
    await rec._on_event(event("health_check_failed", host_id="H1", provider_id="web"))
    assert len(rec._failures) == 1001 and len(rec._unhealthy) == 1001

    rec._forget_the_gone()
    # Only the failure of a scaler an app has, and the health of a provider a host runs, remain.
    assert rec._failures == {"s-live": "x"}
    assert rec._unhealthy == {("H1", "web"): ""}
    assert rec._passed == set()
