"""Per-component request rate, error rate and latency for the dashboard, from the hosts' `/metrics`.

Hosts started with `--metrics-listen` serve Prometheus text (docs/observability.md#metrics) and say
where on `wasmlattice.metrics_endpoints.<lattice>` (`lattice/metrics_endpoint.py`). A
`MetricsSource` turns them into `{"available": bool, "components": {component_id: {...}}}`;
`PrometheusMetrics` is the real one: every `snapshot` scrapes each endpoint once (hosts sharing a
process share one), parses the text with `prometheus_client`'s parser, and reports per component,
summed over the hosts asked about:

- `requests_total`, `errors_total`: what the hosts counted since they started. A component that
  serves HTTP counts the requests its ingress answered (`wasmlattice_http_server_requests_total`)
  and the 5xx answers among them as errors; one that serves no HTTP counts its invocations
  (`wasmcloud_host_component_invocations_total`) and the failed ones.
- over the interval since the previous snapshot (`interval_s`): `requests`, `errors`,
  `request_rate` (per second), `error_rate` (the share of those requests that failed, 0 to 1;
  null without requests), and `p50_ms`, `p95_ms`, `p99_ms` of the invocation duration histogram
  (`wasmcloud_host_handle_rpc_message_duration_nanoseconds`; null without invocations). The first
  snapshot has no interval: these are null until the second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from wasmlattice.protocol import subjects as sj

log = logging.getLogger(__name__)

HTTP_REQUESTS = "wasmlattice_http_server_requests"
INVOCATIONS = "wasmcloud_host_component_invocations"
INVOCATION_ERRORS = "wasmcloud_host_component_invocation_errors"
DURATION = "wasmcloud_host_handle_rpc_message_duration_nanoseconds"
HINT = "request metrics need hosts started with --metrics-listen (docs/ui.md#metrics)"
# Bounds on what one scrape may cost the dashboard, whatever a host (or impostor) serves.
SCRAPE_TIMEOUT_S = 3.0
MAX_SCRAPE_BYTES = 16 * 1024 * 1024
MAX_ENDPOINTS = 256
# How long the dashboard waits for hosts to say where their endpoint is, and how often it asks again.
DISCOVERY_WAIT_S = 0.5
REDISCOVER_S = 60.0


class MetricsSource(Protocol):
    """Per-component request metrics for the dashboard."""

    async def snapshot(self, host_ids: Sequence[str]) -> dict[str, Any]:
        """`{"available": bool, "components": {component_id: {...}}}` for the hosts `host_ids`."""
        ...


class NoMetrics:
    """No metrics source configured: the page says so instead of showing zeros."""

    async def snapshot(self, host_ids: Sequence[str]) -> dict[str, Any]:
        """Nothing available."""
        return {"available": False, "components": {}, "hint": HINT}


@dataclass
class Totals:
    """One component's cumulative counts on one host, as one scrape read them."""

    http: float = 0.0
    http_5xx: float = 0.0
    invocations: float = 0.0
    invocation_errors: float = 0.0
    # Cumulative bucket counts by upper bound (ns), `inf` included.
    buckets: dict[float, float] = field(default_factory=dict)

    @property
    def requests(self) -> float:
        """HTTP requests when the component served any, else its invocations."""
        return self.http if self.http else self.invocations

    @property
    def errors(self) -> float:
        """5xx answers when the component served HTTP, else its failed invocations."""
        return self.http_5xx if self.http else self.invocation_errors


def parse_totals(text: str, host_ids: Iterable[str]) -> dict[tuple[str, str], Totals]:
    """Per (host ID, component ID) totals from one scrape's Prometheus text, for the hosts `host_ids`."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = set(host_ids)
    out: dict[tuple[str, str], Totals] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            host, cid = labels.get("host", ""), labels.get("component_id", "")
            if host not in wanted or not cid:
                continue
            name = sample.name
            if name == HTTP_REQUESTS + "_total":
                t = out.setdefault((host, cid), Totals())
                t.http += sample.value
                if labels.get("http_response_status_code", "").startswith("5"):
                    t.http_5xx += sample.value
            elif name == INVOCATIONS + "_total":
                out.setdefault((host, cid), Totals()).invocations += sample.value
            elif name == INVOCATION_ERRORS + "_total":
                out.setdefault((host, cid), Totals()).invocation_errors += sample.value
            elif name == DURATION + "_bucket":
                le = float(labels.get("le", "+Inf"))
                b = out.setdefault((host, cid), Totals()).buckets
                b[le] = b.get(le, 0.0) + sample.value  # summed over operations
    return out


def since(now: Totals, before: Totals | None) -> Totals:
    """What happened between two readings of one series set (a host that restarted starts again at 0)."""
    if before is None or now.invocations < before.invocations or now.http < before.http:
        return now
    return Totals(
        http=now.http - before.http,
        http_5xx=now.http_5xx - before.http_5xx,
        invocations=now.invocations - before.invocations,
        invocation_errors=now.invocation_errors - before.invocation_errors,
        buckets={le: n - before.buckets.get(le, 0.0) for le, n in now.buckets.items()},
    )


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The `q` quantile of a cumulative histogram, interpolated inside its bucket as PromQL's
    `histogram_quantile` does; None when it counted nothing.

    prometheus_client parses the text but computes no quantiles, hence this function. A quantile
    in the `+Inf` bucket is the highest finite bound (it is known only to be above it).
    """
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def _ms(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 3)


def summarize(
    current: dict[tuple[str, str], Totals],
    previous: dict[tuple[str, str], Totals] | None,
    interval_s: float | None,
    previous_hosts: frozenset[str] = frozenset(),
) -> dict[str, dict[str, Any]]:
    """Per component ID: totals over its hosts, and rates and percentiles over the interval.

    Only hosts read by the previous scrape too (`previous_hosts`) add to the interval: a host seen
    for the first time brings its whole history, which did not happen in the interval. A component
    new on such a host did: its series started at zero.
    """
    components: dict[str, dict[str, Any]] = {}
    deltas: dict[str, list[Totals]] = {}
    for (host, cid), totals in sorted(current.items()):
        entry = components.setdefault(cid, {"requests_total": 0, "errors_total": 0, "hosts": []})
        entry["requests_total"] += int(totals.requests)
        entry["errors_total"] += int(totals.errors)
        entry["hosts"].append(host)
        if previous is not None and host in previous_hosts:
            deltas.setdefault(cid, []).append(since(totals, previous.get((host, cid))))
    for cid, entry in components.items():
        entry.update(
            interval_s=None,
            requests=None,
            errors=None,
            request_rate=None,
            error_rate=None,
            p50_ms=None,
            p95_ms=None,
            p99_ms=None,
        )
        parts = deltas.get(cid)
        if parts is None or not interval_s:
            continue
        requests = sum(p.requests for p in parts)
        errors = sum(p.errors for p in parts)
        buckets: dict[float, float] = {}
        for p in parts:
            for le, n in p.buckets.items():
                buckets[le] = buckets.get(le, 0.0) + n
        entry.update(
            interval_s=round(interval_s, 3),
            requests=int(requests),
            errors=int(errors),
            request_rate=round(requests / interval_s, 3),
            error_rate=round(errors / requests, 4) if requests else None,
            p50_ms=_ms(quantile(0.5, buckets)),
            p95_ms=_ms(quantile(0.95, buckets)),
            p99_ms=_ms(quantile(0.99, buckets)),
        )
    return components


class PrometheusMetrics:
    """Scrapes the `/metrics` endpoints the hosts of lattice `lattice` advertise over `nc`."""

    def __init__(self, nc: Any, lattice: str, *, session: aiohttp.ClientSession | None = None) -> None:
        self.nc = nc
        self.lattice = lattice
        self.endpoints: dict[str, str] = {}  # host ID -> scrape URL
        self._asked_at = -math.inf
        self._asked_for: frozenset[str] = frozenset()
        self._session = session
        self._previous: dict[tuple[str, str], Totals] | None = None
        self._previous_hosts: frozenset[str] = frozenset()
        self._previous_at: float | None = None

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def discover(self) -> dict[str, str]:
        """Ask every host where its `/metrics` is; host ID -> URL of those that answered."""
        inbox = self.nc.new_inbox()
        found: dict[str, str] = {}

        async def on_reply(msg: Any) -> None:
            try:
                reply = json.loads(msg.data)
            except ValueError:
                return
            if not isinstance(reply, dict):
                return
            host, url = reply.get("host_id"), reply.get("url")
            if (
                isinstance(host, str)
                and isinstance(url, str)
                and url.startswith(("http://", "https://"))
                and len(found) < MAX_ENDPOINTS
            ):
                found[host] = url

        sub = await self.nc.subscribe(inbox, cb=on_reply)
        try:
            await self.nc.publish(sj.metrics_endpoints_subject(self.lattice), b"{}", reply=inbox)
            await asyncio.sleep(DISCOVERY_WAIT_S)
        finally:
            await sub.unsubscribe()
        return found

    async def _scrape(self, url: str) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S))
        async with self._session.get(url, headers={"Accept": "text/plain;version=0.0.4"}) as r:
            if r.status != 200:
                raise ValueError(f"{url} answered HTTP {r.status}")
            body = await r.content.read(MAX_SCRAPE_BYTES + 1)
            if len(body) > MAX_SCRAPE_BYTES:
                raise ValueError(f"{url} sent more than {MAX_SCRAPE_BYTES} bytes")
            return body.decode("utf-8", "replace")

    async def snapshot(self, host_ids: Sequence[str]) -> dict[str, Any]:
        """Scrape every advertised endpoint of `host_ids` and summarize (see the module docstring)."""
        wanted = frozenset(host_ids)
        if not wanted:
            return {"available": False, "components": {}, "hint": HINT}
        now = time.monotonic()
        if wanted - self._asked_for or now - self._asked_at > REDISCOVER_S:
            self.endpoints = await self.discover()
            self._asked_at, self._asked_for = now, wanted
        urls = sorted({url for host, url in self.endpoints.items() if host in wanted})
        if not urls:
            return {"available": False, "components": {}, "hint": HINT}
        results = await asyncio.gather(*(self._scrape(u) for u in urls), return_exceptions=True)
        current: dict[tuple[str, str], Totals] = {}
        failures: list[str] = []
        read: set[str] = set()
        for url, result in zip(urls, results, strict=True):
            if not isinstance(result, BaseException):
                try:
                    current.update(parse_totals(result, wanted))
                    read.update(h for h, u in self.endpoints.items() if u == url and h in wanted)
                    continue
                except ValueError as e:
                    result = ValueError(f"not Prometheus text: {e}")
            failures.append(f"{url}: {type(result).__name__}: {result}".rstrip(": "))
            # Its hosts keep their last reading, so that the next good scrape counts from there.
            for key, totals in (self._previous or {}).items():
                if self.endpoints.get(key[0]) == url:
                    current[key] = totals
        if failures:
            self._asked_at = -math.inf  # an endpoint that moved (a restarted host) is asked for again
        if len(failures) == len(urls):
            return {"available": False, "components": {}, "error": "; ".join(failures)[:1000]}
        taken = time.monotonic()
        interval = None if self._previous_at is None else taken - self._previous_at
        components = summarize(current, self._previous, interval, self._previous_hosts)
        self._previous, self._previous_at = current, taken
        self._previous_hosts = frozenset(read) | (self._previous_hosts - read if failures else frozenset())
        snapshot: dict[str, Any] = {"available": True, "components": components, "endpoints": urls}
        if failures:
            snapshot["failed"] = failures
        return snapshot
