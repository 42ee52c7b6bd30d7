"""The app manager keeps wadm's lattice state keys in `wadm_state`, as tools written for wadm read them.

Real nats-server, two host processes, the app manager in this process; an app is deployed and the
test reads `host_<lattice>`, `component_<lattice>` and `provider_<lattice>` from JetStream KV,
checking wadm's shapes (field names, nesting, value types), then undeploys and sees them follow.
The lease key in the same bucket keeps working.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.support.lattice import LatticeEnv, eventually
from wasmlattice.apps.client import AppClient
from wasmlattice.apps.manager import AppManager

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
HOST_FIELDS = [
    "components",
    "friendly_name",
    "labels",
    "providers",
    "uptime_seconds",
    "version",
    "id",
    "last_seen",
]


def manifest(echo: str) -> dict[str, Any]:
    spread = {"type": "spreadscaler", "properties": {"instances": 3}}
    return {
        "apiVersion": "core.oam.dev/v1beta1",
        "kind": "Application",
        "metadata": {"name": "shapes", "annotations": {"version": "v1"}},
        "spec": {
            "components": [
                {
                    "name": "echo",
                    "type": "component",
                    "properties": {"image": echo},
                    "traits": [
                        spread,
                        {
                            "type": "link",
                            "properties": {
                                "namespace": "wasi",
                                "package": "keyvalue",
                                "interfaces": ["store"],
                                "target": {"name": "kv"},
                            },
                        },
                    ],
                },
                {
                    "name": "kv",
                    "type": "capability",
                    "properties": {"image": "builtin://keyvalue-memory", "id": "shapes-kv"},
                    "traits": [{"type": "spreadscaler", "properties": {"instances": 1}}],
                },
            ]
        },
    }


async def read_state(js: Any, lattice: str) -> dict[str, dict[str, Any]]:
    kv = await js.key_value("wadm_state")
    out: dict[str, dict[str, Any]] = {}
    for kind in ("host", "component", "provider"):
        entry = await kv.get(f"{kind}_{lattice}")
        out[kind] = json.loads(entry.value)
    return out


async def test_wadm_state_lists_our_hosts_components_and_providers(
    env: LatticeEnv, http_echo_wasm: Path
) -> None:
    env.start_host("--label", "name=h0", "--health-interval", "1")
    env.start_host("--label", "name=h1", "--health-interval", "1")
    hosts = set(await env.host_ids(2))
    nc = await nats.connect(env.nats_url)
    manager = AppManager(nc, nc.jetstream(), env.lattice, host_timeout=5.0)
    try:
        await manager.start()
        client = AppClient(nc, env.lattice, timeout=10.0)
        doc = manifest("file://" + str(http_echo_wasm))
        await client.put(doc)
        await client.deploy("shapes", "v1")

        async def deployed() -> None:
            assert (await client.status("shapes")).status == "deployed"

        await eventually(deployed, timeout=90, what="app deployed")
        js = nc.jetstream()

        async def converged() -> dict[str, dict[str, Any]]:
            state = await read_state(js, env.lattice)
            assert set(state["host"]) == hosts
            comp = state["component"].get("shapes-echo")
            assert comp is not None and sum(i["count"] for v in comp["instances"].values() for i in v) == 3
            prov = state["provider"].get("shapes-kv")
            assert prov is not None and list(prov["hosts"].values()) == ["Running"], prov
            return state

        state = await eventually(converged, timeout=60, what="wadm_state")

        # Hosts: wadm's `Host`, every field, in order.
        for host_id, host in state["host"].items():
            assert list(host) == HOST_FIELDS
            assert host["id"] == host_id
            assert isinstance(host["friendly_name"], str) and host["friendly_name"]
            assert host["labels"]["name"] in ("h0", "h1") and host["labels"]["zone"] == "test"
            assert isinstance(host["uptime_seconds"], int) and host["uptime_seconds"] >= 0
            assert re.fullmatch(r"\d+\.\d+\.\d+.*", host["version"])
            assert RFC3339.match(host["last_seen"])
            assert all(isinstance(n, int) for n in host["components"].values())
            for p in host["providers"]:
                assert list(p) == ["provider_id", "provider_ref", "annotations"]
        assert sum(h["components"].get("shapes-echo", 0) for h in state["host"].values()) == 3
        kv_hosts = [
            h for h in state["host"].values() if any(p["provider_id"] == "shapes-kv" for p in h["providers"])
        ]
        assert len(kv_hosts) == 1
        (kv_info,) = [p for p in kv_hosts[0]["providers"] if p["provider_id"] == "shapes-kv"]
        assert kv_info["provider_ref"] == "builtin://keyvalue-memory"
        assert kv_info["annotations"]["wasmcloud.dev/appspec"] == "shapes"

        # Components: wadm's `Component`; instances per host, per set of annotations.
        comp = state["component"]["shapes-echo"]
        assert list(comp) == ["id", "name", "issuer", "instances", "reference"]
        assert comp["id"] == "shapes-echo" and comp["reference"] == "file://" + str(http_echo_wasm)
        assert isinstance(comp["name"], str) and comp["issuer"] == ""
        assert set(comp["instances"]) <= hosts
        for infos in comp["instances"].values():
            for info in infos:
                assert list(info) == ["annotations", "count"]
                assert info["annotations"]["wasmcloud.dev/appspec"] == "shapes"

        # Providers: wadm's `Provider`, status by host.
        prov = state["provider"]["shapes-kv"]
        assert list(prov) == ["id", "name", "issuer", "reference", "hosts"]
        assert prov["reference"] == "builtin://keyvalue-memory" and kv_hosts[0]["id"] in prov["hosts"]

        # The lease lives in the same bucket and still names this manager.
        lease = json.loads((await (await js.key_value("wadm_state")).get(f"leader_{env.lattice}")).value)
        assert lease["id"] == manager.manager_id and manager.leader

        # Undeployed: the component and provider leave the state.
        await client.undeploy("shapes")

        async def emptied() -> None:
            state = await read_state(js, env.lattice)
            assert "shapes-echo" not in state["component"] and "shapes-kv" not in state["provider"]
            assert all(not h["components"] for h in state["host"].values())

        await eventually(emptied, timeout=60, what="wadm_state after undeploy")
    finally:
        await manager.stop()
        await nc.close()
