"""Instances of a linked component: fresh per call by default, or reused up to a bound."""

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
from wasmlattice.runtime.interrupt import CallLimits, first_check_ticks, install
from wasmlattice.runtime.linking import LinkedComponent
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
        self.store.set_epoch_deadline(first_check_ticks(timeout))
        self.uses += 1
        return self.build.export.call(self.state, self.func, *args)


class InstancePool:
    """Hands out instances for calls to one export.

    `reuse` is how many calls one instance may serve: 1 (the default) means a fresh instance per
    call, as wasmCloud and `wasmtime serve` do. An instance that trapped is always discarded,
    because wasmtime refuses to enter it again. `promote` switches new instances to another build
    of the same component (the optimised one of tiered compilation); calls already running finish
    on theirs.
    """

    def __init__(
        self,
        engine: HostEngine,
        linked: LinkedComponent,
        interface: str,
        func: str,
        reuse: int = 1,
        max_memory: int | None = None,
    ) -> None:
        if reuse < 1:
            raise ValueError("reuse must be at least 1")
        del engine  # the build's own engine compiles and runs it (`LinkedComponent.engine`)
        self.reuse = reuse
        self.max_memory = max_memory
        self.interface = interface
        self.func_name = func
        self.build = _Build(linked, interface, func)
        self._idle: list[Instance] = []
        self._lock = threading.Lock()
        self.created = 0

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
        build = _Build(linked, self.interface, self.func_name)
        with self._lock:
            self.build = build
            stale, self._idle = self._idle, []
        for inst in stale:
            inst.close()

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
        inst: Instance | None = None
        with self._lock:
            if self._idle:
                inst = self._idle.pop()
        ok = False
        try:
            if inst is None:
                inst = Instance(self, wasi, timeout)
                self.created += 1
                if tracing.enabled():
                    _note_instance(self, "fresh")
            elif tracing.enabled():
                _note_instance(self, "reused")
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            result = inst.call(self, wasi, remaining, *args)
            ok = True
            return result
        except fastcall.GuestTrap as e:
            for sink in getattr(wasi, "sinks", {}).values():
                sink.flush()  # its last words may say an allocation failed
            if getattr(wasi, "out_of_memory", False):
                raise fastcall.GuestTrap(e.message, MemoryLimitExceeded(self.memory_text())) from None
            raise
        finally:
            for cleanup in getattr(wasi, "cleanups", ()):
                cleanup()
            if ok and inst is not None and inst.uses < self.reuse:
                with self._lock:
                    if inst.build is self.build:
                        self._idle.append(inst)
                        inst = None
                if inst is not None:
                    inst.close()  # made from a build the pool no longer serves
            elif not ok and inst is not None:
                # wasmtime refuses to enter a trapped instance again: free its memory at once.
                inst.close()


def _note_instance(pool: InstancePool, how: str) -> None:
    """Put the export and whether its instance is fresh or reused on the guest-call span."""
    tracing.note(tracing.EXPORT, f"{pool.export_name}#{pool.func_name}")
    tracing.note(tracing.INSTANCE, how)
