"""An OTLP/HTTP receiver for tests: what the real OpenTelemetry exporters of host processes send.

It serves `POST /v1/traces` and `/v1/logs` on 127.0.0.1 and a free port, decodes each body as the
protobuf `ExportTraceServiceRequest` / `ExportLogsServiceRequest` (opentelemetry-proto) and keeps
the spans and log records as plain values.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.processes import free_port

# The protobuf enum `Span.SpanKind`: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
# `Status.StatusCode`: 0 unset, 1 ok, 2 error.
STATUS = {0: "unset", 1: "ok", 2: "error"}


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    return None if which is None else getattr(v, which)


@dataclass
class SpanRecord:
    """One exported span: IDs as hex, kind and status as names, attributes as a dict."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    status: str
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]


@dataclass
class LogRecord:
    """One exported log record."""

    body: str
    trace_id: str
    span_id: str
    resource: dict[str, Any]


@dataclass
class OtlpReceiver:
    """Collects what OTLP/HTTP exporters post; `url` is the base endpoint to give them."""

    port: int = field(default_factory=free_port)
    spans: list[SpanRecord] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    requests: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`); exporters append /v1/<signal>."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on 127.0.0.1:`port`."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/logs", self._logs)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    async def _body(request: web.Request) -> bytes:
        data = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        return data

    async def _traces(self, request: web.Request) -> web.Response:
        self.requests += 1
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(await self._body(request))
        for rs in msg.resource_spans:
            res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        SpanRecord(
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            name=s.name,
                            kind=KINDS.get(s.kind, str(s.kind)),
                            status=STATUS.get(s.status.code, str(s.status.code)),
                            status_message=s.status.message,
                            attributes={kv.key: _value(kv.value) for kv in s.attributes},
                            resource=res,
                        )
                    )
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    async def _logs(self, request: web.Request) -> web.Response:
        self.requests += 1
        msg = ExportLogsServiceRequest()
        msg.ParseFromString(await self._body(request))
        for rl in msg.resource_logs:
            res = {kv.key: _value(kv.value) for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    self.logs.append(LogRecord(str(_value(r.body)), r.trace_id.hex(), r.span_id.hex(), res))
        body = ExportLogsServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    def trace(self, trace_id: str) -> list[SpanRecord]:
        """The spans of one trace received so far."""
        return [s for s in self.spans if s.trace_id == trace_id]

    async def wait_for(self, check: Any, timeout: float = 30.0, what: str = "spans") -> None:
        """Wait until `check()` is true (exporters send in batches); AssertionError on time-out."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                names = sorted({(s.name, s.trace_id[:8]) for s in self.spans})
                raise AssertionError(f"{what} not received within {timeout}s; spans: {names}")
            await asyncio.sleep(0.1)
