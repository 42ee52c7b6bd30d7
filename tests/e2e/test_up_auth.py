"""`wasmlattice up` locks its embedded NATS (docs/security.md): an anonymous client is refused with
NATS's authorization error, the CLI says what to do instead of printing a traceback, and whoever has
the credentials `up` wrote (mode 0600, in its data dir) drives the lattice as before."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest

from tests.support.cli import cli
from tests.support.cli import cli_ok as ok
from tests.support.processes import free_port, wasmlattice_cmd
from wasmlattice.nats_server import ensure_user_seed

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

NOT_AUTHORIZED = "error: not authorized: pass --nats-creds or run on the machine that ran `up`"


def hosts(*args: str, env: dict[str, str] | None = None) -> list[Any]:
    """`get hosts -o json ARGS...` (exit 0 required): the hosts."""
    r = cli("get", "hosts", "-o", "json", *args, env=env)
    assert r.returncode == 0, r.stderr
    found: list[Any] = json.loads(r.stdout)
    return found


async def anonymous_connect(url: str) -> None:
    """Connect with nats-py and no credentials at all, as any local process could."""
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0)
    await nc.close()


def test_up_refuses_anonymous_clients_and_admits_its_own(tmp_path: Path) -> None:
    data_dir, nats_port = tmp_path / "up", free_port()
    state = json.loads(
        ok("up", "--detach", "--data-dir", str(data_dir), "--nats-port", str(nats_port), "-o", "json").stdout
    )
    url, host_id = state["nats_url"], state["host_id"]
    at_url = ("--nats-url", url)
    creds = Path(state["nats_creds"])
    extra_host: subprocess.Popen[str] | None = None
    try:
        # The credentials sit in the data dir, readable by their owner only.
        assert creds.parent == data_dir.resolve() and creds.is_file()
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600

        # An anonymous client gets NATS's own refusal.
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            asyncio.run(anonymous_connect(url))

        # The CLI from the same data dir needs no flags; from another one it says what to do.
        assert [h["id"] for h in hosts(*at_url, "--data-dir", str(data_dir))] == [host_id]
        other = tmp_path / "elsewhere"
        started = time.monotonic()
        r = cli("get", "hosts", *at_url, "--data-dir", str(other))
        assert r.returncode == 1 and r.stderr.startswith(NOT_AUTHORIZED), r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        # Refused at once, not after the connect retries run out.
        assert time.monotonic() - started < 5.0

        # Explicit credentials win, from the flag or wasmCloud's variable (how another machine joins).
        assert [h["id"] for h in hosts(*at_url, "--data-dir", str(other), "--nats-creds", str(creds))] == [
            host_id
        ]
        env = {"WASMCLOUD_NATS_CREDS": str(creds)}
        assert [h["id"] for h in hosts(*at_url, "--data-dir", str(other), env=env)] == [host_id]
        # A key of its own is no key to this lattice.
        wrong = tmp_path / "wrong.nk"
        ensure_user_seed(wrong)
        r = cli("get", "hosts", *at_url, "--nats-creds", str(wrong))
        assert r.returncode == 1 and f"not authorized: NATS at {url} refused the credentials" in r.stderr

        # `wasmlattice host` is refused the same way, and joins with the data dir's credentials.
        r = cli("host", *at_url, "--data-dir", str(other), "--log-level", "error", timeout=30)
        assert r.returncode == 1 and r.stderr.startswith(NOT_AUTHORIZED), r.stderr
        extra_host = subprocess.Popen(
            wasmlattice_cmd("host", *at_url, "--data-dir", str(data_dir), "--log-level", "warning"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while len(found := hosts(*at_url, "--data-dir", str(data_dir))) < 2:
            assert extra_host.poll() is None, extra_host.communicate()[1]
            assert time.monotonic() < deadline, found
            time.sleep(0.3)
        assert host_id in [h["id"] for h in found]

        # After all of that, `up`'s own host still answers ping.
        assert host_id in [h["id"] for h in hosts(*at_url, "--data-dir", str(data_dir))]
    finally:
        if extra_host is not None:
            extra_host.terminate()
            extra_host.wait(timeout=30)
        ok("down", "--data-dir", str(data_dir))
    # The credentials outlive `down`: hosts elsewhere that were given them keep working after a restart.
    assert creds.is_file() and stat.S_IMODE(creds.stat().st_mode) == 0o600


def test_up_names_a_port_held_by_something_else_and_says_when_it_joins(tmp_path: Path) -> None:
    import socket

    # A port held by a program that is not NATS: one clear line, not a wait for NATS that never comes.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        r = cli("up", "--data-dir", str(tmp_path / "x"), "--nats-port", str(port), timeout=60)
    assert r.returncode != 0
    assert f"port {port} is in use by a program that is not a NATS server" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr

    # A second `up` on the port of a running one joins it, and says so.
    first, nats_port = tmp_path / "first", free_port()
    ok("up", "--detach", "--data-dir", str(first), "--nats-port", str(nats_port))
    second = tmp_path / "second"
    try:
        r = cli(
            "up",
            "--detach",
            "--data-dir",
            str(second),
            "--nats-port",
            str(nats_port),
            "--nats-creds",
            str(first / "nats-user.nk"),
        )
        assert r.returncode == 0, r.stderr
        url = f"nats://127.0.0.1:{nats_port}"
        assert f"joined the NATS server already listening on {url}" in r.stderr, r.stderr
        assert len(hosts("--nats-url", url, env={"WASMLATTICE_DATA_DIR": str(first)})) == 2
    finally:
        cli("down", "--data-dir", str(second))
        cli("down", "--data-dir", str(first))
