"""Helpers shared by the benchmarks (not a benchmark itself)."""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from wasmlattice.lattice.models import Link


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> str:
    """A one-line description of this machine, for the record a benchmark prints."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    py = platform.python_version()
    return f"{os.cpu_count()} cores, {cpu}, Python {py}, {platform.system()} {platform.release()}"


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate every process, then wait for each (killing those that do not exit in 15 s)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# A plain nats-py responder, run as its own process: the peer of request/reply measurements.
# Arguments: NATS URL, subject, reply payload as hex. Prints "ready" once subscribed.
RESPONDER = """
import asyncio, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    reply = bytes.fromhex(sys.argv[3])
    async def on(msg):
        await msg.respond(reply)
    await nc.subscribe(sys.argv[2], cb=on)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def percentile(samples: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `samples`, in their own unit."""
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


@dataclass
class WrkResult:
    """One wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    v, unit = float(m[1]), m[2]
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def wrk(url: str, duration: int, connections: int, script: Path | None = None) -> WrkResult:
    """Load `url` with wrk and parse its summary (errors: non-2xx/3xx answers plus socket errors)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    proc = subprocess.run([*cmd, url], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed on {url} (exit {proc.returncode}): {proc.stderr.strip()}")
    out = proc.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"50%\s+(\S+)", out)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"99%\s+(\S+)", out)[1])  # type: ignore[index]
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = int(m[1]) if m else 0
    m = re.search(r"Socket errors:.*", out)
    if m:
        errs += sum(int(x) for x in re.findall(r"\d+", m[0]))
    return WrkResult(rps, p50, p99, errs)


def http_link(target: str, config: str) -> Link:
    """A link from the provider `http` to `target` on `wasi:http`, named after it (one per address)."""
    return Link(
        source_id="http",
        target=target,
        name=target,
        wit_namespace="wasi",
        wit_package="http",
        interfaces=["incoming-handler"],
        source_config=[config],
    )
