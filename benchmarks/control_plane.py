"""Control-plane latency: 3 host processes on one lattice over an embedded nats-server.

Measures (a) scaling one component to 100 max instances on each of 3 hosts (the three scale
commands until all three `component_scaled` events arrived), (b) `host.ping` until all 3 hosts have
answered, (c) `host.get` (inventory) with 50 components running across the hosts; and as the peer,
in the same run and on the same server, a plain nats-py request/reply round trip to a responder
process (so the ratio shows what our control layer adds over NATS itself).

    python benchmarks/control_plane.py [--requests 50] [--scale-runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from common import bench_lattice, machine, percentile, timed

from wasmlattice.client.ctl import CtlClient
from wasmlattice.devbuild import build
from wasmlattice.protocol import subjects as sj

ROOT = Path(__file__).resolve().parent.parent
LATTICE = "bench"
HOSTS = 3
PEER_REPLY = b'{"success":true,"message":"","response":null}'
PEER_SUBJECT = "bench.echo"

# The peer: a nats-py responder in its own process, like a host, answering with a small body.


def pct(samples: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `samples`, in ms."""
    return percentile(samples, p) * 1000


class Bench:
    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.ctl = CtlClient(nc, LATTICE, timeout=30.0)
        self.scaled: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def watch_events(self) -> None:
        async def on(msg: Any) -> None:
            event = json.loads(msg.data)
            if event["type"].endswith(".component_scaled") or event["type"].endswith(
                ".component_scale_failed"
            ):
                await self.scaled.put(event)

        await self.nc.subscribe(sj.events_wildcard(LATTICE), cb=on)
        await self.nc.flush()

    async def ping_all(self) -> None:
        """`host.ping` until every host has answered (what `host ping` waits for, minus its idle wait)."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, max_msgs=HOSTS)
        await self.nc.publish(sj.ctl_subject(sj.CtlOperation.HOST_PING, LATTICE), b"", reply=inbox)
        for _ in range(HOSTS):
            await sub.next_msg(timeout=10)

    async def scale_everywhere(self, host_ids: list[str], ref: str, cid: str, count: int) -> float:
        """Scale `cid` to `count` on every host; seconds until every `component_scaled` arrived."""
        t0 = time.perf_counter()
        await asyncio.gather(*(self.ctl.scale_component(h, ref, cid, count) for h in host_ids))
        seen: set[str] = set()
        while len(seen) < len(host_ids):
            event = await asyncio.wait_for(self.scaled.get(), 120)
            if event["data"]["component_id"] != cid:
                continue
            if event["type"].endswith("component_scale_failed"):
                raise RuntimeError(f"scale failed: {event['data']}")
            seen.add(event["data"]["host_id"])
        return time.perf_counter() - t0


async def wait_hosts(ctl: CtlClient, timeout: float = 120.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hosts = await ctl.ping_hosts(wait=0.5)
        if len(hosts) == HOSTS:
            return [h.id for h in hosts]
    raise TimeoutError(f"{HOSTS} hosts did not answer ping within {timeout}s")


async def run(args: argparse.Namespace) -> None:
    wasm = build(ROOT / "examples" / "hello")
    ref = "file://" + str(wasm.resolve())
    async with bench_lattice("wl-bench-", LATTICE) as lat:
        for i in range(HOSTS):
            # Idle max-instance scales measure the control plane; the default guest-memory budget
            # (docs/limits.md) would refuse 100 x 256 MiB, so it is lifted as in scale.py.
            lat.start_host("--friendly-name", f"host{i}", "--guest-memory-budget", "1TiB")
        await lat.start_responder(PEER_SUBJECT, PEER_REPLY)
        nc = lat.nc
        bench = Bench(nc)
        await bench.watch_events()
        host_ids = await wait_hosts(bench.ctl)

        print(f"# control_plane: {time.strftime('%Y-%m-%d %H:%M')}, {machine()}")
        print(f"# {HOSTS} host processes, embedded nats-server {lat.url}, guest {wasm.name}")

        # (a) Scale to 100 max instances on all 3 hosts; the first one also compiles the component.
        cold = await bench.scale_everywhere(host_ids, ref, "scale-cold", 100)
        warm = [
            await bench.scale_everywhere(host_ids, ref, f"scale-{i}", 100) for i in range(args.scale_runs)
        ]
        for i in range(args.scale_runs):
            await bench.scale_everywhere(host_ids, ref, f"scale-{i}", 0)
        await bench.scale_everywhere(host_ids, ref, "scale-cold", 0)

        # (c) setup: 50 distinct components across the hosts.
        for i in range(50):
            host = host_ids[i % HOSTS]
            await bench.ctl.scale_component(host, ref, f"c{i:02d}", 1)
        got = 0
        while got < 50:
            event = await asyncio.wait_for(bench.scaled.get(), 120)
            if event["type"].endswith("component_scale_failed"):
                raise RuntimeError(f"scale failed: {event['data']}")
            got += event["data"]["component_id"].startswith("c")
        counts = [len((await bench.ctl.get_host_inventory(h)).components) for h in host_ids]
        assert sum(counts) == 50, counts

        n = args.requests
        ping = await timed(n, bench.ping_all, warm=5)
        turn = iter(range(10**9))
        inv = await timed(n, lambda: bench.ctl.get_host_inventory(host_ids[next(turn) % HOSTS]), warm=5)
        peer = await timed(n * 4, lambda: nc.request(PEER_SUBJECT, b"", timeout=10), warm=5)

        print(f"{'measure':<46}{'p50 ms':>10}{'p99 ms':>10}{'vs peer p50':>13}")
        peer50 = pct(peer, 50)
        print(f"{'(a) scale 100 max instances x 3 hosts, cold':<46}{cold * 1000:>10.1f}{'':>10}")
        w50, wmax = statistics.median(warm) * 1000, max(warm) * 1000
        label = f"(a) same, compiled ({args.scale_runs} runs, median/max)"
        print(f"{label:<46}{w50:>10.1f}{wmax:>10.1f}")
        for name, s in (
            (f"(b) host ping, all {HOSTS} replies", ping),
            (f"(c) get inventory ({counts} components)", inv),
            ("peer: nats-py request/reply round trip", peer),
        ):
            ratio = pct(s, 50) / peer50
            print(f"{name:<46}{pct(s, 50):>10.2f}{pct(s, 99):>10.2f}{ratio:>12.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=50, help="timed requests per latency measure")
    ap.add_argument("--scale-runs", type=int, default=5, help="timed scale-to-100 runs after the cold one")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
