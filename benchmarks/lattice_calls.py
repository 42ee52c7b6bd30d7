"""Component-to-component calls: in-process and across host processes (wRPC), beside plain NATS.

Two host processes (A and B) on an embedded nats-server. On A, the `calc_caller` guest's
`/bench?n=N` makes N sequential `test:bench/calc.add(point)` calls (a two-field record in, a u32
out) and times each inside the guest. `caller-local` is linked to a `calc` component on A
(in-process); `caller-remote` to one that only B runs (wRPC over NATS). The callee is a component
written in WAT, so a call's fresh instance costs microseconds and the numbers show the call path.
The peer, in the same run: sequential nats-py request/reply from this process to a responder
process, with payloads of the same sizes as the wRPC parameters and results.

    python benchmarks/lattice_calls.py [--n 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats
from common import RESPONDER, free_port, http_link, machine, percentile, stop_processes

from wasmlattice.client.ctl import CtlClient
from wasmlattice.devbuild import build
from wasmlattice.lattice.models import Link
from wasmlattice.lattice.wrpc import codec
from wasmlattice.nats_server import EmbeddedNats
from wasmlattice.runtime.witypes import U32, record

ROOT = Path(__file__).resolve().parent.parent
LATTICE = "callbench"
PEER_SUBJECT = "bench.calc"


def calc_link(source: str, target: str) -> Link:
    return Link(
        source_id=source, target=target, wit_namespace="test", wit_package="bench", interfaces=["calc"]
    )


async def hosts_by_label(ctl: CtlClient, timeout: float = 120.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hosts = await ctl.ping_hosts(wait=0.5)
        found = {h.labels.get("bench", ""): h.id for h in hosts}
        if {"a", "b"} <= set(found):
            return found
    raise TimeoutError("the two hosts did not answer within the time-out")


async def scaled(ctl: CtlClient, nc: Any, host: str, ref: str, cid: str) -> None:
    await ctl.scale_component(host, ref, cid, 8)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        inv = await ctl.get_host_inventory(host)
        if any(c.id == cid for c in inv.components):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{cid} did not start on {host}")


async def run(args: argparse.Namespace) -> None:
    callee = build(ROOT / "benchmarks" / "components" / "calc.wat")
    caller = build(ROOT / "benchmarks" / "components" / "calc_caller")
    callee_ref, caller_ref = (f"file://{p.resolve()}" for p in (callee, caller))
    params = codec.TupleCodec([record(x=U32, y=U32)]).encode([(1000, 1)])
    result = codec.TupleCodec([U32]).encode([1001])
    with tempfile.TemporaryDirectory(prefix="wl-callbench-") as tmp:
        env = dict(os.environ, WASMLATTICE_CACHE_DIR=str(Path(tmp) / "cache"))
        server = EmbeddedNats(host="127.0.0.1", port=0, data_dir=Path(tmp) / "nats")
        await server.start()
        procs: list[subprocess.Popen[bytes]] = []
        nc: Any = None
        try:
            for label in ("a", "b"):
                cmd = [sys.executable, "-m", "wasmlattice.host.run", "--nats-url", server.url]
                cmd += ["--lattice", LATTICE, "--log-level", "warning", "--label", f"bench={label}"]
                procs.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL))
            responder = subprocess.Popen(
                [sys.executable, "-c", RESPONDER, server.url, PEER_SUBJECT, result.hex()],
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
            procs.append(responder)
            assert responder.stdout is not None
            await asyncio.wait_for(asyncio.to_thread(responder.stdout.readline), 30)
            nc = await nats.connect(server.url)
            ctl = CtlClient(nc, LATTICE, timeout=30.0)
            hosts = await hosts_by_label(ctl)
            a, b = hosts["a"], hosts["b"]
            ports = {"caller-local": free_port(), "caller-remote": free_port()}
            for cid, port in ports.items():
                await ctl.put_config(f"{cid}-http", {"address": f"127.0.0.1:{port}"})
            await scaled(ctl, nc, a, callee_ref, "calc-local")
            await scaled(ctl, nc, b, callee_ref, "calc-remote")
            await scaled(ctl, nc, a, caller_ref, "caller-local")
            await scaled(ctl, nc, a, caller_ref, "caller-remote")
            await ctl.put_link(calc_link("caller-local", "calc-local"))
            await ctl.put_link(calc_link("caller-remote", "calc-remote"))
            await ctl.start_provider(a, "builtin://http-server", "http")
            for cid in ports:
                await ctl.put_link(http_link(cid, f"{cid}-http"))

            rows: list[tuple[str, float, float, float]] = []
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:

                async def bench(cid: str, n: int) -> dict[str, Any]:
                    url = f"http://127.0.0.1:{ports[cid]}/bench?n={n}"
                    deadline = time.monotonic() + 120
                    while True:
                        try:
                            async with http.get(url) as r:
                                body = await r.read()
                                if r.status == 200:
                                    doc: dict[str, Any] = json.loads(body)
                                    return doc
                                last = f"{r.status} {body[:200]!r}"
                        except aiohttp.ClientError as e:
                            last = str(e)
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{cid}: {last}")
                        await asyncio.sleep(0.2)

                for cid, label in (
                    ("caller-local", "(a) in-process"),
                    ("caller-remote", "(b) across hosts (wRPC)"),
                ):
                    await bench(cid, 200)  # warm-up: routes, connections, compiled code
                    best = max(
                        [await bench(cid, args.n) for _ in range(args.runs)],
                        key=lambda d: d["n"] / d["seconds"],
                    )
                    rows.append(
                        (label, best["n"] / best["seconds"], best["p50_us"] / 1000, best["p99_us"] / 1000)
                    )

                async def peer() -> tuple[float, float, float]:
                    times: list[float] = []
                    t0 = time.perf_counter()
                    for _ in range(args.n):
                        t = time.perf_counter()
                        await nc.request(PEER_SUBJECT, params, timeout=10)
                        times.append(time.perf_counter() - t)
                    total = time.perf_counter() - t0
                    return args.n / total, percentile(times, 50) * 1000, percentile(times, 99) * 1000

                await peer()
                peer_best = max([await peer() for _ in range(args.runs)], key=lambda r: r[0])
                rows.append(("peer: nats-py request/reply", *peer_best))

            print(f"# lattice_calls: {time.strftime('%Y-%m-%d %H:%M')}, {machine()}")
            print(
                f"# 2 host processes + embedded nats-server; {args.n} sequential calls, best of {args.runs}"
            )
            print(f"# params {len(params)} B, result {len(result)} B; callee {callee.name}")
            print(f"{'path':<30}{'calls/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs peer':>10}")
            peer_rate = rows[-1][1]
            for label, rate, p50, p99 in rows:
                print(f"{label:<30}{rate:>10.0f}{p50:>10.3f}{p99:>10.3f}{rate / peer_rate:>9.2f}x")
        finally:
            if nc is not None:
                await nc.close()
            stop_processes(procs)
            await server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="sequential calls per measurement")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per path (best is kept)")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
