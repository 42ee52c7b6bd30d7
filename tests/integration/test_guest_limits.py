"""Bounded by default: guest memory per instance, the host's memory budget, guest output limits.

Real host processes (`python -m wasmlattice.lattice.run`) over a real nats-server, the
`limits_guest` component built from source, HTTP through the builtin http-server provider. RSS
is the host process's `VmRSS` from `/proc/<pid>/status`. See docs/limits.md.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.http import get, wait_status
from tests.support.lattice import HTTP_SERVER, http_link, serve_http
from tests.support.lattice import LatticeEnv as Env
from tests.support.processes import free_port
from wasmlattice.client.ctl import CtlError

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

MiB = 1 << 20


@pytest.fixture(scope="module")
def limits_ref(build_component: object) -> str:
    """A file:// reference to the limits test guest."""
    path: Path = build_component("limits_guest")  # type: ignore[operator]
    return "file://" + str(path.resolve())


def rss(pid: int) -> int:
    """Resident memory of a process in bytes (`VmRSS`)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def warm(url: str) -> None:
    """A few healthy requests, so the baseline includes what serving itself allocates."""
    for _ in range(5):
        status, body = await get(url + "/ok", timeout=60.0)
        assert (status, body) == (200, "ok\n")


async def serve_with_limits(env: Env, host: str, component_id: str, ref: str, limits: dict[str, str]) -> str:
    """Like `serve_http` (max_instances 2), with `component_limits`; the component's base URL."""
    port = free_port()
    await env.ctl.put_config(f"{component_id}-addr", {"address": f"127.0.0.1:{port}"})
    assert await env.ctl.scale_component(host, ref, component_id, 2, limits=limits) == ""
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == component_id)
    await env.ctl.start_provider(host, HTTP_SERVER, f"http-{component_id}")
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == f"http-{component_id}")
    await env.ctl.put_link(http_link(f"http-{component_id}", component_id, [f"{component_id}-addr"]))
    url = f"http://127.0.0.1:{port}"
    await wait_status(url + "/ok", 200, timeout=60.0)
    return url


async def host_with(env: Env, *flags: str) -> tuple[str, int]:
    """One host with `flags`: its ID and process ID."""
    env.start_host(*flags)
    (host,) = await env.host_ids(1)
    return host, env.process_of(host).pid


async def test_a_memory_bomb_hits_the_default_limit_and_its_memory_is_freed(
    env: Env, limits_ref: str
) -> None:
    # No memory flag at all: the default per-instance limit (256 MiB) applies.
    host, pid = await host_with(env)
    url = await serve_http(env, host, "bomb", limits_ref, port=free_port(), ready_path="/ok")
    await warm(url)
    baseline = rss(pid)
    status, body = await get(url + "/bomb", timeout=120.0)
    assert status == 500, body
    assert "ran out of memory" in body and "256 MiB" in body, body
    assert "max_memory_limit" in body and "--max-instance-memory" in body, body
    # The host keeps serving, and the bomb's memory is gone right away.
    assert await get(url + "/ok") == (200, "ok\n")
    assert rss(pid) < baseline * 1.2, f"RSS {rss(pid) / MiB:.0f} MiB, baseline {baseline / MiB:.0f} MiB"
    assert env.host_tracebacks() == []


async def test_nine_traps_at_a_component_limit_release_their_memory_at_once(
    env: Env, limits_ref: str
) -> None:
    # The limit comes from the component (component_limits), as it could on any host.
    host, pid = await host_with(env)
    limits = {"max_memory_limit": str(256 * MiB)}
    url = await serve_with_limits(env, host, "traps", limits_ref, limits)
    inv = await env.inventory(host)
    assert [c.limits for c in inv.components] == [limits]
    await warm(url)
    baseline = rss(pid)
    replies = [await get(url + "/bomb", timeout=120.0) for _ in range(9)]
    # Right after, without waiting for a garbage collection.
    after = rss(pid)
    assert after < baseline * 1.2, (
        f"RSS {after / MiB:.0f} MiB after 9 traps, baseline {baseline / MiB:.0f} MiB"
    )
    for status, body in replies:
        assert status == 500 and "at most 256 MiB" in body, body
    # A plain trap is still a trap (not called out of memory), and the host still serves.
    status, body = await get(url + "/trap")
    assert status == 500 and "out of memory" not in body, body
    assert await get(url + "/grow?mib=64") == (200, "held 64 MiB\n")


async def test_a_scale_beyond_the_budget_is_refused_until_another_scales_down(
    env: Env, limits_ref: str
) -> None:
    host, _ = await host_with(env, "--guest-memory-budget", "1GiB", "--max-instance-memory", "256MiB")
    ctl = env.ctl
    assert await ctl.scale_component(host, limits_ref, "big", 3) == ""
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "big")
    # 2 x 256 MiB does not fit in the 256 MiB left: refused in the reply, with the reason.
    with pytest.raises(CtlError) as refused:
        await ctl.scale_component(host, limits_ref, "small", 2)
    reason = str(refused.value)
    assert "component small needs 512 MiB of guest memory (2 concurrent instances x 256 MiB)" in reason
    assert "the host's budget has 256 MiB left of 1 GiB (--guest-memory-budget)" in reason
    failed = await env.wait_event("component_scale_failed", lambda e: e["data"]["component_id"] == "small")
    assert "--guest-memory-budget" in failed["data"]["error"]
    # A component limit counts too: one instance of 2 GiB is more than the whole budget.
    with pytest.raises(CtlError, match="needs 2 GiB of guest memory"):
        await ctl.scale_component(host, limits_ref, "huge", 1, limits={"max_memory_limit": "2GiB"})
    # Scaling the first one down makes room.
    assert await ctl.scale_component(host, limits_ref, "big", 1) == ""
    await env.wait_event(
        "component_scaled",
        lambda e: e["data"]["component_id"] == "big" and e["data"]["max_instances"] == 1,
    )
    assert await ctl.scale_component(host, limits_ref, "small", 2) == ""
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "small")
    # Stopping frees the rest: now 3 more fit again.
    assert await ctl.scale_component(host, limits_ref, "small", 0) == ""
    await env.wait_event(
        "component_scaled",
        lambda e: e["data"]["component_id"] == "small" and e["data"]["max_instances"] == 0,
    )
    assert await ctl.scale_component(host, limits_ref, "third", 3) == ""
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "third")
    inv = await env.inventory(host)
    assert sorted((c.id, c.max_instances) for c in inv.components) == [("big", 1), ("third", 3)]


async def test_an_output_flood_is_capped_and_the_drops_are_reported(env: Env, limits_ref: str) -> None:
    host, _ = await host_with(
        env,
        "--guest-output-lines",
        "20",
        "--guest-output-report-interval",
        "1",
        "--guest-output-max-line",
        "1KiB",
    )
    url = await serve_http(env, host, "flood", limits_ref, port=free_port(), ready_path="/ok")
    status, body = await get(url + "/flood?lines=5000&len=100", timeout=60.0)
    assert (status, body) == (200, "wrote 5000 lines\n")
    await env.wait_log("of stdout in the last")
    await asyncio.sleep(2.5)  # every report of the flood is out (one a second)
    lines = env.log_text().splitlines()
    logged = sum(1 for line in lines if "[flood stdout] flood " in line)
    # 20 lines/s with a 5 s burst: about 100 lines pass, far from 5000.
    assert 50 <= logged <= 400, logged
    reports = [line for line in lines if "of stdout in the last" in line]
    assert all("component flood: dropped " in r and " lines (" in r for r in reports), reports
    dropped = sum(int(r.split("dropped ", 1)[1].split(" ", 1)[0].replace(",", "")) for r in reports)
    # At least every line written (more when an inline attempt was abandoned and run again on a
    # thread: runtime/execution.py; its output had already been written).
    assert dropped + logged >= 5000, (dropped, logged)
    # A line longer than the cap is cut, and the cut is marked.
    await asyncio.sleep(2.0)  # the bucket refills
    assert await get(url + "/longline?len=100000") == (200, "wrote one line\n")
    text = await env.wait_log("more bytes of this line cut")
    cut = next(line for line in text.splitlines() if "more bytes of this line cut" in line)
    assert "98,976 more bytes" in cut and len(cut) < 1024 + 300, len(cut)
    assert await get(url + "/ok") == (200, "ok\n")
