"""A lattice on a three-node NATS cluster (docs/nats.md): replicas, reconnects, and losing a node.

Real `nats-server` processes routed as one cluster on loopback (`tests/support/nats_cluster.py`),
real host processes, the app manager in this process, real HTTP.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest

from tests.support.lattice import eventually
from tests.support.nats_cluster import NatsCluster, nats_cluster
from tests.support.processes import free_port
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
