"""The lattice commands as a user runs them: real nats-server, real host processes, CLI subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import cli, free_port
from conftest import cli_ok as ok

pytestmark = pytest.mark.timeout(60)


def get_hosts(url: str, lattice: str) -> list[dict[str, object]]:
    """The `get hosts -o json` list."""
    hosts: list[dict[str, object]] = json.loads(
        ok("get", "hosts", "--nats-url", url, "--lattice", lattice, "-o", "json").stdout
    )
    return hosts


def wait_hosts(url: str, lattice: str, n: int, timeout: float = 20) -> list[dict[str, object]]:
    """Poll until exactly `n` hosts answer ping."""
    deadline = time.monotonic() + timeout
    while True:
        hosts = get_hosts(url, lattice)
        if len(hosts) == n or time.monotonic() > deadline:
            assert len(hosts) == n, hosts
            return hosts
        time.sleep(0.2)


@pytest.fixture
def start_host(
    nats_url: str, lattice_name: str, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `python -m wasmlattice.host.run` processes on the test lattice (stopped at the end)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*labels: str) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable,
            "-m",
            "wasmlattice.host.run",
            "--nats-url",
            nats_url,
            "--lattice",
            lattice_name,
        ]
        for lb in labels:
            cmd += ["--label", lb]
        log = (tmp_path / f"host{len(procs)}.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def test_hosts_labels_config_links_inventory_stop(
    nats_url: str, lattice_name: str, start_host: Callable[..., subprocess.Popen[bytes]]
) -> None:
    common = ("--nats-url", nats_url, "--lattice", lattice_name)
    first = start_host("zone=eu")
    start_host("zone=us")
    hosts = wait_hosts(nats_url, lattice_name, 2)
    zones = sorted(str(h["labels"]["zone"]) for h in hosts)  # type: ignore[index]
    assert zones == ["eu", "us"]
    assert all(h["lattice"] == lattice_name for h in hosts)
    host_ids = [str(h["id"]) for h in hosts]

    text = ok("get", "hosts", *common).stdout
    for hid in host_ids:
        assert hid in text

    # Labels: put shows up in ping, reserved keys are refused with the host's message, del removes.
    hid = host_ids[0]
    assert "successfully put label" in ok("label", "put", hid, "team=blue", *common).stdout
    labels = {str(h["id"]): h["labels"] for h in get_hosts(nats_url, lattice_name)}
    assert labels[hid]["team"] == "blue"  # type: ignore[index]
    bad = cli("label", "put", hid, "hostcore.os=plan9", *common)
    assert bad.returncode != 0 and "hostcore" in bad.stderr and bad.stderr.count("\n") == 1
    ok("label", "del", hid, "team", *common)
    labels = {str(h["id"]): h["labels"] for h in get_hosts(nats_url, lattice_name)}
    assert "team" not in labels[hid]  # type: ignore[operator]

    # Named config round trip.
    ok("config", "put", "settings", "a=1", "b=x=y", *common)
    assert json.loads(ok("config", "get", "settings", "-o", "json", *common).stdout) == {"a": "1", "b": "x=y"}
    assert "x=y" in ok("get", "config", "settings", *common).stdout
    ok("config", "del", "settings", *common)
    gone = cli("config", "get", "settings", *common)
    assert gone.returncode != 0 and "not found" in gone.stderr

    # Links: put (config must exist), list, delete.
    ok("config", "put", "kvcfg", "bucket=b1", *common)
    ok(
        "link", "put", "comp1", "prov1", "wasi", "keyvalue",
        "--interface", "store", "--interface", "atomics", "--source-config", "kvcfg", *common,
    )  # fmt: skip
    links = json.loads(ok("get", "links", "-o", "json", *common).stdout)
    assert links == [
        {
            "source_id": "comp1",
            "target": "prov1",
            "name": "default",
            "wit_namespace": "wasi",
            "wit_package": "keyvalue",
            "interfaces": ["store", "atomics"],
            "source_config": ["kvcfg"],
            "target_config": [],
        }
    ]
    assert "comp1" in ok("get", "links", *common).stdout
    missing_cfg = cli(
        "link", "put", "c2", "p2", "wasi", "blobstore", "-i", "blobstore", "--source-config", "nope", *common
    )
    assert missing_cfg.returncode != 0 and "nope" in missing_cfg.stderr
    ok("link", "del", "comp1", "wasi", "keyvalue", *common)
    assert json.loads(ok("get", "links", "-o", "json", *common).stdout) == []

    # Inventory of one host and of all.
    inv = json.loads(ok("get", "inventory", hid, "-o", "json", *common).stdout)
    assert inv["host_id"] == hid and inv["components"] == [] and inv["providers"] == []
    invs = json.loads(ok("get", "inventory", "-o", "json", *common).stdout)
    assert sorted(i["host_id"] for i in invs) == sorted(host_ids)
    assert hid in ok("get", "inventory", *common).stdout
    assert json.loads(ok("get", "claims", "-o", "json", *common).stdout) == []

    # Stop one host: it leaves the lattice and its process exits.
    victim = next(h for h in hosts if h["labels"]["zone"] == "eu")  # type: ignore[index]
    ok("stop", "host", str(victim["id"]), *common)
    first.wait(15)
    assert first.returncode == 0
    assert [h["id"] for h in wait_hosts(nats_url, lattice_name, 1)] != [victim["id"]]


def test_clear_errors_without_hosts_or_nats(nats_url: str, lattice_name: str) -> None:
    common = ("--nats-url", nats_url, "--lattice", lattice_name)
    r = cli("get", "hosts", *common)
    assert r.returncode == 1
    assert "no host answered" in r.stderr and "wasmlattice up" in r.stderr
    assert json.loads(ok("get", "hosts", "-o", "json", *common).stdout) == []
    r = cli("get", "links", *common, "--timeout", "0.5")
    assert r.returncode == 1 and "wasmlattice up" in r.stderr and "Traceback" not in r.stderr
    r = cli("label", "put", "NNOSUCHHOST", "a=b", *common)
    assert r.returncode == 1 and "NNOSUCHHOST" in r.stderr
    r = cli("config", "put", "bad", "novalue", *common)
    assert r.returncode != 0 and "KEY=VALUE" in r.stderr
    dead = f"nats://127.0.0.1:{free_port()}"
    r = cli("get", "hosts", "--nats-url", dead)
    assert r.returncode == 1
    assert "cannot reach NATS" in r.stderr and "wasmlattice up" in r.stderr
    assert r.stderr.strip().count("\n") == 0


def test_up_detach_then_down(tmp_path: Path) -> None:
    data_dir = tmp_path / "up"
    port = free_port()
    r = ok(
        "up",
        "--detach",
        "--data-dir",
        str(data_dir),
        "--nats-port",
        str(port),
        "--label",
        "env=test",
        "-o",
        "json",
    )
    state = json.loads(r.stdout)
    assert state["nats_url"] == f"nats://127.0.0.1:{port}" and state["embedded_nats"] is True
    try:
        hosts = get_hosts(state["nats_url"], "default")
        assert [h["id"] for h in hosts] == [state["host_id"]]
        assert hosts[0]["labels"]["env"] == "test"  # type: ignore[index]
        again = cli("up", "--detach", "--data-dir", str(data_dir), "--nats-port", str(port))
        assert again.returncode == 1 and "already running" in again.stderr and "down" in again.stderr
    finally:
        down = ok("down", "--data-dir", str(data_dir))
    assert "Stopped" in down.stdout
    assert not (data_dir / "up.json").exists()
    for pid in (state["pid"], state["nats_pid"]):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"pid {pid} still running after down")
    r = cli("get", "hosts", "--nats-url", state["nats_url"])
    assert r.returncode == 1 and "cannot reach NATS" in r.stderr
    assert "Nothing to stop" in ok("down", "--data-dir", str(data_dir)).stdout
