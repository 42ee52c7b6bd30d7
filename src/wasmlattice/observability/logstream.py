"""Log records of a host, handed to the lattice without blocking the thread that logs them.

What `wasmlattice logs` and the dashboard read (docs/observability.md). A record is one JSON
object:

    {"time": "2025-01-02T03:04:05.678Z", "level": "info", "host_id": "N...", "component_id": "echo",
     "stream": "stdout" | "stderr" | "log" | "host", "trace_id": "4bf9..." | null,
     "span_id": "00f0..." | null, "message": "..."}

`stream` is the guest's stdout or stderr, a `wasi:logging` line (`log`), or the host's own log
(`host`, with component `_host`). The trace and span IDs are those of the OpenTelemetry span current
where the line was written (W3C hex), null outside any span.

`LogStream.offer` may be called from any thread (a guest's worker thread, the event loop): it puts
the record on a bounded queue and, when the queue was empty, wakes the drain task on the loop with
one `call_soon_threadsafe`. When the queue is full (NATS slow or gone) the record is dropped and
counted, and the count is logged once per `report_interval` (to a logger whose records are never
streamed, so a failing stream cannot feed itself). The drain task publishes each record and keeps
the last ones in a ring buffer, bounded in records and bytes, that hosts answer `recent` requests
from. Publishing is a callable, so this module needs nothing of NATS.

The queue is a deque and a lock rather than an `asyncio.Queue` (not thread-safe) or a
`queue.Queue` (whose `put` would need a thread to `get`): one lock, one wake-up per burst.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from wasmlattice.aio import wait_for

# Not streamed (see the module docstring): the stream's own reports go to the host's stderr only.
log = logging.getLogger("wasmlattice.observability.logstream")

# The loggers whose records are guest output: published through the guest tap, not the handler.
GUEST_LOGGER = "wasmlattice.guest"
# `protocol.subjects.HOST_LOG_COMPONENT`, which this layer cannot import (a unit test pins both).
HOST_COMPONENT = "_host"
STREAMS = ("stdout", "stderr", "log", "host")

DEFAULT_QUEUE = 2000
DEFAULT_RING = 200
DEFAULT_RING_BYTES = 256 * 1024
# A host log line longer than this is cut (guest lines are already cut by their output limiter).
MAX_HOST_MESSAGE = 16 * 1024


def level_name(levelno: int) -> str:
    """A Python log level as the record's `level` (the names of `wasi:logging`)."""
    if levelno >= logging.CRITICAL:
        return "critical"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    if levelno >= logging.DEBUG:
        return "debug"
    return "trace"


def trace_ids() -> tuple[str | None, str | None]:
    """The W3C hex trace and span IDs of the current OpenTelemetry span, or (None, None)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return trace.format_trace_id(ctx.trace_id), trace.format_span_id(ctx.span_id)


def rfc3339(ts: float) -> str:
    """A Unix time as RFC 3339 in UTC with milliseconds (`2025-01-02T03:04:05.678Z`)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def log_record(
    host_id: str,
    component_id: str,
    stream: str,
    level: str,
    message: str,
    *,
    ts: float | None = None,
) -> dict[str, Any]:
    """One record in the shape above, with the current span's IDs."""
    trace_id, span_id = trace_ids()
    return {
        "time": rfc3339(time.time() if ts is None else ts),
        "level": level,
        "host_id": host_id,
        "component_id": component_id,
        "stream": stream,
        "trace_id": trace_id,
        "span_id": span_id,
        "message": message,
    }


class LogStream:
    """A host's log records on their way to the lattice: a bounded queue, a drain task, a ring buffer."""

    def __init__(
        self,
        host_id: str,
        loop: asyncio.AbstractEventLoop,
        publish: Callable[[str, bytes], Awaitable[Any]],
        subject: Callable[[str], str],
        *,
        max_queue: int = DEFAULT_QUEUE,
        ring: int = DEFAULT_RING,
        ring_bytes: int = DEFAULT_RING_BYTES,
        report_interval: float = 10.0,
    ) -> None:
        self.host_id = host_id
        self.loop = loop
        self._publish = publish
        self._subject = subject  # component ID -> subject
        self.max_queue = max_queue
        self.ring_bytes = ring_bytes
        self.report_interval = report_interval
        self._queue: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._wake_pending = False
        self.loop_thread: int | None = None
        self._ring: deque[tuple[dict[str, Any], int]] = deque(maxlen=ring)
        self._ring_size = 0
        self.dropped = 0  # records dropped since the last report (queue full or publish failed)
        self.total_dropped = 0
        self.published = 0
        # True while the loop publishes: whatever is logged on the loop's thread then (by the NATS
        # client, say) is about the stream itself and is not streamed (no feedback loop).
        self.sending = False
        self.last_error: str | None = None

    # -- any thread ---------------------------------------------------------------------------

    def offer(
        self, component_id: str, stream: str, level: str, message: str, ts: float | None = None
    ) -> None:
        """Queue one record (never blocks; dropped and counted when the queue is full)."""
        record = log_record(self.host_id, component_id, stream, level, message, ts=ts)
        with self._lock:
            if len(self._queue) >= self.max_queue:
                self.dropped += 1
                self.total_dropped += 1
                return
            self._queue.append(record)
            if self._wake_pending:
                return
            self._wake_pending = True
        if threading.get_ident() == self.loop_thread:
            self._wake.set()
        else:
            try:
                self.loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop is closed: the host is gone, nothing will publish
                pass

    def guest_tap(self, component_id: str) -> Callable[[str, str, str], None]:
        """The tap of one component's output limiter: `(stream, level, line)` for each admitted line."""

        def tap(stream: str, level: str, line: str) -> None:
            self.offer(component_id, stream, level, line)

        return tap

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Publish queued records until cancelled (a supervised activity of the host)."""
        self.loop_thread = threading.get_ident()
        last_report = self.loop.time()
        while True:
            try:
                await wait_for(self._wake.wait(), self.report_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()
            if self.dropped and self.loop.time() - last_report >= self.report_interval:
                last_report = self.loop.time()
                self._report()

    async def flush(self) -> None:
        """Publish what is queued now (the drain task's step; also called once at shutdown)."""
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
            self._wake_pending = False
        self.sending = True
        try:
            for record in batch:
                await self._send(record)
        finally:
            self.sending = False

    async def _send(self, record: dict[str, Any]) -> None:
        body = json.dumps(record, separators=(",", ":")).encode()
        self._remember(record, len(body))
        try:
            await self._publish(self._subject(record["component_id"]), body)
            self.published += 1
        except Exception as e:
            # Never logged here, per record: the log would feed the stream that is failing.
            with self._lock:
                self.dropped += 1
                self.total_dropped += 1
            self.last_error = f"{type(e).__name__}: {e}"

    def _remember(self, record: dict[str, Any], size: int) -> None:
        ring = self._ring
        if ring.maxlen is not None and len(ring) == ring.maxlen:
            self._ring_size -= ring[0][1]
        ring.append((record, size))
        self._ring_size += size
        while self._ring_size > self.ring_bytes and len(ring) > 1:
            self._ring_size -= ring.popleft()[1]

    def _report(self) -> None:
        with self._lock:
            dropped, self.dropped = self.dropped, 0
        log.warning(
            "log stream of host %s: dropped %s records in the last %g s (NATS slow or unreachable%s)",
            self.host_id,
            f"{dropped:,}",
            self.report_interval,
            f"; last error: {self.last_error}" if self.last_error else "",
        )

    def recent(
        self, component_id: str | None = None, limit: int = DEFAULT_RING, max_bytes: int | None = None
    ) -> list[dict[str, Any]]:
        """The last `limit` records published (of `component_id` if given), oldest first, in `max_bytes`."""
        out: list[dict[str, Any]] = []
        total = 0
        for record, size in reversed(self._ring):
            if component_id is not None and record["component_id"] != component_id:
                continue
            if len(out) >= limit or (max_bytes is not None and total + size + 1 > max_bytes):
                break
            out.append(record)
            total += size + 1
        out.reverse()
        return out

    def handler(self) -> LatticeLogHandler:
        """A logging handler that streams the host's own records at INFO and above."""
        return LatticeLogHandler(self)


class LatticeLogHandler(logging.Handler):
    """Streams the `wasmlattice.*` records of a host (INFO and above) as component `_host`.

    Guest output (`wasmlattice.guest`) goes through the output limiter's tap instead, and the log
    stream's own logger is skipped, as is anything logged while this handler is emitting or (on the
    loop's thread) while the stream publishes.
    """

    def __init__(self, stream: LogStream, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.stream = stream
        self._inside = threading.local()
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        """Queue `record` on the log stream (never raises, never recurses)."""
        name = record.name
        if not (name == "wasmlattice" or name.startswith("wasmlattice.")):
            return
        if name == log.name or name == GUEST_LOGGER or name.startswith(GUEST_LOGGER + "."):
            return
        if getattr(self._inside, "active", False):
            return
        stream = self.stream
        if stream.sending and threading.get_ident() == stream.loop_thread:
            return
        self._inside.active = True
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + self._formatter.formatException(record.exc_info)
            if len(message) > MAX_HOST_MESSAGE:
                cut = len(message) - MAX_HOST_MESSAGE
                message = message[:MAX_HOST_MESSAGE] + f" [... {cut:,} more characters of this line cut]"
            self.stream.offer(
                HOST_COMPONENT, "host", level_name(record.levelno), f"{name}: {message}", ts=record.created
            )
        except Exception:
            pass  # a log line that cannot be streamed must not disturb the code that logged it
        finally:
            self._inside.active = False
