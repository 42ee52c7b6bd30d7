"""Traces of the lattice with the OpenTelemetry SDK: setup, spans, and W3C trace context.

Off by default: until `setup` runs with traces enabled there is no tracer, and every helper here
returns at its first line (`span` hands back one shared no-op context manager), so the layers that
call them pay a function call and a test of a global, nothing more.

What is traced (docs/observability.md): HTTP ingress, each guest call, each capability call a
guest makes, both sides of each wRPC call, outgoing HTTP and control-interface operations. Trace
context crosses processes as W3C `traceparent`/`tracestate`: from incoming HTTP requests, on
wRPC's NATS headers (as wasmCloud's host does), into outgoing HTTP requests. Inside a process it
lives in `contextvars`; `context_with` makes the context a guest runs in on a worker thread.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import logging
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from wasmlattice.observability import logcontext
from wasmlattice.observability.resource import resource
from wasmlattice.observability.settings import ObservabilitySettings

__all__ = [
    "Span",
    "SpanKind",
    "context_with",
    "current_span",
    "enabled",
    "extract",
    "fail",
    "flush",
    "inject",
    "note",
    "setup",
    "shutdown",
    "span",
    "start_span",
]

log = logging.getLogger(__name__)

# Attribute names. OpenTelemetry's semantic conventions where one fits (http.*, url.*, rpc.*,
# server.*), wasmCloud's names for its own concepts, ours (`wasmlattice.*`) for the rest.
COMPONENT_ID = "wasmcloud.component.id"
PROVIDER_ID = "wasmcloud.provider.id"
LINK_NAME = "wasmcloud.link.name"
LINK_TARGET = "wasmlattice.link.target"  # what the link points at: a provider or a component
HOST_ID = "wasmcloud.host.id"
LATTICE = "wasmcloud.lattice"
EXPORT = "wasmlattice.guest.export"
INSTANCE = "wasmlattice.guest.instance"  # "fresh" or "reused"
INLINE = "wasmlattice.guest.inline"
OUTCOME = "wasmlattice.guest.outcome"  # ok, trap, deadline, interrupted, busy, error
CAP_INTERFACE = "wasmlattice.capability.interface"
CAP_OPERATION = "wasmlattice.capability.operation"
CAP_BACKEND = "wasmlattice.capability.backend"
CTL_OPERATION = "wasmcloud.ctl.operation"

TRACER_NAME = "wasmlattice"
# W3C Trace Context only (wasmCloud's host propagates exactly this), whatever OTEL_PROPAGATORS says.
PROPAGATOR = TraceContextTextMapPropagator()

_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None
_NOOP: contextlib.nullcontext[None] = contextlib.nullcontext()


def enabled() -> bool:
    """Whether this process records spans (`setup` ran with traces on)."""
    return _tracer is not None


def _exporter(settings: ObservabilitySettings) -> SpanExporter:
    endpoint = settings.signal_endpoint("traces")
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=endpoint)


def setup(
    settings: ObservabilitySettings,
    attributes: Mapping[str, str] | None = None,
    *,
    processor: SpanProcessor | None = None,
) -> bool:
    """Start tracing for this process when `settings.traces` (once; later calls change nothing).

    Spans go in batches to the OTLP endpoint of the settings' protocol (`OTEL_BSP_*` variables
    tune the batches), or to `processor` when one is given (tests). Trace and span IDs are put on
    log records (`logcontext`). Returns whether tracing is on.
    """
    global _tracer, _provider
    if _tracer is not None:
        return True
    if not settings.traces:
        return False
    provider = TracerProvider(resource=resource(settings, attributes))
    provider.add_span_processor(processor or BatchSpanProcessor(_exporter(settings)))
    _provider = provider
    _tracer = provider.get_tracer(TRACER_NAME)
    # Spans still in the batch are sent when the process ends, however it ends.
    atexit.register(shutdown)
    logcontext.install()
    log.info(
        "traces: OTLP %s to %s",
        settings.protocol,
        "a test processor" if processor is not None else settings.signal_endpoint("traces"),
    )
    return True


def shutdown() -> None:
    """Send the spans still batched and stop tracing (idempotent)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def flush(timeout_ms: int = 5000) -> None:
    """Send the spans batched so far, waiting up to `timeout_ms`."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def span(
    name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """A span around a block, current inside it (None, and free, when tracing is off).

    An exception leaving the block marks the span as an error with the exception's message.
    """
    t = _tracer
    if t is None:
        return _NOOP
    return t.start_as_current_span(name, kind=kind, attributes=attributes)


def server_span(
    name: str,
    carrier: Mapping[str, Any] | None,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.SERVER,
) -> contextlib.AbstractContextManager[Span | None]:
    """A span for work a request from elsewhere asked for: its parent is the trace context in
    `carrier` (HTTP or NATS headers) when there is one."""
    t = _tracer
    if t is None:
        return _NOOP
    parent = PROPAGATOR.extract(carrier) if carrier else None
    return t.start_as_current_span(name, context=parent, kind=kind, attributes=attributes)


def start_span(
    name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None
) -> Span | None:
    """A span that outlives the block that starts it (the caller ends it); a child of the current one."""
    t = _tracer
    if t is None:
        return None
    return t.start_span(name, kind=kind, attributes=attributes)


def context_with(span: Span) -> contextvars.Context:
    """A copy of the current context in which `span` is current: what a guest's thread runs in."""
    ctx = contextvars.copy_context()
    ctx.run(otel_context.attach, trace.set_span_in_context(span))
    return ctx


@contextlib.contextmanager
def use(span: Span | None) -> Iterator[None]:
    """Make `span` current for a block (without ending it)."""
    if span is None:
        yield
        return
    with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
        yield


def current_span() -> Span | None:
    """The span of the running request, or None (tracing off, or no request)."""
    if _tracer is None:
        return None
    found = trace.get_current_span()
    return found if found.get_span_context().is_valid else None


def note(key: str, value: Any) -> None:
    """Set an attribute on the current span (nothing when tracing is off)."""
    if _tracer is None:
        return
    trace.get_current_span().set_attribute(key, value)


def fail(span: Span | None, message: str, attributes: Mapping[str, Any] | None = None) -> None:
    """Mark `span` as failed with `message` (a trap's text, an error reply) and `attributes`."""
    if span is None:
        return
    for key, value in (attributes or {}).items():
        span.set_attribute(key, value)
    span.set_status(Status(StatusCode.ERROR, message))


def failed(span: Span) -> bool:
    """Whether `span` was marked failed already."""
    status = getattr(span, "status", None)
    return status is not None and status.status_code is StatusCode.ERROR


def inject(headers: MutableMapping[str, str]) -> None:
    """Put the current trace context in `headers` as `traceparent`/`tracestate` (tracing on only)."""
    if _tracer is None:
        return
    PROPAGATOR.inject(headers)


def extract(carrier: Mapping[str, Any]) -> otel_context.Context:
    """The trace context in `carrier`'s `traceparent`/`tracestate`, as an OpenTelemetry context."""
    return PROPAGATOR.extract(carrier)
