"""Metrics (observability/metrics.py): names, where they are counted, `/metrics`, OTLP export.

Scrapes go over real HTTP to the `/metrics` endpoint; OTLP export goes through the real
exporter to a receiver the test runs. The guest-call path (`start_guest`) is driven with plain
Python runners, as HTTP and wRPC hand it theirs.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import free_port
from wasmlattice.capabilities.catalog import counted
from wasmlattice.observability.metrics import (
    AppMetrics,
    HostMetrics,
    InstanceCount,
    Metrics,
    MetricsError,
    open_metrics,
    parse_listen,
    start_host_metrics,
)
from wasmlattice.observability.settings import ObservabilitySettings
from wasmlattice.runtime.execution import NeedsLoop, SlotTimeout, Workload, start_guest
from wasmlattice.runtime.linking import HostInterface
from wasmlattice.runtime.witypes import Err

OP = "wasi:http/incoming-handler/handle"
# The Prometheus names of every metric (wasmCloud's host metrics, then ours), as scraped.
PROMETHEUS_NAMES = {
    "wasmcloud_host_handle_rpc_message_duration_nanoseconds",
    "wasmcloud_host_component_invocations",
    "wasmcloud_host_component_invocation_errors",
    "wasmcloud_host_component_active_instances",
    "wasmcloud_host_component_max_instances",
    "wasmcloud_host_process_memory_total_bytes",
    "wasmcloud_host_process_memory_used_bytes",
    "wasmcloud_host_process_cpu_usage_percent",
    "wasmlattice_http_server_requests",
    "wasmlattice_capability_calls",
    "wasmlattice_apps_reconcile_rounds",
    "wasmlattice_apps_status",
}


@pytest.fixture
async def metrics() -> AsyncIterator[Metrics]:
    m = await open_metrics(ObservabilitySettings(metrics_listen="127.0.0.1:0"))
    assert m is not None
    yield m
    await m.release()


async def scrape(m: Metrics) -> dict[str, Any]:
    """Every sample on `/metrics`, by family name: [(sample name, labels, value)]."""
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{m.port}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    return {
        f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)
    }


def value(families: dict[str, Any], sample: str, **labels: str) -> float | None:
    for samples in families.values():
        for name, got, v in samples:
            if name == sample and all(got.get(k) == want for k, want in labels.items()):
                return float(v)
    return None


async def test_names_and_attributes_as_wasmcloud(metrics: Metrics) -> None:
    host = HostMetrics(metrics, "NHOST", "default")
    host.component("echo", "file:///echo.wasm").invoked(OP, 2_000_000, False)
    host.observe_instances(lambda: [InstanceCount("echo", "file:///echo.wasm", 1, 4)])
    host.http_request("echo", "GET", 200)
    host.capability_call("echo", "wasi:keyvalue/store", "[method]bucket.get", True)
    apps = AppMetrics(metrics, "default", "m1")
    apps.reconcile_round(True, True)
    apps.observe_statuses(lambda: ["deployed", "deployed", "failed"])
    got = await scrape(metrics)
    assert set(got) - {"target_info"} == PROMETHEUS_NAMES, set(got) ^ PROMETHEUS_NAMES
    # wasmCloud's attributes on an invocation: component.ref, lattice, host, operation.
    (inv,) = [
        labels for name, labels, _ in got["wasmcloud_host_component_invocations"] if name.endswith("_total")
    ]
    assert {k: inv[k] for k in ("component_id", "component_ref", "host", "lattice", "operation")} == {
        "component_id": "echo",
        "component_ref": "file:///echo.wasm",
        "host": "NHOST",
        "lattice": "default",
        "operation": OP,
    }
    assert value(got, "wasmcloud_host_component_invocations_total", component_id="echo") == 1.0
    assert value(got, "wasmcloud_host_component_invocation_errors_total", component_id="echo") == 0.0
    # The histogram is in nanoseconds, with buckets that separate a 2 ms call from a 20 ms one.
    assert value(got, "wasmcloud_host_handle_rpc_message_duration_nanoseconds_sum") == 2_000_000.0
    assert value(got, "wasmcloud_host_handle_rpc_message_duration_nanoseconds_bucket", le="2500000.0") == 1.0
    assert value(got, "wasmcloud_host_handle_rpc_message_duration_nanoseconds_bucket", le="1000000.0") == 0.0
    assert value(got, "wasmcloud_host_component_active_instances", component_id="echo") == 1.0
    assert value(got, "wasmcloud_host_component_max_instances", component_id="echo") == 4.0
    assert value(got, "wasmlattice_http_server_requests_total", http_response_status_code="200") == 1.0
    assert (
        value(got, "wasmlattice_capability_calls_total", interface="wasi:keyvalue/store", outcome="ok") == 1.0
    )
    assert value(got, "wasmlattice_apps_reconcile_rounds_total", role="leader", outcome="ok") == 1.0
    assert value(got, "wasmlattice_apps_status", status="deployed") == 2.0
    assert value(got, "wasmlattice_apps_status", status="failed") == 1.0
    assert value(got, "wasmlattice_apps_status", status="reconciling") == 0.0
    assert (value(got, "wasmcloud_host_process_memory_used_bytes") or 0) > 1_000_000


async def test_start_guest_counts_every_outcome(metrics: Metrics) -> None:
    host = HostMetrics(metrics, "NHOST", "default")
    workload = Workload("c", timeout=5.0, threads=2, max_concurrency=1)
    workload.metrics = host.component("c", "ref")

    def returning(v: object) -> Any:
        return lambda inline: lambda limit: v

    def failing(inline: bool) -> Any:
        def run(limit: float) -> None:
            raise RuntimeError("the guest trapped")

        return run

    # Inline and on a worker thread; a runner returning its failure (HTTP's) counts as one.
    assert await (await start_guest(workload, returning(1), operation=OP)) == 1
    assert await (await start_guest(workload, returning(2), inline=False, operation=OP)) == 2
    with pytest.raises(RuntimeError):
        await (await start_guest(workload, failing, operation=OP))
    with pytest.raises(RuntimeError):
        await (await start_guest(workload, failing, inline=False, operation=OP))
    await (await start_guest(workload, returning(RuntimeError("reported")), inline=False, operation=OP))
    # Refused: the one instance is taken and none frees within the wait.
    await workload.acquire()
    with pytest.raises(SlotTimeout):
        await start_guest(workload, returning(3), wait=0.05, operation=OP)
    workload.release()
    got = await scrape(metrics)
    assert value(got, "wasmcloud_host_component_invocations_total", operation=OP) == 6.0
    assert value(got, "wasmcloud_host_component_invocation_errors_total", operation=OP) == 4.0
    assert value(got, "wasmcloud_host_handle_rpc_message_duration_nanoseconds_count", operation=OP) == 6.0
    await workload.retire(0.1)


async def test_start_guest_records_nothing_when_off() -> None:
    workload = Workload("c", timeout=5.0, threads=1)
    assert workload.metrics is None
    assert await (await start_guest(workload, lambda inline: lambda limit: 7)) == 7
    await workload.retire(0.1)


async def test_capability_calls_by_interface_and_outcome(metrics: Metrics) -> None:
    host = HostMetrics(metrics, "NHOST", "default")
    drops: list[object] = []

    def ok() -> int:
        return 1

    def returns_err() -> Err:
        return Err("no-such-store")

    def raises_err() -> None:
        raise Err("access-denied")

    def needs_loop() -> None:
        raise NeedsLoop("retried on a thread")

    iface = counted(
        HostInterface(
            "wasi:keyvalue/store",
            {
                "ok": ok,
                "err": returns_err,
                "raise": raises_err,
                "loop": needs_loop,
                "[resource-drop]b": drops.append,
            },
        ),
        host,
    )
    fns = iface.functions
    assert fns["[resource-drop]b"] == drops.append  # not a call: bound as it is
    assert fns["ok"]() == 1
    assert fns["ok"]() == 1
    assert isinstance(fns["err"](), Err)
    with pytest.raises(Err):
        fns["raise"]()
    with pytest.raises(NeedsLoop):
        fns["loop"]()
    got = await scrape(metrics)
    name = "wasmlattice_capability_calls_total"
    assert value(got, name, function="ok", outcome="ok") == 2.0
    assert value(got, name, function="err", outcome="error") == 1.0
    assert value(got, name, function="raise", outcome="error") == 1.0
    assert value(got, name, function="loop") is None


async def test_off_by_default_and_shared_per_settings() -> None:
    assert await open_metrics(ObservabilitySettings()) is None
    settings = ObservabilitySettings(metrics_listen="127.0.0.1:0")
    first = await start_host_metrics(settings, "H1", "l")
    second = await start_host_metrics(settings, "H2", "l")
    assert first is not None and second is not None
    # A host and the app manager of `wasmlattice up` share one endpoint.
    assert first.metrics is second.metrics and first.metrics.users == 2
    port = first.metrics.port
    await first.release()
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
        assert r.status == 200
    await second.release()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics"):
            pass


async def test_listen_errors_name_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsError, match=f"127.0.0.1:{port}: cannot listen"):
            await open_metrics(ObservabilitySettings(metrics_listen=f"127.0.0.1:{port}"))
    for bad, why in (
        ("9090", "not HOST:PORT"),
        ("localhost:http", "port must be a number"),
        ("h:70000", "0 to 65535"),
    ):
        with pytest.raises(MetricsError, match=why):
            parse_listen(bad)
    assert parse_listen("[::1]:9090") == ("::1", 9090)


async def test_otlp_export_to_a_receiver() -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    received: list[ExportMetricsServiceRequest] = []

    async def export(request: web.Request) -> web.Response:
        msg = ExportMetricsServiceRequest()
        msg.ParseFromString(await request.read())
        received.append(msg)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/metrics", export)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        settings = ObservabilitySettings(metrics=True, endpoint=f"http://127.0.0.1:{port}")
        m = await open_metrics(settings)
        assert m is not None and m.port is None  # OTLP only: no `/metrics`
        HostMetrics(m, "NHOST", "default").component("c", "ref").invoked(OP, 1000, True)
        assert await asyncio.to_thread(m.provider.force_flush, 10_000)
        await m.release()
    finally:
        await runner.cleanup()
    assert received
    points: dict[str, Any] = {}
    for req in received:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    points[metric.name] = metric
    assert {"wasmcloud_host.component.invocations", "wasmcloud_host.handle_rpc_message.duration"} <= set(
        points
    )
    errors = points["wasmcloud_host.component.invocation.errors"].sum.data_points
    assert [p.as_int for p in errors] == [1]
    attrs = {kv.key: kv.value.string_value for kv in errors[0].attributes}
    assert attrs["component.id"] == "c" and attrs["operation"] == OP and attrs["host"] == "NHOST"


async def test_users_starting_together_share_one_endpoint() -> None:
    settings = ObservabilitySettings(metrics_listen=f"127.0.0.1:{free_port()}")
    first, second = await asyncio.gather(
        start_host_metrics(settings, "H", "l"), start_host_metrics(settings, "M", "l")
    )
    assert first is not None and second is not None and first.metrics is second.metrics
    await first.release()
    await second.release()


async def test_a_rescaled_component_counts_on(metrics: Metrics) -> None:
    host = HostMetrics(metrics, "NHOST", "default")
    host.component("c", "ref").invoked(OP, 10, False)
    host.component("c", "ref").invoked(OP, 10, False)  # a rescale prepares the component again
    host.component("c", "ref2").invoked(OP, 10, False)  # an update: another image, its own series
    got = await scrape(metrics)
    assert value(got, "wasmcloud_host_component_invocations_total", component_ref="ref") == 2.0
    assert value(got, "wasmcloud_host_component_invocations_total", component_ref="ref2") == 1.0
