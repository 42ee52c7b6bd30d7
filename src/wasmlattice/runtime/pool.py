"""Instances of a linked component: fresh per call by default, or reused up to a bound.

An `InstancePool` serves one export; the pools of one component share an `InstanceGroup`, which
keeps their idle instances within the component's reuse settings (runtime/reuse.py,
docs/instance-pools.md) and counts what became of every instance (`PoolStats`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import wasmtime

from wasmlattice.observability import tracing
from wasmlattice.runtime import fastcall
from wasmlattice.runtime.budget import format_size
from wasmlattice.runtime.component import ComponentError
from wasmlattice.runtime.engine import HostEngine
from wasmlattice.runtime.interrupt import (
    CallLimits,
    DeadlineExceeded,
    Interrupted,
    first_check_ticks,
    install,
)
from wasmlattice.runtime.linking import LinkedComponent
from wasmlattice.runtime.reuse import ReuseSettings
from wasmlattice.runtime.store import StoreState

# How long a guest's start-up (instantiation, including its own init code) may run when the
# call has no deadline of its own.
INSTANTIATE_SECONDS = 30.0


class MemoryLimitExceeded(fastcall.Trap):
    """The guest trapped after an allocation failed at its instance's memory limit."""


class _Build:
    """One compiled build of the pool's component, and its export resolved in that build.

    Export indices, the linker and the codec belong to one build: an instance keeps the build it
    was made from, whatever the pool serves by the time it is called.
    """

    __slots__ = ("export", "export_index", "export_name", "linked")

    def __init__(self, linked: LinkedComponent, interface: str, func: str) -> None:
        self.linked = linked
        self.export_name, self.export = linked.export_func(interface, func)
        comp = linked.component
        outer = comp.get_export_index(self.export_name)
        idx = None if outer is None else comp.get_export_index(func, instance=outer)
        if idx is None:
            raise ComponentError(f"the component does not export {self.export_name}#{func}")
        self.export_index = idx


class Instance:
    """One instantiated component in its own Store, with the export it serves."""

    def __init__(self, pool: InstancePool, wasi: Any, timeout: float | None = None) -> None:
        # Read once: the pool may switch to another build meanwhile (`InstancePool.promote`).
        self.build = build = pool.build
        self.store = wasmtime.Store(build.linked.engine.engine)
        if pool.max_memory is not None:
            self.store.set_limits(memory_size=pool.max_memory)
        self.state = StoreState(self.store, wasi)
        self.uses = 0
        self.idle_since = 0.0  # when it last went idle (time.monotonic), while in a pool
        # Deadline and interruption of the running call, checked by the store's epoch callback.
        self.limits = CallLimits()
        install(self.store, self.limits, self.state)
        self.limits.start(timeout or INSTANTIATE_SECONDS)
        self.store.set_epoch_deadline(first_check_ticks(timeout or INSTANTIATE_SECONDS))
        prev = fastcall.set_current_state(self.state)
        try:
            inst = build.linked.linker.instantiate(self.store, build.linked.component)
            func = inst.get_func(self.store, build.export_index)
        except wasmtime.WasmtimeError as e:
            cause = self.state.trap_cause
            self.close()
            raise fastcall.GuestTrap(f"instantiation failed: {e}", cause) from None
        finally:
            fastcall.set_current_state(prev)
        if func is None:
            self.close()
            raise ComponentError(f"export {build.export_name}#{pool.func_name} is not a function")
        self.func = func._func

    def close(self) -> None:
        """Free the instance's Store (its linear memory) now, not when the last reference goes.

        A trap's traceback (and the future holding it) references this object and its caller's
        frames until a garbage collection finds the cycle; closing makes the release immediate.
        """
        self.state.table.clear()
        self.state.trap_cause = None
        self.store.close()

    def call(self, pool: InstancePool, wasi: Any, timeout: float | None, *args: Any) -> Any:
        """Call the pool's export with `args`, under `wasi` and a deadline of `timeout` seconds."""
        self.state.wasi = wasi
        self.limits.start(timeout)
        fastcall.set_epoch_deadline(self.state, first_check_ticks(timeout))
        self.uses += 1
        return self.build.export.call(self.state, self.func, *args)


# What became of an instance that left the pool for good (`PoolStats.discarded` keys).
TRAPPED = "trapped"  # the guest trapped (or a host function it called failed)
INTERRUPTED = "interrupted"  # its deadline passed, its client went away or its component stopped
ABANDONED = "abandoned"  # an inline attempt that had to wait; the call runs again on a thread
ERROR = "error"  # the host failed around the call
USED_UP = "used_up"  # it served its maximum of calls
POOL_FULL = "pool_full"  # it finished while the pool already kept its maximum of idle instances
IDLE = "idle"  # it stayed idle past the idle timeout
EVICTED = "evicted"  # dropped to make room for an instance of another export, within the bound
STOPPED = "stopped"  # its component was stopped, replaced or updated


def discard_reason(e: BaseException) -> str:
    """Why an instance whose call raised `e` is discarded (one of the reasons above)."""
    from wasmlattice.runtime.execution import NeedsLoop  # the guest-call path sits above the pool

    if not isinstance(e, fastcall.GuestTrap):
        return ERROR
    if isinstance(e.cause, NeedsLoop):
        return ABANDONED
    if isinstance(e.cause, (DeadlineExceeded, Interrupted)) or "interrupt" in e.message:
        return INTERRUPTED
    return TRAPPED


class PoolStats:
    """Counts of one component's instances: created, calls served by a reused one, and discarded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.created = 0
        self.reused = 0
        self.discarded: dict[str, int] = {}

    def count(self, created: int = 0, reused: int = 0, discarded: tuple[str, ...] = ()) -> None:
        """Add to the counts (from any thread)."""
        with self._lock:
            self.created += created
            self.reused += reused
            for reason in discarded:
                self.discarded[reason] = self.discarded.get(reason, 0) + 1

    def snapshot(self) -> tuple[int, int, dict[str, int]]:
        """(created, reused, discarded by reason) now."""
        with self._lock:
            return self.created, self.reused, dict(self.discarded)


class InstanceGroup:
    """The instances one component's pools keep between calls, within its reuse settings.

    Idle instances are kept per export, newest last, at most `settings.pool_size` in all (None:
    no cap), each for `settings.idle_timeout` seconds. `bound` caps the instances alive at once,
    idle or running (the component's `max_instances`, whose memory the host reserved): creating
    one past it drops the oldest idle instance of any export first. An instance whose call did not
    end normally is never kept (wasmtime refuses to enter a trapped instance, and a guest cut short
    may have left its state half-changed).
    """

    def __init__(
        self, settings: ReuseSettings | None = None, bound: int | None = None, stats: PoolStats | None = None
    ) -> None:
        self.settings = settings or ReuseSettings()
        self.bound = bound
        self.stats = stats or PoolStats()
        self._lock = threading.Lock()
        self._idle: dict[int, list[Instance]] = {}  # by id() of the pool
        self.idle_count = 0
        self.live = 0
        self.closed = False

    @property
    def pool_size(self) -> int | None:
        """Idle instances kept at most (the setting, else the bound; None: no cap)."""
        return self.settings.pool_size if self.settings.pool_size is not None else self.bound

    def _expired(self, inst: Instance, now: float) -> bool:
        timeout = self.settings.idle_timeout
        return timeout is not None and now - inst.idle_since > timeout

    def take(self, pool: InstancePool) -> Instance | None:
        """An idle instance of `pool`'s export to call (None: make a fresh one); drops expired ones."""
        if self.settings.max_reuse <= 1:
            return None
        expired: list[Instance] = []
        found = None
        with self._lock:
            stack = self._idle.get(id(pool))
            now = time.monotonic()
            while stack:
                inst = stack.pop()
                self.idle_count -= 1
                if self._expired(inst, now):
                    # The newest is too old: so is every one below it.
                    expired = [inst, *stack]
                    self.idle_count -= len(stack)
                    stack.clear()
                    self.live -= len(expired)
                    break
                found = inst
                break
        self._discard(expired, IDLE)
        if found is not None:
            self.stats.count(reused=1)
        return found

    def reserve(self) -> None:
        """Count an instance about to be created, dropping the oldest idle one if it would pass the bound."""
        evicted: list[Instance] = []
        with self._lock:
            self.live += 1
            while self.bound is not None and self.live > self.bound and self.idle_count > 0:
                stacks = [s for s in self._idle.values() if s]
                oldest = min(stacks, key=lambda s: s[0].idle_since)
                evicted.append(oldest.pop(0))
                self.idle_count -= 1
                self.live -= 1
        self.stats.count(created=1)
        self._discard(evicted, EVICTED)

    def unreserve(self) -> None:
        """An instance `reserve` counted could not be created."""
        with self._lock:
            self.live -= 1

    def give_back(self, pool: InstancePool, inst: Instance, failure: BaseException | None) -> None:
        """Keep `inst` for another call if it may serve one, else close it now (freeing its memory)."""
        if failure is not None:
            reason: str | None = discard_reason(failure)
        else:
            reason = None
        with self._lock:
            if reason is None:
                size = self.pool_size
                if self.closed or inst.build is not pool.build:
                    reason = STOPPED  # stopped, or made from a build the pool no longer serves
                elif inst.uses >= self.settings.max_reuse:
                    reason = USED_UP
                elif size is not None and self.idle_count >= size:
                    reason = POOL_FULL
            if reason is None:
                inst.idle_since = time.monotonic()
                self._idle.setdefault(id(pool), []).append(inst)
                self.idle_count += 1
                return
            self.live -= 1
        self._discard([inst], reason)

    def reclaim(self, now: float | None = None) -> int:
        """Close every idle instance past the idle timeout; how many (run now and then by the host)."""
        if self.settings.idle_timeout is None:
            return 0
        when = time.monotonic() if now is None else now
        expired: list[Instance] = []
        with self._lock:
            for stack in self._idle.values():
                old = [i for i in stack if self._expired(i, when)]
                if old:
                    stack[:] = [i for i in stack if not self._expired(i, when)]
                    expired += old
            self.idle_count -= len(expired)
            self.live -= len(expired)
        self._discard(expired, IDLE)
        return len(expired)

    def drop_idle(self, pool: InstancePool) -> None:
        """Close `pool`'s idle instances (it now serves another build)."""
        with self._lock:
            idle = self._idle.pop(id(pool), [])
            self.idle_count -= len(idle)
            self.live -= len(idle)
        self._discard(idle, STOPPED)

    def close(self) -> None:
        """Close the idle instances; instances still running are closed when they return."""
        with self._lock:
            self.closed = True
            idle = [i for stack in self._idle.values() for i in stack]
            self._idle.clear()
            self.idle_count = 0
            self.live -= len(idle)
        self._discard(idle, STOPPED)

    def _discard(self, instances: list[Instance], reason: str) -> None:
        for inst in instances:
            inst.close()
            # A fresh instance per call is the default, not news: only pools that reuse count it.
            if self.settings.max_reuse > 1 or reason != USED_UP:
                self.stats.count(discarded=(reason,))


class InstancePool:
    """Hands out instances for calls to one export.

    `reuse` is how many calls one instance may serve: 1 (the default) means a fresh instance per
    call, as wasmCloud and `wasmtime serve` do. `group` (shared by the pools of one component)
    overrides it with the component's settings. An instance that trapped, was interrupted or
    failed is always discarded, because wasmtime refuses to enter a trapped instance again.
    `promote` switches new instances to another build of the same component (the optimised one of
    tiered compilation); calls already running finish on theirs.
    """

    def __init__(
        self,
        engine: HostEngine,
        linked: LinkedComponent,
        interface: str,
        func: str,
        reuse: int = 1,
        max_memory: int | None = None,
        group: InstanceGroup | None = None,
    ) -> None:
        if reuse < 1:
            raise ValueError("reuse must be at least 1")
        del engine  # the build's own engine compiles and runs it (`LinkedComponent.engine`)
        self.group = group or InstanceGroup(ReuseSettings(max_reuse=reuse))
        self.reuse = self.group.settings.max_reuse
        self.max_memory = max_memory
        self.interface = interface
        self.func_name = func
        self.build = _Build(linked, interface, func)

    @property
    def created(self) -> int:
        """Instances created for this pool's group so far."""
        return self.group.stats.snapshot()[0]

    @property
    def linked(self) -> LinkedComponent:
        """The build new instances are made from."""
        return self.build.linked

    @property
    def engine(self) -> HostEngine:
        """The engine of the build new instances are made from."""
        return self.build.linked.engine

    @property
    def export_name(self) -> str:
        """The full name of the exported interface this pool calls."""
        return self.build.export_name

    @property
    def tier(self) -> str:
        """The compiler of the build new instances are made from (`winch` or `cranelift`)."""
        return self.build.linked.tier

    def promote(self, linked: LinkedComponent) -> None:
        """Make new instances from `linked` (another build of the same component).

        Calls running now finish on their instances; idle ones of the old build are dropped, so
        from now on every call runs the new build.
        """
        self.build = _Build(linked, self.interface, self.func_name)
        self.group.drop_idle(self)

    def memory_text(self) -> str:
        """Why a guest that said it ran out of memory trapped: the limit, and where it is set."""
        if self.max_memory is None:
            return "the guest ran out of memory (no per-instance limit is set)"
        return (
            f"the guest ran out of memory: an instance may use at most {format_size(self.max_memory)} "
            "of linear memory (component limit max_memory_limit, host flag --max-instance-memory)"
        )

    def run(self, wasi: Any, timeout: float | None, *args: Any) -> Any:
        """Call the export with `args` on a pooled or fresh instance (blocking: run on a worker thread).

        `timeout` bounds the whole call, instantiation included; `wasi` (the store's WASI
        context, or None for components without WASI) gets the same deadline for host waits.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if wasi is not None and deadline is not None:
            wasi.deadline = deadline
        group = self.group
        inst = group.take(self)
        failure: BaseException | None = None
        try:
            if inst is None:
                group.reserve()
                try:
                    inst = Instance(self, wasi, timeout)
                except BaseException:
                    group.unreserve()
                    raise
                if tracing.enabled():
                    _note_instance(self, "fresh")
            elif tracing.enabled():
                _note_instance(self, "reused")
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            return inst.call(self, wasi, remaining, *args)
        except fastcall.GuestTrap as e:
            failure = e
            for sink in getattr(wasi, "sinks", {}).values():
                sink.flush()  # its last words may say an allocation failed
            if getattr(wasi, "out_of_memory", False):
                raise fastcall.GuestTrap(e.message, MemoryLimitExceeded(self.memory_text())) from None
            raise
        except BaseException as e:
            failure = e
            raise
        finally:
            for cleanup in getattr(wasi, "cleanups", ()):
                cleanup()
            if inst is not None:
                # A trapped instance is closed at once: wasmtime refuses to enter it again.
                group.give_back(self, inst, failure)


def _note_instance(pool: InstancePool, how: str) -> None:
    """Put the export and whether its instance is fresh or reused on the guest-call span."""
    tracing.note(tracing.EXPORT, f"{pool.export_name}#{pool.func_name}")
    tracing.note(tracing.INSTANCE, how)
