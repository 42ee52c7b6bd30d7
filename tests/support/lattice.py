"""A lattice for capability and component tests: host processes, a control client, every event.

`lattice_env` (fixture, see conftest) yields a `LatticeEnv`; `serve_http` puts one component behind
a builtin HTTP server provider and returns its URL; `http_link`/`kv_link` build the usual links.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.http import get
from tests.support.processes import host_cmd
from wasmlattice.client.ctl import CtlClient
from wasmlattice.protocol import subjects as sj
from wasmlattice.protocol.models import HostInventory, Link

HTTP_SERVER = "wasmcloud+builtin://http-server"


class LatticeEnv:
    """Host processes, a control client, and every lattice event seen."""

    def __init__(self, nats_url: str, lattice: str, log_dir: Path, env: dict[str, str]) -> None:
        self.nats_url, self.lattice, self.log_dir, self.env = nats_url, lattice, log_dir, env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.events: list[dict[str, Any]] = []
        self.nc: Any = None
        self.ctl: CtlClient

    async def connect(self) -> None:
        import nats

        # A comma-separated URL names the servers of a cluster (as `--nats-url` takes it).
        self.nc = await nats.connect([u for u in self.nats_url.split(",") if u])
        self.ctl = CtlClient(self.nc, self.lattice, timeout=5.0)

        async def on_event(msg: Any) -> None:
            self.events.append(json.loads(msg.data))

        await self.nc.subscribe(sj.events_wildcard(self.lattice), cb=on_event)
        await self.nc.flush()

    def start_host(
        self,
        *extra: str,
        files: bool = True,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        nats_url: str | None = None,
    ) -> None:
        """Start one more host process (`extra`: more `wasmlattice.lattice.run` arguments).

        `files`: allow the tests' component and temporary directories (`host_cmd`); `env`: more
        environment variables for this host; `prefix`: a command that runs the host (e.g.
        `ip netns exec NS`); `nats_url`: the URL the host uses, if not the env's own.
        """
        url = nats_url or self.nats_url
        cmd = [*prefix, *host_cmd(url, self.lattice, "--label", "zone=test", *extra, files=files)]
        log = (self.log_dir / f"host{len(self.procs)}.log").open("wb")
        proc_env = {**self.env, **(env or {})}
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=proc_env))

    async def wait_event(
        self, kind: str, where: Callable[[dict[str, Any]], bool] = lambda e: True, timeout: float = 60.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event["type"] == f"com.wasmcloud.lattice.{kind}" and where(event):
                    return event
            await asyncio.sleep(0.05)
        logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in self.log_dir.glob("host*.log"))
        raise AssertionError(f"no {kind} event within {timeout}s; events: {self.types()}\n{logs}")

    def types(self) -> list[str]:
        return [e["type"].rsplit(".", 1)[-1] for e in self.events]

    async def host_ids(self, count: int) -> list[str]:
        for _ in range(count):
            await self.wait_event("host_started", lambda e: True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ids = list(dict.fromkeys(e["source"] for e in self.events if e["type"].endswith("host_started")))
            if len(ids) >= count:
                return ids
            await asyncio.sleep(0.05)
        raise AssertionError("hosts did not start")

    def process_of(self, host_id: str) -> subprocess.Popen[bytes]:
        """The process of a host started by `start_host` (found by the ID its log announces)."""
        for i, proc in enumerate(self.procs):
            log = self.log_dir / f"host{i}.log"
            if log.exists() and f"host {host_id} " in log.read_text(errors="replace"):
                return proc
        raise AssertionError(f"no host process announced {host_id}")

    async def inventory(self, host_id: str) -> HostInventory:
        return await self.ctl.get_host_inventory(host_id)

    def log_text(self) -> str:
        """Everything the host processes of this env have logged so far."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("host*.log")))

    async def wait_log(self, needle: str, timeout: float = 20.0) -> str:
        """The hosts' log once it contains `needle`; fails with the log's tail after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in the host log:\n{text[-4000:]}")
            await asyncio.sleep(0.05)

    def host_tracebacks(self) -> list[str]:
        """Tracebacks of the hosts themselves (a guest's own, on its stderr, are expected for traps)."""
        return [
            line for line in self.log_text().splitlines() if "Traceback" in line and "stderr]" not in line
        ]

    async def gather(self, subject: str, body: bytes = b"", wait: float = 1.0) -> list[dict[str, Any]]:
        """Publish with a fresh inbox and collect every JSON reply for `wait` s (like ping, auctions)."""
        return await gather(self.nc, subject, body, wait)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


async def gather(nc: Any, subject: str, body: bytes = b"", wait: float = 1.0) -> list[dict[str, Any]]:
    """Publish on `nc` with a fresh inbox and collect every JSON reply for `wait` seconds."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, body, reply=inbox)
    replies: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await sub.next_msg(timeout=left)
        except TimeoutError:
            break
        replies.append(json.loads(msg.data))
    await sub.unsubscribe()
    return replies


def http_link(provider_id: str, component_id: str, source_config: list[str]) -> Link:
    return Link(
        source_id=provider_id,
        target=component_id,
        wit_namespace="wasi",
        wit_package="http",
        interfaces=["incoming-handler"],
        source_config=source_config,
    )


def kv_link(
    source: str,
    target: str,
    name: str = "default",
    config: list[str] | None = None,
    interfaces: tuple[str, ...] = ("store", "atomics", "batch"),
) -> Link:
    """A `wasi:keyvalue` link from `source` to the provider `target` (`config`: its target config)."""
    return Link(
        source_id=source,
        target=target,
        wit_namespace="wasi",
        wit_package="keyvalue",
        interfaces=list(interfaces),
        name=name,
        target_config=config or [],
    )


async def serve_http(
    env: LatticeEnv,
    host_id: str,
    component_id: str,
    component_ref: str,
    *,
    port: int,
    config: list[str] | None = None,
    max_instances: int = 4,
    ready_path: str = "/",
    address: str = "127.0.0.1",
    annotations: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
) -> str:
    """Scale `component_id` on `host_id` behind its own builtin HTTP server on `address:port`; its
    base URL.

    Waits until the route answers anything but 404/503 on `ready_path`.
    """
    ctl = env.ctl
    provider_id = f"http-{component_id}"
    await ctl.put_config(f"{provider_id}-addr", {"address": f"{address}:{port}"})
    assert (
        await ctl.scale_component(
            host_id,
            component_ref,
            component_id,
            max_instances,
            config=config or [],
            annotations=annotations,
            limits=limits,
        )
        == ""
    )
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == component_id)
    await ctl.start_provider(host_id, HTTP_SERVER, provider_id)
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == provider_id)
    await ctl.put_link(http_link(provider_id, component_id, [f"{provider_id}-addr"]))
    url = f"http://{address}:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            status, _ = await get(url + ready_path, timeout=30.0)
            if status not in (404, 503):
                return url
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{component_id} was not served on {url} within 30s")


def own_dirs(root: Path) -> dict[str, str]:
    """Environment of a host that shares no directory with the others: its own HOME, artifact cache
    and compile cache under `root`."""
    for d in ("home", "artifacts", "compiled"):
        (root / d).mkdir(parents=True)
    return {
        "HOME": str(root / "home"),
        "WASMLATTICE_ARTIFACT_CACHE_DIR": str(root / "artifacts"),
        "WASMLATTICE_CACHE_DIR": str(root / "compiled"),
    }


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30.0, what: str = "") -> Any:
    """Retry `check` until it stops raising AssertionError (links and config reach hosts through KV
    watches, so their effects show up a little later); its result. After `timeout` the last
    AssertionError is raised, prefixed with `what` when given."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError as e:
            if time.monotonic() > deadline:
                if what:
                    raise AssertionError(f"{what} not reached within {timeout}s: {e}") from e
                raise
            await asyncio.sleep(0.1)
