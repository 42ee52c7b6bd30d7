"""Scale: many component IDs on one host, many hosts on one NATS, many instances from one manifest.

Three parts, each with its peer in the same run (plain nats-py request/reply over the same
embedded nats-server, responders in their own process):

1. One host process, `--components` component IDs of one image (`examples/hello`), max_instances 1
   each: host RSS before and after (per component, beyond the shared compiled image, which is
   loaded by a warm-up component first), and the time from the first scale command to the last
   `component_scaled` event. Peer: as many sequential request/reply round trips.
2. `--hosts` host processes (metrics off, no HTTP): start-up and RSS, `host.ping` until every host
   answered, one host's inventory and every host's inventory (concurrently), and the time of one
   app-manager reconcile round (`Reconciler.round`, in this process, as the app manager runs it)
   with an app of `--host-components` daemon components on every host. Peer: one process holding
   `--hosts` NATS connections that answer a shared ping subject and their own inventory subject
   with payloads of the hosts' real reply sizes.
3. An app manager process and a manifest with one component and a spreadscaler of `--instances`
   instances over `--hosts` spreads, the component compiled on every host already: from
   `model.deploy` to every instance in the hosts' inventories.

    python benchmarks/scale.py [--components 1000] [--hosts 20] [--host-components 50]
                               [--instances 1000] [--rounds 10] [--requests 20] [--parts 123]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import BenchLattice, bench_lattice, machine, percentile, timed, until_answering

from wasmlattice.apps.client import AppClient
from wasmlattice.apps.manifest.load import parse_manifest_dict
from wasmlattice.apps.reconciler import Reconciler
from wasmlattice.client.ctl import CtlClient
from wasmlattice.devbuild import build
from wasmlattice.protocol import subjects as sj

ROOT = Path(__file__).resolve().parent.parent
LATTICE = "scalebench"
# Idle components reserve no memory, but the host's guest-memory budget counts max_instances x
# 256 MiB per component; the benchmark is about what the host itself costs per component. No tiered
# compile: its background Cranelift build (gigabytes while it runs, CPU on every host) would land in
# the middle of the measurements; the warm-up compiles the image once into the shared cache.
HOST_ARGS = ["--disable-metrics", "--disable-observability", "--guest-memory-budget", "1TiB"]
HOST_ARGS += ["--no-tiered-compile"]

# The peer of part 2: `n` connections in one process, each answering the shared ping subject and
# its own inventory subject. Arguments: URL, n, ping subject, inventory subject prefix, ping size,
# inventory size. Prints "ready" once every connection is subscribed.
RESPONDERS = """
import asyncio, sys, nats
async def main():
    url, n, ping, inv = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ping_reply, inv_reply = b"p" * int(sys.argv[5]), b"i" * int(sys.argv[6])
    conns = []
    for i in range(n):
        nc = await nats.connect(url)
        async def on_ping(msg):
            await msg.respond(ping_reply)
        async def on_inv(msg):
            await msg.respond(inv_reply)
        await nc.subscribe(ping, cb=on_ping)
        await nc.subscribe(f"{inv}.{i}", cb=on_inv)
        await nc.flush()
        conns.append(nc)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def rss_kib(pid: int) -> int:
    """The resident set size of process `pid` in KiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def ms(samples: list[float], p: float = 50) -> float:
    """The p-th percentile of `samples` (seconds) in ms."""
    return percentile(samples, p) * 1000


def row(label: str, ours: float, peer: float | None, unit: str = "ms", target: str = "") -> None:
    """Print one result line: ours, the peer's, their ratio and the target."""
    peer_s = f"{peer:>12.2f}" if peer is not None else f"{'':>12}"
    ratio = f"{ours / peer:>9.1f}x" if peer else f"{'':>10}"
    print(f"{label:<58}{ours:>12.2f}{peer_s}{ratio}  {unit:<6}{target}")


def header(title: str) -> None:
    """Print a part's header and the columns."""
    print(f"\n## {title}")
    print(f"{'measure':<58}{'ours':>12}{'peer':>12}{'ratio':>10}  unit  target")


async def wait_hosts(ctl: CtlClient, n: int, timeout: float = 300.0) -> list[str]:
    """The IDs of the lattice's hosts once `n` of them answer a ping."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hosts = await ctl.ping_hosts(wait=1.0)
        if len(hosts) >= n:
            return [h.id for h in hosts]
    raise TimeoutError(f"{n} hosts did not answer ping within {timeout}s")


async def scaled_events(nc: Any) -> asyncio.Queue[dict[str, Any]]:
    """A queue receiving every `component_scaled` / `component_scale_failed` event of the lattice."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on(msg: Any) -> None:
        event = json.loads(msg.data)
        if event["type"].endswith((".component_scaled", ".component_scale_failed")):
            await queue.put(event)

    await nc.subscribe(sj.events_wildcard(LATTICE), cb=on)
    await nc.flush()
    return queue


async def await_scaled(queue: asyncio.Queue[dict[str, Any]], cids: set[str], timeout: float = 600) -> None:
    """Wait until a `component_scaled` event arrived for every ID in `cids` (failures raise)."""
    left = set(cids)
    deadline = time.monotonic() + timeout
    while left:
        event = await asyncio.wait_for(queue.get(), max(0.1, deadline - time.monotonic()))
        if event["type"].endswith("component_scale_failed"):
            raise RuntimeError(f"scale failed: {event['data']}")
        left.discard(event["data"]["component_id"])


# -- part 1 ----------------------------------------------------------------------------------


async def one_host(args: argparse.Namespace, ref: str) -> None:
    """Part 1: `args.components` component IDs on one host."""
    n = args.components
    async with bench_lattice("wl-scale1-", LATTICE) as lat:
        proc = lat.start_host(*HOST_ARGS)
        await lat.start_responder("bench.echo", b'{"success":true,"message":"","response":null}')
        ctl = CtlClient(lat.nc, LATTICE, timeout=60.0)
        (host,) = await wait_hosts(ctl, 1)
        queue = await scaled_events(lat.nc)
        # Warm-up: compile (or load from the cache) and link the image, so what follows is per ID.
        await ctl.scale_component(host, ref, "warm", 1)
        await await_scaled(queue, {"warm"})
        await asyncio.sleep(2)
        rss0 = rss_kib(proc.pid)

        cids = [f"c{i:04d}" for i in range(n)]
        t0 = time.perf_counter()
        for cid in cids:  # each command waits for its acknowledgement, like `wash scale` does
            await ctl.scale_component(host, ref, cid, 1)
        acked = time.perf_counter() - t0
        await await_scaled(queue, set(cids))
        took = time.perf_counter() - t0
        await asyncio.sleep(2)
        rss1 = rss_kib(proc.pid)
        inv = await timed(5, lambda: ctl.get_host_inventory(host), warm=1)
        count = len((await ctl.get_host_inventory(host)).components)
        assert count == n + 1, f"{count} components listed, expected {n + 1}"

        t1 = time.perf_counter()
        for _ in range(n):
            await lat.nc.request("bench.echo", b"", timeout=10)
        peer = time.perf_counter() - t1

        header(f"1. {n} component IDs of one image on one host")
        row("host RSS, image loaded, before", rss0 / 1024, None, "MiB")
        row(f"host RSS with {n} more component IDs", rss1 / 1024, None, "MiB")
        row("memory per idle component ID", (rss1 - rss0) / n, None, "KiB", "< 1024 KiB")
        row(f"scale {n} IDs: commands acknowledged (peer: {n} round trips)", acked, peer, "s")
        row(f"scale {n} IDs: until the last component_scaled event", took, peer, "s")
        row(f"inventory of the host with {count} components (median of 5)", ms(inv), None, "ms")


# -- part 2 and 3 ----------------------------------------------------------------------------


def daemon_app(name: str, image: str, components: int) -> dict[str, Any]:
    """An app of `components` components of `image`, each a daemonscaler of 1 on every pool host."""
    spread = [{"name": "all", "requirements": {"pool": "p"}}]
    traits = [{"type": "daemonscaler", "properties": {"instances": 1, "spread": spread}}]
    comps = [
        {"name": f"d{i:03d}", "type": "component", "properties": {"image": image}, "traits": traits}
        for i in range(components)
    ]
    return {
        "apiVersion": "core.oam.dev/v1beta1",
        "kind": "Application",
        "metadata": {"name": name, "annotations": {"version": "v1"}},
        "spec": {"components": comps},
    }


def spread_app(name: str, image: str, instances: int, hosts: int) -> dict[str, Any]:
    """An app of one component with a spreadscaler of `instances` over `hosts` equal spreads."""
    spreads = [{"name": f"s{i}", "requirements": {"pool": "p"}} for i in range(hosts)]
    trait = {"type": "spreadscaler", "properties": {"instances": instances, "spread": spreads}}
    return {
        "apiVersion": "core.oam.dev/v1beta1",
        "kind": "Application",
        "metadata": {"name": name, "annotations": {"version": "v1"}},
        "spec": {
            "components": [
                {"name": "hello", "type": "component", "properties": {"image": image}, "traits": [trait]}
            ]
        },
    }


async def inventories(ctl: CtlClient, host_ids: list[str]) -> list[Any]:
    """Every host's inventory, asked concurrently."""
    return list(await asyncio.gather(*(ctl.get_host_inventory(h) for h in host_ids)))


async def raw_sizes(lat: BenchLattice, host_ids: list[str], hosts: int) -> tuple[int, int]:
    """The byte sizes of one host's ping reply and one host's inventory reply."""
    inbox = lat.nc.new_inbox()
    sub = await lat.nc.subscribe(inbox, max_msgs=hosts)
    await lat.nc.publish(sj.ctl_subject(sj.CtlOperation.HOST_PING, LATTICE), b"", reply=inbox)
    ping = len((await sub.next_msg(timeout=10)).data)
    subject = sj.ctl_subject(sj.CtlOperation.HOST_GET, LATTICE, host_ids[0])
    inv = len((await lat.nc.request(subject, b"", timeout=10)).data)
    return ping, inv


async def ping_until(nc: Any, subject: str, replies: int) -> None:
    """Publish on `subject` and wait for `replies` answers (`host ping` minus its idle wait)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=replies)
    await nc.publish(subject, b"", reply=inbox)
    for _ in range(replies):
        await sub.next_msg(timeout=10)


async def many_hosts(args: argparse.Namespace, ref: str) -> None:
    """Parts 2 and 3: `args.hosts` hosts on one NATS."""
    h, k = args.hosts, args.host_components
    async with bench_lattice("wl-scale2-", LATTICE) as lat:
        # Compile the image once into the shared compile cache, so every host loads it from there.
        ctl = CtlClient(lat.nc, LATTICE, timeout=60.0)
        first = lat.start_host("--label", "pool=p", *HOST_ARGS)
        (warm_host,) = await wait_hosts(ctl, 1)
        queue = await scaled_events(lat.nc)
        await ctl.scale_component(warm_host, ref, "warm", 1)
        await await_scaled(queue, {"warm"})
        await ctl.scale_component(warm_host, ref, "warm", 0)
        t0 = time.perf_counter()
        procs = [first] + [lat.start_host("--label", "pool=p", *HOST_ARGS) for _ in range(h - 1)]
        host_ids = await wait_hosts(ctl, h)
        started = time.perf_counter() - t0
        await asyncio.sleep(3)
        rss_idle = sum(rss_kib(p.pid) for p in procs)

        # Reconcile: an app of k daemon components (h x k component IDs), run by a reconciler in
        # this process (what the app manager's leader runs in its loop).
        rec = Reconciler(lat.nc, LATTICE)
        await rec.start()
        manifest, _warnings = parse_manifest_dict(daemon_app("daemons", ref, k))
        await rec.deployed("daemons", manifest)
        want = h * k
        t0 = time.perf_counter()
        while True:
            await rec.round()
            invs = await inventories(ctl, host_ids)
            if sum(len(i.components) for i in invs) >= want:
                break
            if time.perf_counter() - t0 > 600:
                raise TimeoutError(f"{want} components did not start in 600 s")
        deploy_k = time.perf_counter() - t0
        await asyncio.sleep(3)
        rss_loaded = sum(rss_kib(p.pid) for p in procs)
        rounds = await timed(args.rounds, rec.round, warm=1)
        observe = await timed(args.rounds, rec.observe, warm=0)

        ping_size, inv_size = await raw_sizes(lat, host_ids, h)
        n = args.requests
        ping_subject = sj.ctl_subject(sj.CtlOperation.HOST_PING, LATTICE)
        ping = await timed(n, lambda: ping_until(lat.nc, ping_subject, h))
        turn = iter(range(10**9))
        inv_one = await timed(n, lambda: ctl.get_host_inventory(host_ids[next(turn) % h]))
        inv_all = await timed(n, lambda: inventories(ctl, host_ids))

        sizes = [str(ping_size), str(inv_size)]
        resp = lat.start(
            [sys.executable, "-c", RESPONDERS, lat.url, str(h), "peer.ping", "peer.inv", *sizes],
            stdout=subprocess.PIPE,
        )
        assert resp.stdout is not None
        await asyncio.wait_for(asyncio.to_thread(resp.stdout.readline), 120)
        peer_ping = await timed(n, lambda: ping_until(lat.nc, "peer.ping", h))
        peer_one = await timed(n, lambda: lat.nc.request(f"peer.inv.{next(turn) % h}", b"", timeout=10))

        async def peer_all() -> None:
            await asyncio.gather(*(lat.nc.request(f"peer.inv.{i}", b"", timeout=10) for i in range(h)))

        peer_inv_all = await timed(n, peer_all)
        peer_round = statistics.median(peer_ping) + statistics.median(peer_inv_all)

        header(f"2. {h} hosts on one NATS (metrics off, no HTTP)")
        row(f"start {h - 1} more host processes until all {h} answer a ping", started, None, "s")
        row(f"RSS of {h} idle hosts, total", rss_idle / 1024, None, "MiB")
        row("RSS per idle host", rss_idle / 1024 / h, None, "MiB")
        row(f"RSS of {h} hosts with {k} components each, total", rss_loaded / 1024, None, "MiB")
        row(f"deploy {k} daemon components on {h} hosts (reconcile rounds)", deploy_k, None, "s")
        row(f"host ping, all {h} replies (p50)", ms(ping), ms(peer_ping), "ms")
        row(f"host ping, all {h} replies (p99)", ms(ping, 99), ms(peer_ping, 99), "ms")
        row(f"inventory of one host, {k} components, {inv_size} B (p50)", ms(inv_one), ms(peer_one), "ms")
        row("inventory of every host, concurrently (p50)", ms(inv_all), ms(peer_inv_all), "ms")
        row("inventory of every host, concurrently (p99)", ms(inv_all, 99), ms(peer_inv_all, 99), "ms")
        label = f"reconcile round, {h} x {k} (median of {args.rounds})"
        row(label, ms(rounds), peer_round * 1000, "ms", "< 200 ms")
        row("  of which observe (ping + inventories)", ms(observe), None, "ms")
        print("(peer of the reconcile round: one peer ping of all hosts + one peer inventory of every host)")

        await rec.undeployed("daemons")
        await rec.stop()
        deadline = time.monotonic() + 300
        while sum(len(i.components) for i in await inventories(ctl, host_ids)) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the daemon app's components did not stop")
            await asyncio.sleep(0.5)

        if "3" in args.parts:
            await spread_deploy(args, lat, ctl, host_ids, ref)


async def spread_deploy(
    args: argparse.Namespace, lat: BenchLattice, ctl: CtlClient, host_ids: list[str], ref: str
) -> None:
    """Part 3: a manifest of `args.instances` instances over every host, image already compiled."""
    h, n = len(host_ids), args.instances
    manager_args = ["--lattice", LATTICE, "--log-level", "warning"]
    lat.start(
        [sys.executable, "-m", "wasmlattice.cli.main", "app-manager", "--nats-url", lat.url, *manager_args]
    )
    client = AppClient(lat.nc, LATTICE, timeout=30.0)
    await until_answering(client, time.monotonic() + 120)  # once the manager has started
    await asyncio.sleep(2)  # let it take the lease
    await client.put(spread_app("spread", ref, n, h))
    t0 = time.perf_counter()
    await client.deploy("spread", "v1")
    while True:
        invs = await inventories(ctl, host_ids)
        total = sum(c.max_instances for i in invs for c in i.components if c.id == "spread-hello")
        used = sum(1 for i in invs if any(c.id == "spread-hello" for c in i.components))
        if total >= n:
            break
        if time.perf_counter() - t0 > 300:
            raise TimeoutError(f"only {total} of {n} instances after 300 s")
        await asyncio.sleep(0.1)
    took = time.perf_counter() - t0
    status = (await client.status("spread")).status
    header(f"3. {n} instances from one manifest across {h} hosts (compiled)")
    row(f"deploy -> {total} instances on {used} hosts in inventories", took, None, "s", "< 10 s")
    print(f"(app status at that moment: {status})")


async def run(args: argparse.Namespace) -> None:
    """Build the component, print the record, run the parts asked for."""
    wasm = build(ROOT / "examples" / "hello")
    ref = "file://" + str(wasm.resolve())
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"# scale: {time.strftime('%Y-%m-%d %H:%M')}, {machine()}, load average {' '.join(load)}")
    print(f"# component {wasm.name} ({wasm.stat().st_size // 1024} KiB)")
    if "1" in args.parts:
        await one_host(args, ref)
    if "2" in args.parts or "3" in args.parts:
        await many_hosts(args, ref)


def main() -> None:
    """Parse the sizes and run."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--components", type=int, default=1000, help="component IDs on one host (part 1)")
    ap.add_argument("--hosts", type=int, default=20, help="host processes (parts 2 and 3)")
    ap.add_argument("--host-components", type=int, default=50, help="components per host (part 2)")
    ap.add_argument("--instances", type=int, default=1000, help="instances of the manifest (part 3)")
    ap.add_argument("--rounds", type=int, default=10, help="timed reconcile rounds")
    ap.add_argument("--requests", type=int, default=20, help="timed requests per latency measure")
    ap.add_argument("--parts", default="123", help="which parts to run, e.g. 1 or 23")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
