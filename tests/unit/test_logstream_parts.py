"""The log stream's parts: what reaches it from the output limiter, its queue, ring and handler.

The NATS path (hosts publishing, `wasmlattice logs`) is tested end to end in
tests/integration/test_lattice_logs.py; here `publish` is a coroutine that keeps what it is given.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from wasmlattice.capabilities import guest_logging
from wasmlattice.lattice.logs import parse_recent_request
from wasmlattice.observability.logstream import HOST_COMPONENT, LogStream, level_name, trace_ids
from wasmlattice.protocol import subjects as sj
from wasmlattice.runtime.fastcall import set_current_state
from wasmlattice.wasi.ctx import WasiConfig, WasiCtx
from wasmlattice.wasi.output_limit import LineSink, OutputLimiter, OutputLimits


class Sink:
    """A `publish` that keeps (subject, record); fails while `failing` is set."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.failing = False

    async def __call__(self, subject: str, body: bytes) -> None:
        if self.failing:
            logging.getLogger("wasmlattice.protocol.connection").error("publish failed")
            raise ConnectionError("nats: connection closed")
        self.got.append((subject, json.loads(body)))


def make_stream(sink: Sink, **kw: Any) -> LogStream:
    loop = asyncio.get_running_loop()
    return LogStream("NHOST", loop, sink, lambda cid: sj.logs_subject("lat", "NHOST", cid), **kw)


def test_the_tap_gets_only_the_lines_the_limiter_admits() -> None:
    tapped: list[tuple[str, str, str]] = []
    limiter = OutputLimiter(
        "c", OutputLimits(lines_per_s=1, burst_s=3, max_line=32), tap=lambda *a: tapped.append(a)
    )
    logged: list[str] = []
    out = LineSink(limiter, "stdout", logged.append)
    out.write(b"".join(b"line %d\n" % i for i in range(10)))
    assert logged == ["line 0", "line 1", "line 2"]
    assert tapped == [("stdout", "info", line) for line in logged]
    assert limiter.total_dropped_lines == 7
    limiter.close()

    tapped.clear()
    limiter = OutputLimiter("c", OutputLimits(max_line=8), tap=lambda *a: tapped.append(a))
    err = LineSink(limiter, "stderr", lambda line: None)
    err.write(b"x" * 20 + b"\n")
    assert tapped == [("stderr", "warn", "xxxxxxxx [... 12 more bytes of this line cut]")]


def test_wasi_logging_lines_reach_the_tap_as_stream_log() -> None:
    tapped: list[tuple[str, str, str]] = []
    limiter = OutputLimiter(
        "c", OutputLimits(lines_per_s=1, burst_s=2, max_line=10), tap=lambda *a: tapped.append(a)
    )

    class State:
        wasi = WasiCtx(WasiConfig(component_id="c", output=limiter))

    prev = set_current_state(State())  # type: ignore[arg-type]
    try:
        guest_logging.guest_log("error", "db", "0123456789abc")
        guest_logging.guest_log("warn", "", "second")
        guest_logging.guest_log("warn", "", "over the allowance")
        guest_logging.guest_log("debug", "", "below the host's level: neither logged nor streamed")
    finally:
        set_current_state(prev)
    assert tapped == [
        ("log", "error", "db: 0123456789 [... 3 more characters of this line cut]"),
        ("log", "warn", "second"),
    ]


async def test_records_from_any_thread_are_published_in_shape() -> None:
    sink = Sink()
    stream = make_stream(sink)
    task = asyncio.create_task(stream.run())
    try:
        await asyncio.to_thread(stream.offer, "echo", "stderr", "warn", "from a guest thread")
        stream.offer("_host", "host", "info", "from the loop")
        for _ in range(100):
            if len(sink.got) == 2:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    (s1, r1), (s2, _) = sink.got
    assert s1 == "wasmlattice.logs.lat.NHOST.echo" and s2 == "wasmlattice.logs.lat.NHOST._host"
    assert list(r1) == [
        "time",
        "level",
        "host_id",
        "component_id",
        "stream",
        "trace_id",
        "span_id",
        "message",
    ]
    assert r1["host_id"] == "NHOST" and r1["stream"] == "stderr" and r1["message"] == "from a guest thread"
    assert r1["trace_id"] is None and r1["span_id"] is None
    assert r1["time"].endswith("Z") and len(r1["time"]) == len("2025-01-02T03:04:05.678Z")
    assert [r["message"] for r in stream.recent()] == ["from a guest thread", "from the loop"]
    assert [r["message"] for r in stream.recent("echo")] == ["from a guest thread"]


def test_trace_and_span_ids_are_the_current_spans() -> None:
    assert trace_ids() == (None, None)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        ctx = span.get_span_context()
        assert trace_ids() == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
        seen: list[tuple[str | None, str | None]] = []
        # A thread of its own does not inherit the span (contextvars are per thread unless copied).
        t = threading.Thread(target=lambda: seen.append(trace_ids()))
        t.start()
        t.join()
        assert seen == [(None, None)]
    assert trace_ids() == (None, None)


async def test_a_full_queue_drops_and_counts_and_failures_are_never_streamed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sink = Sink()
    stream = make_stream(sink, max_queue=5, report_interval=0.05)
    for i in range(8):  # the drain task is not running yet: the queue fills
        stream.offer("c", "stdout", "info", f"m{i}")
    assert stream.total_dropped == 3

    handler = stream.handler()
    host_log = logging.getLogger("wasmlattice")
    host_log.addHandler(handler)
    sink.failing = True
    task = asyncio.create_task(stream.run())
    try:
        for _ in range(100):
            if stream.total_dropped >= 8:
                break
            await asyncio.sleep(0.01)
        # The publish failures logged on the loop while sending were not queued again.
        await asyncio.sleep(0.2)
        assert stream.total_dropped == 8 and stream.published == 0
        assert len(stream._queue) == 0
        assert stream.last_error == "ConnectionError: nats: connection closed"
        sink.failing = False
        logging.getLogger("wasmlattice.host.components").info("back")
        logging.getLogger("wasmlattice.guest").warning("guest lines come through the tap, not here")
        logging.getLogger("aiohttp.access").info("not the host's own")
        for _ in range(100):
            if sink.got:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
    finally:
        task.cancel()
        host_log.removeHandler(handler)
    assert [(r["component_id"], r["stream"], r["message"]) for _, r in sink.got] == [
        ("_host", "host", "wasmlattice.host.components: back")
    ]
    assert "log stream of host NHOST: dropped 8 records" in caplog.text
    assert "nats: connection closed" in caplog.text


async def test_the_ring_keeps_the_last_records_within_its_byte_bound() -> None:
    sink = Sink()
    stream = make_stream(sink, ring=10, ring_bytes=2000)
    for i in range(30):
        stream.offer("c", "stdout", "info", f"{i:03d}" + "x" * 100)
    await stream.flush()
    kept = stream.recent()
    assert 0 < len(kept) < 10
    assert kept[-1]["message"].startswith("029")
    assert [r["message"][:3] for r in kept] == [f"{i:03d}" for i in range(30 - len(kept), 30)]
    assert len(stream.recent(limit=2)) == 2
    assert len(stream.recent(max_bytes=400)) == 1


def test_levels_and_recent_requests() -> None:
    assert HOST_COMPONENT == sj.HOST_LOG_COMPONENT
    assert [level_name(n) for n in (5, 10, 20, 30, 40, 50)] == [
        "trace",
        "debug",
        "info",
        "warn",
        "error",
        "critical",
    ]
    assert parse_recent_request(b"") == (None, None, 200)
    assert parse_recent_request(b'{"component_id": "echo", "limit": 5}') == ("echo", None, 5)
    for body, field in (
        (b"[1]", "JSON object"),
        (b'{"component_id": "a.b"}', "component_id"),
        (b'{"host_id": 7}', "host_id"),
        (b'{"limit": 100000}', "limit"),
        (b'{"limit": true}', "limit"),
        (b"{", "not JSON"),
    ):
        with pytest.raises(ValueError, match=field):
            parse_recent_request(body)
