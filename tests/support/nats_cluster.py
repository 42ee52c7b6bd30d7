"""A clustered nats-server with JetStream on loopback, as production runs NATS (docs/nats.md).

`nats_cluster(tmp_path, 3)` starts three `nats-server` processes with their own client and route
ports (free ports on 127.0.0.1) and store directories, routed to each other as one cluster, and
yields a `NatsCluster` once JetStream can place a stream on every node; `kill(i)` ends one node with
SIGKILL, as a crash would.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.processes import free_port
from wasmlattice.nats_server import find_nats_server

CLUSTER_NAME = "wl-test"


@dataclass
class NatsNode:
    """One node of the cluster: its name, client and route ports, directory and process."""

    name: str
    port: int
    route_port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "nats-server.log"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class NatsCluster:
    """The nodes of a loopback NATS cluster with JetStream."""

    nodes: list[NatsNode] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        """The client URLs of every node, in order."""
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated (what `--nats-url` takes)."""
        return ",".join(self.urls)

    def start_node(self, node: NatsNode) -> None:
        """Write the node's config and start its process (also to restart a killed node)."""
        routes = ", ".join(f'"nats-route://127.0.0.1:{n.route_port}"' for n in self.nodes if n is not node)
        store = node.directory / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        conf = node.directory / "nats.conf"
        conf.write_text(
            f"server_name: {node.name}\n"
            f"listen: 127.0.0.1:{node.port}\n"
            f'jetstream {{ store_dir: "{store}" }}\n'
            f"cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{node.route_port}\n"
            f"  routes: [{routes}]\n}}\n"
        )
        log = node.log_path.open("ab")
        try:
            node.proc = subprocess.Popen(
                [str(find_nats_server()), "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()

    def kill(self, index: int) -> None:
        """SIGKILL node `index` (no goodbye to its clients or routes) and reap it."""
        proc = self.nodes[index].proc
        assert proc is not None and proc.poll() is None, f"node {index} is not running"
        proc.kill()
        proc.wait(10)

    def index_of(self, url: str) -> int:
        """The node whose client port `url` names."""
        for i, node in enumerate(self.nodes):
            if url.rstrip("/").endswith(f":{node.port}"):
                return i
        raise AssertionError(f"{url} is no node of the cluster {self.urls}")

    def logs(self) -> str:
        """The tail of every node's log, for failure messages."""
        return "\n".join(
            f"--- {n.name}\n{n.log_path.read_text(errors='replace')[-2000:]}"
            for n in self.nodes
            if n.log_path.exists()
        )

    def wait_jetstream(self, timeout: float = 60.0) -> None:
        """Wait until every running node answers `$JS.API.INFO` (the meta group has a leader)."""
        asyncio.run(self._wait_jetstream(timeout))

    async def _wait_jetstream(self, timeout: float) -> None:
        import nats

        deadline = time.monotonic() + timeout
        last: Any = None
        alive = sum(1 for n in self.nodes if n.alive())
        for node in self.nodes:
            if not node.alive():
                continue
            while True:
                if not node.alive():
                    raise RuntimeError(f"{node.name} exited:\n{self.logs()}")
                try:
                    nc = await nats.connect(
                        node.url, connect_timeout=1, allow_reconnect=False, error_cb=_quiet
                    )
                    try:
                        msg = await nc.request("$JS.API.INFO", b"", timeout=2)
                        last = json.loads(msg.data)
                        # Formed too: the node lists every running node's client URL, which is
                        # what hosts count to choose their replicas.
                        urls = (getattr(nc, "_server_info", None) or {}).get("connect_urls") or []
                        if "error" not in last and len(urls) >= alive:
                            break
                        last = last if "error" in last else f"connect_urls {urls}"
                    finally:
                        await nc.close()
                except Exception as e:  # not up yet: connection refused, no responders, timeout
                    last = e
                if time.monotonic() > deadline:
                    why = f"JetStream of {node.name} not ready in {timeout}s ({last})"
                    raise RuntimeError(f"{why}:\n{self.logs()}")
                await asyncio.sleep(0.2)
        await self._wait_placement(alive, deadline, last)

    async def _wait_placement(self, alive: int, deadline: float, last: Any) -> None:
        """Wait until a stream with one replica per running node can be placed.

        Every node answering `$JS.API.INFO` is not enough: the meta leader may not yet count a
        node as a JetStream peer, and a bucket created then gets "no suitable peers for placement".
        """
        import nats
        from nats.js.api import StorageType

        running = next(n for n in self.nodes if n.alive())
        nc = await nats.connect(running.url, connect_timeout=2, error_cb=_quiet)
        try:
            js = nc.jetstream(timeout=5)
            while True:
                try:
                    await js.add_stream(
                        name="WL_PLACEMENT_PROBE",
                        subjects=["wl.placement.probe"],
                        num_replicas=alive,
                        storage=StorageType.MEMORY,
                    )
                    await js.delete_stream("WL_PLACEMENT_PROBE")
                    return
                except Exception as e:  # no suitable peers yet, or the meta leader is moving
                    last = e
                if time.monotonic() > deadline:
                    why = f"cannot place a stream with {alive} replicas ({last})"
                    raise RuntimeError(f"{why}:\n{self.logs()}")
                await asyncio.sleep(0.2)
        finally:
            await nc.close()

    def stop(self) -> None:
        """Stop every node still running."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(10)


async def _quiet(_: Exception) -> None:
    """An error callback for the readiness probes: a node not up yet is expected."""


@contextmanager
def nats_cluster(directory: Path, size: int = 3) -> Iterator[NatsCluster]:
    """A `size`-node NATS cluster with JetStream on loopback, stopped on exit."""
    cluster = NatsCluster(
        [NatsNode(f"n{i}", free_port(), free_port(), directory / f"n{i}") for i in range(size)]
    )
    try:
        for node in cluster.nodes:
            cluster.start_node(node)
        cluster.wait_jetstream()
        yield cluster
    finally:
        cluster.stop()
