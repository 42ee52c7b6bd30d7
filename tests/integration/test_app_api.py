"""The wadm-compatible app API (`apps.api.ApiServer`) against a real nats-server and KV store.

The server runs in-process with fake reconciler hooks (they record calls and return canned statuses);
requests go through `AppClient` and as raw NATS requests, to check wadm's exact JSON shapes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from wasmlattice.apps.api import ApiServer
from wasmlattice.apps.client import AppApiError, AppClient, AppNoManagerError, AppNotFoundError
from wasmlattice.apps.manifest.model import Manifest
from wasmlattice.apps.store import AppStore
from wasmlattice.protocol.connection import NatsOptions, connect, jetstream

pytestmark = pytest.mark.timeout(60)

YAML = "application/yaml"
JSON = "application/json"


def manifest_yaml(
    name: str = "echo",
    version: str | None = "v1",
    *,
    component: str = "web",
    explicit_id: str | None = None,
    description: str = "a test app",
    instances: object = 1,
) -> str:
    """A small valid manifest (YAML) with one component and a spreadscaler."""
    annotations = [f"    description: {description}"]
    if version is not None:
        annotations.append(f"    version: {version}")
    id_line = f"\n        id: {explicit_id}" if explicit_id else ""
    return f"""apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: {name}
  annotations:
{chr(10).join(annotations)}
spec:
  components:
    - name: {component}
      type: component
      properties:
        image: file:///tmp/{component}.wasm{id_line}
      traits:
        - type: spreadscaler
          properties:
            instances: {instances}
"""


def manifest_dict(name: str = "echo", version: str = "v1") -> dict[str, Any]:
    """The same manifest as a JSON-able dict."""
    return {
        "apiVersion": "core.oam.dev/v1beta1",
        "kind": "Application",
        "metadata": {"name": name, "annotations": {"version": version}},
        "spec": {
            "components": [
                {
                    "name": "web",
                    "type": "component",
                    "properties": {"image": "file:///tmp/web.wasm"},
                    "traits": [{"type": "spreadscaler", "properties": {"instances": 1}}],
                }
            ]
        },
    }


@dataclass
class FakeHooks:
    """Records the API's calls to the reconciler and serves canned statuses."""

    calls: list[tuple[str, str, str | None]] = field(default_factory=list)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def deployed(self, name: str, manifest: Manifest) -> None:
        self.calls.append(("deployed", name, manifest.version))

    async def undeployed(self, name: str) -> None:
        self.calls.append(("undeployed", name, None))

    def status(self, name: str) -> dict[str, Any] | None:
        return self.statuses.get(name)


@dataclass
class Api:
    nc: Any
    js: Any
    lattice: str
    hooks: FakeHooks
    client: AppClient
    store: AppStore

    async def raw(
        self, op: str, name: str | None = None, body: bytes | str = b"", headers: dict[str, str] | None = None
    ) -> Any:
        """Send a request as-is and return the decoded JSON reply."""
        subject = f"wadm.api.{self.lattice}.model.{op}" + (f".{name}" if name else "")
        data = body.encode() if isinstance(body, str) else body
        msg = await self.nc.request(subject, data, timeout=5, headers=headers)
        return json.loads(msg.data)

    async def put_yaml(self, text: str) -> Any:
        return await self.raw("put", body=text, headers={"Content-Type": YAML})


@pytest.fixture
async def api(nats_url: str, lattice_name: str) -> AsyncIterator[Api]:
    opts = NatsOptions(url=nats_url)
    nc = await connect(opts)
    js = jetstream(nc, opts)
    store = AppStore(js, lattice_name)
    hooks = FakeHooks()
    server = ApiServer(nc, lattice_name, store, hooks)
    await server.start()
    try:
        yield Api(nc, js, lattice_name, hooks, AppClient(nc, lattice_name, timeout=5), store)
    finally:
        await server.stop()
        await nc.close()


async def test_put_created_then_newversion(api: Api) -> None:
    r = await api.put_yaml(manifest_yaml(version="v1"))
    assert r["result"] == "created"
    assert (r["total_versions"], r["current_version"], r["name"]) == (1, "v1", "echo")
    assert isinstance(r["message"], str)
    r = await api.put_yaml(manifest_yaml(version="v2"))
    assert (r["result"], r["total_versions"], r["current_version"]) == ("newversion", 2, "v2")
    # Without a version: a ULID is assigned and stored in the manifest's annotations.
    r = await api.put_yaml(manifest_yaml(version=None))
    assert r["result"] == "newversion" and r["total_versions"] == 3
    generated = r["current_version"]
    assert len(generated) == 26
    stored = await api.client.get("echo", generated)
    assert stored is not None and stored["metadata"]["annotations"]["version"] == generated


async def test_put_duplicate_version_is_an_error(api: Api) -> None:
    await api.put_yaml(manifest_yaml(version="v1"))
    r = await api.put_yaml(manifest_yaml(version="v1", description="changed"))
    assert r["result"] == "error"
    assert set(r) == {"result", "message"}
    assert "version v1 of app echo already exists" in r["message"]
    with pytest.raises(AppApiError, match="already exists"):
        await api.client.put(manifest_yaml(version="v1"), YAML)


async def test_put_invalid_manifest_names_the_field(api: Api) -> None:
    r = await api.put_yaml(manifest_yaml(instances="many"))
    assert r["result"] == "error"
    assert "spec.components[0].traits[0].properties.instances" in r["message"]
    r = await api.raw("put", body=b"{not json", headers={"Content-Type": JSON})
    assert r["result"] == "error" and r["message"]
    assert await api.store.names() == []


async def test_put_content_types(api: Api) -> None:
    # JSON with its header, JSON and YAML without a header, a dict through the client.
    r = await api.raw("put", body=json.dumps(manifest_dict(version="j1")), headers={"Content-Type": JSON})
    assert (r["result"], r["current_version"]) == ("created", "j1")
    r = await api.raw("put", body=json.dumps(manifest_dict(version="j2")))
    assert r["current_version"] == "j2"
    r = await api.raw("put", body=manifest_yaml(version="y1"))
    assert r["current_version"] == "y1"
    put = await api.client.put(manifest_dict(version="d1"))
    assert (put.result, put.total_versions, put.current_version) == ("newversion", 4, "d1")
    # YAML declared as JSON does not parse; an unknown content type is refused.
    r = await api.raw("put", body=manifest_yaml(version="y2"), headers={"Content-Type": JSON})
    assert r["result"] == "error"
    r = await api.raw("put", body=manifest_yaml(version="y3"), headers={"Content-Type": "text/plain"})
    assert r["result"] == "error" and "Content-Type" in r["message"]
    assert [v.version for v in await api.client.versions("echo")] == ["j1", "j2", "y1", "d1"]


async def test_get_latest_specific_and_notfound(api: Api) -> None:
    await api.put_yaml(manifest_yaml(version="v1", description="first"))
    await api.put_yaml(manifest_yaml(version="v2", description="second"))
    r = await api.raw("get", "echo")
    assert r["result"] == "success"
    assert r["manifest"]["metadata"]["annotations"] == {"description": "second", "version": "v2"}
    r = await api.raw("get", "echo", b"{}")
    assert r["manifest"]["metadata"]["annotations"]["version"] == "v2"
    r = await api.raw("get", "echo", json.dumps({"version": "v1"}))
    assert r["manifest"]["metadata"]["annotations"]["description"] == "first"
    r = await api.raw("get", "echo", json.dumps({"version": "v9"}))
    assert r["result"] == "notfound" and "manifest" not in r
    r = await api.raw("get", "nope")
    assert r["result"] == "notfound"
    r = await api.raw("get", "echo", b"[1]")
    assert r["result"] == "error"
    assert await api.client.get("nope") is None
    got = await api.client.get("echo", "v1")
    assert got is not None and got["spec"]["components"][0]["name"] == "web"


async def test_versions_with_deployed_flags(api: Api) -> None:
    for v in ("v1", "v2", "v3"):
        await api.put_yaml(manifest_yaml(version=v))
    await api.client.deploy("echo", "v2")
    r = await api.raw("versions", "echo")
    assert r["result"] == "success"
    assert r["versions"] == [
        {"version": "v1", "deployed": False},
        {"version": "v2", "deployed": True},
        {"version": "v3", "deployed": False},
    ]
    r = await api.raw("versions", "nope")
    assert r["result"] == "notfound" and r["versions"] == []
    with pytest.raises(AppNotFoundError):
        await api.client.versions("nope")


async def test_list_both_forms(api: Api) -> None:
    await api.put_yaml(manifest_yaml("zeta", "v1", description="last"))
    await api.put_yaml(manifest_yaml("alpha", "v1", description="first"))
    await api.put_yaml(manifest_yaml("alpha", "v2", description="first again"))
    await api.client.deploy("alpha", "v1")
    api.hooks.statuses["alpha"] = {
        "status": {"type": "deployed"},
        "scalers": [],
        "version": "",
        "components": [],
    }
    r = await api.raw("get")
    assert r["result"] == "success"
    models = r["models"]
    assert [m["name"] for m in models] == ["alpha", "zeta"]
    alpha, zeta = models
    assert alpha == {
        "name": "alpha",
        "version": "v2",
        "description": "first again",
        "deployed_version": "v1",
        "detailed_status": api.hooks.statuses["alpha"],
        "status": "deployed",
    }
    # No status yet: `waiting` in detail, down-mapped to `undeployed` in the deprecated field.
    assert zeta["detailed_status"]["status"]["type"] == "waiting"
    assert zeta["status"] == "undeployed"
    assert zeta["status_message"] == zeta["detailed_status"]["status"]["message"]
    assert "deployed_version" not in zeta
    bare = await api.raw("list")
    assert bare == models  # the deprecated form is a bare array of the same summaries
    listed = await api.client.list()
    assert [(m.name, m.deployed_version, m.detailed_status.status) for m in listed] == [
        ("alpha", "v1", "deployed"),
        ("zeta", None, "waiting"),
    ]
    assert [m.name for m in await api.client.list_deprecated()] == ["alpha", "zeta"]


async def test_deploy_latest_specific_and_unknown(api: Api) -> None:
    await api.put_yaml(manifest_yaml(version="v1"))
    await api.put_yaml(manifest_yaml(version="v2"))
    r = await api.raw("deploy", "echo")
    assert r == {"result": "acknowledged", "message": r["message"], "name": "echo", "version": "v2"}
    r = await api.raw("deploy", "echo", json.dumps({"version": "v1"}))
    assert (r["result"], r["version"]) == ("acknowledged", "v1")
    r = await api.raw("deploy", "echo", json.dumps({"version": "latest"}))
    assert r["version"] == "v2"
    r = await api.raw("deploy", "echo", b"{}")
    assert r["version"] == "v2"
    r = await api.raw("deploy", "echo", json.dumps({"version": "v7"}))
    assert r["result"] == "error" and "v7" in r["message"]
    r = await api.raw("deploy", "nope")
    assert r["result"] == "notfound"
    r = await api.raw("deploy", "echo", b"not json")
    assert r["result"] == "error"
    assert api.hooks.calls == [
        ("deployed", "echo", "v2"),
        ("deployed", "echo", "v1"),
        ("deployed", "echo", "v2"),
        ("deployed", "echo", "v2"),
    ]
    assert await api.store.deployed_version("echo") == "v2"
    ack = await api.client.deploy("echo", "v1")
    assert (ack.result, ack.version) == ("acknowledged", "v1")
    with pytest.raises(AppNotFoundError):
        await api.client.deploy("nope")


async def test_explicit_id_clash_between_deployed_apps(api: Api) -> None:
    await api.put_yaml(manifest_yaml("first", "v1", explicit_id="fixed_id"))
    await api.put_yaml(manifest_yaml("second", "v1", component="other", explicit_id="fixed_id"))
    # Storing both is fine; only deploying both at once clashes.
    assert (await api.raw("deploy", "first"))["result"] == "acknowledged"
    r = await api.raw("deploy", "second")
    assert r["result"] == "error"
    assert "fixed_id" in r["message"] and "first" in r["message"]
    assert await api.store.deployed_version("second") is None
    # Redeploying the same app is not a clash with itself.
    assert (await api.raw("deploy", "first"))["result"] == "acknowledged"
    await api.client.undeploy("first")
    assert (await api.raw("deploy", "second"))["result"] == "acknowledged"


async def test_undeploy_twice(api: Api) -> None:
    await api.put_yaml(manifest_yaml(version="v1"))
    await api.client.deploy("echo")
    r = await api.raw("undeploy", "echo", b"{}")
    assert r == {"result": "acknowledged", "message": r["message"], "name": "echo", "version": None}
    r = await api.raw("undeploy", "echo", b"{}")
    assert r["result"] == "acknowledged" and "already undeployed" in r["message"]
    assert api.hooks.calls[1:] == [("undeployed", "echo", None), ("undeployed", "echo", None)]
    assert await api.store.deployed_version("echo") is None
    r = await api.raw("undeploy", "nope", b"{}")
    assert r["result"] == "notfound"


async def test_delete_versions_and_all(api: Api) -> None:
    for v in ("v1", "v2", "v3"):
        await api.put_yaml(manifest_yaml(version=v))
    await api.client.deploy("echo", "v2")
    r = await api.raw("del", "echo", json.dumps({"version": "v1"}))
    assert r == {"result": "deleted", "message": r["message"], "undeploy": False}
    r = await api.raw("del", "echo", json.dumps({"version": "v9"}))
    assert (r["result"], r["undeploy"]) == ("noop", False)
    r = await api.raw("del", "echo", json.dumps({"version": "v2"}))  # the deployed one
    assert (r["result"], r["undeploy"]) == ("deleted", True)
    assert api.hooks.calls[-1] == ("undeployed", "echo", None)
    assert [(v.version, v.deployed) for v in await api.client.versions("echo")] == [("v3", False)]
    r = await api.raw("del", "echo", json.dumps({"version": "v3"}))  # the last one
    assert (r["result"], r["undeploy"]) == ("deleted", True)
    assert await api.store.names() == []
    assert (await api.raw("get", "echo"))["result"] == "notfound"

    for v in ("v1", "v2"):
        await api.put_yaml(manifest_yaml(version=v))
    d = await api.client.delete("echo")
    assert (d.result, d.undeploy) == ("deleted", True)
    assert await api.store.names() == []
    d = await api.client.delete("echo")
    assert d.result == "noop"


async def test_status_default_and_from_hooks(api: Api) -> None:
    r = await api.raw("status", "nope")
    assert r["result"] == "notfound"
    await api.put_yaml(manifest_yaml(version="v1"))
    r = await api.raw("status", "echo")
    assert r["result"] == "ok"
    assert r["status"] == {"status": {"type": "undeployed"}, "scalers": [], "version": "", "components": []}
    canned = {
        "status": {"type": "failed", "message": "no hosts match region=mars"},
        "scalers": [
            {
                "id": "s1",
                "kind": "SpreadScaler",
                "name": "echo-web",
                "status": {"type": "failed", "message": "no hosts match region=mars"},
            }
        ],
        "version": "",
        "components": [],
    }
    api.hooks.statuses["echo"] = canned
    assert (await api.raw("status", "echo"))["status"] == canned
    st = await api.client.status("echo")
    assert (st.status, st.message) == ("failed", "no hosts match region=mars")
    assert [(s.kind, s.name, s.status) for s in st.scalers] == [("SpreadScaler", "echo-web", "failed")]


async def test_history_is_not_supported(api: Api) -> None:
    await api.put_yaml(manifest_yaml(version="v1"))
    r = await api.raw("history", "echo")
    assert r["result"] == "error" and "not currently supported" in r["message"]
    with pytest.raises(AppApiError, match="not currently supported"):
        await api.client.history("echo")


async def test_subject_errors(api: Api) -> None:
    r = await api.raw("versions")
    assert r["result"] == "error" and r["message"].startswith("Invalid subject")
    r = await api.raw("get", "a.b")
    assert r["result"] == "error" and "Found extra components" in r["message"]
    r = await api.raw("put", "extra", manifest_yaml())
    assert r["result"] == "error" and "Found extra components" in r["message"]
    r = await api.raw("frobnicate", "echo")
    assert r["result"] == "error" and r["message"].startswith("Unsupported subject")
    # The server is still answering afterwards.
    assert (await api.raw("get"))["result"] == "success"


async def test_manifest_events(api: Api) -> None:
    sub = await api.nc.subscribe(f"wadm.evt.{api.lattice}.>")
    await api.nc.flush()
    await api.put_yaml(manifest_yaml(version="v1"))
    await api.client.deploy("echo")
    msg = await sub.next_msg(timeout=5)
    assert msg.subject == f"wadm.evt.{api.lattice}.manifest_published"
    ev = json.loads(msg.data)
    assert ev["specversion"] == "1.0" and ev["type"] == "com.wadm.manifest_published"
    assert ev["datacontenttype"] == "application/json" and ev["id"] and ev["source"] and ev["time"]
    assert ev["data"]["metadata"]["name"] == "echo"
    assert ev["data"]["metadata"]["annotations"]["version"] == "v1"
    await api.client.undeploy("echo")
    msg = await sub.next_msg(timeout=5)
    assert msg.subject == f"wadm.evt.{api.lattice}.manifest_unpublished"
    ev = json.loads(msg.data)
    assert ev["type"] == "com.wadm.manifest_unpublished" and ev["data"] == {"name": "echo"}
    await sub.unsubscribe()


async def test_storage_layout(api: Api) -> None:
    await api.put_yaml(manifest_yaml("beta", "v1"))
    await api.put_yaml(manifest_yaml("alpha", "v1"))
    await api.put_yaml(manifest_yaml("alpha", "v2"))
    await api.client.deploy("alpha", "v1")
    kv = await api.js.key_value("wadm_manifests")
    record = json.loads((await kv.get(f"{api.lattice}-alpha")).value)
    assert list(record["manifests"]) == ["v1", "v2"]
    assert record["deployed_version"] == "v1"
    assert record["manifests"]["v2"]["metadata"]["annotations"]["version"] == "v2"
    assert json.loads((await kv.get(api.lattice)).value) == ["alpha", "beta"]
    status = await api.js.stream_info("KV_wadm_manifests")
    assert status.config.max_msgs_per_subject == 1  # history 1


async def test_concurrent_puts_keep_every_version(api: Api) -> None:
    results = await asyncio.gather(*(api.client.put(manifest_yaml(version=f"c{i}"), YAML) for i in range(8)))
    assert sorted(r.current_version for r in results) == [f"c{i}" for i in range(8)]
    assert len(await api.client.versions("echo")) == 8
    # Two stores (two app managers) writing at once don't lose versions either.
    other = AppStore(api.js, api.lattice)
    from wasmlattice.apps.manifest.load import parse_manifest

    manifests = [parse_manifest(manifest_yaml(version=f"o{i}"))[0] for i in range(6)]
    await asyncio.gather(*((api.store if i % 2 else other).put(m) for i, m in enumerate(manifests)))
    assert len(await api.client.versions("echo")) == 14


async def test_shared_component_references(api: Api) -> None:
    consumer = """apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: consumer
  annotations:
    version: v1
spec:
  components:
    - name: http
      type: capability
      properties:
        application:
          name: pool
          component: server
"""
    r = await api.put_yaml(consumer)
    assert r["result"] == "created" and "pool" in r["message"]
    r = await api.raw("deploy", "consumer")
    assert r["result"] == "error" and "pool" in r["message"]
    pool = manifest_yaml("pool", "v1", component="server").replace(
        "    description: a test app",
        '    description: a test app\n    experimental.wasmcloud.dev/shared: "true"',
    )
    assert (await api.put_yaml(pool))["result"] == "created"
    r = await api.raw("deploy", "consumer")
    assert r["result"] == "error" and "not deployed" in r["message"]
    await api.client.deploy("pool")
    assert (await api.raw("deploy", "consumer"))["result"] == "acknowledged"


async def test_no_app_manager(nats_url: str, lattice_name: str) -> None:
    nc = await connect(NatsOptions(url=nats_url))
    try:
        client = AppClient(nc, f"{lattice_name}_nobody", timeout=1)
        with pytest.raises(AppNoManagerError, match=r"no app manager answered on wadm\.api"):
            await client.list()
    finally:
        await nc.close()
