"""The OpenTelemetry resource of this process: what every span, metric and log record is from."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource

from wasmlattice.observability.settings import ObservabilitySettings


def resource(settings: ObservabilitySettings, attributes: Mapping[str, str] | None = None) -> Resource:
    """Service name, `attributes` (host ID, lattice; empty ones left out), `OTEL_RESOURCE_ATTRIBUTES`."""
    attrs: dict[str, str] = {"service.name": settings.service_name}
    attrs.update({k: v for k, v in (attributes or {}).items() if v})
    return Resource.create(attrs)
