"""A new user's lattice path, entirely through the CLI as the README gives it: `up --detach` (embedded
NATS), `get hosts`, `get inventory`, `scale component`, `start provider builtin://http-server`, a link to
a listen address, curl, `get links`, `down` - and afterwards nothing `up` started is left running."""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import cli
from tests.support.cli import cli_ok as ok
from tests.support.components import EXAMPLES
from tests.support.processes import free_port, wait_gone
from wasmlattice import devbuild

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def as_json(*args: str, timeout: float = 60) -> Any:
    """Run a CLI command with `-o json` (exit 0 required) and parse its output."""
    return json.loads(ok(*args, "-o", "json", timeout=timeout).stdout)


def http_get(url: str, timeout: float = 30.0) -> tuple[int, str]:
    """Poll `url` until it answers at all (the listener starts asynchronously); status and body."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_new_user_path_through_the_cli(tmp_path: Path) -> None:
    hello = tmp_path / "hello.wasm"
    shutil.copyfile(devbuild.build(EXAMPLES / "hello"), hello)
    data_dir, nats_port, http_port = tmp_path / "up", free_port(), free_port()

    # `up` loads file:// components from its current directory by default; hello.wasm is elsewhere.
    state = as_json(
        "up",
        "--detach",
        "--data-dir",
        str(data_dir),
        "--nats-port",
        str(nats_port),
        "--allow-dir",
        str(tmp_path),
    )
    assert state["nats_url"] == f"nats://127.0.0.1:{nats_port}" and state["embedded_nats"] is True
    host_id = state["host_id"]
    # `up`'s NATS admits only the holder of its credentials: in its data dir (docs/security.md).
    nats = ("--nats-url", state["nats_url"], "--data-dir", str(data_dir))
    stopped = False
    try:
        hosts = as_json("get", "hosts", *nats)
        assert [h["id"] for h in hosts] == [host_id]
        invs = as_json("get", "inventory", *nats)
        assert [(i["host_id"], i["components"], i["providers"]) for i in invs] == [(host_id, [], [])]

        ref = f"file://{hello}"
        scaled = as_json("scale", "component", ref, "hello", "--count", "2", "--host", host_id, *nats)
        assert scaled["success"] is True, scaled
        assert [(r["host_id"], r["event"]) for r in scaled["results"]] == [(host_id, "component_scaled")]

        ok("start", "provider", "builtin://http-server", "http-server", *nats)
        inv = as_json("get", "inventory", host_id, *nats)
        assert [(c["id"], c["image_ref"], c["max_instances"]) for c in inv["components"]] == [
            ("hello", ref, 2)
        ]
        assert [p["id"] for p in inv["providers"]] == ["http-server"]

        ok("config", "put", "hello-http", f"address=127.0.0.1:{http_port}", *nats)
        ok(
            "link", "put", "http-server", "hello", "wasi", "http",
            "--interface", "incoming-handler", "--source-config", "hello-http", *nats,
        )  # fmt: skip
        assert http_get(f"http://127.0.0.1:{http_port}/hello") == (200, "hello from wasmlattice /hello")

        links = as_json("get", "links", *nats)
        assert links == [
            {
                "source_id": "http-server",
                "target": "hello",
                "name": "default",
                "wit_namespace": "wasi",
                "wit_package": "http",
                "interfaces": ["incoming-handler"],
                "source_config": ["hello-http"],
                "target_config": [],
            }
        ]

        down = as_json("down", "--data-dir", str(data_dir))
        stopped = True
    finally:
        if not stopped:
            cli("down", "--data-dir", str(data_dir))
    assert down["stopped"] is True and down["killed"] is False, down
    assert (down["pid"], down["host_id"], down["embedded_nats"]) == (state["pid"], host_id, True)
    # Everything `up` started is gone: its own process, the nats-server, the host's HTTP listener.
    wait_gone(state["pid"])
    wait_gone(state["nats_pid"])
    assert not listening(nats_port) and not listening(http_port)
    assert not (data_dir / "up.json").exists()
    gone = cli("get", "hosts", *nats)
    assert gone.returncode == 1 and "cannot reach NATS" in gone.stderr
    again = as_json("down", "--data-dir", str(data_dir))
    assert again["stopped"] is False and "Nothing to stop" in again["message"]
