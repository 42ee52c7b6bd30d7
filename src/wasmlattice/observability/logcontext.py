"""Trace and span IDs on log records, and OTLP export of log records.

Inside a request (an HTTP request, a wRPC invocation, a guest call and what it calls), host and
guest log lines carry the IDs of the span they were written in: `TraceContextFilter` sets
`record.trace_id` and `record.span_id` (32 and 16 hex digits, or None outside a span), and the
host's log format shows them (`trace=... span=...`). Guests log from their worker threads, which
run in the context of their guest-call span (`tracing.context_with`), so their lines get the IDs
of that call.

With logs enabled (`--enable-logs`, `WASMCLOUD_LOGS_ENABLED`), records also go to the OTLP logs
endpoint, where the SDK attaches the same IDs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from opentelemetry import trace

from wasmlattice.observability.settings import ObservabilitySettings

__all__ = ["TraceContextFilter", "install", "setup_log_export", "trace_ids"]

log = logging.getLogger(__name__)

# Appended to the host's log format while tracing is on (see `install`).
TRACE_FORMAT_SUFFIX = "%(trace_suffix)s"

_export_handler: logging.Handler | None = None


def trace_ids() -> tuple[str | None, str | None]:
    """The (trace ID, span ID) of the current span as hex text, or (None, None) outside one."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


class TraceContextFilter(logging.Filter):
    """Adds `trace_id`, `span_id` and `trace_suffix` (` trace=... span=...` or empty) to records."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate `record` with the IDs of the span it was written in; never drops it."""
        # A record made in one thread and handled in another (a queue handler) keeps its first IDs.
        if not hasattr(record, "trace_id"):
            trace_id, span_id = trace_ids()
            record.trace_id, record.span_id = trace_id, span_id
            record.trace_suffix = "" if trace_id is None else f" trace={trace_id} span={span_id}"
        return True


_FILTER = TraceContextFilter()


def install(root: logging.Logger | None = None) -> None:
    """Put trace and span IDs on every record the root logger's handlers emit, and in their format.

    A handler whose format is the default `%(message)s` gets nothing appended (that is a CLI's
    plain output, not a log).
    """
    root = root or logging.getLogger()
    for handler in root.handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
        fmt = handler.formatter
        style = getattr(fmt, "_style", None)
        text = getattr(style, "_fmt", None)
        if (
            type(fmt) is logging.Formatter  # a formatter of its own class is left as it is
            and isinstance(text, str)
            and "%(levelname)" in text
            and "trace" not in text
        ):
            handler.setFormatter(logging.Formatter(text + TRACE_FORMAT_SUFFIX, fmt.datefmt))


def setup_log_export(settings: ObservabilitySettings, attributes: Mapping[str, str] | None = None) -> bool:
    """Send log records (host and guest) to the OTLP logs endpoint when `settings.logs` (once)."""
    global _export_handler
    if _export_handler is not None:
        return True
    if not settings.logs:
        return False
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    from wasmlattice.observability.resource import resource

    endpoint = settings.signal_endpoint("logs")
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs

        exporter: object = GrpcLogs(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs

        exporter = HttpLogs(endpoint=endpoint)
    provider = LoggerProvider(resource=resource(settings, attributes))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))  # type: ignore[arg-type]
    handler = LoggingHandler(level=logging.NOTSET, logger_provider=provider)
    root = logging.getLogger()
    root.addHandler(handler)
    _export_handler = handler

    import atexit

    atexit.register(provider.shutdown)
    log.info("logs: OTLP %s to %s", settings.protocol, endpoint)
    return True
