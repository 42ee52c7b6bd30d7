"""Calling a running component's exports other than HTTP (messaging handlers, custom interfaces).

Each call gets a fresh instance (docs/protocol.md#instances), or a warm one of the component's
`InstanceGroup` when its annotations ask for reuse (docs/instance-pools.md), within the
component's `Workload`: the same instance bound and worker threads its HTTP requests use, so one
component never runs more than `max_instances` guests at once. Calls take the host's one guest-call path
(`runtime.execution.call_guest`): inline on the event loop's thread first, on a worker thread when
the guest would wait or takes long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from wasmlattice.capabilities.base import InvokeError
from wasmlattice.runtime.component import ComponentError
from wasmlattice.runtime.engine import HostEngine
from wasmlattice.runtime.execution import HostBusy, SlotTimeout, Workload, call_guest
from wasmlattice.runtime.linking import LinkedComponent
from wasmlattice.runtime.pool import InstanceGroup, InstancePool
from wasmlattice.wasi.ctx import WasiConfig, WasiCtx


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
        group: InstanceGroup | None = None,
    ) -> None:
        self.engine = engine
        self.linked = linked
        self.wasi = wasi
        self.workload = workload
        self.max_memory = max_memory
        # Shared by the pools of every export (and the HTTP target's): one set of warm instances.
        self.group = group
        self._pools: dict[tuple[str, str], InstancePool] = {}

    def promote(self, linked: LinkedComponent) -> None:
        """Make new instances from `linked`, another build of the same component (tiered compilation)."""
        self.linked = linked
        for pool in list(self._pools.values()):
            pool.promote(linked)

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
            pool = InstancePool(
                self.engine, self.linked, interface, func, max_memory=self.max_memory, group=self.group
            )
            self._pools[key] = pool
        return pool

    async def call(self, interface: str, func: str, *args: Any, timeout: float | None = None) -> Any:
        """Call `interface#func` with Python values on a fresh (or warm) instance; the guest's result."""
        try:
            pool = self._pool(interface, func)
        except ComponentError as e:
            raise InvokeError(str(e)) from None
        loop = asyncio.get_running_loop()

        def attempt(inline: bool) -> Callable[[float], Any]:
            wctx = WasiCtx(self.wasi, loop)
            wctx.inline = inline
            return lambda limit: pool.run(wctx, limit, *args)

        try:
            return await call_guest(self.workload, attempt, timeout=timeout, operation=f"{interface}/{func}")
        except HostBusy as e:  # the host's --max-concurrent-invocations
            raise InvokeError(f"{self.wasi.component_id}: {e}") from None
        except SlotTimeout:
            limit = self.workload.limit(timeout)
            raise InvokeError(
                f"{self.wasi.component_id} is at its limit of concurrent instances and none became free "
                f"within {limit:g}s"
            ) from None
        except RuntimeError:  # the workload was retired: the component was replaced or stopped
            raise InvokeError(f"{self.wasi.component_id} is stopping and cannot take the call") from None
