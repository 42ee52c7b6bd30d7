"""The supervisor: restart with backoff, state, flood-free logging, resync runs, and clean stops."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator

import pytest

from wasmlattice import supervision
from wasmlattice.supervision import RetryLater, Supervisor, SupervisorError

LOGGER = "test.supervision"


@pytest.fixture
async def sup() -> AsyncIterator[Supervisor]:
    s = Supervisor("test", logger=logging.getLogger(LOGGER))
    await s.start()
    try:
        yield s
    finally:
        await s.stop(0.5)


async def until(check: object, timeout: float = 5.0) -> None:
    """Wait until `check()` is true."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name == LOGGER]


def own_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


# -- supervised children ---------------------------------------------------------------------------


async def test_failing_child_restarts_with_exponential_backoff(
    sup: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    runs: list[float] = []

    async def flaky() -> None:
        runs.append(time.monotonic())
        if len(runs) <= 4:
            raise RetryLater("port 1 is taken")
        await asyncio.Event().wait()

    child = sup.supervise("flaky", flaky, first_retry=0.02, max_retry=0.05, stable_after=0.1)
    await until(lambda: len(runs) == 5)
    # Backoff: 0.02, 0.04, then capped at 0.05.
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    for gap, want in zip(gaps, [0.02, 0.04, 0.05, 0.05], strict=True):
        assert want - 0.005 <= gap <= want + 0.2, gaps
    assert child.restarts == 4 and child.failures == 4
    assert child.last_error == "port 1 is taken"
    # Running for `stable_after` counts as recovered: backoff and failures reset, recovery at INFO.
    await until(lambda: child.failures == 0)
    assert child.last_error is None
    assert messages(caplog, logging.WARNING) == ["test/flaky failed: port 1 is taken; restarting in 0.0s"]
    assert len([m for m in messages(caplog, logging.DEBUG) if "failed again" in m]) == 3
    assert any("test/flaky: recovered after 4 failed attempts" in m for m in messages(caplog, logging.INFO))


async def test_unexpected_exception_logged_with_traceback_once(
    sup: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    runs = 0

    async def broken() -> None:
        nonlocal runs
        runs += 1
        raise KeyError("bucket")

    sup.supervise("broken", broken, first_retry=0.01, max_retry=0.01)
    await until(lambda: runs >= 3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage() == "test/broken failed: KeyError: 'bucket'; restarting in 0.0s"
    assert warnings[0].exc_info is not None


async def test_different_failure_text_warns_again(sup: Supervisor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    texts = iter(["a", "a", "b", "b", "a"])
    done = asyncio.Event()

    async def varying() -> None:
        text = next(texts, None)
        if text is None:
            done.set()
            await asyncio.Event().wait()
        raise RetryLater(text)

    sup.supervise("varying", varying, first_retry=0.001, max_retry=0.001)
    await asyncio.wait_for(done.wait(), 5)
    assert [m.split(";")[0] for m in messages(caplog, logging.WARNING)] == [
        "test/varying failed: a",
        "test/varying failed: b",
        "test/varying failed: a",
    ]


async def test_repeated_failure_reminds_at_warning_once_a_minute(
    sup: Supervisor, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    monkeypatch.setattr(supervision, "REPEAT_LOG_S", 0.05)
    runs = 0

    async def down() -> None:
        nonlocal runs
        runs += 1
        raise RetryLater("down")

    sup.supervise("down", down, first_retry=0.01, max_retry=0.01)
    await until(lambda: runs >= 15)
    warnings = messages(caplog, logging.WARNING)
    assert warnings[0] == "test/down failed: down; restarting in 0.0s"
    reminders = warnings[1:]
    assert reminders and all(
        "still failing after" in m and m.endswith("down; restarting in 0.0s") for m in reminders
    )
    # Far fewer WARNINGs than failures: the rest went to DEBUG.
    assert len(warnings) < runs / 2


async def test_permanent_child_that_returns_is_restarted(
    sup: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    runs = 0

    async def returns() -> None:
        nonlocal runs
        runs += 1

    sup.supervise("returns", returns, first_retry=0.01, max_retry=0.01)
    await until(lambda: runs >= 3)
    assert messages(caplog, logging.WARNING)[0] == (
        "test/returns failed: it returned without being stopped; restarting in 0.0s"
    )


async def test_transient_child_ends_when_it_returns_and_temporary_never_restarts(
    sup: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    runs = {"transient": 0, "temporary": 0}

    async def transient() -> None:
        runs["transient"] += 1
        if runs["transient"] == 1:
            raise RetryLater("once")

    async def temporary() -> None:
        runs["temporary"] += 1
        raise RuntimeError("boom")

    t1 = sup.supervise("transient", transient, restart="transient", first_retry=0.01)
    t2 = sup.supervise("temporary", temporary, restart="temporary", first_retry=0.01)
    await until(lambda: t1.task is not None and t1.task.done() and t2.task is not None and t2.task.done())
    await asyncio.sleep(0.05)
    assert runs == {"transient": 2, "temporary": 1}
    assert t2.failures == 1 and t2.last_error == "RuntimeError: boom"
    assert "test/temporary failed: RuntimeError: boom; not restarted" in messages(caplog, logging.WARNING)


async def test_healthy_resets_backoff_and_logs_recovery(
    sup: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    runs = 0
    ok = asyncio.Event()

    async def reconnects() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RetryLater("no server")
        child.healthy()
        ok.set()
        await asyncio.Event().wait()

    child = sup.supervise("conn", reconnects, first_retry=0.01, max_retry=0.02, stable_after=60)
    await asyncio.wait_for(ok.wait(), 5)
    assert child.failures == 0
    assert any("test/conn: recovered after 2 failed attempts" in m for m in messages(caplog, logging.INFO))


async def test_state_reports_failing_child(sup: Supervisor) -> None:
    async def down() -> None:
        raise RetryLater("nats is down")

    async def fine() -> None:
        await asyncio.Event().wait()

    sup.supervise("fine", fine)
    child = sup.supervise("down", down, first_retry=10.0, max_retry=10.0)
    before = time.time()
    await until(lambda: child.failures == 1)
    state = sup.state()
    assert state.name == "test" and state.running and not state.healthy
    by_name = {c.name: c for c in state.children}
    assert by_name["fine"].running and by_name["fine"].failures == 0 and by_name["fine"].last_error is None
    down_state = by_name["down"]
    assert down_state.kind == "supervised" and down_state.running
    assert down_state.failures == 1 and down_state.last_error == "nats is down"
    assert down_state.failing_since is not None and before - 1 <= down_state.failing_since <= time.time()
    assert down_state.next_retry_in is not None and 9.0 < down_state.next_retry_in <= 10.0
    assert sup.child("down") is child and sup.child("nope") is None


async def test_duplicate_child_name_is_refused(sup: Supervisor) -> None:
    async def idle() -> None:
        await asyncio.Event().wait()

    sup.supervise("x", idle)
    with pytest.raises(SupervisorError, match="already has a child named x"):
        sup.supervise("x", idle)


async def test_children_registered_before_start_run_on_start() -> None:
    s = Supervisor("early")
    started = asyncio.Event()

    async def activity() -> None:
        started.set()
        await asyncio.Event().wait()

    s.supervise("a", activity)
    await asyncio.sleep(0.01)
    assert not started.is_set()
    async with s:
        await asyncio.wait_for(started.wait(), 5)


async def test_stopping_one_child_leaves_the_others(sup: Supervisor) -> None:
    cancelled = asyncio.Event()

    async def one() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def other() -> None:
        await asyncio.Event().wait()

    c1 = sup.supervise("one", one)
    sup.supervise("other", other)
    await asyncio.sleep(0.01)
    await c1.stop()
    assert cancelled.is_set() and c1.task is not None and c1.task.done()
    assert [c.name for c in sup.state().children] == ["other"]


# -- stopping --------------------------------------------------------------------------------------


async def test_stop_cancels_children_and_no_task_outlives_the_supervisor() -> None:
    before = own_tasks()
    cancelled: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.append(name)

    async with Supervisor("scoped") as s:
        s.supervise("a", lambda: forever("a"))
        s.resync("r", lambda: forever("r")).poke()
        s.spawn("one-off", forever("one-off"))
        sub = Supervisor("sub", parent=s)
        await sub.start()
        sub.supervise("b", lambda: forever("b"))
        await asyncio.sleep(0.02)
        assert len(own_tasks() - before) >= 6  # root runner, sub runner, four children
        assert [x.name for x in s.state().supervisors] == ["sub"]
        await s.stop(0.05)  # the one-off task never ends by itself
    assert sorted(cancelled) == ["a", "b", "one-off", "r"]
    assert own_tasks() - before == set()
    assert not s.running and not sub.running


async def test_stop_waits_for_one_off_tasks_up_to_the_timeout() -> None:
    s = Supervisor("drain")
    await s.start()
    finished = asyncio.Event()
    cancelled = asyncio.Event()

    async def quick() -> None:
        await asyncio.sleep(0.02)
        finished.set()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    s.spawn("quick", quick())
    s.spawn("slow", slow())
    t0 = time.monotonic()
    await s.stop(0.2)
    assert finished.is_set() and cancelled.is_set()
    assert 0.15 <= time.monotonic() - t0 < 2.0
    assert s.spawned == 0


async def test_cancelled_owner_still_leaves_no_task() -> None:
    before = own_tasks()

    async def owner() -> None:
        async with Supervisor("owner") as s:
            s.supervise("a", asyncio.Event().wait)
            s.spawn("b", asyncio.sleep(30))
            await asyncio.sleep(30)

    task = asyncio.create_task(owner())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert own_tasks() - before == set()


async def test_stopped_supervisor_refuses_work_and_can_start_again() -> None:
    s = Supervisor("again")
    with pytest.raises(SupervisorError, match="not running"):
        s.spawn("early", asyncio.sleep(0))
    await s.start()
    with pytest.raises(SupervisorError, match="already started"):
        await s.start()
    await s.stop()
    await s.stop()  # twice is harmless
    with pytest.raises(SupervisorError, match="not running"):
        s.spawn("late", asyncio.sleep(0))
    async with s:
        done = s.spawn("ok", asyncio.sleep(0))
        await done
    assert not s.running


async def test_child_supervisor_needs_a_running_parent() -> None:
    parent = Supervisor("parent")
    with pytest.raises(SupervisorError, match="not running"):
        await Supervisor("child", parent=parent).start()


# -- one-off tasks ---------------------------------------------------------------------------------


async def test_spawn_failure_is_logged_and_does_not_disturb_the_others(
    sup: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    alive = asyncio.Event()

    async def other() -> None:
        await asyncio.sleep(0.05)
        alive.set()

    async def fails() -> None:
        raise ValueError("bad request")

    sup.spawn("other", other())
    task = sup.spawn("handler", fails())
    await task
    assert task.exception() is None  # logged, not raised into the group
    await asyncio.wait_for(alive.wait(), 5)
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.getMessage() == "test/handler failed: ValueError: bad request"
    assert record.exc_info is not None
    assert sup.state().spawn_failures == 1 and sup.spawned == 0


async def test_wait_spawned(sup: Supervisor) -> None:
    ran = []

    async def work(i: int) -> None:
        await asyncio.sleep(0.01 * i)
        ran.append(i)

    for i in range(3):
        sup.spawn(f"w{i}", work(i))
    assert sup.spawned == 3
    await sup.wait_spawned()
    assert sorted(ran) == [0, 1, 2]


# -- resync (how providers follow lattice changes) --------------------------------------------------


async def test_resync_merges_bursts_of_pokes(sup: Supervisor) -> None:
    runs = 0
    gate = asyncio.Event()

    async def action() -> None:
        nonlocal runs
        runs += 1
        await gate.wait()

    r = sup.resync("links", action)
    r.poke()
    await until(lambda: runs == 1)
    for _ in range(10):
        r.poke()  # during the run: one more run after it, not ten
    gate.set()
    await r.run_now()
    await asyncio.sleep(0.02)
    assert runs == 2


async def test_resync_retries_failed_runs_with_backoff_and_logs_without_flood(
    sup: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    runs: list[float] = []

    async def action() -> None:
        runs.append(time.monotonic())
        if len(runs) <= 3:
            raise RetryLater("cannot listen on 127.0.0.1:1: [Errno 98] Address already in use")

    r = sup.resync("listeners", action, what="test", first_retry=0.02, max_retry=0.05)
    await r.run_now()
    assert len(runs) == 1 and r.failures == 1
    assert r.last_error is not None and r.next_retry_in() is not None
    await until(lambda: len(runs) == 4)
    await asyncio.sleep(0.02)
    assert r.failures == 0 and r.next_retry_in() is None and r.last_error is None
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    for gap, want in zip(gaps, [0.02, 0.04, 0.05], strict=True):
        assert want - 0.005 <= gap <= want + 0.2, gaps
    assert messages(caplog, logging.WARNING) == [
        "test: cannot listen on 127.0.0.1:1: [Errno 98] Address already in use; retrying in 0.0s"
    ]
    assert len([m for m in messages(caplog, logging.DEBUG) if "failed again" in m]) == 2
    assert any("test: recovered after 3 failed attempts" in m for m in messages(caplog, logging.INFO))


async def test_resync_unexpected_error_names_the_failure_with_traceback(
    sup: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    runs = 0

    async def action() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise KeyError("bucket")

    r = sup.resync("kv", action, what="kv test", failure="applying lattice changes failed", first_retry=0.01)
    await r.run_now()
    await until(lambda: runs == 2)
    (warning,) = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert (
        warning.getMessage()
        == "kv test: applying lattice changes failed: KeyError: 'bucket'; retrying in 0.0s"
    )
    assert warning.exc_info is not None


async def test_resync_poke_runs_a_failed_action_at_once(sup: Supervisor) -> None:
    runs = 0

    async def action() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RetryLater("not yet")

    r = sup.resync("soon", action, first_retry=10.0)
    await r.run_now()
    assert r.next_retry_in() is not None
    await r.run_now()  # a poke does not wait for the 10 s retry
    assert runs == 2 and r.failures == 0 and r.next_retry_in() is None


async def test_resync_stop_cancels_a_run_and_ignores_later_pokes(sup: Supervisor) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def action() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    r = sup.resync("long", action)
    r.poke()
    await asyncio.wait_for(started.wait(), 5)
    await r.stop()
    assert cancelled.is_set()
    r.poke()
    await r.run_now()  # returns at once: stopped
    assert sup.child("long") is None
    assert r.state().kind == "resync" and not r.state().running


async def swallows_one_cancellation(cancelled: list[int]) -> None:
    """An activity that, like code hit by Python 3.11's `wait_for` race or nats-py's `drain()`,
    carries on after its first cancellation."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(1)
            if len(cancelled) > 1:
                raise


@pytest.mark.timeout(20)
async def test_stopping_a_child_that_swallows_a_cancellation_still_ends_it(
    sup: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    cancelled: list[int] = []
    child = sup.supervise("stubborn", lambda: swallows_one_cancellation(cancelled))
    await until(lambda: child.task is not None)
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        await asyncio.wait_for(child.stop(), 10)
    assert child.task is not None and child.task.done()
    assert len(cancelled) == 2  # cancelled again once the first was swallowed
    assert any("carried on after being cancelled" in m for m in messages(caplog, logging.DEBUG))
    assert not messages(caplog, logging.WARNING)  # routine: nats-py swallows cancellations too


async def swallows_cancellations_for(seconds: float, cancelled: list[int]) -> None:
    """An activity that ignores every cancellation for `seconds`, then ends on the next one."""
    until_ = time.monotonic() + seconds
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(1)
            if time.monotonic() >= until_:
                raise


@pytest.mark.timeout(20)
async def test_a_child_that_keeps_running_after_cancellations_is_reported(
    sup: Supervisor, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervision, "STUCK_AFTER_S", 0.5)
    cancelled: list[int] = []
    child = sup.supervise("very-stubborn", lambda: swallows_cancellations_for(1.0, cancelled))
    await until(lambda: child.task is not None)
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await asyncio.wait_for(child.stop(), 10)
    assert child.task is not None and child.task.done()
    assert len(cancelled) >= 4  # cancelled again every RECANCEL_S until it gave in
    (warning,) = messages(caplog, logging.WARNING)
    assert warning.startswith("test: test/very-stubborn still running ")
    assert warning.endswith("s after being cancelled; cancelling again every 0.2s")


@pytest.mark.timeout(20)
async def test_stopping_the_supervisor_ends_children_and_tasks_that_swallow_a_cancellation() -> None:
    s = Supervisor("test", logger=logging.getLogger(LOGGER))
    await s.start()
    child_cancels: list[int] = []
    spawned_cancels: list[int] = []
    s.supervise("stubborn", lambda: swallows_one_cancellation(child_cancels))
    s.spawn("stubborn-task", swallows_one_cancellation(spawned_cancels))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(s.stop(0.1), 10)
    assert len(child_cancels) == 2 and len(spawned_cancels) == 2
    assert not s.running


async def test_where_tasks_wait_names_each_task_and_the_function_it_waits_in() -> None:
    from wasmlattice.supervision import where_tasks_wait

    release = asyncio.Event()

    async def holds_the_stop_up() -> None:
        await release.wait()

    task = asyncio.create_task(holds_the_stop_up(), name="stuck-one")
    await asyncio.sleep(0.01)
    try:
        lines = where_tasks_wait()
        (line,) = [line for line in lines if line.startswith("stuck-one in ")]
        # From the task's coroutine down to where it actually waits.
        assert line.startswith("stuck-one in holds_the_stop_up (test_supervision.py:")
        assert line.endswith(")") and " > wait (locks.py:" in line
        assert not any("test_where_tasks_wait" in line for line in lines)  # not the caller itself
        assert not any(line.startswith("stuck-one") for line in where_tasks_wait(exclude=[task]))
    finally:
        release.set()
        await task


async def test_a_slow_host_stop_logs_what_it_waits_for(caplog: pytest.LogCaptureFixture) -> None:
    from wasmlattice.lattice.run import warn_if_still_stopping

    release = asyncio.Event()

    async def never_ending_cleanup() -> None:
        await release.wait()

    stuck = asyncio.create_task(never_ending_cleanup(), name="provider-cleanup")
    with caplog.at_level(logging.WARNING, logger="wasmlattice.lattice.run"):
        await warn_if_still_stopping("NHOST", 0.01)
    release.set()
    await stuck
    (line,) = [r.getMessage() for r in caplog.records if "still stopping" in r.getMessage()]
    assert line.startswith("host NHOST is still stopping after 0.01s; tasks still running: ")
    assert "provider-cleanup in never_ending_cleanup (test_supervision.py:" in line


async def test_a_slow_host_stop_names_at_most_40_tasks(caplog: pytest.LogCaptureFixture) -> None:
    from wasmlattice.lattice.run import SLOW_STOP_TASKS_SHOWN, warn_if_still_stopping

    release = asyncio.Event()
    many = [asyncio.create_task(release.wait(), name=f"request-{i:03}") for i in range(100)]
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger="wasmlattice.lattice.run"):
        await warn_if_still_stopping("NHOST", 0.0)
    release.set()
    await asyncio.gather(*many)
    (line,) = [r.getMessage() for r in caplog.records if "still stopping" in r.getMessage()]
    assert line.count("request-") == SLOW_STOP_TASKS_SHOWN == 40
    assert line.endswith("; and 60 more")
