"""Running guests: the one path every guest call takes, whoever asked for it.

HTTP ingress, wRPC serving (custom interfaces and `wrpc:http`), messaging delivery and key-value
watch callbacks all run guests through `start_guest` (or `call_guest`, which waits for the
result). It owns what a call needs beyond the instance itself:

- the instance bound of the component (`Workload`, wasmCloud's `max_instances`), waited for up
  to the call's deadline;
- the inline-or-thread policy: a call is first tried on the event loop's own thread (a thread
  hand-off costs more than a short guest) and run again on a worker thread when it would have to
  wait for the loop or outlives a short budget; nothing it did has left the process by then;
- deadlines (the workload's, or a shorter one of the call), and interruption: every call has an
  `Interruption` (its caller may pass one, e.g. to stop it when the HTTP client goes away), and a
  retired workload interrupts the calls still running after a short grace (`runtime.interrupt`);
- the host's own cap on concurrent calls across components (`HostGate`), waited for a bounded time;
- the hand-off between the loop and worker threads, in both directions: `Workload.to_thread`
  (loop -> wasm thread) and `from_thread` (wasm thread -> loop, for host functions that need
  asyncio code), named once like trio's `to_thread` / `from_thread`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from wasmlattice.aio import wait_for
from wasmlattice.observability import tracing
from wasmlattice.runtime import interrupt
from wasmlattice.runtime.fastcall import GuestTrap
from wasmlattice.runtime.interrupt import DeadlineExceeded, Interrupted, Interruption

if TYPE_CHECKING:  # the OpenTelemetry SDK is imported only when metrics are on
    from wasmlattice.observability.metrics import ComponentMetrics

__all__ = ["DeadlineExceeded", "HostBusy", "HostGate", "Interrupted", "Interruption", "SlotTimeout"]

T = TypeVar("T")
log = logging.getLogger(__name__)

# How long a guest may run on the event loop's thread before the attempt is abandoned and the
# call is run again on a worker thread (it blocks every other connection meanwhile).
INLINE_BUDGET = 0.05


class NeedsLoop(Exception):
    """An inline guest run would have to wait for the event loop; the call is retried on a thread."""


class SlotTimeout(Exception):
    """No instance of a component became free before the call's deadline."""


class HostBusy(SlotTimeout):
    """The host runs its maximum of concurrent invocations and none ended within the admission wait."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# Default of `--max-concurrent-invocations`: guests running at once on one host, all components
# together. Each running guest holds a worker thread and its instance's memory; on a small machine
# a few hundred is already far past what the CPUs can serve, so more only adds latency and memory.
DEFAULT_MAX_CONCURRENT_INVOCATIONS = 256
# How long a call past the host's cap waits for a slot before it is refused (503 / wRPC error).
DEFAULT_ADMISSION_WAIT = 1.0


class HostGate:
    """The host's cap on concurrent guest calls, across every component (`--max-concurrent-invocations`).

    A call past the cap waits up to `admission_wait` seconds for a slot, then fails with
    `HostBusy`, whose `retry_after` a caller can pass on (HTTP `Retry-After`).
    """

    def __init__(self, limit: int, admission_wait: float = DEFAULT_ADMISSION_WAIT) -> None:
        if limit < 1:
            raise ValueError(f"max concurrent invocations must be at least 1, got {limit}")
        self.limit = limit
        self.admission_wait = admission_wait
        self._slots = asyncio.Semaphore(limit)
        self.refused = 0

    async def acquire(self, wait: float) -> None:
        """Take a slot, waiting up to `min(wait, admission_wait)`; `HostBusy` if none came free."""
        if not self._slots.locked():
            await self._slots.acquire()
            return
        limit = min(wait, self.admission_wait)
        try:
            await wait_for(self._slots.acquire(), limit)
        except TimeoutError:
            self.refused += 1
            raise HostBusy(
                f"the host runs its maximum of {self.limit} concurrent invocations "
                f"(--max-concurrent-invocations) and none ended within {limit:g}s",
                retry_after=max(1, round(self.admission_wait)),
            ) from None

    def release(self) -> None:
        """Give back a slot taken by `acquire`."""
        self._slots.release()


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
    """Whether a trap is the deadline (epoch interruption or a host wait past it).

    An `Interrupted` trap (client gone, component stopped) is not: nobody waits for a 504.
    """
    if isinstance(e.cause, Interrupted):
        return False
    return isinstance(e.cause, DeadlineExceeded) or "interrupt" in e.message


def stopped(e: BaseException | None) -> str | None:
    """Why a guest was interrupted before its deadline (client gone, component stopped), or None."""
    if isinstance(e, GuestTrap) and isinstance(e.cause, Interrupted):
        return str(e.cause)
    return None


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
        # The host's cap across components (None: none), and the interruption of each call in flight.
        self.gate: HostGate | None = None
        self.calls: set[Interruption] = set()
        # Where each call's invocation, error and duration are counted (None: metrics are off).
        self.metrics: ComponentMetrics | None = None

    def limit(self, timeout: float | None) -> float:
        """The deadline of a call: the workload's, or the call's own when that is shorter."""
        return self.timeout if timeout is None else min(timeout, self.timeout)

    async def acquire(self, timeout: float | None = None) -> None:
        """Take a host slot and an instance slot, waiting up to the deadline (or `timeout`).

        Raises `HostBusy` (the host's cap) or `SlotTimeout` (the component's).
        """
        limit = self.limit(timeout)
        if self.gate is not None:
            await self.gate.acquire(limit)
        try:
            await self._acquire_instance(limit)
        except BaseException:
            if self.gate is not None:
                self.gate.release()
            raise
        self.active += 1
        self._idle.clear()

    async def _acquire_instance(self, limit: float) -> None:
        if self._slots is not None:
            if not self._slots.locked():
                await self._slots.acquire()  # a free slot: no timer needed
            else:
                try:
                    await wait_for(self._slots.acquire(), limit)
                except TimeoutError:
                    raise SlotTimeout(
                        f"{self.name} is at its limit of {self.max_concurrency} concurrent instances "
                        f"and none became free within {limit:g}s"
                    ) from None

    def release(self) -> None:
        """Give back the slots taken by `acquire`."""
        if self._slots is not None:
            self._slots.release()
        if self.gate is not None:
            self.gate.release()
        self.active -= 1
        if self.active == 0:
            self._idle.set()

    def to_thread(
        self,
        fn: Callable[..., T],
        *args: object,
        token: Interruption | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Future[T]:
        """Run `fn(*args)` on one of the workload's worker threads; its result on the loop.

        `token` is the interruption the guest call checks while it runs there; `context` the
        contextvars it runs in (the guest-call span's, when traced).
        `RuntimeError` if the workload was retired (its component replaced or stopped).
        """
        if context is not None:
            return asyncio.wrap_future(self.executor.submit(context.run, _with_token, token, fn, *args))
        if token is None:
            return asyncio.wrap_future(self.executor.submit(fn, *args))
        return asyncio.wrap_future(self.executor.submit(_with_token, token, fn, *args))

    def interrupt_all(self, reason: str) -> list[str]:
        """Interrupt every call of this workload still running; what each served (for logs)."""
        labels = []
        for token in list(self.calls):
            if token.reason is None:
                token.interrupt(reason)
                labels.append(token.label or "a call")
        return labels

    def try_inline(
        self, run: Callable[[float], T], limit: float, token: Interruption | None = None
    ) -> tuple[bool, T | None]:
        """Run `run(budget)` on the loop's thread: (True, result), or (False, None) to go to a thread.

        The attempt is abandoned when the guest would wait for the loop or outlives a short
        budget; a trap that is neither is the call's result (raised).
        """
        budget = min(limit, INLINE_BUDGET)
        prev = interrupt.set_current(token)
        try:
            value = run(budget)
        except GuestTrap as e:
            retry = retry_on_thread(e, budget, limit)
            self.inline.record(not retry)
            if retry:
                return False, None
            raise
        finally:
            interrupt.set_current(prev)
        self.inline.record(True)
        return True, value

    async def retire(self, drain_timeout: float, reason: str = "its component was stopped") -> list[str]:
        """Wait (bounded) for in-flight calls to finish, interrupt the rest, release the threads.

        Returns what the interrupted calls served (empty when everything finished in time).
        """
        with contextlib.suppress(TimeoutError):
            await wait_for(self._idle.wait(), drain_timeout)
        cut = self.interrupt_all(reason)
        if cut:
            log.warning(
                "%s: interrupted %d call(s) still running after %gs (%s): %s",
                self.name,
                len(cut),
                drain_timeout,
                reason,
                ", ".join(cut),
            )
        # Interrupted guests end on their threads within interrupt.CHECK_SECONDS; nothing new
        # can be submitted once retired.
        self.executor.shutdown(wait=False, cancel_futures=False)
        return cut


# Makes one attempt at a guest call: given whether it runs inline, a runner taking the time limit.
Attempt = Callable[[bool], Callable[[float], T]]


def _with_token(token: Interruption | None, fn: Callable[..., T], *args: object) -> T:
    prev = interrupt.set_current(token)
    try:
        return fn(*args)
    finally:
        interrupt.set_current(prev)


async def start_guest(
    workload: Workload,
    attempt: Attempt[T],
    *,
    timeout: float | None = None,
    inline: bool = True,
    wait: float | None = None,
    token: Interruption | None = None,
    operation: str = "",
) -> asyncio.Future[T]:
    """Start one guest call within `workload`; a future of its result, done once the guest returns.

    Takes an instance slot (waiting up to the deadline, or `wait` when that is shorter:
    `SlotTimeout`), tries the call inline
    when `inline` and the policy allow, and otherwise runs it on a worker thread. The slot is
    held until the guest returns, whoever waits for the result: a caller that streams a response
    while the guest runs (HTTP) awaits its own data and the future later. `token` lets the caller
    interrupt the guest (the workload interrupts it too when retired).

    With metrics on (`workload.metrics`), the call is counted as an invocation of `operation`
    (`ns:pkg/iface/func`), with its duration until the guest returned, and as an error when it
    was refused or failed. A runner that hands its failure to someone else instead of raising
    it (HTTP's, to its exchange) returns the exception, so that it still counts as an error.
    """
    metrics = workload.metrics
    began = time.perf_counter_ns() if metrics is not None else 0
    limit = workload.limit(timeout)
    # Traced, the call is one span from here to the guest's return; untraced, `span` stays None.
    span = _guest_span(workload) if tracing.enabled() else None
    try:
        await workload.acquire(limit if wait is None else min(wait, limit))
    except BaseException as e:
        if span is not None:
            _end_guest(span, e)
        if metrics is not None:
            metrics.invoked(operation, time.perf_counter_ns() - began, True)
        raise
    loop = asyncio.get_running_loop()
    token = token if token is not None else Interruption(workload.name)
    workload.calls.add(token)
    # The context the guest runs in: its span is current there, on the loop's thread or a worker's.
    ctx = None if span is None else tracing.context_with(span)

    def release() -> None:
        workload.calls.discard(token)
        workload.release()

    try:
        if inline and workload.inline.enabled():
            done = loop.create_future()
            try:
                if ctx is None:
                    finished, value = workload.try_inline(attempt(True), limit, token)
                else:
                    finished, value = ctx.run(workload.try_inline, attempt(True), limit, token)
            except BaseException as e:
                done.set_exception(e)
                finished, value = True, None
            else:
                if finished:
                    done.set_result(value)
            if finished:
                release()
                if span is not None:
                    span.set_attribute(tracing.INLINE, True)
                    _end_guest(span, done.exception())
                if metrics is not None:
                    _measured(done, metrics, operation, began)
                return done
        fut = workload.to_thread(attempt(False), limit, token=token, context=ctx)
    except BaseException as e:
        release()
        if span is not None:
            _end_guest(span, e)
        if metrics is not None:
            metrics.invoked(operation, time.perf_counter_ns() - began, True)
        raise
    fut.add_done_callback(lambda _f: release())
    if span is not None:
        span.set_attribute(tracing.INLINE, False)
        fut.add_done_callback(lambda f: _end_guest(span, None if f.cancelled() else f.exception()))
    if metrics is not None:
        fut.add_done_callback(lambda f: _measured(f, metrics, operation, began))
    return fut


def _guest_span(workload: Workload) -> tracing.Span | None:
    return tracing.start_span(f"guest {workload.name}", attributes={tracing.COMPONENT_ID: workload.name})


def outcome(e: BaseException) -> tuple[str, str]:
    """How a guest call failed, for its span: (outcome, message), the message a trap's reason."""
    if isinstance(e, GuestTrap):
        if interrupted(e):
            reason = e.reason
            return "deadline", reason if "deadline" in reason else f"deadline exceeded ({reason})"
        if stopped(e) is not None:
            return "interrupted", e.reason
        return "trap", e.reason
    if isinstance(e, SlotTimeout):
        return "busy", str(e)
    return "error", f"{type(e).__name__}: {e}"


def note_failure(e: BaseException) -> None:
    """Mark the current guest-call span failed by `e` (for callers that catch a guest's failure
    on its thread and report it some other way, as HTTP ingress does)."""
    span = tracing.current_span()
    if span is not None:
        kind, message = outcome(e)
        tracing.fail(span, message, {tracing.OUTCOME: kind})


def _end_guest(span: tracing.Span, error: BaseException | None) -> None:
    if error is not None:
        kind, message = outcome(error)
        tracing.fail(span, message, {tracing.OUTCOME: kind})
    elif not tracing.failed(span):
        span.set_attribute(tracing.OUTCOME, "ok")
    span.end()


def _measured(fut: asyncio.Future[T], metrics: ComponentMetrics, operation: str, began: int) -> None:
    """Count a finished guest call: its duration since `began`, and whether it failed."""
    failed = fut.cancelled() or fut.exception() is not None or isinstance(fut.result(), BaseException)
    metrics.invoked(operation, time.perf_counter_ns() - began, failed)


async def call_guest(
    workload: Workload,
    attempt: Attempt[T],
    *,
    timeout: float | None = None,
    inline: bool = True,
    token: Interruption | None = None,
    operation: str = "",
) -> T:
    """Run one guest call within `workload` (see `start_guest`) and wait for its result."""
    return await (
        await start_guest(workload, attempt, timeout=timeout, inline=inline, token=token, operation=operation)
    )


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
