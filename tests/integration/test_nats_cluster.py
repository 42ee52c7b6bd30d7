"""A lattice on a three-node NATS cluster (docs/nats.md): replicas, reconnects, and losing a node.

Real `nats-server` processes routed as one cluster on loopback (`tests/support/nats_cluster.py`),
real host processes, the app manager in this process, real HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest

from tests.support.http import get
from tests.support.lattice import LatticeEnv, eventually
from tests.support.nats_cluster import NatsCluster, nats_cluster
from tests.support.processes import free_port
from wasmlattice.apps.client import AppClient
from wasmlattice.apps.manager import STATE_BUCKET, AppManager
from wasmlattice.apps.store import DEFAULT_BUCKET as MANIFEST_BUCKET
from wasmlattice.capabilities.secrets import bucket_name as secrets_bucket
from wasmlattice.capabilities.secrets import list_secrets, put_secret
from wasmlattice.protocol import subjects as sj
from wasmlattice.protocol.connection import NatsConnectionError, NatsOptions, connect, jetstream, public_url
from wasmlattice.protocol.kv import ReplicaPlacementError, bucket_replicas, cluster_size, open_bucket

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with nats_cluster(tmp_path / "nats", 3) as c:
        yield c


async def replicas_of(js: Any, stream: str) -> int:
    return int((await js.stream_info(stream)).config.num_replicas)


# -- replicas ------------------------------------------------------------------------------------


async def test_buckets_get_three_replicas_on_a_cluster_and_js_replicas_overrides(
    cluster: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    nc = await connect(NatsOptions(url=cluster.urls[0], name="t"))
    try:
        js = jetstream(nc, NatsOptions())
        assert cluster_size(nc) == 3
        assert bucket_replicas(js) == (3, False)
        await open_bucket(js, "auto_r")
        assert await replicas_of(js, "KV_auto_r") == 3
    finally:
        await nc.close()

    nc = await connect(NatsOptions(url=cluster.urls[1], js_replicas=2))
    try:
        js = jetstream(nc, NatsOptions())
        assert bucket_replicas(js) == (2, True)
        await open_bucket(js, "asked_r")
        assert await replicas_of(js, "KV_asked_r") == 2
        # An existing bucket is kept as it is, and the difference is said once.
        with caplog.at_level(logging.INFO, logger="wasmlattice.protocol.kv"):
            await open_bucket(js, "auto_r")
            await open_bucket(js, "auto_r")
        assert await replicas_of(js, "KV_auto_r") == 3
        notes = [r.getMessage() for r in caplog.records if "kept as it is" in r.getMessage()]
        assert notes == [
            "KV bucket auto_r exists with 3 replica(s), not the 2 this host would create; "
            "kept as it is (change it with `nats stream edit`)"
        ], notes
    finally:
        await nc.close()

    # More replicas than the cluster has servers: a precise error, nothing created.
    nc = await connect(NatsOptions(url=cluster.urls[2], js_replicas=5))
    try:
        js = jetstream(nc, NatsOptions())
        with pytest.raises(ReplicaPlacementError, match=r"with 5 replicas \(--js-replicas\)"):
            await open_bucket(js, "too_many")
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.stream_info("KV_too_many")
    finally:
        await nc.close()


def test_js_replicas_out_of_range_is_refused() -> None:
    with pytest.raises(NatsConnectionError, match="--js-replicas must be between 1 and 5"):
        NatsOptions(js_replicas=6).validate()


async def test_a_single_server_gets_one_replica(nats_url: str) -> None:
    nc = await connect(NatsOptions(url=nats_url))
    try:
        assert cluster_size(nc) == 1
        assert bucket_replicas(jetstream(nc, NatsOptions())) == (1, False)
    finally:
        await nc.close()


# -- reconnects ----------------------------------------------------------------------------------


async def test_client_reconnects_to_servers_it_only_learned_from_the_cluster(
    cluster: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Given one URL (and a dead one), the client learns the others from the server's INFO and
    moves to one of them when its node dies: one warning for the outage, one line when back."""
    dead = f"nats://127.0.0.1:{free_port()}"
    nc = await connect(NatsOptions(url=f"{dead},{cluster.urls[0]}", name="t", reconnect_wait=0.2))
    try:
        assert public_url(nc) == cluster.urls[0]
        caplog.clear()  # the first connect's refusal by the dead URL is not part of the outage
        with caplog.at_level(logging.DEBUG, logger="wasmlattice.protocol.connection"):
            cluster.kill(0)

            async def moved() -> None:
                assert nc.is_connected and public_url(nc) in cluster.urls[1:], public_url(nc)

            await eventually(moved, timeout=30.0, what="reconnected to a surviving node")
        # Works on the new node: a request through the cluster.
        await nc.flush(timeout=5)
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.endswith("connection")
        ]
        assert len(warnings) == 1 and warnings[0].startswith("disconnected from NATS (t)"), warnings
        back = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reconnected to NATS")]
        assert len(back) == 1 and " after " in back[0], back
    finally:
        await nc.close()


async def test_a_long_outage_warns_once(cluster: NatsCluster, caplog: pytest.LogCaptureFixture) -> None:
    """Every node down for a few seconds: nats-py fails many reconnect attempts (every 0.2 s here);
    the log has one warning for the outage and one line when it is over, not one per attempt."""
    nc = await connect(NatsOptions(url=cluster.url, name="t", reconnect_wait=0.2))
    try:
        with caplog.at_level(logging.DEBUG, logger="wasmlattice.protocol.connection"):
            for i in range(3):
                cluster.kill(i)
            await eventually(_not_connected(nc), timeout=10.0)
            await asyncio.sleep(3.0)
            for node in cluster.nodes:
                cluster.start_node(node)

            async def back() -> None:
                assert nc.is_connected

            await eventually(back, timeout=30.0, what="reconnected after the outage")
        messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name.endswith("connection")]
        attempts = [m for lvl, m in messages if lvl == logging.DEBUG and "NATS connection 't'" in m]
        assert len(attempts) >= 5, messages  # the attempts happened, quietly
        warnings = [m for lvl, m in messages if lvl >= logging.WARNING]
        assert len(warnings) == 1 and warnings[0].startswith("disconnected from NATS (t)"), warnings
        infos = [m for lvl, m in messages if lvl == logging.INFO and m.startswith("reconnected")]
        assert len(infos) == 1 and " after " in infos[0], infos
    finally:
        await nc.close()


def _not_connected(nc: Any) -> Any:
    async def check() -> None:
        assert not nc.is_connected

    return check


# -- losing a node under load --------------------------------------------------------------------


@pytest.fixture
async def cluster_env(
    cluster: NatsCluster, lattice_name: str, tmp_path: Path, wasmlattice_env: dict[str, str]
) -> AsyncIterator[LatticeEnv]:
    """A lattice whose test client talks to nodes 0 and 2 (node 1 is the one the test kills)."""
    key = base64.b64encode(os.urandom(32)).decode()
    env = LatticeEnv(f"{cluster.urls[0]},{cluster.urls[2]}", lattice_name, tmp_path, wasmlattice_env)
    env.env = {**env.env, "WASMLATTICE_SECRETS_KEY": key}
    await env.connect()
    try:
        yield env
    finally:
        env.close()
        await env.nc.close()


async def test_lattice_keeps_serving_when_a_nats_node_dies(
    cluster: NatsCluster, cluster_env: LatticeEnv, http_echo_wasm: Path
) -> None:
    """Two hosts and the app manager on three different nodes; the app's HTTP server runs on the
    host of node 1 and its component on the host of node 2, so every request crosses the cluster.
    Node 1 dies under load: requests fail for a moment, then the host is back through a surviving
    node, and every link, config, manifest and secret is still there."""
    env = cluster_env
    n0, n1, n2 = cluster.urls
    common = ["--heartbeat-interval", "2", "--invocation-timeout", "3"]
    env.start_host("--nats-url", n1, "--label", "name=edge", *common)
    # A list: the host picks one of them and learns the rest from the cluster.
    env.start_host("--nats-url", f"{n2},{n0}", "--label", "name=worker", *common)
    host_ids = await env.host_ids(2)
    hosts = {h.labels["name"]: h for h in await env.ctl.ping_hosts(wait=1.0) if h.id in host_ids}
    assert hosts["edge"].ctl_host == n1, hosts["edge"].ctl_host
    assert hosts["worker"].ctl_host in (n0, n2), hosts["worker"].ctl_host

    manager_opts = NatsOptions(url=n0, name="app-manager")
    mnc = await connect(manager_opts)
    manager = AppManager(mnc, jetstream(mnc, manager_opts), env.lattice, host_timeout=5.0)
    await manager.start()
    try:
        apps = AppClient(env.nc, env.lattice, timeout=10.0)
        port = free_port()
        listen = {"config": [{"name": "listen", "properties": {"address": f"127.0.0.1:{port}"}}]}
        doc = {
            "apiVersion": "core.oam.dev/v1beta1",
            "kind": "Application",
            "metadata": {"name": "web", "annotations": {"version": "v1"}},
            "spec": {
                "components": [
                    {
                        "name": "echo",
                        "type": "component",
                        "properties": {"image": "file://" + str(http_echo_wasm)},
                        "traits": [_spread("worker")],
                    },
                    {
                        "name": "http",
                        "type": "capability",
                        "properties": {"image": "builtin://http-server"},
                        "traits": [
                            _spread("edge"),
                            {
                                "type": "link",
                                "properties": {
                                    "namespace": "wasi",
                                    "package": "http",
                                    "interfaces": ["incoming-handler"],
                                    "target": "echo",
                                    "source": listen,
                                },
                            },
                        ],
                    },
                ]
            },
        }
        await apps.put(doc)
        await apps.deploy("web", "v1")
        url = f"http://127.0.0.1:{port}/echo"

        async def serving() -> None:
            assert (await apps.status("web")).status == "deployed"
            status, _ = await get(url, timeout=5.0)
            assert status == 200, status

        await eventually(serving, timeout=90.0, what="the app serving")

        # What must survive: links, a named config, the manifest, a secret.
        key = base64.b64decode(env.env["WASMLATTICE_SECRETS_KEY"])
        await env.ctl.put_config("cluster-settings", {"colour": "teal"})
        await put_secret(env.nc.jetstream(), env.lattice, "dbpw", "s3cret", key, allow=["web-echo"])
        links_before = await env.ctl.get_links()
        assert any(link.target == "web-echo" for link in links_before), links_before
        # On three nodes, every bucket the lattice made has three replicas.
        js = env.nc.jetstream()
        streams = [
            f"KV_{bucket}"
            for bucket in (
                sj.lattice_data_bucket(env.lattice),
                sj.config_data_bucket(env.lattice),
                secrets_bucket(env.lattice),
                MANIFEST_BUCKET,
                STATE_BUCKET,
            )
        ]
        for stream in streams:
            assert await replicas_of(js, stream) == 3, stream

        # HTTP load, then node 1 (the edge host's) dies.
        results: list[tuple[float, float, int]] = []  # started, ended, status
        stop_load = asyncio.Event()

        async def load() -> None:
            while not stop_load.is_set():
                started = time.monotonic()
                try:
                    status = (await get(url, timeout=5.0))[0]
                except Exception:
                    status = 0
                results.append((started, time.monotonic(), status))

        loader = asyncio.ensure_future(load())
        await asyncio.sleep(2.0)
        killed_at = time.monotonic()
        cluster.kill(1)

        # The edge host reconnects to a surviving node and is seen again.
        async def edge_back() -> None:
            seen = {h.labels.get("name") for h in await env.ctl.ping_hosts(wait=1.0)}
            assert {"edge", "worker"} <= seen, seen

        await eventually(edge_back, timeout=60.0, what="both hosts answering after the kill")

        # Serving resumes. A request whose messages died with node 1 leaves the worker's instance
        # waiting for the rest of its body; the worker gives that up after its invocation timeout
        # (3 s here: protocol/wrpc/streams.py) instead of holding the instance until the deadline.
        async def serving_again() -> None:
            assert any(st == 200 for started, _, st in results if started > killed_at), results[-5:]

        await eventually(serving_again, timeout=60.0, what="a request served after the kill")
        await asyncio.sleep(5.0)  # more load on the recovered lattice
        stop_load.set()
        await loader

        before = [st for _, ended, st in results if ended < killed_at]
        assert before and set(before) == {200}, before
        # Relative to the kill: the requests that were under way or started after it.
        after = [(round(t - killed_at, 2), st) for t, ended, st in results if ended >= killed_at]
        failures = [r for r in after if r[1] != 200]
        # Serving resumes: the last failure (if any) is followed by a run of successes until the end.
        last_failure = max((t for t, _ in failures), default=0.0)
        recovered = [st for t, st in after if t > last_failure]
        assert len(recovered) >= 10 and set(recovered) == {200}, after
        # A short burst around the kill, not an outage: the host reconnects within seconds
        # (generous bound for a loaded machine; the failures are listed on failure).
        assert last_failure < 20.0, failures
        print(f"{len(failures)} of {len(after)} requests failed after the kill; last at +{last_failure}s")
        edge_log = env.log_dir / "host0.log"
        text = edge_log.read_text(errors="replace")
        assert "reconnected to NATS at" in text and " after " in text, text[-3000:]
        assert text.count("disconnected from NATS") == 1, text[-3000:]

        # A stream whose leader was on node 1 answers nothing until the two survivors elect a new
        # one (seconds; measured 4-8 s unloaded, longer on a busy CI machine), so "nothing lost"
        # is checked once every bucket has a leader again, not during the election.
        async def leaders_back() -> None:
            for stream in streams:
                try:
                    info = await js.stream_info(stream)
                except (nats.errors.Error, TimeoutError) as e:  # no leader to answer yet
                    raise AssertionError(f"{stream}: {type(e).__name__}: {e}") from e
                assert info.cluster is not None and info.cluster.leader, (stream, info.cluster)

        await eventually(leaders_back, timeout=60.0, what="every lattice bucket has a leader again")
        # Nothing was lost, and the lattice still takes writes (two of three replicas remain).
        async with _within(60.0, "reading and writing the lattice after the kill"):
            await _nothing_lost(env, apps, links_before, key)
    finally:
        async with _within(30.0, "stopping the app manager"):
            await manager.stop()
            await mnc.close()


@contextlib.asynccontextmanager
async def _within(seconds: float, what: str) -> AsyncIterator[None]:
    """Fail naming `what` if the block takes longer than `seconds` (not the whole test's timeout)."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise AssertionError(f"{what}: not done within {seconds}s") from None


async def _nothing_lost(env: LatticeEnv, apps: AppClient, links_before: list[Any], key: bytes) -> None:
    """Links, configs, the manifest and the secret are all still there, and writes work."""
    links_after = await env.ctl.get_links()
    assert sorted(map(_link_key, links_after)) == sorted(map(_link_key, links_before))
    assert await env.ctl.get_config("cluster-settings") == {"colour": "teal"}
    for link in links_after:
        for name in link.source_config:
            assert await env.ctl.get_config(name) is not None, name
    stored = await apps.get("web")
    assert stored is not None and stored["metadata"]["name"] == "web", stored
    listed = await list_secrets(env.nc.jetstream(), env.lattice, key)
    assert [s.name for s in listed] == ["dbpw"], listed
    await env.ctl.put_config("after-the-kill", {"ok": "yes"})
    assert await env.ctl.get_config("after-the-kill") == {"ok": "yes"}
    assert (await apps.status("web")).status == "deployed"


def _spread(name: str) -> dict[str, Any]:
    return {
        "type": "spreadscaler",
        "properties": {"instances": 1, "spread": [{"name": name, "requirements": {"name": name}}]},
    }


def _link_key(link: Any) -> tuple[str, str, str, str]:
    return (link.source_id, link.target, link.wit_package, link.name)
