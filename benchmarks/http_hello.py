"""HTTP hello-world throughput: `wasmlattice run` beside `wasmtime serve`, same guest, same run.

For (a) a fresh instance per request and (b) instance reuse, both hosts serve the hello-world
Python guest (examples/hello) with workers equal to the core count, and `wrk` loads each in turn
on loopback. Prints requests/s, p50, p99 and our ratio; then the cost of one trivial host call.
Targets on 2 cores: (a) >= 1.5x wasmtime serve, (b) >= 0.75x, host call <= 5 us.
With `--metrics`, ours runs a second time with metrics on (`/metrics` served per worker, every
request counted; docs/observability.md), to show what recording costs.

    python benchmarks/http_hello.py [--duration 10] [--connections 8] [--metrics]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from wasmlattice.devbuild import build, wasmtime_cli

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import WrkResult, free_port, machine, wrk  # noqa: E402 - after the path entry


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Wait until the server answers HTTP."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/warmup", timeout=5) as r:
                r.read()
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"server on {port} did not answer within {timeout}s")


def hello_url(port: int) -> str:
    """The URL the hello guest answers on a server at `port`."""
    return f"http://127.0.0.1:{port}/hello"


def start(cmd: list[str], port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server and wait until it answers."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_ready(port, proc)
    except BaseException:
        stop(proc)  # a server that never answered must not outlive the benchmark
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def metered_run(cmd: list[str], port: int, duration: int, connections: int) -> tuple[WrkResult, int]:
    """Ours with metrics on: its result, and the invocations worker 0 counted (proof they were on)."""
    metrics_port = free_port()
    env = {**os.environ, "WASMLATTICE_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"}
    proc = start(cmd, port, env=env)
    try:
        wrk(hello_url(port), 2, connections)  # warm-up
        result = wrk(hello_url(port), duration, connections)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        stop(proc)
    counted = sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("wasmcloud_host_component_invocations_total{")
    )
    return result, counted


def bench_mode(
    wasm: Path, reuse: bool, workers: int, duration: int, connections: int, metrics: bool = False
) -> tuple[WrkResult, WrkResult, tuple[WrkResult, int] | None]:
    """Run both hosts in one mode; returns (ours, wasmtime serve, ours with metrics on or None)."""
    p1, p2 = free_port(), free_port()
    ours_cmd = [sys.executable, "-m", "wasmlattice.cli.main", "run", str(wasm), "--listen", f"127.0.0.1:{p1}"]
    ours_cmd += ["--workers", str(workers), "--log-level", "error"]
    peer_cmd = [str(wasmtime_cli()), "serve", "-S", "cli", "--addr", f"127.0.0.1:{p2}"]
    if reuse:
        ours_cmd += ["--reuse", "1000000"]
        peer_cmd += ["--max-instance-reuse-count", "1000000"]
    peer_cmd.append(str(wasm))
    ours = start(ours_cmd, p1)
    try:
        peer = start(peer_cmd, p2)
        try:
            wrk(hello_url(p1), 2, connections)  # warm-up
            wrk(hello_url(p2), 2, connections)
            a = wrk(hello_url(p1), duration, connections)
            b = wrk(hello_url(p2), duration, connections)
        finally:
            stop(peer)
    finally:
        stop(ours)
    metered = metered_run(ours_cmd, p1, duration, connections) if metrics else None
    return a, b, metered


def main() -> None:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--metrics", action="store_true", help="also run ours with metrics on")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk, or `make bench-deps`)")

    wasm = build(ROOT / "examples" / "hello")
    print(f"# http_hello: {time.strftime('%Y-%m-%d %H:%M')}, {machine()}")
    print(
        f"# wrk -t1 -c{args.connections} -d{args.duration}s, {args.workers} workers each, guest {wasm.name}"
    )
    print(f"{'mode':<28}{'host':<18}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    targets = {False: 1.5, True: 0.75}
    for reuse in (False, True):
        name = "(b) instance reuse" if reuse else "(a) fresh instance/request"
        a, b, metered = bench_mode(wasm, reuse, args.workers, args.duration, args.connections, args.metrics)
        for host, r in (("wasmlattice", a), ("wasmtime serve", b)):
            print(f"{name:<28}{host:<18}{r.rps:>10.0f}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}{r.errors:>8}")
        if metered is not None:
            m, counted = metered
            host = "+ metrics on"
            print(f"{name:<28}{host:<18}{m.rps:>10.0f}{m.p50_ms:>10.2f}{m.p99_ms:>10.2f}{m.errors:>8}")
            cost = (m.rps / a.rps - 1) * 100
            print(
                f"{name:<28}{'metrics cost':<18}{cost:>9.1f}%   ({counted} invocations counted by worker 0)"
            )
        ratio = a.rps / b.rps if b.rps else float("nan")
        print(f"{name:<28}{'ratio':<18}{ratio:>9.2f}x   (target >= {targets[reuse]}x)")
    import hostcall

    wat_wasm = hostcall.build()
    from wasmlattice.runtime.engine import HostEngine

    engine = HostEngine()
    us = hostcall.ours(wat_wasm, engine, 200_000)
    peer_us = hostcall.peer(wat_wasm, engine, 20_000)
    print(f"trivial host call: {us:.2f} us (wasmtime-py add_func: {peer_us:.2f} us; target <= 5 us)")
    engine.close()
    if args.metrics:
        off, on = asyncio.run(guest_call_cost(metrics=False)), asyncio.run(guest_call_cost(metrics=True))
        print(f"guest-call path (start_guest, a trivial runner): {off:.2f} us, with metrics on {on:.2f} us")


async def guest_call_cost(metrics: bool, calls: int = 50_000) -> float:
    """Microseconds one call through `start_guest` takes with a runner that does nothing (best of 5).

    What the guest-call path itself costs, with and without metrics, free of a whole server's noise.
    """
    from wasmlattice.runtime.execution import Workload, start_guest

    workload = Workload("bench", timeout=5.0, threads=1, max_concurrency=8)
    opened = None
    if metrics:
        from wasmlattice.observability.metrics import HostMetrics, open_metrics
        from wasmlattice.observability.settings import ObservabilitySettings

        opened = await open_metrics(ObservabilitySettings(metrics_listen="127.0.0.1:0"))
        assert opened is not None
        workload.metrics = HostMetrics(opened, "bench", "bench").component("bench", "bench")

    def attempt(inline: bool) -> Any:
        return lambda limit: None

    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            await (await start_guest(workload, attempt, operation="bench/call"))
        best = min(best, (time.perf_counter() - started) / calls * 1e6)
    await workload.retire(0.1)
    if opened is not None:
        await opened.release()
    return best


if __name__ == "__main__":
    main()
