"""What a process exports, as wasmCloud's host takes it: flags, `WASMCLOUD_*` and `OTEL_*` variables.

Off by default. `--enable-observability` (`WASMCLOUD_OBSERVABILITY_ENABLED`) turns on traces,
metrics and logs; `--enable-traces/--enable-metrics/--enable-logs` (`WASMCLOUD_TRACES_ENABLED`,
...) one signal each. The OTLP endpoint is `--override-observability-endpoint` or
`OTEL_EXPORTER_OTLP_ENDPOINT` (per signal: `OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT`),
the protocol `--observability-protocol` / `WASMCLOUD_OBSERVABILITY_PROTOCOL` (`http` or `grpc`).
A Prometheus scrape endpoint is separate: `--metrics-listen HOST:PORT` serves `/metrics` whether or
not OTLP export is on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

PROTOCOLS = ("http", "grpc")
# The OTLP defaults of wasmCloud's host (and of the OpenTelemetry specification).
DEFAULT_HTTP_ENDPOINT = "http://127.0.0.1:4318"
DEFAULT_GRPC_ENDPOINT = "http://127.0.0.1:4317"
SIGNALS = ("traces", "metrics", "logs")


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ObservabilitySettings:
    """Which signals a process exports and where; `metrics_listen` serves Prometheus `/metrics`."""

    traces: bool = False
    metrics: bool = False
    logs: bool = False
    protocol: str = "http"
    endpoint: str | None = None  # base OTLP endpoint; None: the protocol's default
    traces_endpoint: str | None = None
    metrics_endpoint: str | None = None
    logs_endpoint: str | None = None
    metrics_listen: str | None = None  # HOST:PORT of the Prometheus scrape endpoint
    service_name: str = "wasmlattice"

    @property
    def any_export(self) -> bool:
        """Whether any signal is exported over OTLP."""
        return self.traces or self.metrics or self.logs

    @property
    def metrics_wanted(self) -> bool:
        """Whether metrics are recorded at all (exported over OTLP or scraped)."""
        return self.metrics or self.metrics_listen is not None

    def signal_endpoint(self, signal: str) -> str:
        """The OTLP endpoint of `signal` (`traces`, `metrics`, `logs`), as wasmCloud resolves it.

        A per-signal endpoint is used as it is; the base endpoint gets `/v1/<signal>` appended for
        `http` (when its path is empty or `/`), and is used as it is for `grpc`.
        """
        given = {"traces": self.traces_endpoint, "metrics": self.metrics_endpoint, "logs": self.logs_endpoint}
        if given.get(signal):
            return str(given[signal])
        base = self.endpoint or (DEFAULT_GRPC_ENDPOINT if self.protocol == "grpc" else DEFAULT_HTTP_ENDPOINT)
        if self.protocol == "http":
            scheme, sep, rest = base.partition("://")
            host, _, path = rest.partition("/")
            if not path.strip("/"):
                return f"{scheme}{sep}{host}/v1/{signal}"
        return base

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        enable_observability: bool | None = None,
        enable_traces: bool | None = None,
        enable_metrics: bool | None = None,
        enable_logs: bool | None = None,
        endpoint: str | None = None,
        protocol: str | None = None,
        metrics_listen: str | None = None,
        service_name: str = "wasmlattice",
    ) -> ObservabilitySettings:
        """Settings from flags (given, they win) and the environment; `ValueError` if invalid."""
        env = os.environ if env is None else env
        everything = enable_observability
        if everything is None:
            everything = _flag(env, "WASMCLOUD_OBSERVABILITY_ENABLED") or False

        def signal(flag: bool | None, var: str) -> bool:
            if flag is not None:
                return flag
            from_env = _flag(env, var)
            return everything if from_env is None else from_env

        proto = (protocol or env.get("WASMCLOUD_OBSERVABILITY_PROTOCOL") or "http").strip().lower()
        if proto not in PROTOCOLS:
            raise ValueError(f"observability protocol {proto!r}: use http or grpc")
        return cls(
            traces=signal(enable_traces, "WASMCLOUD_TRACES_ENABLED"),
            metrics=signal(enable_metrics, "WASMCLOUD_METRICS_ENABLED"),
            logs=signal(enable_logs, "WASMCLOUD_LOGS_ENABLED"),
            protocol=proto,
            endpoint=endpoint or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            traces_endpoint=env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None,
            metrics_endpoint=env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or None,
            logs_endpoint=env.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") or None,
            metrics_listen=metrics_listen or env.get("WASMLATTICE_METRICS_LISTEN") or None,
            service_name=env.get("OTEL_SERVICE_NAME") or service_name,
        )
