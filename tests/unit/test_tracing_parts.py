"""Tracing's parts in one process: off is free, W3C context in and out, threads, log records, flags."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
import typer
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from wasmlattice.cli.host_options import ObservabilityFlags
from wasmlattice.lattice.run import _observability, _parser
from wasmlattice.observability import logcontext, tracing
from wasmlattice.observability.settings import ObservabilitySettings
from wasmlattice.protocol.wrpc.client import _with_traceparent
from wasmlattice.protocol.wrpc.transport import span_fields
from wasmlattice.runtime.execution import Workload, start_guest

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for one test, spans kept in memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    assert tracing.setup(
        ObservabilitySettings(traces=True),
        {"wasmcloud.host.id": "NTEST"},
        processor=SimpleSpanProcessor(exporter),
    )
    try:
        yield exporter
    finally:
        tracing.shutdown()


def test_off_is_a_shared_no_op() -> None:
    assert not tracing.enabled()
    assert tracing.span("x") is tracing.span("y")  # one shared null context, nothing allocated
    assert tracing.start_span("x") is None
    assert tracing.current_span() is None
    headers: dict[str, str] = {}
    tracing.inject(headers)
    assert headers == {}
    # wRPC keeps sending a fresh traceparent, as before tracing existed.
    assert _with_traceparent({"source-id": "a"})["traceparent"].startswith("00-")
    assert not tracing.setup(ObservabilitySettings())


def test_server_span_continues_the_callers_trace(spans: InMemorySpanExporter) -> None:
    carrier = {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "vendor=1"}
    with tracing.server_span("HTTP GET", carrier) as span:
        assert span is not None
        out: dict[str, str] = {}
        tracing.inject(out)
    [done] = spans.get_finished_spans()
    ctx = done.get_span_context()
    assert format(ctx.trace_id, "032x") == TRACE
    assert done.parent is not None and format(done.parent.span_id, "016x") == PARENT
    assert out["traceparent"] == f"00-{TRACE}-{ctx.span_id:016x}-01"
    assert out["tracestate"] == "vendor=1"
    assert done.resource.attributes["wasmcloud.host.id"] == "NTEST"


def test_wrpc_headers_take_the_span_context_when_traced(spans: InMemorySpanExporter) -> None:
    # A caller's stale traceparent is dropped: `Invocation.start` injects its own span's.
    assert _with_traceparent({"traceparent": "00-x-y-01", "source-id": "a"}) == {"source-id": "a"}


def test_span_fields_name_the_instance_and_function() -> None:
    name, attrs = span_fields(
        "lat.back.wrpc.0.0.1.test:chain/judge@0.1.0.sign", {"source-id": "front", "link-name": "default"}
    )
    assert name == "wrpc test:chain/judge@0.1.0#sign"
    assert attrs == {
        "rpc.system": "wrpc",
        "rpc.service": "test:chain/judge@0.1.0",
        "rpc.method": "sign",
        "messaging.destination.name": "lat.back.wrpc.0.0.1.test:chain/judge@0.1.0.sign",
        "wasmlattice.wrpc.target": "back",
        "wasmlattice.wrpc.source": "front",
        "wasmcloud.link.name": "default",
    }
    assert span_fields("wrpc.0.0.1.run", None) == (
        "wrpc run",
        {
            "rpc.system": "wrpc",
            "rpc.service": "",
            "rpc.method": "run",
            "messaging.destination.name": "wrpc.0.0.1.run",
        },
    )


async def test_guest_span_reaches_the_worker_thread(spans: InMemorySpanExporter) -> None:
    """A guest run on a worker thread runs in its call's span; what it logs carries the IDs."""
    workload = Workload("comp", timeout=5, threads=1)
    seen: list[tuple[str | None, str | None]] = []
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(logcontext.TraceContextFilter())
    logger = logging.getLogger("test.guest")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def attempt(inline: bool) -> object:
        def run(_limit: float) -> str:
            seen.append(logcontext.trace_ids())
            logger.info("hello from the guest")
            return "done"

        return run

    try:
        with tracing.span("HTTP GET"):
            # inline=False: straight to a worker thread.
            fut = await start_guest(workload, attempt, inline=False)  # type: ignore[arg-type]
            assert await fut == "done"
        await asyncio.sleep(0)  # the future's done callbacks end the span
    finally:
        logger.removeHandler(handler)
        workload.executor.shutdown()
    by_name = {s.name: s for s in spans.get_finished_spans()}
    guest, ingress = by_name["guest comp"], by_name["HTTP GET"]
    assert guest.parent is not None and guest.parent.span_id == ingress.context.span_id
    assert guest.attributes is not None
    assert guest.attributes["wasmlattice.guest.outcome"] == "ok"
    assert guest.attributes["wasmlattice.guest.inline"] is False
    ids = (f"{guest.context.trace_id:032x}", f"{guest.context.span_id:016x}")
    assert seen == [ids]
    assert (records[0].trace_id, records[0].span_id) == ids  # type: ignore[attr-defined]


def test_flags_reach_a_child_host_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WASMCLOUD_OBSERVABILITY_ENABLED", "WASMCLOUD_TRACES_ENABLED", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    flags = ObservabilityFlags(
        enable_observability=True,
        enable_metrics=False,
        observability_endpoint="http://collector:4318",
        traces_endpoint="http://tempo:4318/v1/traces",
        observability_protocol="http",
    )
    settings = flags.settings()
    assert (settings.traces, settings.metrics, settings.logs) == (True, False, True)
    assert settings.signal_endpoint("traces") == "http://tempo:4318/v1/traces"
    assert settings.signal_endpoint("logs") == "http://collector:4318/v1/logs"
    # `up --detach` and `lattice.run` take the same flags.
    assert _observability(_parser().parse_args(flags.args())) == settings


def test_a_bad_protocol_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASMCLOUD_OBSERVABILITY_PROTOCOL", "udp")
    with pytest.raises(typer.Exit) as e:
        ObservabilityFlags().settings()
    assert e.value.exit_code == 2


def test_grpc_exporter_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ObservabilitySettings(traces=True, protocol="grpc")
    exporter = tracing._exporter(settings)
    assert type(exporter).__module__.startswith("opentelemetry.exporter.otlp.proto.grpc")
    exporter.shutdown()


def test_outcomes_of_a_failed_guest_call() -> None:
    from wasmlattice.runtime.execution import DeadlineExceeded, HostBusy, Interrupted, outcome
    from wasmlattice.runtime.fastcall import GuestTrap

    assert outcome(GuestTrap("wasm trap: interrupt", DeadlineExceeded("deadline exceeded"))) == (
        "deadline",
        "deadline exceeded",
    )
    assert outcome(GuestTrap("wasm trap: interrupt", Interrupted("the HTTP client disconnected")))[0] == (
        "interrupted"
    )
    assert outcome(
        GuestTrap("error while executing\nwasm trap: wasm `unreachable` instruction executed")
    ) == (
        "trap",
        "wasm trap: wasm `unreachable` instruction executed",
    )
    assert outcome(GuestTrap("wasm trap: interrupt")) == (
        "deadline",
        "deadline exceeded (wasm trap: interrupt)",
    )
    assert outcome(HostBusy("the host runs its maximum", retry_after=1))[0] == "busy"
