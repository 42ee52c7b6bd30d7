"""A NATS outage is logged without a flood (protocol/connection.py `OutageLog`).

nats-py retries every 0.5 s and reports each failed attempt; the log used to carry a warning for
every one. Real nats-server, stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.processes import free_port
from wasmlattice.nats_server import find_nats_server
from wasmlattice.protocol import connection
from wasmlattice.protocol.connection import NatsOptions

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


def start_server(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    """A plain nats-server on 127.0.0.1:`port`."""
    out = (tmp / "nats.log").open("ab")
    return subprocess.Popen(
        [str(find_nats_server()), "-a", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
    )


async def wait_for(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        await asyncio.sleep(0.05)


async def test_an_outage_is_one_warning_then_one_reconnected_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="wasmlattice.protocol.connection")
    port = free_port()
    server = start_server(port, tmp_path)
    nc = None
    try:
        await wait_for(lambda: server.poll() is None and _listening(port), "nats-server")
        nc = await connection.connect(NatsOptions(url=f"nats://127.0.0.1:{port}", name="outage-test"))
        server.terminate()
        server.wait(10)
        # Many failed attempts (every 0.5 s) within the 30 s between warnings.
        await wait_for(
            lambda: _count(caplog, logging.DEBUG, "NATS connection 'outage-test'") >= 4, "failed attempts"
        )
        assert _count(caplog, logging.WARNING, "disconnected from NATS (outage-test)") == 1
        assert _count(caplog, logging.WARNING, "") == 1, caplog.text

        server = start_server(port, tmp_path)
        await wait_for(lambda: _count(caplog, logging.INFO, "reconnected to NATS at") == 1, "reconnect")
        (line,) = [r.getMessage() for r in caplog.records if "reconnected" in r.getMessage()]
        assert " after " in line and line.endswith("s (outage-test)"), line
        assert _count(caplog, logging.WARNING, "") == 1, caplog.text
    finally:
        if nc is not None:
            await nc.close()
        server.terminate()
        server.wait(10)


def test_a_long_outage_repeats_its_warning_at_most_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="wasmlattice.protocol.connection")
    outage = connection.OutageLog("unit", every=0.2)
    outage.lost()
    for _ in range(5):
        outage.error(ConnectionRefusedError("refused"), reconnecting=True)
    assert _count(caplog, logging.WARNING, "") == 1
    time.sleep(0.25)
    outage.error(ConnectionRefusedError("refused"), reconnecting=True)
    assert _count(caplog, logging.WARNING, "still not connected to NATS (unit)") == 1
    assert "6 failed attempts; last: ConnectionRefusedError: refused" in caplog.text
    outage.back("nats://127.0.0.1:4222")
    assert _count(caplog, logging.INFO, "reconnected to NATS at nats://127.0.0.1:4222 after") == 1


def _count(caplog: pytest.LogCaptureFixture, level: int, needle: str) -> int:
    return sum(1 for r in caplog.records if r.levelno == level and needle in r.getMessage())


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
