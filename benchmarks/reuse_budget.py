"""Where a reused-instance request's CPU goes, against the budget that 0.5x `wasmtime serve` leaves.

Each server runs alone on core 0 (`taskset`) with one worker, `wrk -t1` loads it from core 1, and
the server's own user and system CPU time over the run (`/proc/PID/stat`) is divided by the
requests it served. On one core, req/s is the inverse of CPU per request, so 0.5x `wasmtime
serve`'s req/s means at most twice its CPU per request. Measured, in the same run:

1. `wasmlattice run --workers 1 --reuse N` and `wasmtime serve --max-instance-reuse-count N`,
   serving the hello-world guest (examples/hello): the ratio and the budget;
2. ours again with timers around the guest's handler call and around every host call (a separate
   pass, since the timers cost a little): how much of a request is the guest and its host calls;
3. the HTTP layer's floor, answering the same bytes with no component behind it: aiohttp's
   low-level server (what the ingress uses) and, if `httptools` is installed, a minimal
   `httptools` protocol on uvloop (the alternative issue 17 names).

It then prints what a request would cost if every host call were free and HTTP cost only the
`httptools` floor, beside the budget.

    python benchmarks/reuse_budget.py [--duration 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from wasmlattice.devbuild import build, wasmtime_cli

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import free_port, machine, wrk  # noqa: E402 - after the path entry
from http_hello import hello_url, start, stop  # noqa: E402

# Runs `wasmlattice run` with timers around ExportFunc.call (the guest's handler call, host calls
# included) and around the one C callback every host call enters (`fastcall._DISPATCH`). SIGUSR1
# resets them; SIGUSR2 writes microseconds per handler call to the file named by argv[1].
TIMED_RUN = """
import signal, sys, time
from ctypes import CFUNCTYPE, c_size_t, c_void_p
from wasmlattice.runtime import fastcall
out = sys.argv.pop(1)
clock = time.perf_counter_ns
acc = {"call": 0, "calls": 0, "host": 0, "hostcalls": 0}
call = fastcall.ExportFunc.call
def timed_call(self, st, func, *args):
    t = clock()
    try:
        return call(self, st, func, *args)
    finally:
        acc["call"] += clock() - t
        acc["calls"] += 1
fastcall.ExportFunc.call = timed_call
dispatch = fastcall._dispatch
def timed_dispatch(*a):
    t = clock()
    try:
        return dispatch(*a)
    finally:
        acc["host"] += clock() - t
        acc["hostcalls"] += 1
fastcall._DISPATCH = CFUNCTYPE(c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p,
                               c_size_t)(timed_dispatch)
def reset(*_):
    for k in acc:
        acc[k] = 0
def report(*_):
    n = max(acc["calls"], 1)
    with open(out, "w") as f:
        f.write(f"{acc['call'] / n / 1000} {acc['host'] / n / 1000} {acc['hostcalls'] / n}")
signal.signal(signal.SIGUSR1, reset)
signal.signal(signal.SIGUSR2, report)
sys.argv = ["wasmlattice", *sys.argv[1:]]
from wasmlattice.cli.main import main
main()
"""

# The same bytes the hello guest answers, from aiohttp's low-level server (as the ingress uses it)
# or from a minimal httptools protocol. Arguments: mode, port.
FLOOR = """
import asyncio, sys, uvloop
BODY = b"hello from wasmlattice /hello"
mode, port = sys.argv[1], int(sys.argv[2])
if mode == "aiohttp":
    from aiohttp import web
    async def handler(request):
        return web.Response(body=BODY, content_type="text/plain")
    def factory():
        return web.Server(handler)  # the server object is the protocol factory
else:
    import httptools
    HEAD = b"HTTP/1.1 200 OK\\r\\ncontent-type: text/plain\\r\\ncontent-length: %d\\r\\n\\r\\n"
    RESPONSE = HEAD % len(BODY) + BODY
    class Protocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.headers = []
        def on_url(self, url):
            self.url = url
        def on_header(self, name, value):
            self.headers.append((name, value))
        def on_message_complete(self):
            self.method = self.parser.get_method()
            self.headers = []
            self.transport.write(RESPONSE)
        def data_received(self, data):
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()
    def factory():
        return Protocol
async def main():
    await asyncio.get_running_loop().create_server(factory(), "127.0.0.1", port)
    await asyncio.Event().wait()
uvloop.run(main())
"""


@dataclass
class Cost:
    """One server's load result: req/s and its CPU per request, user and system (microseconds)."""

    rps: float
    user_us: float
    sys_us: float

    @property
    def cpu_us(self) -> float:
        """User plus system CPU per request."""
        return self.user_us + self.sys_us


def cpu_ticks(pid: int) -> tuple[int, int]:
    """A process's user and system CPU time so far, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def pinned(cmd: list[str]) -> list[str]:
    """`cmd` on core 0 only."""
    return ["taskset", "-c", "0", *cmd]


def measure(proc: subprocess.Popen[bytes], port: int, duration: int, connections: int) -> Cost:
    """Warm `proc` up, load it for `duration` s from core 1 and read its CPU per request."""
    url = hello_url(port)
    wrk_pinned(url, 2, connections)
    tick = os.sysconf("SC_CLK_TCK")
    u0, s0 = cpu_ticks(proc.pid)
    rps = wrk_pinned(url, duration, connections)
    u1, s1 = cpu_ticks(proc.pid)
    served = rps * duration
    return Cost(rps, (u1 - u0) / tick / served * 1e6, (s1 - s0) / tick / served * 1e6)


def wrk_pinned(url: str, duration: int, connections: int) -> float:
    """Requests/s that wrk, pinned to core 1, measures at `url`."""
    # wrk inherits our affinity: pin ourselves to core 1 for the call, then restore.
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {1})
    try:
        return wrk(url, duration, connections).rps
    finally:
        os.sched_setaffinity(0, before)


def ours_cmd(wasm: Path, port: int) -> list[str]:
    """`wasmlattice run` with one worker and instance reuse, after `python` (or a launcher)."""
    cmd = ["run", str(wasm), "--listen", f"127.0.0.1:{port}", "--workers", "1", "--reuse", "1000000"]
    return [*cmd, "--log-level", "error"]


def run_alone(cmd: list[str], port: int, duration: int, connections: int) -> Cost:
    """Start `cmd` (serving on `port`) alone on core 0, load it, stop it: its cost per request."""
    proc = start(pinned(cmd), port)
    try:
        return measure(proc, port, duration, connections)
    finally:
        stop(proc)


def run_ours(wasm: Path, duration: int, connections: int) -> Cost:
    """`wasmlattice run` with instance reuse, alone on core 0."""
    port = free_port()
    return run_alone(
        [sys.executable, "-m", "wasmlattice.cli.main", *ours_cmd(wasm, port)], port, duration, connections
    )


def run_peer(wasm: Path, duration: int, connections: int) -> Cost:
    """`wasmtime serve` with instance reuse, alone on core 0."""
    port = free_port()
    cmd = [str(wasmtime_cli()), "serve", "-S", "cli", "--addr", f"127.0.0.1:{port}"]
    return run_alone([*cmd, "--max-instance-reuse-count", "1000000", str(wasm)], port, duration, connections)


def run_timed(wasm: Path, duration: int, connections: int) -> tuple[float, float, float]:
    """Ours with timers: (handler call, host calls inside it, host calls per request), in µs."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "timers"
        proc = start(pinned([sys.executable, "-c", TIMED_RUN, str(out), *ours_cmd(wasm, port)]), port)
        try:
            wrk_pinned(hello_url(port), 2, connections)
            proc.send_signal(signal.SIGUSR1)  # reset after the warm-up
            wrk_pinned(hello_url(port), duration, connections)
            proc.send_signal(signal.SIGUSR2)  # report
            deadline = time.monotonic() + 10
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            call, host, count = (float(x) for x in out.read_text().split())
        finally:
            stop(proc)
    return call, host, count


def run_floor(mode: str, duration: int, connections: int) -> Cost:
    """A server answering the hello guest's bytes with no component, alone on core 0."""
    port = free_port()
    return run_alone([sys.executable, "-c", FLOOR, mode, str(port)], port, duration, connections)


def have_httptools() -> bool:
    """Whether the httptools floor can be measured."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    """Run every measurement and print the table and the budget."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        sys.exit("wrk and taskset are needed (apt-get install wrk util-linux, or `make bench-deps`)")
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two cores: the server on one, wrk on the other")
    wasm = build(ROOT / "examples" / "hello")
    d, c = args.duration, args.connections
    print(f"# reuse_budget: {time.strftime('%Y-%m-%d %H:%M')}, {machine()}")
    print(f"# server alone on core 0 (1 worker), wrk -t1 -c{c} -d{d}s on core 1, guest {wasm.name}")
    ours, peer = run_ours(wasm, d, c), run_peer(wasm, d, c)
    call, host, count = run_timed(wasm, d, c)
    floors = {"aiohttp": run_floor("aiohttp", d, c)}
    if have_httptools():
        floors["httptools"] = run_floor("httptools", d, c)
    print(f"{'server':<44}{'req/s':>9}{'CPU us/req':>12}{'user':>8}{'sys':>8}")
    rows = [("wasmlattice run --reuse", ours), ("wasmtime serve --max-instance-reuse-count", peer)]
    rows += [(f"floor: {name}, same bytes, no component", cost) for name, cost in floors.items()]
    for name, cost in rows:
        print(f"{name:<44}{cost.rps:>9.0f}{cost.cpu_us:>12.1f}{cost.user_us:>8.1f}{cost.sys_us:>8.1f}")
    budget = 2 * peer.cpu_us
    print(f"ratio (req/s, ours / wasmtime serve): {ours.rps / peer.rps:.2f}x   (target >= 0.5x)")
    print(f"budget for 0.5x: {budget:.0f} us of CPU per request; ours: {ours.cpu_us:.0f} us")
    print(
        f"inside ours (timed pass): the guest's handler call {call:.0f} us, of which {count:.1f} host calls "
        f"{host:.0f} us ({host / max(count, 1):.1f} us each); the guest and wasmtime {call - host:.0f} us"
    )
    if "httptools" in floors:
        bound = ours.cpu_us - host - (floors["aiohttp"].cpu_us - floors["httptools"].cpu_us)
        print(
            f"with every host call free and HTTP at the httptools floor: {bound:.0f} us "
            f"({budget - bound:+.0f} us against the budget)"
        )
    else:
        print("(pip install httptools to measure the httptools floor)")


if __name__ == "__main__":
    main()
