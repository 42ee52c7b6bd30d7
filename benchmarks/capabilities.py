"""Key-value round trips from a guest versus a plain Python client, on JetStream KV and Redis.

One host process (over an embedded nats-server) runs the `kv_draft` test guest behind the builtin
HTTP server; its `/bench?n=N` route does N x (set + get) of a 64-byte value through
`wasi:keyvalue@0.2.0-draft` inside ONE request, so the HTTP cost is amortised. The guest's links
pick the `builtin://keyvalue-nats` or `builtin://keyvalue-redis` provider. The peer, in the same
run and against the same servers, is the same loop from a plain asyncio client (nats-py KV,
redis-py). Printed: round trips (a get or a set) per second, and guest/peer per backend.

    python benchmarks/capabilities.py [--n 2000] [--requests 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import nats
import redis.asyncio as aioredis
from common import free_port, host_file_args, machine, stop_processes

from wasmlattice.client.ctl import CtlClient
from wasmlattice.devbuild import build
from wasmlattice.nats_server import EmbeddedNats
from wasmlattice.protocol.models import Link

ROOT = Path(__file__).resolve().parent.parent
LATTICE = "kvbench"
VALUE = b"v" * 64


def kv_link(target: str, name: str, config: str) -> Link:
    return Link(
        source_id="kvd",
        target=target,
        wit_namespace="wasi",
        wit_package="keyvalue",
        interfaces=["store", "atomics", "batch"],
        name=name,
        target_config=[config],
    )


async def best_rate(requests: int, n: int, op: Callable[[], Awaitable[Any]]) -> float:
    """Round trips per second of `op` (which does n x (set + get)): the best of `requests` runs."""
    await op()  # warm-up: connections, bucket creation, compiled code paths
    best = 0.0
    for _ in range(requests):
        t0 = time.perf_counter()
        await op()
        best = max(best, 2 * n / (time.perf_counter() - t0))
    return best


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except (aiohttp.ClientError, OSError):
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{what} not ready within {timeout}s")


async def run(args: argparse.Namespace) -> None:
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise SystemExit("redis-server is not installed (make system-deps)")
    wasm = build(ROOT / "tests" / "components" / "kv_draft")
    ref = "file://" + str(wasm.resolve())
    n = args.n
    with tempfile.TemporaryDirectory(prefix="wl-kvbench-") as tmp:
        env = dict(os.environ, WASMLATTICE_CACHE_DIR=str(Path(tmp) / "cache"))
        server = EmbeddedNats(host="127.0.0.1", port=0, data_dir=Path(tmp) / "nats")
        await server.start()
        redis_port = free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}"
        procs: list[subprocess.Popen[bytes]] = [
            subprocess.Popen(
                [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
                stdout=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
        ]
        nc: Any = None
        rc: Any = None
        try:
            cmd = [sys.executable, "-m", "wasmlattice.lattice.run", "--nats-url", server.url]
            cmd += ["--lattice", LATTICE, "--log-level", "warning", *host_file_args()]
            procs.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL))
            nc = await nats.connect(server.url)
            ctl = CtlClient(nc, LATTICE, timeout=30.0)
            hosts: list[Any] = []

            async def host_up() -> bool:
                hosts[:] = await ctl.ping_hosts(wait=0.5)
                return bool(hosts)

            await wait_for("host", host_up)
            host = hosts[0].id
            port = free_port()
            await ctl.put_config("kv-nats", {"bucket": "kvbench"})
            await ctl.put_config("kv-redis", {"url": redis_url, "bucket": "kvbench"})
            await ctl.put_config("http", {"address": f"127.0.0.1:{port}"})
            await ctl.start_provider(host, "builtin://keyvalue-nats", "nats-kv")
            await ctl.start_provider(host, "builtin://keyvalue-redis", "redis-kv")
            await ctl.start_provider(host, "builtin://http-server", "http")
            await ctl.scale_component(host, ref, "kvd", 4)
            await ctl.put_link(kv_link("nats-kv", "default", "kv-nats"))
            await ctl.put_link(kv_link("redis-kv", "redis", "kv-redis"))
            await ctl.put_link(
                Link(
                    source_id="http",
                    target="kvd",
                    wit_namespace="wasi",
                    wit_package="http",
                    interfaces=["incoming-handler"],
                    source_config=["http"],
                )
            )
            url = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:

                async def guest(link: str) -> None:
                    async with http.get(f"{url}/bench?n={n}&link={link}") as r:
                        body = await r.read()
                        if r.status != 200:
                            raise RuntimeError(f"/bench via {link}: {r.status} {body[:300]!r}")
                        assert json.loads(body)["ok"] == n

                async def served() -> bool:
                    async with http.get(f"{url}/bench?n=1&link=redis") as r1:
                        await r1.read()
                    async with http.get(f"{url}/bench?n=1") as r2:
                        await r2.read()
                    return r1.status == 200 and r2.status == 200

                await wait_for("component route", served)
                kv = await nc.jetstream().key_value("kvbench")
                rc = aioredis.Redis.from_url(redis_url)

                async def peer_nats() -> None:
                    for i in range(n):
                        k = f"bench-{i % 16}"
                        await kv.put(k, VALUE)
                        await kv.get(k)

                async def peer_redis() -> None:
                    for i in range(n):
                        k = f"kvbench:bench-{i % 16}"
                        await rc.set(k, VALUE)
                        await rc.get(k)

                results = [
                    ("JetStream KV", await best_rate(args.requests, n, lambda: guest("default")),
                     await best_rate(args.requests, n, peer_nats)),
                    ("Redis", await best_rate(args.requests, n, lambda: guest("redis")),
                     await best_rate(args.requests, n, peer_redis)),
                ]  # fmt: skip
            print(f"# capabilities (key-value): {time.strftime('%Y-%m-%d %H:%M')}, {machine()}")
            print(f"# 1 host process, embedded nats-server, redis-server; guest {wasm.name}")
            print(f"# {n} x (set + get) of {len(VALUE)} B per request, best of {args.requests}")
            print(f"{'backend':<14}{'guest ops/s':>14}{'peer ops/s':>14}{'guest/peer':>12}")
            for name, ours, peer in results:
                print(f"{name:<14}{ours:>14.0f}{peer:>14.0f}{ours / peer:>11.2f}x")
            print("# peer: the same loop from plain asyncio clients (nats-py KV, redis-py) in this process")
        finally:
            if rc is not None:
                await rc.aclose()
            if nc is not None:
                await nc.close()
            stop_processes(procs)
            await server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="set+get pairs per request")
    ap.add_argument("--requests", type=int, default=5, help="timed requests per backend (best is kept)")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
