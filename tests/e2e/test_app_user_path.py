"""A new user's path with applications: `up`, `app deploy examples/hello-app.yaml`, curl, `app
status`, `app undeploy`, `down` - the commands the README gives, as subprocesses."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.cli import cli
from tests.support.cli import cli_ok as ok
from tests.support.components import EXAMPLES
from tests.support.processes import free_port
from wasmlattice import devbuild

# Each test runs the CLI as a subprocess: a second or more.
pytestmark = pytest.mark.slow


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_deploy_the_example_app_with_the_cli(tmp_path: Path) -> None:
    # The example as `make up` leaves it (component at .build/hello.wasm), on ports of our own.
    app_dir = tmp_path / "examples"
    (app_dir / ".build").mkdir(parents=True)
    shutil.copyfile(devbuild.build(EXAMPLES / "hello"), app_dir / ".build" / "hello.wasm")
    http_port, nats_port = free_port(), free_port()
    text = (EXAMPLES / "hello-app.yaml").read_text().replace("127.0.0.1:8002", f"127.0.0.1:{http_port}")
    (app_dir / "hello-app.yaml").write_text(text)
    data_dir = tmp_path / "up"
    state = json.loads(
        # `make up` runs from the repository, whose directory `up` allows; the copy is in tmp_path.
        ok(
            "up",
            "--detach",
            "--data-dir",
            str(data_dir),
            "--nats-port",
            str(nats_port),
            "--allow-dir",
            str(tmp_path),
            "-o",
            "json",
        ).stdout
    )
    # `up`'s NATS admits only the holder of its credentials: in its data dir (docs/security.md).
    nats = ["--nats-url", state["nats_url"], "--data-dir", str(data_dir)]
    try:
        assert (
            "valid manifest for app hello-app"
            in ok("app", "validate", str(app_dir / "hello-app.yaml")).stdout
        )
        deployed = ok(
            "app", "deploy", str(app_dir / "hello-app.yaml"), *nats, "--timeout", "120", timeout=180
        )
        assert "Deployed hello-app version v1" in deployed.stdout
        assert fetch(f"http://127.0.0.1:{http_port}/hello") == (200, "hello from wasmlattice /hello")
        status = json.loads(ok("app", "status", "hello-app", *nats, "-o", "json").stdout)
        assert status["status"]["type"] == "deployed", status
        kinds = sorted(s["kind"] for s in status["scalers"])
        assert kinds == ["ConfigScaler", "LinkScaler", "SpreadScaler", "SpreadScaler"]
        listed = json.loads(ok("app", "list", *nats, "-o", "json").stdout)
        assert [a["name"] for a in listed] == ["hello-app"], listed

        ok("app", "undeploy", "hello-app", *nats)
        deadline = time.monotonic() + 30
        while True:
            try:
                code = fetch(f"http://127.0.0.1:{http_port}/hello")[0]
            except OSError:
                break  # the listener is gone with the app
            assert time.monotonic() < deadline, f"still answering {code} after undeploy"
            time.sleep(0.2)
        assert "undeployed" in ok("app", "status", "hello-app", *nats).stdout
        bad = cli("app", "status", "nope", *nats)
        assert bad.returncode == 1 and "nope" in bad.stderr
    finally:
        ok("down", "--data-dir", str(data_dir))
