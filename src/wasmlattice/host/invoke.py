"""Calling a running component's exports other than HTTP (messaging handlers, custom interfaces).

Each call gets a fresh instance (docs/protocol.md#instances) within the component's `Workload`: the same
instance bound and worker threads its HTTP requests use, so one component never runs more than
`max_instances` guests at once. A call is first tried inline on the event loop's thread (a thread
hand-off costs more than a short call) and run on a worker thread when it would wait or takes long.
"""

from __future__ import annotations

import asyncio
from typing import Any

from wasmlattice.http.target import INLINE_BUDGET, SlotTimeout, Workload, retry_on_thread
from wasmlattice.runtime.component import ComponentError
from wasmlattice.runtime.engine import HostEngine
from wasmlattice.runtime.fastcall import GuestTrap
from wasmlattice.runtime.linking import LinkedComponent
from wasmlattice.runtime.pool import InstancePool
from wasmlattice.wasi.ctx import WasiConfig, WasiCtx


class InvokeError(Exception):
    """An export cannot be called (not exported, no free instance in time)."""


class ExportInvoker:
    """Calls one running component's exports by interface and function name."""

    def __init__(
        self,
        engine: HostEngine,
        linked: LinkedComponent,
        wasi: WasiConfig,
        workload: Workload,
        *,
        max_memory: int | None = None,
    ) -> None:
        self.engine = engine
        self.linked = linked
        self.wasi = wasi
        self.workload = workload
        self.max_memory = max_memory
        self._pools: dict[tuple[str, str], InstancePool] = {}

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
        workload = self.workload
        limit = workload.timeout if timeout is None else min(timeout, workload.timeout)
        try:
            await workload.acquire(limit)
        except SlotTimeout:
            raise InvokeError(
                f"{self.wasi.component_id} is at its limit of concurrent instances and none became free "
                f"within {limit:g}s"
            ) from None
        loop = asyncio.get_running_loop()
        try:
            if workload.inline.enabled():
                done, value = self._try_inline(pool, loop, limit, args)
                if done:
                    return value
            wctx = WasiCtx(self.wasi, loop)
            return await loop.run_in_executor(workload.executor, pool.run, wctx, limit, *args)
        finally:
            workload.release()

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
            retry = retry_on_thread(e, budget, limit)
            self.workload.inline.record(not retry)
            if retry:
                return False, None
            raise
        self.workload.inline.record(True)
        return True, value
