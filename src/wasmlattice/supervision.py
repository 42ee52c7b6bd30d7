"""One supervisor for long-lived asyncio tasks: restart with backoff, logging without floods, state.

A `Supervisor` owns every task its owner starts, on one `asyncio.TaskGroup`, so no task outlives it
(docs/architecture.md, "Supervision like OTP"). Its owner starts and stops it (`await sup.start()` /
`await sup.stop(timeout)`, or `async with Supervisor("host") as sup:`), and hands it down to whoever
runs tasks on its behalf. Three kinds of work run under it:

- `supervise(name, factory)`: a long-lived activity. `factory()` is awaited again after it fails
  (and, for a `"permanent"` one, after it returns), first after `first_retry` seconds, doubling up
  to `max_retry`; back to `first_retry` once a run has lasted `stable_after` seconds or called
  `healthy()`. The restart kinds are OTP's: permanent, transient (restarted only after a failure)
  and temporary (never restarted).
- `spawn(name, coro)`: a one-off background task (a request handler, work after a reply); a failure
  is logged with its traceback. `stop` waits for these up to its timeout, then cancels them.
- `resync(name, action)`: re-runs `action` after each `poke()`, one run at a time, merging bursts of
  pokes into one run; a failed run is retried with backoff (what providers that follow lattice
  changes need).

Failures are logged without flooding: the first failure, and any failure whose text differs from
the previous one, at WARNING (with a traceback unless the exception is expected: `RetryLater` or a
type given in `expected`); the same failure again at DEBUG, with a WARNING reminder at most every
`REPEAT_LOG_S`; recovery at INFO. `state()` reports every child for health and status output.
A supervisor may have a parent (`Supervisor(name, parent=sup)`): it then runs inside the parent's
task group, is stopped with it, and shows in its state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

log = logging.getLogger(__name__)

DEFAULT_FIRST_RETRY_S = 0.5
DEFAULT_MAX_RETRY_S = 30.0
# While a child keeps failing the same way, that failure is logged again at WARNING at most this often.
REPEAT_LOG_S = 60.0
# How long `stop` waits for spawned one-off tasks before cancelling them.
DEFAULT_STOP_TIMEOUT_S = 5.0
# A cancelled task still running after this long is cancelled again (see `cancel_until_done`),
# and one still running after `STUCK_AFTER_S` is reported at WARNING.
RECANCEL_S = 0.2
STUCK_AFTER_S = 5.0

Restart = Literal["permanent", "transient", "temporary"]
ExceptionTypes = tuple[type[BaseException], ...]


async def cancel_until_done(
    tasks: Iterable[asyncio.Task[Any]], owner: str, logger: logging.Logger = log
) -> None:
    """Cancel `tasks` and wait until each has ended, cancelling again every `RECANCEL_S` any that
    is still running.

    Cancelling once is not always enough: code can swallow a cancellation and carry on. Python
    3.11's `asyncio.wait_for` returns the result when the cancellation arrives with it
    (https://github.com/python/cpython/issues/86296), and nats-py waits for every reply that way,
    so a task stopped while a NATS reply comes in often carries on; nats-py's `drain()` and
    `_flush_pending()` also catch `CancelledError`. Waiting once for such a task would hang whoever
    stops it. That is routine, so it is logged at DEBUG; a task still running `STUCK_AFTER_S`
    later is not, and is logged at WARNING.
    """
    pending = {t for t in tasks if not t.done()}
    if not pending:
        return
    loop = asyncio.get_running_loop()
    began = loop.time()
    logged_again = warned = False
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
        if not pending:
            break
        names = ", ".join(sorted(t.get_name() for t in pending))
        if not logged_again:
            logged_again = True
            logger.debug("%s: %s carried on after being cancelled; cancelling again", owner, names)
        waited = loop.time() - began
        if not warned and waited >= STUCK_AFTER_S:
            warned = True
            logger.warning(
                "%s: %s still running %.0fs after being cancelled; cancelling again every %gs",
                owner,
                names,
                waited,
                RECANCEL_S,
            )


def where_tasks_wait(exclude: Iterable[asyncio.Future[Any]] = ()) -> list[str]:
    """One line per unfinished task of the running loop: its name and the coroutines it is
    suspended in, down to where it waits (`_await_chain`; at most five shown).

    For a stop that takes too long, so that the log names what it waits for.
    """
    skip = set(exclude)
    current = asyncio.current_task()
    lines = []
    for task in asyncio.all_tasks():
        if task is current or task in skip or task.done():
            continue
        chain = _await_chain(task)
        if len(chain) > 5:
            chain = [chain[0], "…", *chain[-3:]]
        lines.append(f"{task.get_name()} in {' > '.join(chain) or 'nothing yet'}")
    return sorted(lines)


def _await_chain(task: asyncio.Task[Any]) -> list[str]:
    """The coroutines `task` is suspended in, outermost first, as `function (file:line)`.

    `Task.get_stack()` gives only the outermost frame of a suspended task; the coroutine each one
    awaits (`cr_await`) leads to where it actually waits.
    """
    chain: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and len(chain) < 50:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        chain.append(f"{code.co_name} ({code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


class SupervisorError(RuntimeError):
    """The supervisor cannot take the work: it is not running, or a child of that name exists."""


class RetryLater(Exception):
    """An expected failure whose message says what and why: logged without a traceback, then retried.

    Raised by a supervised activity or a resync action after it did what it could (e.g. a port is
    taken); the supervisor runs it again after the backoff delay.
    """


@dataclass(frozen=True)
class ChildState:
    """One child as health and status output show it.

    `failing_since` is the wall-clock time (`time.time()`) of the first of the current run of
    failures; `next_retry_in` the seconds until the next attempt, when one is scheduled.
    """

    name: str
    kind: Literal["supervised", "resync"]
    running: bool
    failures: int
    failing_since: float | None
    last_error: str | None
    next_retry_in: float | None
    restarts: int


@dataclass(frozen=True)
class SupervisorState:
    """A supervisor's children, its running one-off tasks and its child supervisors."""

    name: str
    running: bool
    children: tuple[ChildState, ...]
    spawned: int
    spawn_failures: int
    supervisors: tuple[SupervisorState, ...]

    @property
    def healthy(self) -> bool:
        """Whether no child here or below is failing."""
        return all(c.failures == 0 for c in self.children) and all(s.healthy for s in self.supervisors)


class _Failures:
    """Consecutive failures of one child, the backoff they imply, and their flood-free logging."""

    def __init__(self, what: str, logger: logging.Logger, first_retry: float, max_retry: float) -> None:
        self.what = what
        self.logger = logger
        self.first_retry = first_retry
        self.max_retry = max_retry
        self.count = 0
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self._since = 0.0
        self._last_warned = 0.0

    def failed(self, headline: str, text: str, error: BaseException | None, retry: str) -> float:
        """Record and log a failure; the delay before the next attempt."""
        now = time.monotonic()
        if self.count == 0:
            self._since = now
            self.failing_since = time.time()
        self.count += 1
        delay = min(self.first_retry * 2.0 ** min(self.count - 1, 32), self.max_retry)
        repeat = text == self.last_error
        self.last_error = text
        if not repeat or now - self._last_warned >= REPEAT_LOG_S:
            shown = text
            if repeat:
                shown = f"still failing after {self.count} attempts in {now - self._since:.0f}s: {text}"
            # The traceback helps once; a reminder of the same failure needs none.
            trace = error if error is not None and not repeat else None
            self.logger.warning("%s: %s; %s in %.1fs", headline, shown, retry, delay, exc_info=trace)
            self._last_warned = now
        else:
            self.logger.debug(
                "%s: attempt %d failed again: %s; %s in %.1fs", self.what, self.count, text, retry, delay
            )
        return delay

    def succeeded(self) -> None:
        """Record a success; log the recovery if it ends a run of failures."""
        if self.count:
            self.logger.info(
                "%s: recovered after %d failed attempts in %.1fs",
                self.what,
                self.count,
                time.monotonic() - self._since,
            )
        self.count = 0
        self.last_error = None
        self.failing_since = None


def _describe(error: Exception, expected: ExceptionTypes) -> tuple[str, BaseException | None]:
    """The logged text of a failure, and the exception whose traceback to log (None if expected)."""
    if isinstance(error, (RetryLater, *expected)):
        return str(error) or type(error).__name__, None
    # An unexpected error: its type and traceback help whoever reads the log.
    return f"{type(error).__name__}: {error}", error


class _Child:
    """What the supervisor holds of a long-lived child (a supervised activity or a resync)."""

    kind: Literal["supervised", "resync"]

    def __init__(self, sup: Supervisor, name: str, failures: _Failures) -> None:
        self.sup = sup
        self.name = name
        self._failures = failures
        self.task: asyncio.Task[None] | None = None
        self.restarts = 0

    async def main(self) -> None:
        """The child's whole life, run as one task of the supervisor's group."""
        raise NotImplementedError

    def next_retry_in(self) -> float | None:
        """Seconds until the next attempt after a failure, None if none is scheduled."""
        raise NotImplementedError

    @property
    def failures(self) -> int:
        """Consecutive failures (0 when the last run succeeded or none has failed)."""
        return self._failures.count

    @property
    def last_error(self) -> str | None:
        """Why the last run failed (as logged), None if it succeeded or none has run."""
        return self._failures.last_error

    def state(self) -> ChildState:
        """This child as status output shows it."""
        return ChildState(
            name=self.name,
            kind=self.kind,
            running=self.task is not None and not self.task.done(),
            failures=self._failures.count,
            failing_since=self._failures.failing_since,
            last_error=self._failures.last_error,
            next_retry_in=self.next_retry_in(),
            restarts=self.restarts,
        )

    async def stop(self) -> None:
        """Stop this child alone (cancel its task and wait for it); the supervisor runs on."""
        await self.sup._remove(self)


class Supervised(_Child):
    """A long-lived activity restarted with backoff; returned by `Supervisor.supervise`."""

    kind: Literal["supervised", "resync"] = "supervised"

    def __init__(
        self,
        sup: Supervisor,
        name: str,
        factory: Callable[[], Awaitable[None]],
        *,
        restart: Restart,
        first_retry: float,
        max_retry: float,
        stable_after: float | None,
        expected: ExceptionTypes,
    ) -> None:
        super().__init__(sup, name, _Failures(f"{sup.name}/{name}", sup.logger, first_retry, max_retry))
        self.factory = factory
        self.restart = restart
        # A run that lasts longer than the longest backoff is taken as recovered.
        self.stable_after = max_retry if stable_after is None else stable_after
        self.expected = expected
        self._retry_at: float | None = None

    def healthy(self) -> None:
        """Called by the activity once it works again: logs the recovery and resets the backoff."""
        self._failures.succeeded()

    def next_retry_in(self) -> float | None:
        """Seconds until the restart after a failure, None if none is scheduled."""
        if self._retry_at is None:
            return None
        return max(0.0, self._retry_at - asyncio.get_running_loop().time())

    async def main(self) -> None:
        """Run the factory, restarting it as `restart` says, until cancelled."""
        loop = asyncio.get_running_loop()
        headline = f"{self._failures.what} failed"
        while True:
            self._retry_at = None
            timer = loop.call_later(self.stable_after, self.healthy) if self.failures else None
            try:
                await self.factory()
            except Exception as e:
                text, trace = _describe(e, self.expected)
                if self.restart == "temporary":
                    self.sup.logger.warning("%s: %s; not restarted", headline, text, exc_info=trace)
                    self._failures.count += 1
                    self._failures.last_error = text
                    return
                delay = self._failures.failed(headline, text, trace, "restarting")
            else:
                if self.restart != "permanent":
                    return
                delay = self._failures.failed(
                    headline, "it returned without being stopped", None, "restarting"
                )
            finally:
                if timer is not None:
                    timer.cancel()
            self._retry_at = loop.time() + delay
            await asyncio.sleep(delay)
            self.restarts += 1


class Resync(_Child):
    """Re-runs `action` after each `poke()`, one run at a time, merging bursts of pokes into one run.

    A run that raises is logged with its cause and run again with backoff (`first_retry` doubling up
    to `max_retry`, back to `first_retry` after a run that succeeds), without waiting for another
    poke; a poke meanwhile runs it at once. Returned by `Supervisor.resync`.
    """

    kind: Literal["supervised", "resync"] = "resync"

    def __init__(
        self,
        sup: Supervisor,
        name: str,
        action: Callable[[], Awaitable[None]],
        *,
        what: str,
        failure: str,
        first_retry: float,
        max_retry: float,
        expected: ExceptionTypes,
    ) -> None:
        super().__init__(sup, name, _Failures(what, sup.logger, first_retry, max_retry))
        self.action = action
        self.failure = failure
        self.expected = expected
        self._wake = asyncio.Event()
        # Pokes asked for so far, and how many of them the runs finished so far have covered.
        self._asked = 0
        self._covered = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._retry: asyncio.TimerHandle | None = None
        self._stopped = False

    def poke(self, _event: object = None) -> None:
        """Ask for a run (soon); pokes during a run ask for one more run after it."""
        if self._stopped:
            return
        self._asked += 1
        self._wake.set()

    async def run_now(self) -> None:
        """Run the action now and wait for it; a failure is logged and retried as after a poke."""
        self.poke()
        if self._stopped:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((self._asked, waiter))
        await waiter

    def next_retry_in(self) -> float | None:
        """Seconds until the scheduled retry of a failed run, None if none is scheduled."""
        if self._retry is None:
            return None
        return max(0.0, self._retry.when() - asyncio.get_running_loop().time())

    async def main(self) -> None:
        """Wait for pokes and run the action for them, until cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                # This run supersedes a scheduled retry; a failure below schedules the next one.
                self._drop_retry()
                covers = self._asked
                try:
                    await self.action()
                except Exception as e:
                    text, trace = _describe(e, self.expected)
                    if trace is not None:
                        text = f"{self.failure}: {text}"
                    delay = self._failures.failed(self.what, text, trace, "retrying")
                    self._retry = loop.call_later(delay, self.poke)
                    self.restarts += 1
                else:
                    self._failures.succeeded()
                self._covered = covers
                self._release()
        finally:
            self._drop_retry()
            for _, waiter in self._waiters:
                waiter.cancel()
            self._waiters.clear()

    @property
    def what(self) -> str:
        """What this resync keeps in step, as its log lines name it."""
        return self._failures.what

    def _release(self) -> None:
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for asked, waiter in self._waiters:
            if asked <= self._covered:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                keep.append((asked, waiter))
        self._waiters = keep

    def _drop_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    async def stop(self) -> None:
        """Stop running (a run in progress is cancelled, a scheduled retry dropped)."""
        self._stopped = True
        self._drop_retry()
        await super().stop()


class Supervisor:
    """Owns long-lived tasks on one `asyncio.TaskGroup`: restarts them, reports them, stops them."""

    def __init__(
        self, name: str, *, parent: Supervisor | None = None, logger: logging.Logger | None = None
    ) -> None:
        self.name = name
        self.parent = parent
        # Log under the owner's logger, so that its log lines sit with the owner's own.
        self.logger: logging.Logger = logger or (parent.logger if parent is not None else log)
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._done: asyncio.Event | None = None
        self._accepting = False
        self._stopping = False
        self._children: dict[str, _Child] = {}
        self._spawned: set[asyncio.Task[None]] = set()
        self._supervisors: list[Supervisor] = []
        self.spawn_failures = 0

    @property
    def running(self) -> bool:
        """Whether the supervisor takes work (started, not stopping)."""
        return self._accepting and not self._stopping

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the task group and start the children registered so far."""
        if self._runner is not None:
            raise SupervisorError(f"supervisor {self.name} is already started")
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        self._done = asyncio.Event()
        if self.parent is not None:
            group = self.parent._open_group()
            self._runner = group.create_task(self._run(opened), name=f"supervisor:{self.name}")
            self.parent._supervisors.append(self)
        else:
            # The root's group needs a task of its own to live in, since start() returns.
            self._runner = loop.create_task(self._run(opened), name=f"supervisor:{self.name}")
        await opened
        self._accepting = True
        for child in self._children.values():
            self._launch(child)

    async def _run(self, opened: asyncio.Future[None]) -> None:
        assert self._done is not None
        async with asyncio.TaskGroup() as group:
            self._group = group
            opened.set_result(None)
            await self._done.wait()
        self._group = None

    async def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop child supervisors and children, wait up to `timeout` for spawned tasks, cancel the rest.

        When this returns, every task the supervisor owned has ended. Stopping twice is harmless;
        a stopped supervisor may be started again.
        """
        runner, done = self._runner, self._done
        if runner is None or done is None or self._stopping:
            return
        self._stopping = True
        try:
            for sub in reversed(list(self._supervisors)):
                await sub.stop(timeout)
            children = list(self._children.values())
            await cancel_until_done([c.task for c in children if c.task is not None], self.name, self.logger)
            if self._spawned:
                _, pending = await asyncio.wait(set(self._spawned), timeout=timeout)
                await cancel_until_done(pending, self.name, self.logger)
        except BaseException:
            # Our caller is cancelled: cancelling the runner cancels whatever is left in the group.
            runner.cancel()
            raise
        finally:
            self._accepting = False
            done.set()
        await asyncio.wait([runner])
        self._runner = self._done = None
        self._children.clear()
        self._stopping = False
        if self.parent is not None and self in self.parent._supervisors:
            self.parent._supervisors.remove(self)

    async def __aenter__(self) -> Supervisor:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Leaving on an error or a cancellation: one-off tasks are cancelled rather than awaited.
        await self.stop(DEFAULT_STOP_TIMEOUT_S if exc is None else 0.0)

    # -- work --------------------------------------------------------------------------------

    def supervise(
        self,
        name: str,
        factory: Callable[[], Awaitable[None]],
        *,
        restart: Restart = "permanent",
        first_retry: float = DEFAULT_FIRST_RETRY_S,
        max_retry: float = DEFAULT_MAX_RETRY_S,
        stable_after: float | None = None,
        expected: ExceptionTypes = (),
    ) -> Supervised:
        """Run `factory()` as a long-lived child, restarted with backoff as `restart` says.

        `stable_after` (default `max_retry`) is how long a run must last to reset the backoff;
        exceptions of the `expected` types are logged without a traceback.
        """
        child = Supervised(
            self,
            name,
            factory,
            restart=restart,
            first_retry=first_retry,
            max_retry=max_retry,
            stable_after=stable_after,
            expected=expected,
        )
        self._add(child)
        return child

    def resync(
        self,
        name: str,
        action: Callable[[], Awaitable[None]],
        *,
        what: str | None = None,
        failure: str = "the run failed",
        first_retry: float = DEFAULT_FIRST_RETRY_S,
        max_retry: float = DEFAULT_MAX_RETRY_S,
        expected: ExceptionTypes = (),
    ) -> Resync:
        """A child that runs `action` after each `poke()` (see `Resync`).

        `what` names it in log lines (default `<supervisor>/<name>`); `failure` prefixes the text of
        an unexpected exception.
        """
        child = Resync(
            self,
            name,
            action,
            what=what or f"{self.name}/{name}",
            failure=failure,
            first_retry=first_retry,
            max_retry=max_retry,
            expected=expected,
        )
        self._add(child)
        return child

    def spawn(self, name: str, coro: Coroutine[Any, Any, object]) -> asyncio.Task[None]:
        """Run `coro` as a one-off task owned by the supervisor; a failure is logged, not raised."""
        if not self._accepting:
            coro.close()  # never awaited: close it so Python does not warn about it
            raise SupervisorError(f"supervisor {self.name} is not running: cannot start {name}")
        assert self._group is not None
        task = self._group.create_task(self._one_off(name, coro), name=name)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        return task

    async def _one_off(self, name: str, coro: Coroutine[Any, Any, object]) -> None:
        try:
            await coro
        except Exception as e:
            self.spawn_failures += 1
            self.logger.warning("%s/%s failed: %s: %s", self.name, name, type(e).__name__, e, exc_info=e)

    @property
    def spawned(self) -> int:
        """How many one-off tasks are running now."""
        return len(self._spawned)

    async def wait_spawned(self) -> None:
        """Wait until no one-off task is running (tests, and owners that drain before stopping)."""
        while self._spawned:
            await asyncio.wait(set(self._spawned))

    def child(self, name: str) -> Supervised | Resync | None:
        """The long-lived child of that name, if there is one."""
        child = self._children.get(name)
        assert child is None or isinstance(child, (Supervised, Resync))
        return child

    def state(self) -> SupervisorState:
        """Every child's state, the one-off tasks running, and the child supervisors' states."""
        return SupervisorState(
            name=self.name,
            running=self.running,
            children=tuple(c.state() for c in self._children.values()),
            spawned=len(self._spawned),
            spawn_failures=self.spawn_failures,
            supervisors=tuple(s.state() for s in self._supervisors),
        )

    # -- internals ---------------------------------------------------------------------------

    def _open_group(self) -> asyncio.TaskGroup:
        if not self._accepting or self._stopping or self._group is None:
            raise SupervisorError(f"supervisor {self.name} is not running")
        return self._group

    def _add(self, child: _Child) -> None:
        if self._stopping:
            raise SupervisorError(f"supervisor {self.name} is stopping: cannot start {child.name}")
        if child.name in self._children:
            raise SupervisorError(f"supervisor {self.name} already has a child named {child.name}")
        self._children[child.name] = child
        if self._accepting:
            self._launch(child)

    def _launch(self, child: _Child) -> None:
        assert self._group is not None
        child.task = self._group.create_task(child.main(), name=f"{self.name}/{child.name}")

    async def _remove(self, child: _Child) -> None:
        if self._children.get(child.name) is child:
            del self._children[child.name]
        if child.task is not None:
            await cancel_until_done([child.task], self.name, self.logger)
