"""Where per-component request rate, error rate and latency come from: a seam, empty for now.

The hosts' Prometheus endpoints (`--metrics-listen`, docs/observability.md) are where these numbers
live. A `MetricsSource` turns them into, per component ID:
`{"request_rate": per second, "error_rate": per second, "p50_ms", "p95_ms", "p99_ms"}`. The page
shows them beside each component when `available` is true, and says where to get them when not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class MetricsSource(Protocol):
    """Per-component request metrics for the dashboard."""

    async def snapshot(self, host_ids: Sequence[str]) -> dict[str, Any]:
        """`{"available": bool, "components": {component_id: {...}}}` for the hosts `host_ids`."""
        ...


class NoMetrics:
    """No metrics source configured: the page says so instead of showing zeros."""

    async def snapshot(self, host_ids: Sequence[str]) -> dict[str, Any]:
        """Nothing available."""
        return {
            "available": False,
            "components": {},
            "hint": "request metrics need hosts started with --metrics-listen (docs/ui.md#metrics)",
        }
