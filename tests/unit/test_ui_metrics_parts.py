"""The dashboard's arithmetic on scraped Prometheus text: totals, intervals and quantiles."""

from __future__ import annotations

import math
import socket

import pytest

from wasmlattice.lattice.metrics_endpoint import advertised_url
from wasmlattice.ui.metrics import Totals, parse_totals, quantile, since, summarize

HTTP = "wasmlattice_http_server_requests_total"
CALLS = "wasmcloud_host_component_invocations_total"
FAILS = "wasmcloud_host_component_invocation_errors_total"
DURATION = "wasmcloud_host_handle_rpc_message_duration_nanoseconds"


def sample(name: str, value: float, **labels: str) -> str:
    """One line of Prometheus text."""
    shown = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{shown}}} {value}"


def http(host: str, cid: str, status: str, n: float) -> str:
    return sample(
        HTTP, n, component_id=cid, host=host, http_request_method="GET", http_response_status_code=status
    )


def bucket(le: str, n: float) -> str:
    return sample(DURATION + "_bucket", n, component_id="web", host="H1", le=le, operation="h")


TEXT = "\n".join(
    [
        f"# TYPE {HTTP} counter",
        http("H1", "web", "200", 8),
        http("H1", "web", "503", 2),
        http("H1", "", "404", 5),
        http("OTHER", "web", "200", 99),
        f"# TYPE {CALLS} counter",
        sample(CALLS, 4, component_id="worker", host="H1", operation="x"),
        f"# TYPE {FAILS} counter",
        sample(FAILS, 1, component_id="worker", host="H1", operation="x"),
        f"# TYPE {DURATION} histogram",
        bucket("1e+06", 5),
        bucket("1e+07", 10),
        bucket("+Inf", 10),
        sample(DURATION + "_count", 10, component_id="web", host="H1", operation="h"),
        sample(DURATION + "_sum", 3e7, component_id="web", host="H1", operation="h"),
        "",
    ]
)


def test_totals_of_the_asked_hosts_only() -> None:
    totals = parse_totals(TEXT, ["H1"])
    assert set(totals) == {("H1", "web"), ("H1", "worker")}  # no unrouted "", no other host
    web, worker = totals[("H1", "web")], totals[("H1", "worker")]
    assert (web.http, web.http_5xx, web.requests, web.errors) == (10, 2, 10, 2)
    assert web.buckets == {1e6: 5, 1e7: 10, math.inf: 10}
    # No HTTP: its invocations are its requests.
    assert (worker.requests, worker.errors) == (4, 1)


def test_quantiles_interpolate_inside_the_bucket() -> None:
    buckets = {1e6: 5.0, 1e7: 10.0, math.inf: 10.0}
    assert quantile(0.5, buckets) == pytest.approx(1e6)
    assert quantile(0.75, buckets) == pytest.approx(1e6 + 9e6 * 0.5)
    assert quantile(0.25, buckets) == pytest.approx(0.5e6)
    assert quantile(0.99, {1e6: 0.0, math.inf: 3.0}) == 1e6  # above the last bound: that bound
    assert quantile(0.5, {1e6: 0.0, math.inf: 0.0}) is None
    assert quantile(0.5, {}) is None


def test_interval_and_restart() -> None:
    before = Totals(http=10, http_5xx=2, invocations=10, buckets={1e6: 5, math.inf: 10})
    now = Totals(http=14, http_5xx=3, invocations=14, buckets={1e6: 8, math.inf: 14})
    d = since(now, before)
    assert (d.http, d.http_5xx, d.invocations, d.buckets) == (4, 1, 4, {1e6: 3, math.inf: 4})
    restarted = Totals(http=3, invocations=3)
    assert since(restarted, before) is restarted


def test_summary_rates_need_two_scrapes_of_the_host() -> None:
    first = {("H1", "web"): Totals(http=10, http_5xx=2, invocations=10, buckets={1e6: 10, math.inf: 10})}
    s = summarize(first, None, None)["web"]
    assert s["requests_total"] == 10 and s["request_rate"] is None and s["error_rate"] is None
    second = {
        ("H1", "web"): Totals(http=20, http_5xx=7, invocations=20, buckets={1e6: 20, math.inf: 20}),
        ("H2", "web"): Totals(http=100, invocations=100, buckets={math.inf: 100}),  # newly seen host
    }
    s = summarize(second, first, 2.0, frozenset({"H1"}))["web"]
    assert s["requests_total"] == 120 and s["errors_total"] == 7 and s["hosts"] == ["H1", "H2"]
    assert (s["requests"], s["errors"], s["request_rate"], s["error_rate"]) == (10, 5, 5.0, 0.5)
    assert s["p50_ms"] == pytest.approx(0.5)


def test_advertised_url_of_a_listen_address() -> None:
    assert advertised_url("127.0.0.1", 9464) == "http://127.0.0.1:9464/metrics"
    assert advertised_url("::1", 9464) == "http://[::1]:9464/metrics"
    assert advertised_url("0.0.0.0", 9) == f"http://{socket.gethostname()}:9/metrics"
