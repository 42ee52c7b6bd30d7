"""The app manager: time to deploy a 100-instance app across 5 hosts, and to recover from a host's death.

Five host processes (label `pool=p`) and one app manager (`wasmlattice app-manager`, default
10 s host time-out) on an embedded nats-server. The app: the `examples/hello` component with a
spreadscaler of 100 instances over five equal spreads (20 per host). Measured: from `model.deploy`
to status `deployed` with all 100 instances in the hosts' inventories (cold: the first deploy also
compiles the component; warm: a second app with the same component), and from SIGKILL of one host
to 100 instances on the remaining four again. wadm itself notices a crashed host only after 70 s
(its reaper), which is the figure to compare the second number with.

    python benchmarks/apps.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from common import host_file_args, machine, stop_processes, until_answering

from wasmlattice.apps.client import AppClient
from wasmlattice.client.ctl import CtlClient
from wasmlattice.devbuild import build
from wasmlattice.nats_server import EmbeddedNats

ROOT = Path(__file__).resolve().parent.parent
LATTICE = "appbench"
HOSTS = 5
INSTANCES = 100


def manifest(name: str, image: str) -> dict[str, Any]:
    spreads = [{"name": f"s{i}", "requirements": {"pool": "p"}} for i in range(HOSTS)]
    return {
        "apiVersion": "core.oam.dev/v1beta1",
        "kind": "Application",
        "metadata": {"name": name, "annotations": {"version": "v1"}},
        "spec": {
            "components": [
                {
                    "name": "hello",
                    "type": "component",
                    "properties": {"image": image},
                    "traits": [
                        {"type": "spreadscaler", "properties": {"instances": INSTANCES, "spread": spreads}}
                    ],
                }
            ]
        },
    }


async def total_instances(ctl: CtlClient, component_id: str) -> tuple[int, int]:
    """(instances of `component_id` across the live hosts, hosts running it)."""
    total = hosts = 0
    for host in await ctl.ping_hosts(wait=0.2):
        inv = await ctl.get_host_inventory(host.id)
        n = sum(c.max_instances for c in inv.components if c.id == component_id)
        total += n
        hosts += 1 if n else 0
    return total, hosts


async def until_full(client: AppClient, ctl: CtlClient, app: str, t0: float, timeout: float = 180.0) -> float:
    """Seconds from `t0` until the app is deployed with all its instances running."""
    while time.perf_counter() - t0 < timeout:
        status = await client.status(app)
        if status.status == "deployed" and (await total_instances(ctl, f"{app}-hello"))[0] == INSTANCES:
            return time.perf_counter() - t0
        if status.status == "failed":
            raise RuntimeError(f"{app} failed: {status.message}")
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{app} not at full scale within {timeout}s")


async def run(args: argparse.Namespace) -> None:
    wasm = build(ROOT / "examples" / "hello")
    image = "file://" + str(wasm.resolve())
    with tempfile.TemporaryDirectory(prefix="wl-appbench-") as tmp:
        env = dict(os.environ, WASMLATTICE_CACHE_DIR=str(Path(tmp) / "cache"))
        server = EmbeddedNats(host="127.0.0.1", port=0, data_dir=Path(tmp) / "nats")
        await server.start()
        procs: list[subprocess.Popen[bytes]] = []
        nc: Any = None
        try:
            for i in range(HOSTS):
                cmd = [
                    sys.executable,
                    "-m",
                    "wasmlattice.lattice.run",
                    "--nats-url",
                    server.url,
                    "--lattice",
                    LATTICE,
                ]
                cmd += ["--log-level", "warning", "--label", "pool=p", "--label", f"name=h{i}"]
                cmd += host_file_args()
                procs.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL))
            manager_cmd = [
                sys.executable,
                "-m",
                "wasmlattice.cli.main",
                "app-manager",
                "--nats-url",
                server.url,
            ]
            manager_cmd += ["--lattice", LATTICE, "--log-level", "warning"]
            procs.append(subprocess.Popen(manager_cmd, env=env, stdin=subprocess.DEVNULL))
            nc = await nats.connect(server.url)
            ctl = CtlClient(nc, LATTICE, timeout=10.0)
            client = AppClient(nc, LATTICE, timeout=10.0)
            deadline = time.monotonic() + 120
            while len(await ctl.ping_hosts(wait=0.5)) < HOSTS:
                if time.monotonic() > deadline:
                    raise TimeoutError("hosts did not start")
            await until_answering(client, deadline)  # once the manager has started

            rows: list[tuple[str, float]] = []
            for app, label in (("cold", "deploy 100 instances, 5 hosts (first: compiles)"),
                               ("warm", "deploy 100 instances, 5 hosts (compiled)")):  # fmt: skip
                await client.put(manifest(app, image))
                t0 = time.perf_counter()
                await client.deploy(app, "v1")
                rows.append((label, await until_full(client, ctl, app, t0)))
            await client.undeploy("cold")

            # Kill one host of the warm app; wait for 100 instances on the other four.
            victim = procs[0]
            t0 = time.perf_counter()
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            await asyncio.sleep(0.5)  # let the inventories drop the dead host's instances
            while True:
                total, hosts = await total_instances(ctl, "warm-hello")
                if total == INSTANCES and hosts == HOSTS - 1:
                    break
                if time.perf_counter() - t0 > 180:
                    raise TimeoutError("no recovery within 180 s")
                await asyncio.sleep(0.05)
            rows.append(("host killed -> 100 instances again", time.perf_counter() - t0))

            print(f"# apps: {time.strftime('%Y-%m-%d %H:%M')}, {machine()}")
            print(
                f"# {HOSTS} host processes, 1 app manager process (host time-out 10 s), component {wasm.name}"
            )
            for label, seconds in rows:
                print(f"{label:<52}{seconds:>8.2f} s")
        finally:
            if nc is not None:
                await nc.close()
            stop_processes(procs)
            await server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
