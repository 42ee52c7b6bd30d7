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
import time
from pathlib import Path
from typing import Any

import aiohttp
from common import bench_lattice, free_port, hosts_by_label, http_link, machine, percentile, scaled

from wasmlattice.client.ctl import CtlClient
from wasmlattice.devbuild import build
from wasmlattice.protocol.models import Link
from wasmlattice.protocol.wrpc.tuples import TupleCodec
from wasmlattice.runtime.witypes import U32, record

ROOT = Path(__file__).resolve().parent.parent
LATTICE = "callbench"
PEER_SUBJECT = "bench.calc"


def calc_link(source: str, target: str) -> Link:
    return Link(
        source_id=source, target=target, wit_namespace="test", wit_package="bench", interfaces=["calc"]
    )


async def run(args: argparse.Namespace) -> None:
    callee = build(ROOT / "benchmarks" / "components" / "calc.wat")
    caller = build(ROOT / "benchmarks" / "components" / "calc_caller")
    callee_ref, caller_ref = (f"file://{p.resolve()}" for p in (callee, caller))
    params = TupleCodec([record(x=U32, y=U32)]).encode([(1000, 1)])
    result = TupleCodec([U32]).encode([1001])
    async with bench_lattice("wl-callbench-", LATTICE) as lat:
        for label in ("a", "b"):
            lat.start_host("--label", f"bench={label}")
        await lat.start_responder(PEER_SUBJECT, result)
        nc = lat.nc
        ctl = CtlClient(nc, LATTICE, timeout=30.0)
        hosts = await hosts_by_label(ctl)
        a, b = hosts["a"], hosts["b"]
        ports = {"caller-local": free_port(), "caller-remote": free_port()}
        for cid, port in ports.items():
            await ctl.put_config(f"{cid}-http", {"address": f"127.0.0.1:{port}"})
        await scaled(ctl, a, callee_ref, "calc-local", 8)
        await scaled(ctl, b, callee_ref, "calc-remote", 8)
        await scaled(ctl, a, caller_ref, "caller-local", 8)
        await scaled(ctl, a, caller_ref, "caller-remote", 8)
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
        print(f"# 2 host processes + embedded nats-server; {args.n} sequential calls, best of {args.runs}")
        print(f"# params {len(params)} B, result {len(result)} B; callee {callee.name}")
        print(f"{'path':<30}{'calls/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs peer':>10}")
        peer_rate = rows[-1][1]
        for label, rate, p50, p99 in rows:
            print(f"{label:<30}{rate:>10.0f}{p50:>10.3f}{p99:>10.3f}{rate / peer_rate:>9.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="sequential calls per measurement")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per path (best is kept)")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
