"""Metrics of a host and of the app manager: OpenTelemetry instruments, OTLP export, Prometheus `/metrics`.

Off unless asked for (`ObservabilitySettings.metrics_wanted`): nothing is created, and the places
that record hold `None` and test it once per call. On, one `Metrics` per process and settings
(a host and the app manager that `wasmlattice up` runs in one process share it, and so its
`/metrics` port) owns the `MeterProvider`, its readers (OTLP export, the Prometheus registry) and
every instrument; `HostMetrics` and `AppMetrics` are what one host or one app manager records
through, with their own attributes.

The host metrics carry wasmCloud's names and attributes (`component.ref`, `lattice`, `host`,
`operation`; see docs/observability.md#metrics): `wasmcloud_host.component.invocations`,
`...invocation.errors`, the `wasmcloud_host.handle_rpc_message.duration` histogram (nanoseconds),
`...component.active_instances`, `...component.max_instances` and the `wasmcloud_host.process.*`
gauges. Ours are named `wasmlattice.*`: HTTP requests, capability calls, warm instance pools
(docs/instance-pools.md), reconcile rounds, app statuses. The Prometheus names follow
OpenTelemetry's mapping (dots become underscores, counters get `_total`, units a suffix):
`wasmcloud_host_component_invocations_total`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from wasmlattice.observability.settings import ObservabilitySettings

log = logging.getLogger(__name__)

SCOPE = "wasmlattice"

# wasmCloud's host metrics (crates/host/src/metrics.rs in wasmCloud/wasmCloud).
INVOCATION_DURATION = "wasmcloud_host.handle_rpc_message.duration"
INVOCATIONS = "wasmcloud_host.component.invocations"
INVOCATION_ERRORS = "wasmcloud_host.component.invocation.errors"
ACTIVE_INSTANCES = "wasmcloud_host.component.active_instances"
MAX_INSTANCES = "wasmcloud_host.component.max_instances"
MEMORY_TOTAL = "wasmcloud_host.process.memory.total.bytes"
MEMORY_USED = "wasmcloud_host.process.memory.used.bytes"
CPU_USAGE = "wasmcloud_host.process.cpu.usage"
# Ours.
HTTP_REQUESTS = "wasmlattice.http.server.requests"
CAPABILITY_CALLS = "wasmlattice.capability.calls"
RECONCILE_ROUNDS = "wasmlattice.apps.reconcile.rounds"
APP_STATUS = "wasmlattice.apps.status"
# Warm instance pools, reported for components that reuse instances (docs/instance-pools.md).
POOL_IDLE = "wasmlattice.component.pool.idle_instances"
POOL_CREATED = "wasmlattice.component.pool.instances_created"
POOL_REUSES = "wasmlattice.component.pool.reuses"
POOL_DISCARDS = "wasmlattice.component.pool.discards"

# Buckets of the invocation histogram, in nanoseconds: 10 µs to 60 s. OpenTelemetry's default
# buckets (0 to 10 000) suit milliseconds; in nanoseconds every call would land in the last one.
DURATION_BUCKETS_NS = tuple(
    float(v)
    for v in (
        1e4, 2.5e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6, 1e7, 2.5e7, 5e7,
        1e8, 2.5e8, 5e8, 1e9, 2.5e9, 5e9, 1e10, 3e10, 6e10,
    )
)  # fmt: skip
# The statuses an app can have (wadm's StatusType): each is reported, 0 when no app has it, so
# a query for `deployed` finds a series before the first app gets there.
APP_STATUSES = ("undeployed", "reconciling", "deployed", "failed", "waiting", "unhealthy")


# How long shutting down may spend on the last OTLP export: a collector that is down must not
# hold up a host's exit (the exporter otherwise retries for up to 10 s).
SHUTDOWN_TIMEOUT_MS = 2_000


class MetricsError(Exception):
    """Metrics cannot start as configured (the `/metrics` address cannot be bound, bad settings)."""


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) as (host, port); `MetricsError` naming what is wrong."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise MetricsError(f"metrics listen address {text!r} is not HOST:PORT (for example 127.0.0.1:9090)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise MetricsError(f"metrics listen address {text!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)


@dataclass(frozen=True)
class InstanceCount:
    """Instances of one component on a host at the moment metrics are collected.

    `idle` is None unless the component reuses instances; then `idle` instances wait in its pool,
    and `created`, `reused` (calls served by a warm instance) and `discarded` (by reason) count
    since it started.
    """

    component_id: str
    image_ref: str
    active: int
    max_instances: int
    idle: int | None = None
    created: int = 0
    reused: int = 0
    discarded: tuple[tuple[str, int], ...] = ()


def otlp_exporter(settings: ObservabilitySettings) -> MetricExporter:
    """The OTLP metric exporter for the settings' protocol and endpoint."""
    endpoint = settings.signal_endpoint("metrics")
    if settings.protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc
        except ImportError as e:  # grpcio is large: installed with the package, but say so if absent
            raise MetricsError(f"OTLP over grpc needs opentelemetry-exporter-otlp-proto-grpc: {e}") from None
        return Grpc(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http(endpoint=endpoint)


class Metrics:
    """One process's meter provider, its readers and instruments, and the `/metrics` endpoint.

    Made by `open_metrics`; `release` it when done (the last user shuts it down).
    """

    def __init__(self, settings: ObservabilitySettings) -> None:
        self.settings = settings
        readers: list[MetricReader] = []
        self.registry: Any = None  # prometheus_client's CollectorRegistry when `/metrics` is served
        if settings.metrics_listen is not None:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry

            # A registry of our own, not prometheus_client's global one: two Metrics in one
            # process (tests, embedding) must not see each other's series.
            self.registry = CollectorRegistry(auto_describe=True)
            readers.append(PrometheusMetricReader(registry=self.registry))
        if settings.metrics:
            # The export interval is the SDK's (OTEL_METRIC_EXPORT_INTERVAL, 60 s by default).
            readers.append(PeriodicExportingMetricReader(otlp_exporter(settings)))
        self.provider = MeterProvider(
            metric_readers=readers,
            resource=Resource.create({"service.name": settings.service_name}),
            views=[
                View(
                    instrument_name=INVOCATION_DURATION,
                    aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS_NS),
                ),
            ],
        )
        meter = self.provider.get_meter(SCOPE)
        self.users = 0
        self.starting: asyncio.Future[None] | None = None  # binding `/metrics` (see `open_metrics`)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # the bound port of `/metrics` (useful with port 0)
        # What the observable instruments read at collection time, registered by each user.
        self.instance_sources: list[Callable[[], Iterable[tuple[InstanceCount, Mapping[str, str]]]]] = []
        self.status_sources: list[Callable[[], Iterable[tuple[Mapping[str, int], Mapping[str, str]]]]] = []

        self.duration = meter.create_histogram(
            INVOCATION_DURATION,
            unit="ns",
            description="Duration in nanoseconds each invocation of a component took",
        )
        # Counters are plain ints read at collection (`_Series`): an OpenTelemetry counter's `add`
        # validates and hashes its attributes on every call (several µs), too much per request.
        self.invocations: list[_Series] = []
        self.invocation_errors: list[_Series] = []
        self.http_requests: list[_Series] = []
        self.capability_calls: list[_Series] = []
        self.reconcile_rounds: list[_Series] = []
        for name, series, description in (
            (INVOCATIONS, self.invocations, "Number of component invocations"),
            (INVOCATION_ERRORS, self.invocation_errors, "Number of component invocations that failed"),
            (HTTP_REQUESTS, self.http_requests, "HTTP requests served, by component, method and status"),
            (
                CAPABILITY_CALLS,
                self.capability_calls,
                "Capability calls made by components, by interface and outcome",
            ),
            (RECONCILE_ROUNDS, self.reconcile_rounds, "Reconcile rounds of the app manager"),
        ):
            meter.create_observable_counter(name, [_observe(series)], description=description)
        meter.create_observable_up_down_counter(
            ACTIVE_INSTANCES, [self._active], description="Number of active component instances"
        )
        meter.create_observable_gauge(
            MAX_INSTANCES, [self._max], description="Maximum number of component instances"
        )
        meter.create_observable_gauge(
            POOL_IDLE, [self._pool_idle], description="Idle instances a component's warm pool keeps"
        )
        meter.create_observable_counter(
            POOL_CREATED, [self._pool_created], description="Instances created for components with warm pools"
        )
        meter.create_observable_counter(
            POOL_REUSES, [self._pool_reuses], description="Calls served by a warm (reused) instance"
        )
        meter.create_observable_counter(
            POOL_DISCARDS,
            [self._pool_discards],
            description="Instances of a warm pool discarded, by reason (trapped, used_up, idle, ...)",
        )
        self._process = _ProcessStats()
        meter.create_observable_gauge(
            MEMORY_TOTAL,
            [self._process.memory_total],
            unit="By",
            description="Memory of the machine in bytes",
        )
        meter.create_observable_gauge(
            MEMORY_USED,
            [self._process.memory_used],
            unit="By",
            description="Resident memory of this process in bytes",
        )
        meter.create_observable_gauge(
            CPU_USAGE,
            [self._process.cpu],
            unit="%",
            description="CPU used by this process since the previous collection (100 = one core)",
        )
        meter.create_observable_gauge(APP_STATUS, [self._statuses], description="Applications by status")

    # -- observable instruments (run at collection time) ----------------------------------------

    def _counts(self) -> list[tuple[InstanceCount, Mapping[str, str]]]:
        out: list[tuple[InstanceCount, Mapping[str, str]]] = []
        for source in list(self.instance_sources):
            out.extend(source())
        return out

    def _active(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(c.active, _instance_attrs(c, base)) for c, base in self._counts()]

    def _max(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(c.max_instances, _instance_attrs(c, base)) for c, base in self._counts()]

    def _pooled(self) -> list[tuple[InstanceCount, dict[str, str]]]:
        return [(c, _instance_attrs(c, base)) for c, base in self._counts() if c.idle is not None]

    def _pool_idle(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(c.idle or 0, attrs) for c, attrs in self._pooled()]

    def _pool_created(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(c.created, attrs) for c, attrs in self._pooled()]

    def _pool_reuses(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(c.reused, attrs) for c, attrs in self._pooled()]

    def _pool_discards(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(n, {**attrs, "reason": reason})
            for c, attrs in self._pooled()
            for reason, n in c.discarded
        ]

    def _statuses(self, _options: CallbackOptions) -> Iterable[Observation]:
        out: list[Observation] = []
        for source in list(self.status_sources):
            for counts, base in source():
                for status in sorted(set(APP_STATUSES) | set(counts)):
                    out.append(Observation(counts.get(status, 0), {**base, "status": status}))
        return out

    # -- the scrape endpoint ----------------------------------------------------------------------

    async def start(self) -> None:
        """Serve `/metrics` on `settings.metrics_listen` (if set); `MetricsError` if it cannot bind."""
        listen = self.settings.metrics_listen
        if listen is None:
            return
        host, port = parse_listen(listen)
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise MetricsError(f"metrics listen address {listen}: cannot listen: {e}") from None
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        log.info("metrics: Prometheus endpoint on http://%s:%d/metrics", host, self.port)

    async def _scrape(self, request: web.Request) -> web.Response:
        from prometheus_client.exposition import choose_encoder

        assert self.registry is not None
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        # Collection runs the observable callbacks, which read the host's live state: on the loop.
        body = encoder(self.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def shutdown(self) -> None:
        """Stop serving `/metrics`, export what is left over OTLP, and shut the provider down."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        # Shutting down flushes the OTLP exporter: a blocking HTTP post, so off the loop.
        await asyncio.to_thread(self.provider.shutdown, SHUTDOWN_TIMEOUT_MS)

    async def release(self) -> None:
        """One user is done; the last one shuts the metrics down."""
        self.users -= 1
        if self.users <= 0:
            _shared.pop(self.settings, None)
            await self.shutdown()


_shared: dict[ObservabilitySettings, Metrics] = {}


async def open_metrics(settings: ObservabilitySettings) -> Metrics | None:
    """The process's `Metrics` for these settings (started on first use), or None when metrics are off.

    `MetricsError` if the `/metrics` address cannot be bound or the exporter is unavailable.
    """
    if not settings.metrics_wanted:
        return None
    metrics = _shared.get(settings)
    if metrics is None:
        # Registered before its endpoint is bound, so that a second user starting meanwhile (the
        # host and the app manager of `wasmlattice up` start together) waits for this one.
        metrics = _shared[settings] = Metrics(settings)
        metrics.starting = asyncio.ensure_future(metrics.start())
        try:
            await metrics.starting
        except BaseException:
            _shared.pop(settings, None)
            await asyncio.to_thread(metrics.provider.shutdown, SHUTDOWN_TIMEOUT_MS)
            raise
    else:
        assert metrics.starting is not None
        await asyncio.shield(metrics.starting)
    metrics.users += 1
    return metrics


class _Series:
    """One cumulative count with its attributes, reported by an observable counter."""

    __slots__ = ("attrs", "value")

    def __init__(self, attrs: Mapping[str, Any], into: list[_Series]) -> None:
        self.attrs = dict(attrs)
        self.value = 0
        into.append(self)


def _observe(series: list[_Series]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.value, s.attrs) for s in list(series)]

    return callback


def _instance_attrs(c: InstanceCount, base: Mapping[str, str]) -> dict[str, str]:
    return {**base, "component.id": c.component_id, "component.ref": c.image_ref}


class _ProcessStats:
    """The process's memory and CPU, read with psutil when metrics are collected."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._proc = psutil.Process(os.getpid())
        self._proc.cpu_percent(None)  # the first reading is the baseline of the next

    def memory_total(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(int(self._psutil.virtual_memory().total))]

    def memory_used(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(int(self._proc.memory_info().rss))]

    def cpu(self, _options: CallbackOptions) -> Iterable[Observation]:
        # Since the previous collection by any reader (Prometheus scrapes, OTLP exports): over a
        # scrape interval, the recent usage.
        return [Observation(float(self._proc.cpu_percent(None)))]


class ComponentMetrics:
    """What one component's invocations record into (set on its `Workload` as `metrics`)."""

    __slots__ = ("_base", "_by_operation", "_duration", "metrics")

    def __init__(self, metrics: Metrics, base: Mapping[str, str]) -> None:
        self.metrics = metrics
        self._duration = metrics.duration
        self._base = dict(base)
        self._by_operation: dict[str, tuple[_Series, _Series]] = {}

    def invoked(self, operation: str, elapsed_ns: int, failed: bool) -> None:
        """Record one invocation of `operation` (`ns:pkg/iface/func`) that took `elapsed_ns`.

        Called on the event loop's thread (the end of every guest call is seen there).
        """
        series = self._by_operation.get(operation)
        if series is None:
            attrs = {**self._base, "operation": operation}
            m = self.metrics
            series = self._by_operation[operation] = (
                _Series(attrs, m.invocations),
                _Series(attrs, m.invocation_errors),
            )
        series[0].value += 1
        if failed:
            series[1].value += 1
        self._duration.record(elapsed_ns, series[0].attrs)


# Distinct HTTP series one host keeps at most (methods and statuses are chosen by clients and
# guests); past it new combinations are counted under method `_OTHER`.
MAX_HTTP_SERIES = 5_000


class HostMetrics:
    """What one host records through: its components, HTTP ingress and capability calls."""

    def __init__(self, metrics: Metrics, host_id: str, lattice: str) -> None:
        self.metrics = metrics
        self.host_id = host_id
        self.lattice = lattice
        self._base = {"host": host_id, "lattice": lattice}
        self._components: dict[tuple[str, str], ComponentMetrics] = {}
        self._http: dict[tuple[str, str, int], _Series] = {}
        self._calls: dict[tuple[str, str, str, bool], _Series] = {}
        # Capability calls are counted on the guests' worker threads.
        self._calls_lock = threading.Lock()
        self._sources: list[Callable[[], Any]] = []

    def component(self, component_id: str, image_ref: str) -> ComponentMetrics:
        """The invocation recorder of one component (the same one again after a rescale, so that
        its counters go on rather than restart)."""
        key = (component_id, image_ref)
        found = self._components.get(key)
        if found is None:
            found = self._components[key] = ComponentMetrics(
                self.metrics, {**self._base, "component.id": component_id, "component.ref": image_ref}
            )
        return found

    def observe_instances(self, counts: Callable[[], Iterable[InstanceCount]]) -> None:
        """Report the active and maximum instances `counts()` gives at every collection."""

        def source() -> list[tuple[InstanceCount, Mapping[str, str]]]:
            return [(c, self._base) for c in counts()]

        self._sources.append(source)
        self.metrics.instance_sources.append(source)

    def http_request(self, component_id: str, method: str, status: int) -> None:
        """Count one HTTP request routed to `component_id` ("" when none) answered with `status`.

        Called on the event loop's thread.
        """
        key = (component_id, method, status)
        series = self._http.get(key)
        if series is None:
            if len(self._http) >= MAX_HTTP_SERIES:
                key = (component_id, "_OTHER", status)
                series = self._http.get(key)
            if series is None:
                attrs = {
                    **self._base,
                    "component.id": component_id,
                    "http.request.method": key[1],
                    "http.response.status_code": status,
                }
                series = self._http[key] = _Series(attrs, self.metrics.http_requests)
        series.value += 1

    def capability_call(self, component_id: str, interface: str, function: str, ok: bool) -> None:
        """Count one call a component made to a capability (`outcome` `ok`, or `error`)."""
        key = (component_id, interface, function, ok)
        with self._calls_lock:
            series = self._calls.get(key)
            if series is None:
                attrs = {
                    **self._base,
                    "component.id": component_id,
                    "interface": interface,
                    "function": function,
                    "outcome": "ok" if ok else "error",
                }
                series = self._calls[key] = _Series(attrs, self.metrics.capability_calls)
            series.value += 1

    async def release(self) -> None:
        """Stop reporting this host's instances, and release the process's metrics."""
        for source in self._sources:
            if source in self.metrics.instance_sources:
                self.metrics.instance_sources.remove(source)
        self._sources.clear()
        await self.metrics.release()


class AppMetrics:
    """What one app manager records through: reconcile rounds and its apps' statuses."""

    def __init__(self, metrics: Metrics, lattice: str, manager_id: str) -> None:
        self.metrics = metrics
        self._base = {"lattice": lattice, "manager": manager_id}
        self._rounds: dict[tuple[bool, bool], _Series] = {}
        self._source: Callable[[], Any] | None = None

    def reconcile_round(self, leader: bool, ok: bool) -> None:
        """Count one reconcile round (a standby manager's rounds only observe the lattice)."""
        series = self._rounds.get((leader, ok))
        if series is None:
            attrs = {
                **self._base,
                "role": "leader" if leader else "standby",
                "outcome": "ok" if ok else "error",
            }
            series = self._rounds[(leader, ok)] = _Series(attrs, self.metrics.reconcile_rounds)
        series.value += 1

    def observe_statuses(self, statuses: Callable[[], Iterable[str]]) -> None:
        """Report how many apps have each status (`statuses()` gives one status per app)."""

        def source() -> list[tuple[Mapping[str, int], Mapping[str, str]]]:
            counts: dict[str, int] = {}
            for status in statuses():
                counts[status] = counts.get(status, 0) + 1
            return [(counts, self._base)]

        self._source = source
        self.metrics.status_sources.append(source)

    async def release(self) -> None:
        """Stop reporting statuses, and release the process's metrics."""
        if self._source is not None and self._source in self.metrics.status_sources:
            self.metrics.status_sources.remove(self._source)
        self._source = None
        await self.metrics.release()


async def start_host_metrics(
    settings: ObservabilitySettings, host_id: str, lattice: str
) -> HostMetrics | None:
    """A host's metrics (None when off); `MetricsError` if `/metrics` cannot be served."""
    metrics = await open_metrics(settings)
    return None if metrics is None else HostMetrics(metrics, host_id, lattice)


async def start_app_metrics(
    settings: ObservabilitySettings, lattice: str, manager_id: str
) -> AppMetrics | None:
    """An app manager's metrics (None when off); `MetricsError` if `/metrics` cannot be served."""
    metrics = await open_metrics(settings)
    return None if metrics is None else AppMetrics(metrics, lattice, manager_id)
