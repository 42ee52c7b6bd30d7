"""The lattice commands as a user runs them: real nats-server, real host processes, CLI subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.cli import cli, get_hosts, wait_hosts
from tests.support.cli import cli_ok as ok
from tests.support.processes import free_port, running, wait_gone, wasmlattice_cmd

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]


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
        hosts = get_hosts(state["nats_url"], "default", "--data-dir", str(data_dir))
        assert [h["id"] for h in hosts] == [state["host_id"]]
        assert hosts[0]["labels"]["env"] == "test"  # type: ignore[index]
        again = cli("up", "--detach", "--data-dir", str(data_dir), "--nats-port", str(port))
        assert again.returncode == 1 and "already running" in again.stderr and "down" in again.stderr
        # Its log is at info (what it started shows there) and names the way to stop it that works
        # without a terminal.
        log = (data_dir / "up.log").read_text()
        assert " INFO " in log and "connected to NATS" in log, log
        assert "Ctrl-C" not in log and f"wasmlattice down --data-dir {data_dir}" in log, log
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


# --- `host` / `up` / `down`: wasmCloud's variables, labels, an existing NATS, TLS client certificates ---


def count_heartbeats(url: str, lattice: str, host_id: str, want: int, within: float) -> int:
    """How many `host_heartbeat` events from `host_id` arrive (stops at `want` or after `within` s)."""
    import asyncio

    import nats

    async def go() -> int:
        nc = await nats.connect(url)
        try:
            sub = await nc.subscribe(f"wasmbus.evt.{lattice}.host_heartbeat")
            got = 0
            deadline = time.monotonic() + within
            while got < want and (left := deadline - time.monotonic()) > 0:
                try:
                    msg = await sub.next_msg(timeout=left)
                except TimeoutError:
                    break
                if json.loads(msg.data)["source"] == host_id:
                    got += 1
            return got
        finally:
            await nc.close()

    return asyncio.run(go())


def child_commands(pid: int) -> list[str]:
    """The command names of the direct children of `pid` (from /proc)."""
    names = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # `pid (comm) state ppid ...`; comm may contain spaces, so split after the last ')'.
        comm = text[text.index("(") + 1 : text.rindex(")")]
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            names.append(comm)
    return names


def test_host_reads_wasmcloud_variables_ours_first(nats_url: str, lattice_name: str, tmp_path: Path) -> None:
    from wasmlattice.host.identity import HostIdentity

    ident = HostIdentity.generate()
    env = {
        "WASMLATTICE_NATS_URL": nats_url,
        # Both names set: ours wins; the wasmCloud name alone is enough for the others.
        "WASMLATTICE_LATTICE": lattice_name,
        "WASMCLOUD_LATTICE": f"{lattice_name}_theirs",
        "WASMCLOUD_HOST_SEED": ident.seed,
        "WASMCLOUD_LABEL_zone": "eu",
        "WASMCLOUD_HEARTBEAT_INTERVAL": "0.5",
        "WASMCLOUD_LOG_LEVEL": "debug",
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WASMLATTICE_", "WASMCLOUD_"))}
    log_path = tmp_path / "host.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            wasmlattice_cmd("host"),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**base, **env},
        )
    try:
        (host,) = wait_hosts(nats_url, lattice_name, 1)
        assert host["id"] == ident.public_key
        assert host["labels"]["zone"] == "eu"  # type: ignore[index]
        # Every 0.5 s instead of the default 30 s.
        assert count_heartbeats(nats_url, lattice_name, ident.public_key, 2, within=10) == 2
        assert get_hosts(nats_url, f"{lattice_name}_theirs") == []
        # The other commands read WASMCLOUD_LATTICE too.
        r = cli("get", "hosts", "--nats-url", nats_url, "-o", "json", env={"WASMCLOUD_LATTICE": lattice_name})
        assert [h["id"] for h in json.loads(r.stdout)] == [ident.public_key], r.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert " DEBUG " in log_path.read_text()


def test_host_reads_wasmcloud_nats_variables(nats_url: str, lattice_name: str, tmp_path: Path) -> None:
    common = ("host", "--nats-url", nats_url, "--lattice", lattice_name, "--log-level", "error")
    r = cli(*common, env={"WASMCLOUD_NATS_CREDS": str(tmp_path / "none.creds")})
    assert r.returncode == 2 and r.stderr == f"error: --nats-creds: {tmp_path / 'none.creds'} is not a file\n"
    r = cli(*common, env={"WASMCLOUD_NATS_JWT": "eyJ"})
    assert r.returncode == 1 and "--nats-jwt needs --nats-seed" in r.stderr
    r = cli(*common, env={"WASMCLOUD_NATS_JWT": "eyJ", "WASMCLOUD_NATS_SEED": "notaseed"})
    assert r.returncode == 1 and "--nats-seed must be an nkey seed" in r.stderr
    # A JetStream domain the server does not have: the host cannot open the lattice's buckets.
    r = cli(*common, env={"WASMCLOUD_JS_DOMAIN": "nosuchdomain"}, timeout=30)
    assert r.returncode == 1 and f"LATTICEDATA_{lattice_name}" in r.stderr
    # (Without --log-level, which would win over the variable.)
    r = cli(*common[:-2], env={"WASMCLOUD_LOG_LEVEL": "loud"}, timeout=30)
    assert r.returncode == 2 and "'loud'" in r.stderr and "--log-level" in r.stderr


@pytest.mark.parametrize("command", ["host", "up"])
def test_reserved_and_malformed_labels_are_refused(command: str, tmp_path: Path) -> None:
    # A dead NATS URL: a label that got through would fail later with exit 1, not 2.
    common = (command, "--nats-url", f"nats://127.0.0.1:{free_port()}", "--log-level", "error")
    if command == "up":
        common += ("--data-dir", str(tmp_path / "up"))
    for label in ("hostcore.os=plan9", "HostCore.arch=z80"):
        r = cli(*common, "--label", "zone=eu", "--label", label)
        key = label.split("=")[0]
        assert r.returncode == 2, r.stderr
        assert r.stderr == (
            f"error: --label {key}: labels under `hostcore.` are set by the host; choose another key\n"
        )
    r = cli(*common, env={"WASMCLOUD_LABEL_hostcore.os": "plan9"})
    assert r.returncode == 2 and "WASMCLOUD_LABEL_hostcore.os: labels under `hostcore.`" in r.stderr
    for label in ("novalue", "=v", "a=b=c"):
        r = cli(*common, "--label", label)
        assert r.returncode == 2, r.stderr
        assert r.stderr == f"error: --label: invalid label {label!r}: use key=value with exactly one '='\n"
    assert not (tmp_path / "up").exists()  # refused before `up` touched anything


def test_up_joins_an_existing_nats_and_down_leaves_it_running(
    nats_url: str, lattice_name: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "up"
    r = ok(
        "up", "--detach", "--nats-url", nats_url, "--lattice", lattice_name, "--data-dir", str(data_dir),
        "--heartbeat-interval", "0.5", "--no-app-manager", "-o", "json",
    )  # fmt: skip
    state = json.loads(r.stdout)
    try:
        assert state["nats_url"] == nats_url
        assert state["embedded_nats"] is False and state["nats_pid"] is None
        assert not (data_dir / "nats").exists()  # no nats-server data, config or log
        assert "nats-server" not in child_commands(state["pid"])
        assert [h["id"] for h in wait_hosts(nats_url, lattice_name, 1)] == [state["host_id"]]
        assert count_heartbeats(nats_url, lattice_name, state["host_id"], 2, within=10) == 2
    finally:
        down = json.loads(ok("down", "--data-dir", str(data_dir), "-o", "json").stdout)
    assert down["stopped"] is True and down["embedded_nats"] is False and down["killed"] is False
    assert "left running" in down["message"]
    wait_gone(state["pid"])
    # The NATS server it joined still serves (the host is gone from the lattice, NATS is not).
    r = cli("get", "hosts", "--nats-url", nats_url, "--lattice", lattice_name)
    assert r.returncode == 1 and "no host answered" in r.stderr, r.stderr
    text = ok("down", "--data-dir", str(data_dir)).stdout
    assert "Nothing to stop" in text


def test_down_after_up_was_killed_stops_the_nats_server_it_left(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "up", free_port()
    r = ok(
        "up",
        "--detach",
        "--data-dir",
        str(data_dir),
        "--nats-port",
        str(port),
        "--no-app-manager",
        "-o",
        "json",
    )
    state = json.loads(r.stdout)
    try:
        os.kill(state["pid"], signal.SIGKILL)  # no chance to stop its nats-server
        wait_gone(state["pid"])
        assert running(state["nats_pid"])
    finally:
        down = json.loads(ok("down", "--data-dir", str(data_dir), "-o", "json").stdout)
    assert down["stopped"] is True and down["nats_pid"] == state["nats_pid"], down
    assert "stopped the nats-server it left" in down["message"]
    wait_gone(state["nats_pid"])
    r = cli("get", "hosts", "--nats-url", state["nats_url"])
    assert r.returncode == 1 and "cannot reach NATS" in r.stderr


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[tuple[str, dict[str, Path]]]:
    """A real nats-server (JetStream) that requires TLS client certificates from one CA.

    Yields its `tls://` URL and the files: `ca`, and `cert`/`key` of a client certificate."""
    import trustme

    from wasmlattice.nats_server import find_nats_server

    d = tmp_path / "tls"
    d.mkdir()
    ca = trustme.CA()
    files = {"ca": d / "ca.pem", "server": d / "server.pem", "server_key": d / "server.key"}
    files |= {"cert": d / "client.pem", "key": d / "client.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    for cert, (chain, key) in (
        (ca.issue_cert("127.0.0.1"), ("server", "server_key")),
        (ca.issue_cert("wasmlattice-host.test"), ("cert", "key")),
    ):
        files[chain].write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(files[key]))
    port = free_port()
    conf = d / "nats.conf"
    conf.write_text(
        f'listen: "127.0.0.1:{port}"\n'
        f'jetstream {{ store_dir: "{d / "js"}" }}\n'
        f'tls {{ cert_file: "{files["server"]}", key_file: "{files["server_key"]}", '
        f'ca_file: "{files["ca"]}", verify: true }}\n'
    )
    log = (d / "nats.log").open("wb")
    proc = subprocess.Popen([str(find_nats_server()), "-c", str(conf)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while b"Server is ready" not in (d / "nats.log").read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, (d / "nats.log").read_text()
            time.sleep(0.05)
        yield f"tls://127.0.0.1:{port}", {k: files[k] for k in ("ca", "cert", "key")}
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_host_and_up_with_a_tls_client_certificate(
    tls_nats: tuple[str, dict[str, Path]], tmp_path: Path
) -> None:
    url, f = tls_nats
    tls_env = {
        "WASMLATTICE_NATS_TLS_CA": str(f["ca"]),
        "WASMLATTICE_NATS_TLS_CERT": str(f["cert"]),
        "WASMLATTICE_NATS_TLS_KEY": str(f["key"]),
    }
    # Without a client certificate the server refuses the host; the error says it could not connect.
    r = cli("host", "--nats-url", url, "--nats-tls-ca", str(f["ca"]), "--log-level", "error", timeout=30)
    assert r.returncode == 1 and f"cannot connect to NATS at {url}" in r.stderr, r.stderr
    # A certificate without its key (or the reverse) is a usage error.
    r = cli("host", "--nats-url", url, "--nats-tls-cert", str(f["cert"]))
    assert r.returncode == 2 and "--nats-tls-key" in r.stderr

    data_dir = tmp_path / "up"
    r = cli(
        "up", "--detach", "--nats-url", url, "--data-dir", str(data_dir), "--no-app-manager",
        "--nats-tls-ca", str(f["ca"]), "--nats-tls-cert", str(f["cert"]), "--nats-tls-key", str(f["key"]),
        "-o", "json",
    )  # fmt: skip
    # `up --detach` only succeeds once its host answers a ping made with the same certificate.
    assert r.returncode == 0, r.stderr + (data_dir / "up.log").read_text()
    state = json.loads(r.stdout)
    host_log = (tmp_path / "host.log").open("wb")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WASMLATTICE_", "WASMCLOUD_"))}
    proc = subprocess.Popen(
        wasmlattice_cmd("host", "--nats-url", url, "--friendly-name", "tls-2"),
        stdout=host_log,
        stderr=subprocess.STDOUT,
        env={**base, **tls_env},  # the same variables every other command reads
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            r = cli("get", "hosts", "--nats-url", url, "-o", "json", env=tls_env)
            hosts = json.loads(r.stdout) if r.returncode == 0 else []
            if len(hosts) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.returncode == 0, r.stderr
        names = {h["id"]: h["friendly_name"] for h in hosts}
        assert len(names) == 2 and state["host_id"] in names and "tls-2" in names.values(), hosts
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        host_log.close()
        ok("down", "--data-dir", str(data_dir))
    wait_gone(state["pid"])
