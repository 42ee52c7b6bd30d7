"""Soak: HTTP load on an app on two hosts for ten minutes while faults happen, once each.

An embedded nats-server, two host processes (label `pool=p`), one app manager process, and the app
`examples/hello` (a daemonscaler: instances on every host) behind the built-in HTTP server, one
listener per host on the same address (SO_REUSEPORT). A load loop keeps `--connections` requests
in flight for `--duration` seconds (600 by default) and counts answers and failures per second,
while a fault script, at fixed points of the run:

1. kills one host with SIGKILL (and starts a new one 20 s later, as a process supervisor would);
2. restarts the nats-server (stop, then start on the same port and data directory);
3. stops the app manager with SIGKILL (and starts it again 20 s later).

Every second it samples the RSS and open file descriptors of each process. It prints, per fault,
the failed requests in the 30 s after it and the recovery time (fault to last failure), and the
RSS and fd growth of the processes that lived through the whole run, measured from the end of the
warm-up: first sample against last, and the median of the first minute against that of the last
(the one the target is read from, since one sample counts the instances alive at that second).
Targets: RSS growth under 10 % after warm-up, no fd growth, every fault recovered within 5 s.
There is no peer: the numbers stand against the targets.

    python benchmarks/soak.py [--duration 600] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from common import free_port, host_file_args, machine, stop_processes

from wasmlattice.apps.client import AppClient
from wasmlattice.client.ctl import CtlClient
from wasmlattice.devbuild import build
from wasmlattice.nats_server import EmbeddedNats
from wasmlattice.protocol.connection import NatsOptions, connect

ROOT = Path(__file__).resolve().parent.parent
LATTICE = "soak"
SAMPLE_EVERY_S = 1.0
# RSS is compared between the first and the last minute after warm-up, median against median: a
# host's RSS at one instant counts the fresh instances alive at that instant (each request makes
# one), so two single samples differ by the load of that second, not by what the process keeps.
WINDOW_S = 60.0
FAULT_WINDOW_S = 30.0
RESTART_AFTER_S = 20.0


def manifest(image: str, address: str) -> dict[str, Any]:
    """The app: hello on every host, the built-in HTTP server on every host, linked."""
    daemon = {"type": "daemonscaler", "properties": {"instances": 2, "spread": []}}
    link = {
        "type": "link",
        "properties": {
            "namespace": "wasi",
            "package": "http",
            "interfaces": ["incoming-handler"],
            "target": {"name": "hello"},
            "source": {"config": [{"name": "listen", "properties": {"address": address}}]},
        },
    }
    return {
        "apiVersion": "core.oam.dev/v1beta1",
        "kind": "Application",
        "metadata": {"name": "soak", "annotations": {"version": "v1"}},
        "spec": {
            "components": [
                {"name": "hello", "type": "component", "properties": {"image": image}, "traits": [daemon]},
                {
                    "name": "http",
                    "type": "capability",
                    "properties": {"image": "builtin://http-server"},
                    "traits": [{"type": "daemonscaler", "properties": {"instances": 1}}, link],
                },
            ]
        },
    }


def rss_kib(pid: int) -> int | None:
    """The resident set size of `pid` in KiB (None once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def fd_count(pid: int) -> int | None:
    """Open file descriptors of `pid` (None once it has exited)."""
    try:
        return len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except OSError:
        return None


@dataclass
class Load:
    """Answers and failures per second of the run (index: whole seconds since the start)."""

    t0: float = field(default_factory=time.monotonic)
    ok: dict[int, int] = field(default_factory=dict)
    failed: dict[int, int] = field(default_factory=dict)
    failures_at: list[float] = field(default_factory=list)

    def record(self, success: bool) -> None:
        """Count one request outcome now."""
        now = time.monotonic() - self.t0
        second = int(now)
        table = self.ok if success else self.failed
        table[second] = table.get(second, 0) + 1
        if not success:
            self.failures_at.append(now)


async def load_loop(url: str, load: Load, connections: int, until: float) -> None:
    """Keep `connections` requests in flight until `until` (monotonic), recording each outcome."""
    timeout = aiohttp.ClientTimeout(total=5)
    # A new connection per request, as many clients behind a proxy look: the kernel spreads them
    # over both hosts' listeners (SO_REUSEPORT), so a host's death hits requests in flight there.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:

        async def worker() -> None:
            while time.monotonic() < until:
                try:
                    async with http.get(url) as r:
                        await r.read()
                        load.record(r.status == 200)
                except (aiohttp.ClientError, TimeoutError, OSError):
                    load.record(False)
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(worker() for _ in range(connections)))


@dataclass
class Procs:
    """The lattice's processes, by role, and how to start them again."""

    nats_url: str
    env: dict[str, str]
    hosts: list[subprocess.Popen[bytes]] = field(default_factory=list)
    manager: subprocess.Popen[bytes] | None = None
    every: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_host(self) -> subprocess.Popen[bytes]:
        """One more host process with the pool label."""
        cmd = [sys.executable, "-m", "wasmlattice.lattice.run", "--nats-url", self.nats_url]
        cmd += ["--lattice", LATTICE, "--log-level", "warning", "--label", "pool=p", *host_file_args()]
        proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL)
        self.hosts.append(proc)
        self.every.append(proc)
        return proc

    def start_manager(self) -> subprocess.Popen[bytes]:
        """The app manager process (its default host time-out, 10 s)."""
        cmd = [sys.executable, "-m", "wasmlattice.cli.main", "app-manager", "--nats-url", self.nats_url]
        cmd += ["--lattice", LATTICE, "--log-level", "warning"]
        self.manager = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL)
        self.every.append(self.manager)
        return self.manager


async def wait_serving(url: str, timeout: float = 180.0) -> None:
    """Until `url` answers 200."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.5)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")


def recovery(load: Load, at: float) -> tuple[int, float]:
    """Failed requests in the window after a fault at `at`, and fault-to-last-failure seconds."""
    window = [t for t in load.failures_at if at <= t < at + FAULT_WINDOW_S]
    return len(window), (max(window) - at if window else 0.0)


async def run(args: argparse.Namespace) -> None:
    wasm = build(ROOT / "examples" / "hello")
    image = "file://" + str(wasm.resolve())
    port = free_port()
    url = f"http://127.0.0.1:{port}/hello"
    with tempfile.TemporaryDirectory(prefix="wl-soak-") as tmp:
        nats_port = free_port()
        server = EmbeddedNats(host="127.0.0.1", port=nats_port, data_dir=Path(tmp) / "nats")
        await server.start()
        env = {**os.environ, "WASMLATTICE_CACHE_DIR": str(Path(tmp) / "cache")}
        procs = Procs(server.url, env)
        nc: Any = None
        try:
            procs.start_host()
            procs.start_host()
            procs.start_manager()
            nc = await connect(NatsOptions(url=server.url, name="soak"))
            ctl = CtlClient(nc, LATTICE, timeout=10.0)
            client = AppClient(nc, LATTICE, timeout=10.0)
            deadline = time.monotonic() + 120
            while len(await ctl.ping_hosts(wait=0.5)) < 2 or not await _manager_up(client):
                if time.monotonic() > deadline:
                    raise TimeoutError("hosts or app manager did not start")
            await client.put(manifest(image, f"127.0.0.1:{port}"))
            await client.deploy("soak", "v1")
            await wait_serving(url)

            load = Load()
            end = load.t0 + args.duration
            samples: list[tuple[float, int, int | None, int | None]] = []  # (t, pid, rss, fds)
            faults: list[tuple[str, float]] = []

            async def sampler() -> None:
                while time.monotonic() < end:
                    now = time.monotonic() - load.t0
                    for p in list(procs.every):
                        if p.poll() is None:
                            samples.append((now, p.pid, rss_kib(p.pid), fd_count(p.pid)))
                    await asyncio.sleep(SAMPLE_EVERY_S)

            async def faulter() -> None:
                d = args.duration
                await _sleep_until(load.t0 + d * 0.25)
                faults.append(("host killed (SIGKILL)", time.monotonic() - load.t0))
                victim = procs.hosts[0]
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                await asyncio.sleep(RESTART_AFTER_S)
                procs.start_host()
                await _sleep_until(load.t0 + d * 0.5)
                faults.append(("nats-server restarted", time.monotonic() - load.t0))
                await server.stop()
                await server.start()
                await _sleep_until(load.t0 + d * 0.75)
                faults.append(("app manager killed (SIGKILL)", time.monotonic() - load.t0))
                assert procs.manager is not None
                procs.manager.send_signal(signal.SIGKILL)
                procs.manager.wait(10)
                await asyncio.sleep(RESTART_AFTER_S)
                procs.start_manager()

            await asyncio.gather(load_loop(url, load, args.connections, end), sampler(), faulter())
            report(args, wasm, load, samples, faults, procs)
        finally:
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()
            stop_processes(procs.every)
            await server.stop()


async def _manager_up(client: AppClient) -> bool:
    try:
        await client.list()
        return True
    except Exception:
        return False


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


def report(
    args: argparse.Namespace,
    wasm: Path,
    load: Load,
    samples: list[tuple[float, int, int | None, int | None]],
    faults: list[tuple[str, float]],
    procs: Procs,
) -> None:
    """Print the fault table and the resource growth of the processes that lived through the run."""
    total_ok, total_failed = sum(load.ok.values()), sum(load.failed.values())
    print(f"# soak: {time.strftime('%Y-%m-%d %H:%M')}, {machine()}")
    print(
        f"# {args.duration} s, {args.connections} connections, 2 hosts + app manager, component {wasm.name}: "
        f"{total_ok} answered, {total_failed} failed ({total_ok / args.duration:.0f} req/s)"
    )
    print(f"{'fault':<32}{'at s':>8}{'failed':>8}{'recovered in s':>16}")
    for name, at in faults:
        failed, recovered = recovery(load, at)
        print(f"{name:<32}{at:>8.0f}{failed:>8}{recovered:>16.2f}")
    warm = args.duration * 0.1
    survivors = [p for p in procs.every if p.poll() is None and p is not procs.manager]
    print(
        f"{'process (lived through the run)':<32}{'RSS MiB':>18}{'growth':>8}{'fds':>12}"
        f"{'RSS MiB, minute medians':>26}{'growth':>8}"
    )
    for p in survivors:
        mine = [(t, rss, fds) for t, pid, rss, fds in samples if pid == p.pid and rss is not None]
        after = [s for s in mine if s[0] >= warm]
        if len(after) < 2:
            continue
        first, last = after[0], after[-1]
        assert first[1] is not None and last[1] is not None
        growth = (last[1] - first[1]) / first[1] * 100
        name = "host (never killed)" if p in procs.hosts[:2] else "host (started after the kill)"
        timeline = ", ".join(
            f"{t:.0f}s {rss / 1024:.0f}/{fds}" for t, rss, fds in after[:: max(1, len(after) // 8)]
        )
        print(f"#   {name}: RSS MiB/fds over time: {timeline}")
        early = statistics.median(r for t, r, _ in after if t < first[0] + WINDOW_S)
        late = statistics.median(r for t, r, _ in after if t > last[0] - WINDOW_S)
        print(
            f"{name:<32}{first[1] / 1024:>8.0f} -> {last[1] / 1024:>5.0f}{growth:>7.1f}%"
            f"{first[2]!s:>6} -> {last[2]!s:<4}"
            f"{early / 1024:>16.0f} -> {late / 1024:>5.0f}{(late - early) / early * 100:>7.1f}%"
        )
        fds = [(t, n) for t, _, n in after if n is not None]
        if fds:
            fd_early = statistics.median(n for t, n in fds if t < first[0] + WINDOW_S)
            fd_late = statistics.median(n for t, n in fds if t > last[0] - WINDOW_S)
            print(f"#   {name}: open fds, minute medians: {fd_early:g} -> {fd_late:g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=600, help="seconds of load (600)")
    ap.add_argument("--connections", type=int, default=8, help="requests in flight (8)")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
