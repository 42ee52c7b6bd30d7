"""Cold start: how soon a host that never saw a component serves it, and what each compiler costs.

Measured on the componentize-py example (examples/hello, ~18 MB), all in one run:
1. reading the file; `wasmtime compile` (the CLI, Cranelift) as the baseline; wasmtime-py's
   Cranelift and Winch compiling it in this process (fresh engines, no cache);
2. steady state of each build: `wrk` against a server running only that build;
3. end to end on a lattice host with an empty compile cache: time from `component.scale` to the
   first 200 response, with `--tiered-compile` and `--no-tiered-compile`, and (tiered) when the
   optimised build took over, then the steady state once it did.
Target: first response within 2 s of the scale on 2 cores; steady state unchanged once warm.

    python benchmarks/cold_start.py [--duration 5] [--connections 4]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from wasmlattice.client.ctl import CtlClient
from wasmlattice.devbuild import build, wasmtime_cli
from wasmlattice.runtime.component import CompileCache
from wasmlattice.runtime.engine import CRANELIFT, WINCH, EngineSettings, HostEngine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import (  # noqa: E402 - after the path entry
    bench_lattice,
    free_port,
    host_file_args,
    http_link,
    machine,
    stop_processes,
    wrk,
)

LATTICE = "coldbench"
# A server running one build of a component (argv: path, compiler, port, cache dir).
SERVE = """
import asyncio, socket, sys
from pathlib import Path
from wasmlattice.host.standalone import ComponentApp, ServeOptions, serve_app
from wasmlattice.runtime.engine import EngineSettings, HostEngine
path, strategy, port, cache = sys.argv[1:5]
opts = ServeOptions(listen=f"127.0.0.1:{port}", cache_dir=Path(cache), threads=2)
app = ComponentApp(path, opts, engine=HostEngine(EngineSettings(strategy=strategy)))
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(port)))
sock.listen(128)
asyncio.run(serve_app(app, sock))
"""


def timed(fn: object) -> float:
    """Seconds `fn()` took."""
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t


def compile_times(path: Path, tmp: Path) -> dict[str, float]:
    """Read, `wasmtime compile`, Cranelift and Winch compile times of `path`, in seconds."""
    out: dict[str, float] = {"read": timed(path.read_bytes)}
    data = path.read_bytes()
    cli = [wasmtime_cli(), "compile", "-o", str(tmp / "cli.cwasm"), str(path)]
    out["wasmtime compile (CLI)"] = timed(lambda: subprocess.run(cli, check=True))
    for name in (CRANELIFT, WINCH):
        engine = HostEngine(EngineSettings(strategy=name))
        out[f"wasmtime-py {name}"] = timed(lambda e=engine: CompileCache(None).compile(data, e, str(path)))
        engine.close()
    return out


def get(url: str) -> int:
    """The status of GET `url` (0 when nothing answered)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            r.read()
            return int(r.status)
    except OSError:
        return 0


def steady(path: Path, strategy: str, tmp: Path, args: argparse.Namespace) -> str:
    """wrk against a server that runs only the `strategy` build."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(path), strategy, str(port), str(tmp / f"cache-{strategy}")],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/hello"
        deadline = time.monotonic() + 180
        while get(url) != 200:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the {strategy} server did not answer")
            time.sleep(0.2)
        wrk(url, 2, args.connections)
        r = wrk(url, args.duration, args.connections)
        return f"{r.rps:.0f} req/s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms"
    finally:
        stop_processes([proc])


async def host_cold_start(ref: str, tiered: bool, args: argparse.Namespace) -> list[str]:
    """Scale on a host with an empty cache; time to the first 200, to the optimised build, and wrk."""
    async with bench_lattice("wl-coldbench-", LATTICE) as lat:
        log = lat.tmp / "host.log"
        flag = "--tiered-compile" if tiered else "--no-tiered-compile"
        cmd = [sys.executable, "-m", "wasmlattice.lattice.run", "--nats-url", lat.url, *host_file_args()]
        with log.open("wb") as f:
            lat.start([*cmd, "--lattice", LATTICE, flag, "--log-level", "info"], stderr=f)
        ctl = CtlClient(lat.nc, LATTICE, timeout=60.0)
        host = ""
        while not host:
            hosts = await ctl.ping_hosts(wait=0.5)
            host = hosts[0].id if hosts else ""
        port = free_port()
        url = f"http://127.0.0.1:{port}/hello"
        await ctl.put_config("cold-http", {"address": f"127.0.0.1:{port}"})
        await ctl.start_provider(host, "builtin://http-server", "http")
        await ctl.put_link(http_link("cold", "cold-http"))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            t0 = time.monotonic()
            await ctl.scale_component(host, ref, "cold", 4)
            first = None
            while first is None and time.monotonic() - t0 < 180:
                try:
                    async with http.get(url) as r:
                        await r.read()
                        if r.status == 200:
                            first = time.monotonic() - t0
                except aiohttp.ClientError:
                    pass
                if first is None:
                    await asyncio.sleep(0.02)
            swapped = None
            during: list[float] = []  # latencies of requests served while Cranelift compiles
            if tiered:
                done = asyncio.Event()

                async def client() -> None:
                    while not done.is_set():
                        start = time.monotonic()
                        async with http.get(url) as r:
                            await r.read()
                        if not done.is_set() and r.status == 200:
                            during.append(time.monotonic() - start)

                clients = [asyncio.ensure_future(client()) for _ in range(args.connections)]
                while swapped is None and time.monotonic() - t0 < 180:
                    if b"optimised (cranelift) build" in log.read_bytes():
                        swapped = time.monotonic() - t0
                    else:
                        await asyncio.sleep(0.05)
                done.set()
                await asyncio.gather(*clients, return_exceptions=True)
        r = await asyncio.to_thread(wrk, url, args.duration, args.connections)
        rows = [f"first 200 after scale: {first:.2f} s" if first else "no 200 within 180 s"]
        if tiered:
            rows.append(f"optimised build serving after: {swapped:.2f} s" if swapped else "no swap seen")
            if during and first and swapped:
                during.sort()
                p50, p99 = during[len(during) // 2] * 1000, during[int(len(during) * 0.99)] * 1000
                rows.append(
                    f"while optimising ({swapped - first:.1f} s, {args.connections} clients): "
                    f"{len(during) / (swapped - first):.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms"
                )
        rows.append(f"warm: {r.rps:.0f} req/s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms")
        return rows


def main() -> None:
    """Run every measurement and print them."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--host-only", action="store_true", help="only the host cold starts (part 3)")
    args = p.parse_args()
    path = build(ROOT / "examples" / "hello").resolve()
    print(f"# cold start of {path.name} ({path.stat().st_size / 1e6:.1f} MB); {machine()}")
    with tempfile.TemporaryDirectory(prefix="wl-cold-") as tmp_name:
        tmp = Path(tmp_name)
        if args.host_only:
            return host_runs(path, args)
        times = compile_times(path, tmp)
        for name, secs in times.items():
            print(f"{name:28s} {secs:7.2f} s", flush=True)
        cli = times["wasmtime compile (CLI)"]
        for name in (CRANELIFT, WINCH):
            print(f"ratio wasmtime-py {name} / wasmtime compile: {times[f'wasmtime-py {name}'] / cli:.2f}x")
        for strategy in (CRANELIFT, WINCH):
            print(f"steady state, {strategy} build only: {steady(path, strategy, tmp, args)}", flush=True)
    host_runs(path, args)


def host_runs(path: Path, args: argparse.Namespace) -> None:
    """Part 3: a host with an empty cache, tiered and not."""
    for tiered in (True, False):
        for row in asyncio.run(host_cold_start(f"file://{path}", tiered, args)):
            print(f"host, {'tiered' if tiered else 'not tiered'}: {row}")


if __name__ == "__main__":
    main()
