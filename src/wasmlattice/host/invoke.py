"""Calling a running component's exports other than HTTP (messaging handlers, custom interfaces).

Each call gets a fresh instance (reference §5.2), within its `max_instances` bound. It is first
tried inline on the event loop's thread (a thread hand-off costs more than a short call) and run
on one of the component's worker threads when it would wait or takes long. The bound and the
threads are the HTTP target's when the component serves HTTP too, so one component never runs
more than `max_instances` guests at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from wasmlattice.http.target import INLINE_BUDGET, InlinePolicy, SlotTimeout
from wasmlattice.runtime.component import ComponentError
from wasmlattice.runtime.engine import HostEngine
from wasmlattice.runtime.fastcall import GuestTrap
from wasmlattice.runtime.linking import LinkedComponent
from wasmlattice.runtime.pool import InstancePool
from wasmlattice.wasi.ctx import DeadlineExceeded, NeedsLoop, WasiConfig, WasiCtx

# Worker threads per component are bounded by max_instances, and by this (threads are not free).
MAX_THREADS = 32


class InvokeError(Exception):
    """An export cannot be called (not exported, no free instance in time)."""


class ExportInvoker:
    """Calls one running component's exports by interface and function name."""

    def __init__(
        self,
        engine: HostEngine,
        linked: LinkedComponent,
        wasi: WasiConfig,
        *,
        max_instances: int,
        timeout: float,
        max_memory: int | None = None,
        target: Any = None,
    ) -> None:
        self.engine = engine
        self.linked = linked
        self.wasi = wasi
        self.timeout = timeout
        self.max_memory = max_memory
        self._target = target  # an HttpTarget whose slots and threads are shared, or None
        self._pools: dict[tuple[str, str], InstancePool] = {}
        self._slots = asyncio.Semaphore(max_instances)
        self._executor: ThreadPoolExecutor | None = None
        self._threads = min(max_instances, MAX_THREADS)
        self.inline = InlinePolicy()

    def exports(self, interface: str, func: str) -> bool:
        """Whether the component exports `func` of `ns:pkg/iface` (unversioned)."""
        try:
            self._pool(interface, func)
        except ComponentError:
            return False
        return True

    def _pool(self, interface: str, func: str) -> InstancePool:
        key = (interface, func)
        pool = self._pools.get(key)
        if pool is None:
            pool = InstancePool(self.engine, self.linked, interface, func, max_memory=self.max_memory)
            self._pools[key] = pool
        return pool

    async def call(self, interface: str, func: str, *args: Any, timeout: float | None = None) -> Any:
        """Call `interface#func` with Python values on a fresh instance; the guest's result."""
        try:
            pool = self._pool(interface, func)
        except ComponentError as e:
            raise InvokeError(str(e)) from None
        limit = self.timeout if timeout is None else min(timeout, self.timeout)
        loop = asyncio.get_running_loop()
        try:
            if self._target is not None:
                await self._target.acquire(limit)
            elif self._slots.locked():
                await asyncio.wait_for(self._slots.acquire(), limit)
            else:
                await self._slots.acquire()  # free: no timer task needed
        except (TimeoutError, SlotTimeout):
            raise InvokeError(
                f"{self.wasi.component_id} is at its limit of concurrent instances and none became free "
                f"within {limit:g}s"
            ) from None
        if self._target is not None:
            executor = self._target.executor
        else:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="wasm-invoke")
            executor = self._executor
        try:
            if self.inline.enabled():
                done, value = self._try_inline(pool, loop, limit, args)
                if done:
                    return value
            wctx = WasiCtx(self.wasi, loop)
            return await loop.run_in_executor(executor, pool.run, wctx, limit, *args)
        finally:
            if self._target is not None:
                self._target.release()
            else:
                self._slots.release()

    def _try_inline(
        self, pool: InstancePool, loop: asyncio.AbstractEventLoop, limit: float, args: tuple[Any, ...]
    ) -> tuple[bool, Any]:
        """Run the call on the loop's thread (no thread hand-off): (True, result), or (False, None)
        when it must run on a worker thread instead.

        As for inline HTTP requests: the attempt is abandoned when the guest would wait for the
        loop or outlives a short budget; nothing it did has left the process by then, so the call
        simply runs again on a thread. A trap is a result like any other.
        """
        wctx = WasiCtx(self.wasi, loop)
        wctx.inline = True
        budget = min(limit, INLINE_BUDGET)
        try:
            value = pool.run(wctx, budget, *args)
        except GuestTrap as e:
            interrupted = isinstance(e.cause, DeadlineExceeded) or "interrupt" in e.message
            if isinstance(e.cause, NeedsLoop) or (interrupted and limit > budget):
                self.inline.record(False)
                return False, None
            self.inline.record(True)
            raise
        self.inline.record(True)
        return True, value

    def close(self) -> None:
        """Release the worker threads (running calls finish)."""
        if self._executor is not None:
            with contextlib.suppress(Exception):
                self._executor.shutdown(wait=False, cancel_futures=False)
