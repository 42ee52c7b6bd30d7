"""Running guests: the one path every guest call takes, whoever asked for it.

HTTP ingress, wRPC serving (custom interfaces and `wrpc:http`), messaging delivery and key-value
watch callbacks all run guests through `start_guest` (or `call_guest`, which waits for the
result). It owns what a call needs beyond the instance itself:

- the instance bound of the component (`Workload`, wasmCloud's `max_instances`), waited for up
  to the call's deadline;
- the inline-or-thread policy: a call is first tried on the event loop's own thread (a thread
  hand-off costs more than a short guest) and run again on a worker thread when it would have to
  wait for the loop or outlives a short budget; nothing it did has left the process by then;
- deadlines (the workload's, or a shorter one of the call);
- the hand-off between the loop and worker threads, in both directions: `Workload.to_thread`
  (loop -> wasm thread) and `from_thread` (wasm thread -> loop, for host functions that need
  asyncio code), named once like trio's `to_thread` / `from_thread`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from wasmlattice.runtime.fastcall import GuestTrap, Trap

T = TypeVar("T")

# How long a guest may run on the event loop's thread before the attempt is abandoned and the
# call is run again on a worker thread (it blocks every other connection meanwhile).
INLINE_BUDGET = 0.05


class DeadlineExceeded(Trap):
    """The guest's deadline passed while the host was waiting on its behalf."""


class NeedsLoop(Exception):
    """An inline guest run would have to wait for the event loop; the call is retried on a thread."""


class SlotTimeout(Exception):
    """No instance of a component became free before the call's deadline."""


class InlinePolicy:
    """Whether to try guests inline: stop for a while when most attempts had to be retried."""

    def __init__(self) -> None:
        self.score = 0.0
        self.skip = 0

    def enabled(self) -> bool:
        """Whether to try the next guest inline."""
        if self.skip > 0:
            self.skip -= 1
            return False
        return True

    def record(self, ok: bool) -> None:
        """Record whether an inline attempt finished (True) or had to be retried."""
        self.score = 0.9 * self.score + (0.0 if ok else 0.1)
        if self.score > 0.5:
            self.skip = 200
            self.score = 0.0


def interrupted(e: GuestTrap) -> bool:
    """Whether a trap is the deadline (epoch interruption or a host wait past it)."""
    return isinstance(e.cause, DeadlineExceeded) or "interrupt" in e.message


def retry_on_thread(e: GuestTrap, budget: float, limit: float) -> bool:
    """Whether an inline attempt that failed with `e` should run again on a worker thread.

    It should when the guest had to wait for the loop, or when the short inline budget (not the
    call's own, longer, limit) interrupted it.
    """
    return isinstance(e.cause, NeedsLoop) or (interrupted(e) and limit > budget)


class Workload:
    """What running one component's guests needs: worker threads, an instance bound, inline policy.

    `max_concurrency` bounds how many guests of the component run at once (wasmCloud's
    `max_instances`), whatever export they serve; None means unbounded (`wasmlattice run`, whose
    concurrency is bounded by its threads).
    """

    def __init__(
        self, name: str, *, timeout: float, threads: int, max_concurrency: int | None = None
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wasm")
        self.inline = InlinePolicy()
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency is not None else None
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def limit(self, timeout: float | None) -> float:
        """The deadline of a call: the workload's, or the call's own when that is shorter."""
        return self.timeout if timeout is None else min(timeout, self.timeout)

    async def acquire(self, timeout: float | None = None) -> None:
        """Take an instance slot, waiting up to the deadline (or `timeout`); raises `SlotTimeout`."""
        limit = self.limit(timeout)
        if self._slots is not None:
            if not self._slots.locked():
                await self._slots.acquire()  # a free slot: no timer task needed
            else:
                try:
                    await asyncio.wait_for(self._slots.acquire(), limit)
                except TimeoutError:
                    raise SlotTimeout(
                        f"{self.name} is at its limit of {self.max_concurrency} concurrent instances "
                        f"and none became free within {limit:g}s"
                    ) from None
        self.active += 1
        self._idle.clear()

    def release(self) -> None:
        """Give back a slot taken by `acquire`."""
        if self._slots is not None:
            self._slots.release()
        self.active -= 1
        if self.active == 0:
            self._idle.set()

    def to_thread(self, fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
        """Run `fn(*args)` on one of the workload's worker threads; its result on the loop.

        `RuntimeError` if the workload was retired (its component replaced or stopped).
        """
        return asyncio.wrap_future(self.executor.submit(fn, *args))

    def try_inline(self, run: Callable[[float], T], limit: float) -> tuple[bool, T | None]:
        """Run `run(budget)` on the loop's thread: (True, result), or (False, None) to go to a thread.

        The attempt is abandoned when the guest would wait for the loop or outlives a short
        budget; a trap that is neither is the call's result (raised).
        """
        budget = min(limit, INLINE_BUDGET)
        try:
            value = run(budget)
        except GuestTrap as e:
            retry = retry_on_thread(e, budget, limit)
            self.inline.record(not retry)
            if retry:
                return False, None
            raise
        self.inline.record(True)
        return True, value

    async def retire(self, drain_timeout: float) -> None:
        """Wait (bounded) for in-flight calls to finish, then release the worker threads."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), drain_timeout)
        # Running guests finish on their threads; nothing new can be submitted once retired.
        self.executor.shutdown(wait=False, cancel_futures=False)


# Makes one attempt at a guest call: given whether it runs inline, a runner taking the time limit.
Attempt = Callable[[bool], Callable[[float], T]]


async def start_guest(
    workload: Workload,
    attempt: Attempt[T],
    *,
    timeout: float | None = None,
    inline: bool = True,
    wait: float | None = None,
) -> asyncio.Future[T]:
    """Start one guest call within `workload`; a future of its result, done once the guest returns.

    Takes an instance slot (waiting up to the deadline, or `wait` when that is shorter:
    `SlotTimeout`), tries the call inline
    when `inline` and the policy allow, and otherwise runs it on a worker thread. The slot is
    held until the guest returns, whoever waits for the result: a caller that streams a response
    while the guest runs (HTTP) awaits its own data and the future later.
    """
    limit = workload.limit(timeout)
    await workload.acquire(limit if wait is None else min(wait, limit))
    loop = asyncio.get_running_loop()
    try:
        if inline and workload.inline.enabled():
            done = loop.create_future()
            try:
                finished, value = workload.try_inline(attempt(True), limit)
            except BaseException as e:
                done.set_exception(e)
                finished, value = True, None
            else:
                if finished:
                    done.set_result(value)
            if finished:
                workload.release()
                return done
        fut = workload.to_thread(attempt(False), limit)
    except BaseException:
        workload.release()
        raise
    fut.add_done_callback(lambda _f: workload.release())
    return fut


async def call_guest(
    workload: Workload, attempt: Attempt[T], *, timeout: float | None = None, inline: bool = True
) -> T:
    """Run one guest call within `workload` (see `start_guest`) and wait for its result."""
    return await (await start_guest(workload, attempt, timeout=timeout, inline=inline))


def from_thread(
    loop: asyncio.AbstractEventLoop,
    make: Callable[[], Awaitable[T]],
    limit: float,
    *,
    deadline: float | None = None,
) -> T:
    """Run a coroutine on `loop` from a guest's worker thread and wait up to `limit` for its result.

    `concurrent.futures.TimeoutError` after `limit` (the coroutine is cancelled);
    `DeadlineExceeded` when the guest's own `deadline` (monotonic) has passed meanwhile.
    """
    fut = asyncio.run_coroutine_threadsafe(_awaitable(make), loop)
    try:
        return fut.result(limit)
    except concurrent.futures.TimeoutError:
        fut.cancel()
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded("deadline exceeded while waiting for the host") from None
        raise


async def _awaitable(make: Callable[[], Awaitable[T]]) -> T:
    return await make()
