"""The dashboard's request metrics, scraped from real hosts' `/metrics` over HTTP.

Two host processes with `--metrics-listen 127.0.0.1:0` on a real nats-server; an HTTP component on
host A behind the builtin HTTP server. The dashboard learns each host's endpoint on
`wasmlattice.metrics_endpoints.<lattice>` (host B's too, though it runs nothing), scrapes the
Prometheus text, and its counts follow the requests the test sends: N requests are N more in the
interval and in the total, guest 5xx answers are its errors, and the latency percentiles come from
the invocation histogram. Then the same through the dashboard's JSON API (`/api/state`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.http import get
from tests.support.lattice import LatticeEnv, eventually, serve_http
from tests.support.processes import free_port
from wasmlattice.protocol import subjects as sj
from wasmlattice.protocol.connection import NatsOptions
from wasmlattice.ui.metrics import PrometheusMetrics
from wasmlattice.ui.run import start_dashboard
from wasmlattice.ui.server import page_token

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

OK, FAILED = 7, 3


async def endpoints(env: LatticeEnv) -> dict[str, str]:
    """Every answer on the metrics-endpoints subject within a second."""
    inbox = env.nc.new_inbox()
    found: dict[str, str] = {}

    async def on_reply(msg: Any) -> None:
        reply = json.loads(msg.data)
        found[reply["host_id"]] = reply["url"]

    sub = await env.nc.subscribe(inbox, cb=on_reply)
    await env.nc.publish(sj.metrics_endpoints_subject(env.lattice), b"{}", reply=inbox)
    await asyncio.sleep(1.0)
    await sub.unsubscribe()
    return found


async def send(url: str) -> None:
    for _ in range(OK):
        assert (await get(url + "/echo"))[0] == 200
    for _ in range(FAILED):
        assert (await get(url + "/echo?status=503"))[0] == 503


async def test_dashboard_metrics_follow_the_requests_sent(
    env: LatticeEnv, build_component: Callable[[str], Path]
) -> None:
    env.start_host("--metrics-listen", "127.0.0.1:0")
    env.start_host("--metrics-listen", "127.0.0.1:0")
    a, b = await env.host_ids(2)
    found = await endpoints(env)
    assert set(found) == {a, b} and found[a] != found[b], found
    assert all(u.startswith("http://127.0.0.1:") and u.endswith("/metrics") for u in found.values())

    url = await serve_http(
        env, a, "echo", "file://" + str(build_component("http_echo")), port=free_port(), ready_path="/echo"
    )

    source = PrometheusMetrics(env.nc, env.lattice)
    try:
        first = await source.snapshot([a, b])
        assert first["available"] is True, first
        assert sorted(first["endpoints"]) == sorted(found.values())
        before = first["components"]["echo"]  # serve_http's readiness requests
        assert before["request_rate"] is None  # no interval yet
        assert before["hosts"] == [a]

        await send(url)
        second = await source.snapshot([a, b])
        echo = second["components"]["echo"]
        assert echo["requests"] == OK + FAILED
        assert echo["errors"] == FAILED
        assert echo["error_rate"] == pytest.approx(FAILED / (OK + FAILED), abs=1e-3)
        assert echo["request_rate"] > 0
        assert echo["requests_total"] == before["requests_total"] + OK + FAILED
        assert echo["errors_total"] == before["errors_total"] + FAILED
        assert 0 < echo["p50_ms"] <= echo["p95_ms"] <= echo["p99_ms"]

        # Nothing sent since: an interval with no requests and so no error rate.
        third = (await source.snapshot([a, b]))["components"]["echo"]
        assert third["requests"] == 0 and third["error_rate"] is None
        assert third["requests_total"] == echo["requests_total"]
    finally:
        await source.close()

    # The same numbers on the dashboard's JSON API, refreshed every half second.
    dash = await start_dashboard(
        NatsOptions(url=env.nats_url), env.lattice, "127.0.0.1", 0, timeout=2.0, refresh_interval=0.5
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            async with http.get(dash.url) as r:
                token = page_token(await r.text())

            async def state() -> dict[str, Any]:
                async with http.get(dash.url + "api/state", headers={"X-Wasmlattice-Token": token}) as r:
                    assert r.status == 200
                    data: dict[str, Any] = await r.json()
                    return data

            async def has_echo() -> None:
                metrics = (await state())["metrics"]
                assert metrics["available"] and "echo" in metrics["components"], metrics

            await eventually(has_echo, 60, "the dashboard's metrics of echo")
            start = (await state())["metrics"]["components"]["echo"]
            await send(url)

            async def counted() -> None:
                m = (await state())["metrics"]["components"]["echo"]
                assert m["requests_total"] == start["requests_total"] + OK + FAILED, m
                assert m["errors_total"] == start["errors_total"] + FAILED, m

            await eventually(counted, 60, "the dashboard counting the new requests")
    finally:
        await dash.stop()
