"""Running the event loop (uvloop when it is installed: markedly faster for HTTP and NATS), and
waiting with a timeout without losing a cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a new uvloop (or asyncio) event loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """`asyncio.wait_for` that never loses a cancellation: `TimeoutError` after `timeout` seconds.

    On Python 3.11, `asyncio.wait_for` runs a coroutine in a task of its own and, when the task
    waiting on it is cancelled just as that inner task finishes, returns its result and drops the
    cancellation (https://github.com/python/cpython/issues/86296). A loop stopped that way carries
    on, and whoever stopped it waits forever: an app manager woken by a lattice event as it was
    being stopped kept running its rounds. Python 3.12 rebuilt `wait_for` on `asyncio.timeout`
    (https://github.com/python/cpython/pull/98518); this is the same on 3.11. The awaitable runs
    in the calling task, so its context variables are the caller's.
    """
    async with asyncio.timeout(timeout):
        return await aw
