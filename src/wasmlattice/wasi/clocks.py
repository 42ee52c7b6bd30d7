"""`wasi:clocks` 0.2: monotonic clock (with timer pollables) and wall clock."""

from __future__ import annotations

import time

from wasmlattice.runtime.linking import HostInterface
from wasmlattice.wasi.ctx import ctx
from wasmlattice.wasi.io import Pollable


def _mono_now() -> int:
    return time.monotonic_ns()


def _subscribe_instant(when: int) -> Pollable:
    now = time.monotonic_ns()
    return Pollable(ctx(), deadline=time.monotonic() + max(0, when - now) / 1e9)


def _subscribe_duration(d: int) -> Pollable:
    return Pollable(ctx(), deadline=time.monotonic() + d / 1e9)


def _wall_now() -> tuple[int, int]:
    ns = time.time_ns()
    return (ns // 1_000_000_000, ns % 1_000_000_000)


def interfaces() -> list[HostInterface]:
    """The `wasi:clocks` interfaces."""
    return [
        HostInterface(
            "wasi:clocks/monotonic-clock",
            {
                "now": _mono_now,
                "resolution": lambda: 1,
                "subscribe-instant": _subscribe_instant,
                "subscribe-duration": _subscribe_duration,
            },
        ),
        HostInterface(
            "wasi:clocks/wall-clock",
            {"now": _wall_now, "resolution": lambda: (0, 1)},
        ),
    ]
