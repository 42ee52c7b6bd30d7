"""Warm instance pools on a real host process (docs/instance-pools.md).

`http_echo`'s `/count` answers how many requests the instance that serves it has handled, so it
shows whether an instance was reused. Requests are sent one at a time: the pool hands out the
newest idle instance, so a sequence of requests walks one instance through its life.
"""

from __future__ import annotations

import re

import pytest

from tests.integration.test_apps import Apps, apps, capability, component, link, manifest, spread
from tests.support.http import get
from tests.support.lattice import LatticeEnv, eventually, serve_http
from tests.support.processes import free_port
from wasmlattice.client.ctl import CtlError

__all__ = ["apps"]  # the app-manager fixture of test_apps, used here too


pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


async def counts(url: str, n: int) -> list[int]:
    """`/count` asked `n` times in a row."""
    out = []
    for _ in range(n):
        status, text = await get(f"{url}/count")
        assert status == 200, text
        out.append(int(text))
    return out


async def scrape(port: int) -> str:
    status, text = await get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return text


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the series `name` with (at least) `labels` in a Prometheus text page; 0 if none."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_reuse_count_trap_and_inventory(env: LatticeEnv, echo_ref: str) -> None:
    metrics_port = free_port()
    env.start_host(env={"WASMLATTICE_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"})
    (host,) = await env.host_ids(1)
    annotations = {"wasmlattice.dev/max-reuse": "3", "wasmlattice.dev/pool-size": "2"}
    url = await serve_http(
        env, host, "warm", echo_ref, port=free_port(), ready_path="/echo", annotations=annotations
    )
    # Whatever instance answered the readiness probe, a fresh one starts within three requests.
    seen = await counts(url, 7)
    start = seen.index(1)
    assert seen[start : start + 3] == [1, 2, 3], seen
    assert max(seen) == 3, seen  # never more than three requests on one instance

    # A trap discards the instance: the next request runs on a fresh one, whatever it had served.
    status, _ = await get(f"{url}/count")
    assert status == 200
    status, text = await get(f"{url}/trap")
    assert status == 500, text
    assert await counts(url, 2) == [1, 2]

    # The inventory keeps wasmCloud's fields and reports the settings in effect in the annotations.
    inv = await env.inventory(host)
    (comp,) = [c for c in inv.components if c.id == "warm"]
    assert comp.annotations is not None
    assert comp.annotations["wasmlattice.dev/max-reuse"] == "3"
    assert comp.annotations["wasmlattice.dev/instance-pool"] == "max-reuse=3 pool-size=2 idle-timeout=60s"
    assert comp.max_instances == 4

    page = await scrape(metrics_port)
    who = {"component_id": "warm"}
    assert sample(page, "wasmlattice_component_pool_reuses_total", **who) >= 4
    assert sample(page, "wasmlattice_component_pool_discards_total", reason="trapped", **who) == 1
    assert sample(page, "wasmlattice_component_pool_discards_total", reason="used_up", **who) >= 1
    assert sample(page, "wasmlattice_component_pool_idle_instances", **who) == 1
    assert sample(page, "wasmlattice_component_pool_instances_created_total", **who) >= 3


async def test_interrupted_instance_is_discarded(env: LatticeEnv, echo_ref: str) -> None:
    env.start_host()
    (host,) = await env.host_ids(1)
    url = await serve_http(
        env,
        host,
        "slow",
        echo_ref,
        port=free_port(),
        ready_path="/echo",
        annotations={"wasmlattice.dev/max-reuse": "100"},
        limits={"max_execution_time": "1"},  # so that /loop is interrupted at its deadline
    )
    first, second = await counts(url, 2)
    assert second == first + 1  # a warm instance
    status, _ = await get(f"{url}/loop")
    assert status == 504
    assert await counts(url, 1) == [1]


async def test_idle_instances_are_reclaimed(env: LatticeEnv, echo_ref: str) -> None:
    metrics_port = free_port()
    env.start_host(env={"WASMLATTICE_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"})
    (host,) = await env.host_ids(1)
    annotations = {"wasmlattice.dev/max-reuse": "1000", "wasmlattice.dev/idle-timeout": "1"}
    url = await serve_http(
        env, host, "idle", echo_ref, port=free_port(), ready_path="/echo", annotations=annotations
    )
    await counts(url, 1)
    who = {"component_id": "idle"}

    async def reclaimed() -> None:
        page = await scrape(metrics_port)
        assert sample(page, "wasmlattice_component_pool_discards_total", reason="idle", **who) >= 1
        assert sample(page, "wasmlattice_component_pool_idle_instances", **who) == 0

    # The host's sweep closes the idle instance with nobody calling; the next request is fresh.
    await eventually(reclaimed, what="the idle instance reclaimed")
    assert await counts(url, 1) == [1]


async def test_default_is_fresh_per_request(env: LatticeEnv, echo_ref: str) -> None:
    env.start_host()
    (host,) = await env.host_ids(1)
    url = await serve_http(env, host, "cold", echo_ref, port=free_port(), ready_path="/echo")
    assert await counts(url, 5) == [1] * 5
    inv = await env.inventory(host)
    (comp,) = [c for c in inv.components if c.id == "cold"]
    assert comp.annotations == {}  # nothing added when reuse is off


@pytest.mark.parametrize(
    ("annotations", "needle"),
    [
        ({"wasmlattice.dev/max-reuse": "0"}, "annotation wasmlattice.dev/max-reuse: must be from 1 to"),
        (
            {"wasmlattice.dev/max-reuse": "lots"},
            "annotation wasmlattice.dev/max-reuse: expected a whole number",
        ),
        (
            {"wasmlattice.dev/max-reuse": "5", "wasmlattice.dev/idle-timeout": "-1"},
            "annotation wasmlattice.dev/idle-timeout: must be more than 0",
        ),
        ({"wasmlattice.dev/pool-size": "4"}, "annotation wasmlattice.dev/pool-size: has no effect unless"),
        ({"wasmlattice.dev/max-reuses": "4"}, "did you mean wasmlattice.dev/max-reuse?"),
    ],
)
async def test_bad_annotations_refuse_the_scale(
    env: LatticeEnv, echo_ref: str, annotations: dict[str, str], needle: str
) -> None:
    env.start_host()
    (host,) = await env.host_ids(1)
    with pytest.raises(CtlError, match=re.escape(needle)):
        await env.ctl.scale_component(host, echo_ref, "bad", 1, annotations=annotations)
    failed = await env.wait_event("component_scale_failed")
    assert needle in failed["data"]["error"]
    assert (await env.inventory(host)).components == []


async def test_manifest_annotations_reach_the_host(env: LatticeEnv, apps: Apps, echo_ref: str) -> None:
    env.start_host("--label", "name=h0", "--heartbeat-interval", "2")
    (host,) = await env.host_ids(1)
    await apps.start_manager()
    port = free_port()
    echo = component("echo", echo_ref, spread(1))
    echo["annotations"] = {"wasmlattice.dev/max-reuse": "2"}
    doc = manifest("warmapp", "v1", [echo, capability("http", "builtin://http-server")])
    listen = {"config": [{"name": "listen", "properties": {"address": f"127.0.0.1:{port}"}}]}
    doc["spec"]["components"][1]["traits"].append(
        link("wasi", "http", ["incoming-handler"], "echo", source=listen)
    )
    await apps.deploy(doc)
    await apps.wait_status("warmapp", "deployed")

    async def served() -> None:
        status, _ = await get(f"http://127.0.0.1:{port}/echo")
        assert status == 200

    await eventually(served, what="the app's HTTP route")
    seen = await counts(f"http://127.0.0.1:{port}", 5)
    assert max(seen) == 2 and seen.count(2) >= 2, seen  # two requests per instance
    inv = await env.inventory(host)
    (comp,) = [c for c in inv.components if c.id == "warmapp-echo"]
    assert comp.annotations is not None
    assert comp.annotations["wasmlattice.dev/max-reuse"] == "2"
    assert comp.annotations["wasmcloud.dev/appspec"] == "warmapp"  # wadm's, still there
