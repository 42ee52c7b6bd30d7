"""Helpers shared by the benchmarks (not a benchmark itself)."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from wasmlattice.client.ctl import CtlClient
from wasmlattice.nats_server import EmbeddedNats
from wasmlattice.protocol.models import Link

ROOT = Path(__file__).resolve().parent.parent


def host_file_args() -> list[str]:
    """Host flags that let benchmark hosts load the components they are given (built under the
    repository, its `.build` folders, which may be links elsewhere, or a temporary directory)."""
    dirs = [ROOT, ROOT / "tests" / "components" / ".build", ROOT / "examples" / ".build"]
    args = ["--allow-file-load", "--allow-dir", tempfile.gettempdir()]
    for d in dirs:
        if d.is_dir():
            args += ["--allow-dir", str(d)]
    return args


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


async def timed(n: int, op: Callable[[], Awaitable[Any]], warm: int = 3) -> list[float]:
    """Run `op` `n` times in sequence (after `warm` warm-up calls); the durations in seconds."""
    for _ in range(warm):
        await op()
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        await op()
        out.append(time.perf_counter() - t0)
    return out


async def until_answering(client: Any, deadline: float) -> None:
    """Wait until an app manager answers `client` (an `AppClient`); the last error after `deadline`
    (`time.monotonic()`)."""
    while True:
        try:
            await client.list()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


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


class BenchLattice:
    """An embedded nats-server in a temporary directory, the processes a benchmark runs against it
    (hosts, an app manager, a responder...) with one compile cache, and a NATS connection."""

    def __init__(self, tmp: Path, lattice: str) -> None:
        self.lattice = lattice
        self.tmp = tmp
        self.env = dict(os.environ, WASMLATTICE_CACHE_DIR=str(tmp / "cache"))
        self.server = EmbeddedNats(host="127.0.0.1", port=0, data_dir=tmp / "nats")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.nc: Any = None

    @property
    def url(self) -> str:
        """The NATS URL."""
        return self.server.url

    def start(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start `cmd` (stopped when the benchmark ends) with the shared environment."""
        proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL, **kwargs)
        self.procs.append(proc)
        return proc

    def start_host(self, *args: str) -> subprocess.Popen[bytes]:
        """Start a host process on this lattice (`args`: more `wasmlattice.lattice.run` options)."""
        cmd = [sys.executable, "-m", "wasmlattice.lattice.run", "--nats-url", self.url, *host_file_args()]
        return self.start([*cmd, "--lattice", self.lattice, "--log-level", "warning", *args])

    async def start_responder(self, subject: str, reply: bytes) -> None:
        """Start the plain nats-py responder (`RESPONDER`) and wait until it is subscribed."""
        proc = self.start(
            [sys.executable, "-c", RESPONDER, self.url, subject, reply.hex()], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)


@asynccontextmanager
async def bench_lattice(prefix: str, lattice: str) -> AsyncIterator[BenchLattice]:
    """A `BenchLattice` for the block; everything it started is stopped when the block ends."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        lat = BenchLattice(Path(tmp), lattice)
        await lat.server.start()
        try:
            lat.nc = await nats.connect(lat.url)
            yield lat
        finally:
            if lat.nc is not None:
                await lat.nc.close()
            stop_processes(lat.procs)
            await lat.server.stop()


async def hosts_by_label(ctl: CtlClient, timeout: float = 120.0) -> dict[str, str]:
    """Host IDs by their `bench` label (`a`, `b`), once both hosts answer a ping."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hosts = await ctl.ping_hosts(wait=0.5)
        found = {h.labels.get("bench", ""): h.id for h in hosts}
        if {"a", "b"} <= set(found):
            return found
    raise TimeoutError("the two hosts did not answer within the time-out")


async def scaled(ctl: CtlClient, host: str, ref: str, cid: str, count: int) -> None:
    """Scale `ref` as `cid` on `host` and wait until the host lists it."""
    await ctl.scale_component(host, ref, cid, count)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        inv = await ctl.get_host_inventory(host)
        if any(c.id == cid for c in inv.components):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{cid} did not start on {host}")
