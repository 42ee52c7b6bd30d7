"""`wasmlattice app` as a user runs it: `validate` offline, and deploy/list/status/... against an
in-process app API server (real nats-server) whose fake reconciler reports a canned outcome."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import cli
from tests.support.processes import wasmlattice_cmd
from wasmlattice.apps.api import ApiServer
from wasmlattice.apps.manifest.model import Manifest
from wasmlattice.apps.status import status_json
from wasmlattice.apps.store import AppStore
from wasmlattice.protocol.connection import NatsOptions, connect, jetstream

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

MANIFEST = """apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: hello
  annotations:
    version: v1
    description: hello app
spec:
  components:
    - name: greeter
      type: component
      properties:
        image: file://./greeter.wasm
      traits:
        - type: spreadscaler
          properties:
            instances: 1
"""


def write_app(tmp_path: Path, text: str = MANIFEST) -> Path:
    (tmp_path / "greeter.wasm").write_bytes(b"\0asm")
    path = tmp_path / "hello.yaml"
    path.write_text(text)
    return path


def test_validate_valid_and_invalid(tmp_path: Path) -> None:
    path = write_app(tmp_path)
    r = cli("app", "validate", str(path))
    assert r.returncode == 0, r.stderr
    assert "valid manifest for app hello, version v1, 1 components" in r.stdout
    r = cli("app", "validate", str(path), "-o", "json")
    assert r.returncode == 0
    assert json.loads(r.stdout) == {
        "valid": True,
        "errors": [],
        "warnings": [],
        "name": "hello",
        "version": "v1",
    }

    bad = tmp_path / "bad.yaml"
    bad.write_text(MANIFEST.replace("instances: 1", "instances: lots"))
    r = cli("app", "validate", str(bad))
    assert r.returncode == 1
    assert "spec.components[0].traits[0].properties.instances" in r.stderr
    doc = json.loads(cli("app", "validate", str(bad), "-o", "json").stdout)
    assert doc["valid"] is False and len(doc["errors"]) == 1

    r = cli("app", "validate", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1 and "does not exist" in r.stderr


@dataclass
class OutcomeHooks:
    """A fake reconciler: after a deploy the app's status becomes `outcome` (after a short while)."""

    outcome: str = "deployed"
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    manifests: list[Manifest] = field(default_factory=list)

    async def deployed(self, name: str, manifest: Manifest) -> None:
        self.manifests.append(manifest)
        self.statuses[name] = status_json("reconciling", "starting greeter")
        asyncio.get_running_loop().call_later(0.5, self._settle, name)

    def _settle(self, name: str) -> None:
        message = "no host has enough room" if self.outcome == "failed" else ""
        scaler = {
            "id": "s1",
            "kind": "SpreadScaler",
            "name": f"{name}-greeter",
            "status": {"type": self.outcome, **({"message": message} if message else {})},
        }
        self.statuses[name] = status_json(self.outcome, message, [scaler])

    async def undeployed(self, name: str) -> None:
        self.statuses[name] = status_json("undeployed")

    def status(self, name: str) -> dict[str, Any] | None:
        return self.statuses.get(name)


@dataclass
class Served:
    hooks: OutcomeHooks
    url: str
    lattice: str

    async def run(self, *args: str) -> tuple[int, str, str]:
        """Run `wasmlattice app ARGS --nats-url .. --lattice ..` without blocking the server's loop."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("WASMLATTICE_")}
        proc = await asyncio.create_subprocess_exec(
            *wasmlattice_cmd("app", *args, "--nats-url", self.url, "--lattice", self.lattice),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def served(nats_url: str, lattice_name: str) -> AsyncIterator[Served]:
    opts = NatsOptions(url=nats_url)
    nc = await connect(opts)
    hooks = OutcomeHooks()
    server = ApiServer(nc, lattice_name, AppStore(jetstream(nc, opts), lattice_name), hooks)
    await server.start()
    try:
        yield Served(hooks, nats_url, lattice_name)
    finally:
        await server.stop()
        await nc.close()


async def test_deploy_waits_then_manage(served: Served, tmp_path: Path) -> None:
    path = write_app(tmp_path)
    code, out, err = await served.run("deploy", str(path))
    assert code == 0, err
    assert "Deployed hello version v1" in out
    # The relative file:// image was made absolute against the manifest's directory.
    image = served.hooks.manifests[0].components[0].image
    assert image == f"file://{(tmp_path / 'greeter.wasm').resolve()}"

    # Deploying the same file again reuses the identical stored version.
    code, out, err = await served.run("deploy", str(path), "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["result"], doc["version"]) == ("deployed", "v1")

    code, out, _ = await served.run("list", "-o", "json")
    assert code == 0
    [summary] = json.loads(out)
    assert (summary["name"], summary["deployed_version"], summary["status"]) == ("hello", "v1", "deployed")
    code, out, _ = await served.run("status", "hello")
    assert code == 0 and "hello: deployed" in out and "SpreadScaler" in out
    code, out, _ = await served.run("history", "hello", "-o", "json")
    assert json.loads(out) == [{"version": "v1", "deployed": True}]
    code, out, _ = await served.run("undeploy", "hello")
    assert code == 0 and "Undeployed hello" in out
    code, out, _ = await served.run("delete", "hello", "-o", "json")
    assert code == 0 and json.loads(out)["result"] == "deleted"
    code, out, _ = await served.run("status", "hello")
    assert code == 0 and "hello: undeployed" in out
    code, _, err = await served.run("history", "hello")
    assert code == 1 and "not found" in err


async def test_deploy_reports_failure(served: Served, tmp_path: Path) -> None:
    served.hooks.outcome = "failed"
    path = write_app(tmp_path)
    code, _, err = await served.run("deploy", str(path))
    assert code == 1
    assert "hello version v1 failed to deploy: no host has enough room" in err
    assert "SpreadScaler hello-greeter: failed" in err
    # Deploying by name (the stored version) fails the same way.
    code, _, err = await served.run("deploy", "hello", "--version", "v1", "-o", "json")
    assert code == 1


async def test_deploy_without_app_manager(nats_url: str, lattice_name: str, tmp_path: Path) -> None:
    path = write_app(tmp_path)
    served = Served(OutcomeHooks(), nats_url, f"{lattice_name}_empty")
    code, _, err = await served.run("deploy", str(path))
    assert code == 1 and "no app manager answered" in err
