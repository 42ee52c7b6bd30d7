"""Calling a component's exports within its instance bound (`host.invoke.ExportInvoker`), on a WAT
component: inline for short calls, on a thread when they run long, and a clear error when no
instance becomes free before the caller's deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wasmlattice.capabilities.base import InvokeError
from wasmlattice.host.invoke import ExportInvoker
from wasmlattice.runtime.component import CompileCache
from wasmlattice.runtime.engine import HostEngine
from wasmlattice.runtime.execution import Workload
from wasmlattice.runtime.fastcall import GuestTrap
from wasmlattice.runtime.linking import HostInterface, HostRegistry, link
from wasmlattice.wasi.ctx import WasiConfig

BENCH = "test:micro/bench"


@pytest.fixture(scope="module")
def invoker_for(engine: HostEngine, hostcall_wasm: bytes) -> Any:
    reg = HostRegistry()
    reg.add(HostInterface("test:micro/host", {"ping": lambda x: x + 1}, versions=("",)))
    linked = link(engine, CompileCache(None).load(hostcall_wasm, engine, "hostcall.wasm"), reg)

    def make(max_instances: int, timeout: float) -> ExportInvoker:
        workload = Workload("micro", timeout=timeout, threads=max_instances, max_concurrency=max_instances)
        return ExportInvoker(engine, linked, WasiConfig(component_id="micro"), workload)

    return make


async def test_short_calls_answer_and_traps_surface(invoker_for: Any) -> None:
    inv = invoker_for(2, 5.0)
    assert await inv.call(BENCH, "run", 10) == 10
    with pytest.raises(GuestTrap):
        await inv.call(BENCH, "boom")
    assert await inv.call(BENCH, "run", 3) == 3  # a trapped instance is gone; the next is fresh
    with pytest.raises(InvokeError, match="does not export"):
        await inv.call(BENCH, "nope")
    await inv.workload.retire(0.5)


async def test_a_full_component_fails_the_waiting_call_at_its_deadline(invoker_for: Any) -> None:
    inv = invoker_for(1, 1.5)
    # `spin` never returns: it holds the only instance until the component's deadline interrupts it
    # (first inline, then, past the inline budget, on a worker thread).
    spinning = asyncio.ensure_future(inv.call(BENCH, "spin"))
    await asyncio.sleep(0.2)
    with pytest.raises(
        InvokeError, match=r"at its limit of concurrent instances and none became free within 0\.3s"
    ):
        await inv.call(BENCH, "run", 1, timeout=0.3)
    with pytest.raises(GuestTrap):
        await spinning
    assert await inv.call(BENCH, "run", 2) == 2  # the slot is free again
    await inv.workload.retire(0.5)
