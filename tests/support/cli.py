"""The `wasmlattice` CLI as a user runs it: a subprocess with a clean WASMLATTICE_*/WASMCLOUD_* env."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.processes import free_port, wasmlattice_cmd


def cli(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `wasmlattice ARGS...` as a user would: this interpreter, and of the WASMLATTICE_* and
    WASMCLOUD_* variables only those in `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WASMLATTICE_", "WASMCLOUD_"))}
    return subprocess.run(
        wasmlattice_cmd(*args), capture_output=True, text=True, timeout=timeout, env={**base, **(env or {})}
    )


def cli_ok(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI and require exit code 0."""
    r = cli(*args, timeout=timeout)
    assert r.returncode == 0, f"{args} -> {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


@contextmanager
def deployed_on_up(project: Path, work: Path, app: str) -> Iterator[int]:
    """The project's `wadm.yaml`, its `127.0.0.1:8080` listener moved to a free port, deployed as
    app `app` on a new `up --detach` (data in `work/up`, files allowed under `work`); yields the
    HTTP port, and brings the lattice down after."""
    manifest = project / "wadm.yaml"
    http_port = free_port()
    manifest.write_text(manifest.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{http_port}"))
    data_dir = work / "up"
    up = cli("up", "--detach", "--data-dir", str(data_dir), "--nats-port", str(free_port()),
             "--allow-dir", str(work), "-o", "json", timeout=120)  # fmt: skip
    assert up.returncode == 0, up.stderr
    nats = ["--nats-url", json.loads(up.stdout)["nats_url"], "--data-dir", str(data_dir)]
    try:
        r = cli("app", "deploy", str(manifest), *nats, "--timeout", "120", timeout=180)
        assert r.returncode == 0 and f"Deployed {app} version v1" in r.stdout, r.stderr
        yield http_port
    finally:
        cli("down", "--data-dir", str(data_dir))


def exports_of(build_stdout: str) -> list[str]:
    """The names `wasmlattice build` listed under `exports:`."""
    return [line.strip() for line in build_stdout.split("exports:", 1)[1].splitlines() if line.strip()]


def get_hosts(nats_url: str, lattice: str, *extra: str) -> list[dict[str, Any]]:
    """The `get hosts -o json` list (`extra`: more options, e.g. `--data-dir` of an `up`)."""
    out = cli_ok("get", "hosts", "--nats-url", nats_url, "--lattice", lattice, "-o", "json", *extra).stdout
    hosts: list[dict[str, Any]] = json.loads(out)
    return hosts


def wait_hosts(nats_url: str, lattice: str, n: int, timeout: float = 20) -> list[dict[str, Any]]:
    """Poll `get hosts -o json` until exactly `n` hosts answer; the hosts."""
    deadline = time.monotonic() + timeout
    while True:
        hosts = get_hosts(nats_url, lattice)
        if len(hosts) == n or time.monotonic() > deadline:
            assert len(hosts) == n, hosts
            return hosts
        time.sleep(0.2)
