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


class Instance:
    """One instantiated component in its own Store, with the export it serves."""

    def __init__(self, pool: InstancePool, wasi: Any, timeout: float | None = None) -> None:
        engine = pool.engine
        self.store = wasmtime.Store(engine.engine)
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
            inst = pool.linked.linker.instantiate(self.store, pool.linked.component)
            func = inst.get_func(self.store, pool.export_index)
        except wasmtime.WasmtimeError as e:
            cause = self.state.trap_cause
            self.close()
            raise fastcall.GuestTrap(f"instantiation failed: {e}", cause) from None
        finally:
            fastcall.set_current_state(prev)
        if func is None:
            self.close()
            raise ComponentError(f"export {pool.export_name}#{pool.func_name} is not a function")
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
        return pool.export.call(self.state, self.func, *args)


class InstancePool:
    """Hands out instances for calls to one export.

    `reuse` is how many calls one instance may serve: 1 (the default) means a fresh instance per
    call, as wasmCloud and `wasmtime serve` do. An instance that trapped is always discarded,
    because wasmtime refuses to enter it again.
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
        self.engine = engine
        self.linked = linked
        self.reuse = reuse
        self.max_memory = max_memory
        self.export_name, self.export = linked.export_func(interface, func)
        self.func_name = func
        comp = linked.component
        outer = comp.get_export_index(self.export_name)
        idx = None if outer is None else comp.get_export_index(func, instance=outer)
        if idx is None:
            raise ComponentError(f"the component does not export {self.export_name}#{func}")
        self.export_index = idx
        self._idle: list[Instance] = []
        self._lock = threading.Lock()
        self.created = 0

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
                    self._idle.append(inst)
            elif not ok and inst is not None:
                # wasmtime refuses to enter a trapped instance again: free its memory at once.
                inst.close()


def _note_instance(pool: InstancePool, how: str) -> None:
    """Put the export and whether its instance is fresh or reused on the guest-call span."""
    tracing.note(tracing.EXPORT, f"{pool.export_name}#{pool.func_name}")
    tracing.note(tracing.INSTANCE, how)
