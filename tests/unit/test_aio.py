"""`aio.wait_for`: a timeout that never loses a cancellation (Python 3.11's `asyncio.wait_for` can)."""

from __future__ import annotations

import asyncio

import pytest

from wasmlattice.aio import wait_for
from wasmlattice.apps.reconciler import Reconciler


async def cancel_as_it_is_woken(waiting: asyncio.Task[object], event: asyncio.Event) -> None:
    """Set `event` and cancel `waiting` in the same turn of the loop, then expect the cancellation."""
    await asyncio.sleep(0.01)  # `waiting` is now blocked on the event
    event.set()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_cancellation_that_arrives_with_the_result_is_not_lost() -> None:
    event = asyncio.Event()

    async def wait() -> str:
        await wait_for(event.wait(), 5)
        return "carried on"  # what Python 3.11's asyncio.wait_for does here

    await cancel_as_it_is_woken(asyncio.create_task(wait()), event)


async def test_timeout_and_result() -> None:
    with pytest.raises(TimeoutError):
        await wait_for(asyncio.sleep(5), 0.01)
    assert await wait_for(asyncio.sleep(0, "done"), 1) == "done"
    assert await wait_for(asyncio.sleep(0, "no limit"), None) == "no limit"


async def test_a_reconciler_stopped_while_an_event_wakes_it_stops() -> None:
    # The app manager's round loop waits in `idle()`; a lattice event (a host stopping) pokes it
    # while `wasmlattice down` stops the manager. Before, the loop ran on and the stop waited.
    rec = Reconciler(None, "test", interval=5.0)
    waiting = asyncio.create_task(rec.idle())
    await asyncio.sleep(0.01)
    rec.poke()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
