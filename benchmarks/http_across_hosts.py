"""HTTP ingress across hosts: the HTTP server provider running the component locally vs forwarding.

Two host processes (A and B) on an embedded nats-server; `builtin://http-server` runs on A only.
The hello-world guest (examples/hello) runs as `hello-local` on A and as `hello-remote` on B, each
linked from the provider on its own address: requests to the first run in-process on A, requests to
the second are forwarded over wRPC (`wrpc:http/incoming-handler@0.1.0` `handle`, bodies streamed)
to B. `wrk` loads each address in turn. A second pair of rows POSTs a 64 KiB body to the `/body`
route of the `http_echo` test guest (tests/components/http_echo), which streams it back, so the
request and response bodies both cross the lattice.

    python benchmarks/http_across_hosts.py [--duration 8] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from pathlib import Path

import aiohttp
from common import WrkResult, bench_lattice, free_port, hosts_by_label, http_link, machine, scaled, wrk

from wasmlattice.client.ctl import CtlClient
from wasmlattice.devbuild import build

ROOT = Path(__file__).resolve().parent.parent
LATTICE = "httpxbench"
BODY_SIZE = 64 * 1024
# wrk's Lua hook: every request a POST with the same 64 KiB body.
POST_SCRIPT = f"""
wrk.method = "POST"
wrk.body = string.rep("x", {BODY_SIZE})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


async def answers(http: aiohttp.ClientSession, url: str, body: bytes | None = None) -> None:
    """Wait until `url` answers 200 (and, for a POST, echoes `body` back unchanged)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            if body is None:
                async with http.get(url) as r:
                    got = await r.read()
                    if r.status == 200:
                        return
            else:
                async with http.post(url, data=body) as r:
                    got = await r.read()
                    if r.status == 200 and got == body:
                        return
            last = f"{r.status} {got[:200]!r} ({len(got)} bytes)"
        except aiohttp.ClientError as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer as expected within 120 s: {last}")
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> None:
    """Start the lattice, deploy, load each address, print the table, and stop everything."""
    hello_ref = f"file://{build(ROOT / 'examples' / 'hello').resolve()}"
    echo_dir = ROOT / "tests" / "components"
    echo_ref = f"file://{build(echo_dir / 'http_echo', echo_dir / '.build').resolve()}"
    async with bench_lattice("wl-httpxbench-", LATTICE) as lat:
        script = lat.tmp / "post64k.lua"
        script.write_text(POST_SCRIPT)
        for label in ("a", "b"):
            lat.start_host("--label", f"bench={label}")
        nc = lat.nc
        ctl = CtlClient(nc, LATTICE, timeout=30.0)
        hosts = await hosts_by_label(ctl)
        a, b = hosts["a"], hosts["b"]
        # component id -> (host, image, port)
        deploy = {
            "hello-local": (a, hello_ref, free_port()),
            "hello-remote": (b, hello_ref, free_port()),
            "echo-local": (a, echo_ref, free_port()),
            "echo-remote": (b, echo_ref, free_port()),
        }
        for cid, (host, ref, port) in deploy.items():
            await ctl.put_config(f"{cid}-http", {"address": f"127.0.0.1:{port}"})
            await scaled(ctl, host, ref, cid, args.count)
        await ctl.start_provider(a, "builtin://http-server", "http")
        for cid in deploy:
            await ctl.put_link(http_link(cid, f"{cid}-http"))

        body = b"x" * BODY_SIZE
        cases = [
            # (label, component, path, wrk script)
            ("GET hello, local (A)", "hello-local", "/hello", None),
            ("GET hello, remote (B, wRPC)", "hello-remote", "/hello", None),
            ("POST 64 KiB echo, local (A)", "echo-local", "/body", script),
            ("POST 64 KiB echo, remote (B)", "echo-remote", "/body", script),
        ]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            for _, cid, path, lua in cases:
                url = f"http://127.0.0.1:{deploy[cid][2]}{path}"
                await answers(http, url, body if lua is not None else None)

        results: list[tuple[str, WrkResult]] = []
        for label, cid, path, lua in cases:
            url = f"http://127.0.0.1:{deploy[cid][2]}{path}"
            await asyncio.to_thread(wrk, url, 2, args.connections, lua)  # warm-up
            r = await asyncio.to_thread(wrk, url, args.duration, args.connections, lua)
            results.append((label, r))

        print(f"# http_across_hosts: {time.strftime('%Y-%m-%d %H:%M')}, {machine()}")
        print(
            f"# 2 host processes + embedded nats-server, http-server provider on A; "
            f"wrk -t1 -c{args.connections} -d{args.duration}s; {args.count} instances per component"
        )
        print(f"{'path':<32}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
        for i, (label, r) in enumerate(results):
            print(f"{label:<32}{r.rps:>10.0f}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}{r.errors:>8}")
            if i % 2 == 1:
                local = results[i - 1][1]
                ratio = r.rps / local.rps if local.rps else float("nan")
                print(f"{'  ratio remote/local':<32}{ratio:>9.2f}x")


def main() -> None:
    """Parse the options and run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=8, help="seconds of wrk load per path")
    ap.add_argument("--connections", type=int, default=8, help="wrk connections")
    ap.add_argument("--count", type=int, default=8, help="max concurrent instances per component")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk, or `make bench-deps`)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
