"""Workload commands as a user runs them: real nats-server, real host processes, CLI subprocesses.

`scale component` (auction with constraints, outcome events), `start/stop provider`, `link put` to the
builtin HTTP server provider, `update component`, and the failure paths (exit 1, one error line).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import cli, wait_hosts
from tests.support.cli import cli_ok as ok
from tests.support.processes import free_port, wasmlattice_cmd

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


def inventory(common: tuple[str, ...], host_id: str) -> dict[str, Any]:
    """`get inventory HOST -o json`."""
    inv: dict[str, Any] = json.loads(ok("get", "inventory", host_id, "-o", "json", *common).stdout)
    return inv


def http_get(url: str, timeout: float = 30.0) -> str:
    """Poll `url` until it answers 200; its body."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                if resp.status == 200:
                    return str(resp.read().decode("latin-1"))
                last = resp.status
        except (urllib.error.URLError, OSError) as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {timeout}s; last: {last}")


def test_scale_start_link_update_stop(
    nats_url: str,
    lattice_name: str,
    start_host: Callable[..., subprocess.Popen[bytes]],
    http_echo_wasm: Path,
    tmp_path: Path,
) -> None:
    common = ("--nats-url", nats_url, "--lattice", lattice_name)
    start_host("zone=eu")
    start_host("zone=us")
    hosts = wait_hosts(nats_url, lattice_name, 2)
    eu = next(str(h["id"]) for h in hosts if h["labels"]["zone"] == "eu")
    us = next(str(h["id"]) for h in hosts if h["labels"]["zone"] == "us")

    # A bare path becomes file://<abs>; the constraint picks the labelled host; the event is awaited.
    echo_copy = tmp_path / "echo.wasm"
    shutil.copyfile(http_echo_wasm, echo_copy)
    rel = os.path.relpath(echo_copy)
    r = ok("scale", "component", rel, "echo", "--count", "2", "-c", "zone=eu", "-o", "json", *common)
    result = json.loads(r.stdout)
    ref = f"file://{echo_copy.resolve()}"
    assert result["success"] is True and result["image_ref"] == ref
    assert [(x["host_id"], x["event"]) for x in result["results"]] == [(eu, "component_scaled")]
    comps = inventory(common, eu)["components"]
    assert [(c["id"], c["image_ref"], c["max_instances"]) for c in comps] == [("echo", ref, 2)]
    assert inventory(common, us)["components"] == []
    # Adding config (as docs/capabilities.md adds `--config SECRET_x`) without --count keeps the
    # count each host runs it with; it used to reset it to 1.
    ok("config", "put", "echo-extra", "greeting=hi", *common)
    again = ok("scale", "component", rel, "echo", "--config", "echo-extra", "-o", "json", *common)
    kept = json.loads(again.stdout)
    assert kept["count"] == 2 and [(x["host_id"], x["count"]) for x in kept["results"]] == [(eu, 2)]
    comps = inventory(common, eu)["components"]
    assert [(c["id"], c["max_instances"]) for c in comps] == [("echo", 2)]
    assert f"scaled to 2 on host {eu}" in ok("scale", "component", rel, "echo", *common).stdout

    # A component that cannot load: reported as failed, exit 1, one line naming the cause.
    bad = cli("scale", "component", str(tmp_path / "missing.wasm"), "ghost", "--host", us, *common)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "failed" in bad.stderr and "does not exist" in bad.stderr and bad.stderr.count("\n") == 1
    bad_json = cli("scale", "component", "/nope/x.wasm", "ghost", "--host", us, "-o", "json", *common)
    assert bad_json.returncode == 1 and json.loads(bad_json.stdout)["success"] is False
    # Outside the directories the host allows: refused in the host's reply, no file opened.
    (refusal,) = json.loads(bad_json.stdout)["results"]
    assert refusal["error"].endswith("not a regular file under the host's allowed directories (--allow-dir)")

    # No host matches the constraints.
    nomatch = cli("scale", "component", rel, "echo2", "-c", "zone=mars", "--auction-timeout", "0.5", *common)
    assert nomatch.returncode == 1
    assert "matches constraints" in nomatch.stderr and "wasmlattice get hosts" in nomatch.stderr

    # The builtin HTTP server provider, configured through a source config on the link.
    port = free_port()
    ok("config", "put", "echo-http", f"address=127.0.0.1:{port}", *common)
    started = ok("start", "provider", "builtin://http-server", "http-server", "-c", "zone=eu", *common)
    assert "started" in started.stdout and eu in started.stdout
    provs = inventory(common, eu)["providers"]
    assert [p["id"] for p in provs] == ["http-server"]
    ok(
        "link", "put", "http-server", "echo", "wasi", "http",
        "--interface", "incoming-handler", "--source-config", "echo-http", *common,
    )  # fmt: skip
    assert "/echo?x=1" in http_get(f"http://127.0.0.1:{port}/echo?x=1")

    # Update to another reference (found through the inventories); it keeps serving.
    other = tmp_path / "echo2.wasm"
    shutil.copyfile(http_echo_wasm, other)
    upd = json.loads(ok("update", "component", "echo", str(other), "-o", "json", *common).stdout)
    assert upd["success"] is True and upd["previous"] == {eu: ref}
    comps = inventory(common, eu)["components"]
    assert [(c["id"], c["image_ref"]) for c in comps] == [("echo", f"file://{other}")]
    assert "/echo" in http_get(f"http://127.0.0.1:{port}/echo")
    again = ok("update", "component", "echo", str(other), "--host", eu, *common)
    assert "already up to date" in again.stdout

    # Stop the provider; stopping it twice says what to do.
    assert "stopped" in ok("stop", "provider", "http-server", *common).stdout
    assert inventory(common, eu)["providers"] == []
    twice = cli("stop", "provider", "http-server", *common)
    assert twice.returncode == 1 and "not running" in twice.stderr and "get inventory" in twice.stderr

    # Scale to 0 without --host: every host running it.
    zero = ok("scale", "component", str(other), "echo", "--count", "0", *common)
    assert f"scaled to 0 on host {eu}" in zero.stdout
    assert inventory(common, eu)["components"] == []


def test_host_command_nats_and_identity_flags(
    nats_url: str, lattice_name: str, tmp_path: Path, wasmlattice_env: dict[str, str]
) -> None:
    from wasmlattice.host.identity import HostIdentity

    common = ("--nats-url", nats_url, "--lattice", lattice_name)
    ident = HostIdentity.generate()
    env = {k: v for k, v in wasmlattice_env.items() if not k.startswith("WASMLATTICE_NATS")}
    env["WASMLATTICE_HOST_SEED"] = ident.seed
    cmd = wasmlattice_cmd("host", *common, "--friendly-name", "edge-1")
    log = (tmp_path / "host.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        (host,) = wait_hosts(nats_url, lattice_name, 1)
        assert host["id"] == ident.public_key and host["friendly_name"] == "edge-1"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    missing = cli("host", *common, "--nats-creds", str(tmp_path / "none.creds"))
    assert missing.returncode != 0 and "none.creds" in missing.stderr
    conflict = cli("host", *common, "--nats-jwt", "eyJ", "--log-level", "error")
    assert conflict.returncode == 1 and "--nats-seed" in conflict.stderr
