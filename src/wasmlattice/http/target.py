"""What serves HTTP requests: a linked `wasi:http/incoming-handler` component and its limits."""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

from wasmlattice.runtime.component import CompileCache, ComponentError, read_component_file
from wasmlattice.runtime.engine import HostEngine
from wasmlattice.runtime.fastcall import GuestTrap
from wasmlattice.runtime.linking import LinkedComponent, link
from wasmlattice.runtime.pool import InstancePool
from wasmlattice.wasi.ctx import DeadlineExceeded, NeedsLoop, WasiConfig

INCOMING_HANDLER = "wasi:http/incoming-handler"

# How long a guest may run on the event loop's thread before the attempt is abandoned and the
# request is run again on a worker thread (it blocks every other connection meanwhile).
INLINE_BUDGET = 0.05


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


class SlotTimeout(Exception):
    """No instance of a component became free before the request's deadline."""


def retry_on_thread(e: GuestTrap, budget: float, limit: float) -> bool:
    """Whether an inline attempt that failed with `e` should run again on a worker thread.

    It should when the guest had to wait for the loop, or when the short inline budget (not the
    call's own, longer, limit) interrupted it.
    """
    return isinstance(e.cause, NeedsLoop) or (interrupted(e) and limit > budget)


def interrupted(e: GuestTrap) -> bool:
    """Whether a trap is the deadline (epoch interruption or a host wait past it)."""
    return isinstance(e.cause, DeadlineExceeded) or "interrupt" in e.message


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

    async def acquire(self, timeout: float | None = None) -> None:
        """Take an instance slot, waiting up to the deadline (or `timeout`); raises `SlotTimeout`."""
        limit = self.timeout if timeout is None else min(timeout, self.timeout)
        if self._slots is not None:
            if not self._slots.locked():
                await self._slots.acquire()  # a free slot: no timer task needed
            else:
                try:
                    await asyncio.wait_for(self._slots.acquire(), limit)
                except TimeoutError:
                    raise SlotTimeout(
                        f"{self.name} is at its limit of {self.max_concurrency} concurrent instances "
                        f"and none became free within {limit:g}s"
                    ) from None
        self.active += 1
        self._idle.clear()

    def release(self) -> None:
        """Give back a slot taken by `acquire`."""
        if self._slots is not None:
            self._slots.release()
        self.active -= 1
        if self.active == 0:
            self._idle.set()

    async def retire(self, drain_timeout: float) -> None:
        """Wait (bounded) for in-flight calls to finish, then release the worker threads."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), drain_timeout)
        # Running guests finish on their threads; nothing new can be submitted once retired.
        self.executor.shutdown(wait=False, cancel_futures=False)


class HttpTarget(Workload):
    """A linked HTTP component and what serving it needs: its pool and WASI config, and a workload."""

    def __init__(
        self,
        name: str,
        pool: InstancePool,
        config: WasiConfig,
        *,
        timeout: float,
        threads: int,
        max_concurrency: int | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout, threads=threads, max_concurrency=max_concurrency)
        self.pool = pool
        self.config = config


def load_http_component(engine: HostEngine, path: str, cache: CompileCache) -> LinkedComponent:
    """Read, compile (through `cache`) and link an HTTP component, checking it exports the handler.

    Blocking (compilation): call it off the event loop when the loop serves other work.
    """
    # Capabilities need a lattice; imported outside one they answer their interface's error (or
    # an empty config), so such components still run here.
    from wasmlattice.capabilities.catalog import host_registry

    data = read_component_file(path)
    comp = cache.load(data, engine, path)
    linked = link(engine, comp, host_registry(), origin=path)
    if not any(n.split("@")[0] == INCOMING_HANDLER for n in linked.exports):
        raise ComponentError(
            f"{path} does not export {INCOMING_HANDLER}; it is not an HTTP component "
            "(build it for the wasi:http/proxy world)"
        )
    return linked
