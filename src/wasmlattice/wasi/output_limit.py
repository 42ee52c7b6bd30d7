"""Guest output into the host's log, bounded: a rate limit per component and a longest line.

Everything a component's guests write to stdout and stderr, and every `wasi:logging` line, goes
through its `OutputLimiter`: token buckets of lines and bytes per second (each with a burst) shared
by all its instances, and a cap on the length of one line (longer lines are cut, the cut marked).
What does not fit is dropped and counted; the counts go to the log once per report interval
("component X: dropped 12,345 lines (3.2 MiB) of stdout in the last 10 s"). See docs/limits.md.

A lattice host also streams each admitted line to the lattice (docs/observability.md): the
limiter's `tap` gets `(stream, level, line)` for every line that passed, and nothing else, so the
stream is bounded by the same allowance as the log.

A token bucket is a few lines of arithmetic; a rate-limiting library would add a dependency for
less than this file does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from wasmlattice.runtime.budget import format_size

log = logging.getLogger("wasmlattice.guest")

# Markers guests print when an allocation fails (Python's MemoryError, Rust's alloc error
# handler, C's and Go's messages): with a memory limit set, the likely cause of the trap after.
_OOM_MARKERS = ("memoryerror", "memory allocation of", "out of memory")


@dataclass(frozen=True)
class OutputLimits:
    """How much output one component may send to the host's log (per host; see docs/limits.md)."""

    lines_per_s: float = 200.0
    bytes_per_s: float = 256 * 1024
    # Seconds of the rate a quiet component may spend at once (a traceback, a start-up banner).
    burst_s: float = 5.0
    max_line: int = 16 * 1024
    report_interval: float = 10.0

    def describe(self) -> str:
        """The limits in one phrase, for log lines."""
        return (
            f"{self.lines_per_s:g} lines/s, {format_size(int(self.bytes_per_s))}/s, "
            f"bursts of {self.burst_s:g} s, lines up to {format_size(self.max_line)}"
        )


class _Bucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.capacity = rate, max(rate * burst, 1.0)
        self.tokens = self.capacity

    def refill(self, elapsed: float) -> None:
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)


class OutputLimiter:
    """The output allowance of one component, shared by its instances and streams (thread-safe).

    `tap(stream, level, line)`, when given, is called with every admitted line after it is logged
    (stdout at `info`, stderr at `warn`, `wasi:logging` lines as stream `log` at the guest's level).
    """

    def __init__(
        self,
        component_id: str,
        limits: OutputLimits | None = None,
        tap: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.component_id = component_id
        self.limits = limits or OutputLimits()
        self.tap = tap
        self._lines = _Bucket(self.limits.lines_per_s, self.limits.burst_s)
        self._bytes = _Bucket(self.limits.bytes_per_s, self.limits.burst_s)
        self._last = time.monotonic()
        self._lock = threading.Lock()
        # Dropped since the last report, by stream: [lines, bytes].
        self.dropped: dict[str, list[int]] = {}
        self.total_dropped_lines = 0
        self._report_at: float | None = None
        self._timer: threading.Timer | None = None

    def admit(self, stream: str, size: int) -> bool:
        """Whether a line of `size` bytes on `stream` may be logged now; counts it if not."""
        with self._lock:
            now = time.monotonic()
            self._lines.refill(now - self._last)
            self._bytes.refill(now - self._last)
            self._last = now
            if self._lines.tokens >= 1 and self._bytes.tokens >= min(size, self._bytes.capacity):
                self._lines.tokens -= 1
                self._bytes.tokens -= size
                return True
            counts = self.dropped.setdefault(stream, [0, 0])
            counts[0] += 1
            counts[1] += size
            self.total_dropped_lines += 1
            if self._report_at is None:
                self._report_at = now
                self._schedule()
            return False

    def _schedule(self) -> None:
        # A daemon timer per report, only while something is being dropped: quiet components cost nothing.
        self._timer = threading.Timer(self.limits.report_interval, self.report)
        self._timer.daemon = True
        self._timer.start()

    def report(self) -> None:
        """Log what was dropped since the last report (nothing if nothing was)."""
        with self._lock:
            dropped, self.dropped = self.dropped, {}
            started, self._report_at = self._report_at, None
            self._timer = None
        if started is None:
            return
        seconds = max(1, round(time.monotonic() - started))
        for stream, (lines, size) in sorted(dropped.items()):
            log.warning(
                "component %s: dropped %s lines (%s) of %s in the last %d s (guest output limit: %s)",
                self.component_id,
                f"{lines:,}",
                format_size(size),
                stream,
                seconds,
                self.limits.describe(),
            )

    def close(self) -> None:
        """Report what is pending now and stop the timer (the component stopped)."""
        timer = self._timer
        if timer is not None:
            timer.cancel()
        self.report()


class LineSink:
    """Guest bytes on one stream, cut into lines of at most `max_line` bytes, each passed to `emit`.

    A line longer than the cap is emitted cut, with a marker saying how much was left out; the
    rest up to its newline is skipped. `emit(text)` is only called for lines the limiter admits.
    `on_oom()` is called when a line says an allocation failed (see `_OOM_MARKERS`).
    """

    def __init__(
        self,
        limiter: OutputLimiter,
        stream: str,
        emit: Callable[[str], None],
        on_oom: Callable[[], None] | None = None,
    ) -> None:
        self.limiter = limiter
        self.stream = stream
        self.emit = emit
        self.on_oom = on_oom
        self.buf = bytearray()
        # The head of a line longer than the cap, and how many bytes of it were skipped.
        self.head: bytes | None = None
        self.skipped = 0

    def write(self, data: bytes) -> None:
        """Take guest output; emit each complete line."""
        cap = self.limiter.limits.max_line
        pos, n = 0, len(data)
        while pos < n:
            nl = data.find(b"\n", pos)
            end = n if nl < 0 else nl
            if self.head is None:
                room = cap - len(self.buf)
                if end - pos <= room:
                    self.buf += data[pos:end]
                else:
                    self.buf += data[pos : pos + room]
                    self.head = bytes(self.buf)
                    self.buf.clear()
                    self.skipped = end - pos - room
            else:
                self.skipped += end - pos
            if nl < 0:
                return
            self._finish()
            pos = nl + 1

    def flush(self) -> None:
        """Emit a last line without its newline (the call ended)."""
        if self.buf or self.head is not None:
            self._finish()

    def _finish(self) -> None:
        if self.head is not None:
            line = (
                self.head.decode("utf-8", "replace") + f" [... {self.skipped:,} more bytes of this line cut]"
            )
            self.head, self.skipped = None, 0
        else:
            line = self.buf.decode("utf-8", "replace").rstrip("\r")
        self.buf.clear()
        if self.on_oom is not None and any(m in line.lower() for m in _OOM_MARKERS):
            self.on_oom()
        if self.limiter.admit(self.stream, len(line)):
            self.emit(line)
            tap = self.limiter.tap
            if tap is not None:
                tap(self.stream, "info" if self.stream == "stdout" else "warn", line)
