"""Helpers shared by the benchmarks (not a benchmark itself)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from pathlib import Path


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
