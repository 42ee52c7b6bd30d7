"""`wasmlattice logs`: guest and host log lines of every host, over NATS (docs/observability.md).

Real nats-server, two host processes, the `http_echo` guest (its `/stderr?msg=TEXT` route prints
TEXT on stderr), and the CLI as a subprocess: the guest runs on host B behind an HTTP server
provider on host A, and `wasmlattice logs --follow` shows its line with host, component and trace
fields. Without `--follow` the hosts' recent lines are printed, filtered by component and host.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import uuid
from typing import Any

import nats.errors
import pytest

from tests.support.cli import cli, cli_ok
from tests.support.http import get, wait_status
from tests.support.lattice import HTTP_SERVER, LatticeEnv, http_link
from tests.support.processes import free_port, wasmlattice_cmd

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

FIELDS = {"time", "level", "host_id", "component_id", "stream", "trace_id", "span_id", "message"}
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def echo_on_b_served_by_a(env: LatticeEnv, echo_ref: str) -> tuple[str, str, str]:
    """Hosts A and B; `echo` runs on B, A's HTTP server provider forwards to it. (A, B, base URL)."""
    env.start_host()
    env.start_host()
    a, b = await env.host_ids(2)
    assert await env.ctl.scale_component(b, echo_ref, "echo", 2) == ""
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "echo")
    await env.ctl.start_provider(a, HTTP_SERVER, "http-server")
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "http-server")
    port = free_port()
    await env.ctl.put_config("echo-addr", {"address": f"127.0.0.1:{port}"})
    await env.ctl.put_link(http_link("http-server", "echo", ["echo-addr"]))
    url = f"http://127.0.0.1:{port}"
    await wait_status(url + "/echo", 200)
    return a, b, url


def check_shape(record: dict[str, Any]) -> None:
    """The record shape every consumer (CLI, dashboard) relies on."""
    assert set(record) == FIELDS, record
    assert RFC3339_MS.match(record["time"]), record["time"]
    assert record["stream"] in ("stdout", "stderr", "log", "host")
    assert record["level"] in ("trace", "debug", "info", "warn", "error", "critical")
    for key, digits in (("trace_id", 32), ("span_id", 16)):
        value = record[key]
        assert value is None or re.fullmatch(f"[0-9a-f]{{{digits}}}", value), record


async def read_record(stdout: asyncio.StreamReader, where: Any, timeout: float) -> dict[str, Any]:
    """The first JSON line on `stdout` for which `where(record)` holds."""

    async def scan() -> dict[str, Any]:
        while True:
            line = await stdout.readline()
            assert line, "the logs command ended"
            record: dict[str, Any] = json.loads(line)
            check_shape(record)
            if where(record):
                return record

    return await asyncio.wait_for(scan(), timeout)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("WASMLATTICE_", "WASMCLOUD_"))}


async def test_logs_follow_shows_a_guest_line_from_another_host(env: LatticeEnv, echo_ref: str) -> None:
    a, b, url = await echo_on_b_served_by_a(env, echo_ref)
    target = ("--nats-url", env.nats_url, "--lattice", env.lattice)
    proc = await asyncio.create_subprocess_exec(
        *wasmlattice_cmd("logs", "--follow", "--tail", "0", "-o", "json", *target),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        ready = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert b"following the logs of lattice" in ready, ready

        marker = f"logline-{uuid.uuid4().hex}"
        sent = time.monotonic()
        status, _ = await get(f"{url}/stderr?msg={marker}", timeout=30.0)
        assert status == 200
        record = await read_record(proc.stdout, lambda r: r["message"] == marker, timeout=30)
        elapsed = time.monotonic() - sent
        # Measured, not asserted tightly (shared CI machines): the issue asks for 1 s.
        print(f"a guest line from host B reached `wasmlattice logs --follow` in {elapsed * 1000:.0f} ms")
        assert record["host_id"] == b and record["component_id"] == "echo"
        assert record["stream"] == "stderr" and record["level"] == "warn"

        # The host's own lines stream too, as component `_host` (a scale logs one on B).
        assert await env.ctl.scale_component(b, echo_ref, "echo", 3) == ""
        host_line = await read_record(
            proc.stdout, lambda r: r["component_id"] == "_host" and r["host_id"] == b, timeout=30
        )
        assert host_line["stream"] == "host" and host_line["message"].startswith("wasmlattice.")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0, (await proc.stderr.read()).decode() if proc.stderr else code

    # Without --follow: each host's recent lines, merged; filtered by component and by host.
    text = cli_ok("logs", "echo", *target).stdout
    line = next(ln for ln in text.splitlines() if marker in ln)
    assert f" {b[:12]} echo [stderr] trace=" in line and line.split()[1] == "WARN"
    assert all(" echo [" in ln for ln in text.splitlines())

    def recent(*args: str) -> list[dict[str, Any]]:
        out = cli_ok("logs", "-o", "json", *args, *target).stdout
        records = [json.loads(ln) for ln in out.splitlines()]
        for r in records:
            check_shape(r)
        return records

    assert not [r for r in recent("echo", "--host", a) if r["message"] == marker]
    assert [r for r in recent("echo", "--host", b) if r["message"] == marker]
    everything = recent("--tail", "1000")
    joined = {
        r["host_id"] for r in everything if r["component_id"] == "_host" and "joined lattice" in r["message"]
    }
    assert joined == {a, b}
    times = [r["time"] for r in everything]
    assert times == sorted(times)
    assert len(recent("--tail", "3")) == 3

    # A host ID that cannot be a subject token is refused before anything is sent.
    bad = await asyncio.to_thread(cli, "logs", "--host", "a.b", *target)
    assert bad.returncode != 0 and "a.b" in bad.stderr


async def test_hosts_with_lattice_logs_off_publish_nothing(env: LatticeEnv, echo_ref: str) -> None:
    env.start_host(env={"WASMLATTICE_LATTICE_LOGS": "0"})
    (host,) = await env.host_ids(1)
    seen: list[Any] = []

    async def on_msg(msg: Any) -> None:
        seen.append(msg)

    await env.nc.subscribe(f"wasmlattice.logs.{env.lattice}.>", cb=on_msg)
    assert await env.ctl.scale_component(host, echo_ref, "echo", 1) == ""
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "echo")

    # Nobody answers for recent lines either (and a second has passed for any record to arrive).
    with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
        await env.nc.request(f"wasmlattice.logs_recent.{env.lattice}", b"", timeout=1.0)
    assert seen == []
