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
