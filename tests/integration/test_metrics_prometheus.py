"""A real Prometheus scrapes two hosts and the app manager; its query API returns what happened.

Debian's `prometheus` (make system-deps) runs as the test's own process on a free port, scraping
every second the `/metrics` endpoints that `WASMLATTICE_METRICS_LISTEN` opens on host A (the
HTTP server provider), host B (the component) and an `app-manager` process. The app manager
deploys the app; the test sends requests through A to the component on B and asks Prometheus
(`/api/v1/query`) for the invocations B counted, the requests A counted, and the app's status.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest

from tests.support.lattice import LatticeEnv, eventually
from tests.support.processes import free_port, wasmlattice_cmd
from wasmlattice.apps.client import AppClient

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

REQUESTS = 25


@pytest.fixture
def prometheus_bin() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed; `make system-deps` installs Debian's package")
    return binary


class Prometheus:
    """A Prometheus server of the test's own, and its HTTP query API."""

    def __init__(self, binary: str, directory: Path, targets: list[str]) -> None:
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "prometheus.yml"
        config.write_text(
            textwrap.dedent(
                f"""\
                global:
                  scrape_interval: 1s
                  scrape_timeout: 1s
                scrape_configs:
                  - job_name: wasmlattice
                    static_configs:
                      - targets: {targets!r}
                """
            )
        )
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def ready(self) -> None:
        async def check() -> None:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            try:
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(f"http://127.0.0.1:{self.port}/-/ready") as r,
                ):
                    assert r.status == 200
            except aiohttp.ClientError as e:
                raise AssertionError(f"prometheus not answering: {e}") from None

        await eventually(check, 60.0, "prometheus ready")

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant query."""
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": promql}) as r,
        ):
            body = await r.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def value(self, promql: str) -> float | None:
        """The single value an instant query returns (None when it returns nothing)."""
        result = await self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def app_manager(env: LatticeEnv, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """An `app-manager` process serving `/metrics` on a free port."""
    port = free_port()
    log = (tmp_path / "app-manager.log").open("wb")
    proc = subprocess.Popen(
        wasmlattice_cmd("app-manager", "--nats-url", env.nats_url, "--lattice", env.lattice),
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**env.env, "WASMLATTICE_METRICS_LISTEN": f"127.0.0.1:{port}"},
    )
    yield proc, port
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def manifest(echo_ref: str, port: int) -> dict[str, Any]:
    """The echo component on host `b`, the HTTP server on host `a`, linked on `port`."""
    listen = {"config": [{"name": "listen", "properties": {"address": f"127.0.0.1:{port}"}}]}
    on = lambda name: {"name": name, "requirements": {"name": name}}  # noqa: E731
    return {
        "apiVersion": "core.oam.dev/v1beta1",
        "kind": "Application",
        "metadata": {"name": "metered", "annotations": {"version": "v1"}},
        "spec": {
            "components": [
                {
                    "name": "echo",
                    "type": "component",
                    "properties": {"image": echo_ref},
                    "traits": [{"type": "spreadscaler", "properties": {"instances": 2, "spread": [on("b")]}}],
                },
                {
                    "name": "http",
                    "type": "capability",
                    "properties": {"image": "builtin://http-server"},
                    "traits": [
                        {"type": "spreadscaler", "properties": {"instances": 1, "spread": [on("a")]}},
                        {
                            "type": "link",
                            "properties": {
                                "namespace": "wasi",
                                "package": "http",
                                "interfaces": ["incoming-handler"],
                                "target": "echo",
                                "source": listen,
                            },
                        },
                    ],
                },
            ]
        },
    }


async def test_prometheus_scrapes_hosts_and_app_manager(
    env: LatticeEnv,
    app_manager: tuple[subprocess.Popen[bytes], int],
    echo_ref: str,
    prometheus_bin: str,
    tmp_path: Path,
) -> None:
    metrics_a, metrics_b = free_port(), free_port()
    env.start_host("--label", "name=a", env={"WASMLATTICE_METRICS_LISTEN": f"127.0.0.1:{metrics_a}"})
    env.start_host("--label", "name=b", env={"WASMLATTICE_METRICS_LISTEN": f"127.0.0.1:{metrics_b}"})
    await env.host_ids(2)  # in the order they announced themselves: find which is which by label
    named = {h.labels["name"]: h.id for h in await env.ctl.ping_hosts(wait=1.0)}
    host_a, host_b = named["a"], named["b"]
    _, metrics_manager = app_manager
    targets = [f"127.0.0.1:{p}" for p in (metrics_a, metrics_b, metrics_manager)]
    prom = Prometheus(prometheus_bin, tmp_path / "prometheus", targets)
    try:
        await prom.ready()

        async def all_up() -> None:
            assert await prom.value("count(up == 1)") == 3.0, await prom.query("up")

        await eventually(all_up, 60.0, "all three targets scraped")

        # Deploy through the app manager; wait for `deployed`.
        nc = await nats.connect(env.nats_url)
        try:
            apps = AppClient(nc, env.lattice, timeout=10.0)
            port = free_port()
            doc = manifest(echo_ref, port)
            await apps.put(doc)
            await apps.deploy("metered", "v1")

            async def deployed() -> None:
                assert (await apps.status("metered")).status == "deployed"

            await eventually(deployed, 90.0, "app deployed")
        finally:
            await nc.close()

        # Requests through host A to the component on host B. Every answered 200 ran the guest
        # once on B; one refused before the route or component is ready ran nothing.
        url = f"http://127.0.0.1:{port}/echo"
        answered = 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
            for _ in range(600):
                try:
                    async with s.get(url) as r:
                        await r.read()
                        if r.status == 200:
                            answered += 1
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            assert answered == 1, "the app never answered through host A"
            for _ in range(REQUESTS):
                async with s.get(url) as r:
                    await r.read()
                    assert r.status == 200
                    answered += 1
            # One capability call: outgoing HTTP with no link to an http-client fails (502).
            async with s.get(f"http://127.0.0.1:{port}/outgoing?url=http://127.0.0.1:9/") as r:
                await r.read()
                assert r.status == 502
        assert answered == REQUESTS + 1
        cid = "metered-echo"

        async def counted() -> None:
            by_host = await prom.query(
                f'sum by (host) (wasmcloud_host_component_invocations_total{{component_id="{cid}"}})'
            )
            got = {row["metric"]["host"]: float(row["value"][1]) for row in by_host}
            assert got == {host_b: float(answered + 1)}, got
            ok = await prom.query(
                "sum by (host) (wasmlattice_http_server_requests_total"
                f'{{component_id="{cid}",http_response_status_code="200"}})'
            )
            got = {row["metric"]["host"]: float(row["value"][1]) for row in ok}
            assert got == {host_a: float(answered)}, got
            errors = f'sum(wasmcloud_host_component_invocation_errors_total{{component_id="{cid}"}})'
            assert await prom.value(errors) == 0.0
            hist = (
                f'sum(wasmcloud_host_handle_rpc_message_duration_nanoseconds_count{{component_id="{cid}"}})'
            )
            assert await prom.value(hist) == float(answered + 1)
            failed = (
                "wasmlattice_http_server_requests_total"
                f'{{component_id="{cid}",http_response_status_code="502"}}'
            )
            assert await prom.value(failed) == 1.0
            calls = await prom.query(f'wasmlattice_capability_calls_total{{component_id="{cid}"}}')
            assert [(c["metric"]["interface"], c["metric"]["outcome"], c["value"][1]) for c in calls] == [
                ("wasi:http/outgoing-handler", "error", "1")
            ], calls

        await eventually(counted, 30.0, f"{answered + 1} invocations in Prometheus")

        # The component's instance bound on B, the hosts' process gauges, and the app manager's.
        async def gauges() -> None:
            assert await prom.value(f'wasmcloud_host_component_max_instances{{component_id="{cid}"}}') == 2.0
            rss = await prom.query("wasmcloud_host_process_memory_used_bytes")
            assert len(rss) == 3 and all(float(r["value"][1]) > 0 for r in rss), rss
            assert (
                await prom.value(f'wasmlattice_apps_status{{lattice="{env.lattice}",status="deployed"}}')
                == 1.0
            )
            assert (
                await prom.value(f'wasmlattice_apps_status{{lattice="{env.lattice}",status="failed"}}') == 0.0
            )
            rounds = await prom.value(
                'sum(wasmlattice_apps_reconcile_rounds_total{role="leader",outcome="ok"})'
            )
            assert rounds is not None and rounds > 0

        await eventually(gauges, 30.0, "gauges in Prometheus")
        assert not env.host_tracebacks()
    finally:
        prom.stop()


async def test_host_refuses_to_start_on_a_taken_metrics_address(env: LatticeEnv) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        env.start_host(env={"WASMLATTICE_METRICS_LISTEN": address})
        proc = env.procs[-1]
        code = await asyncio.to_thread(proc.wait, 120)
    assert code != 0
    assert f"metrics listen address {address}: cannot listen" in env.log_text()
    assert not any(e["type"].endswith("host_started") for e in env.events)
