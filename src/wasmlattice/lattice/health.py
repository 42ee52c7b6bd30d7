"""Provider health: answer health requests and publish the `health_check_*` events.

Protocol: docs/protocol.md#event-catalogue and docs/protocol.md#provider-messages.

The v1 host asks each provider `wasmbus.rpc.<lattice>.<provider_id>.health` every 30 s (first after
5 s) and turns the answers into events. Our providers run in-process, so the host asks them
directly; it also answers that subject on each provider's behalf, so tools that poll it (wash,
wadm, wasmCloud's test helpers) see the same thing they would from a provider process.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from wasmlattice.lattice.context import ControlContext
from wasmlattice.protocol import events as ev
from wasmlattice.protocol import subjects as sj
from wasmlattice.protocol.models import HealthCheckResponse

log = logging.getLogger(__name__)

DEFAULT_HEALTH_INTERVAL_S = 30.0
FIRST_HEALTH_CHECK_S = 5.0


class Checkable(Protocol):
    """What a provider offers to health checks."""

    def health(self) -> tuple[bool, str | None]:
        """(healthy, message) as the provider sees itself now."""
        ...


class ProviderHealth:
    """Health checks of one host's providers: the responder per provider, and the periodic events."""

    def __init__(self, ctx: ControlContext, interval: float = DEFAULT_HEALTH_INTERVAL_S) -> None:
        self.ctx = ctx
        self.interval = interval
        self._providers: dict[str, Checkable] = {}
        self._subs: dict[str, Any] = {}
        # Last published health per provider; a new provider starts unhealthy, so its first
        # healthy check publishes `health_check_passed` (as in the v1 host).
        self._healthy: dict[str, bool] = {}

    async def started(self, provider_id: str, provider: Checkable) -> None:
        """Begin answering health requests for a provider that just started."""
        self._providers[provider_id] = provider
        self._healthy[provider_id] = False
        subject = sj.provider_health(provider_id, self.ctx.lattice)

        async def answer(msg: Any) -> None:
            healthy, message = provider.health()
            if msg.reply:
                await self.ctx.nc.publish(
                    msg.reply, HealthCheckResponse(healthy=healthy, message=message).to_wire()
                )

        self._subs[provider_id] = await self.ctx.nc.subscribe(subject, cb=answer)

    async def stopped(self, provider_id: str) -> None:
        """Stop answering for a provider that stopped (its health requests then find no responder)."""
        self._providers.pop(provider_id, None)
        self._healthy.pop(provider_id, None)
        sub = self._subs.pop(provider_id, None)
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as e:  # the connection may be closing; nothing is left to clean up
                log.debug("unsubscribing health of %s: %s", provider_id, e)

    async def run(self) -> None:
        """Check every provider each interval (the first check sooner) and publish the outcome."""
        await asyncio.sleep(min(FIRST_HEALTH_CHECK_S, self.interval))
        while True:
            await self.check_all()
            await asyncio.sleep(self.interval)

    async def check_all(self) -> None:
        """One round of checks: passed on unhealthy→healthy, failed on healthy→unhealthy, else status."""
        host_id = self.ctx.host_id
        for provider_id, provider in list(self._providers.items()):
            try:
                healthy, message = provider.health()
            except Exception as e:
                healthy, message = False, f"{type(e).__name__}: {e}"
            was = self._healthy.get(provider_id, False)
            self._healthy[provider_id] = healthy
            if healthy and not was:
                event = ev.health_check_passed(host_id, provider_id=provider_id)
            elif was and not healthy:
                log.warning("provider %s became unhealthy: %s", provider_id, message or "no reason given")
                event = ev.health_check_failed(host_id, provider_id=provider_id)
            else:
                event = ev.health_check_status(host_id, provider_id=provider_id)
            await self.ctx.publish(event)

    async def close(self) -> None:
        """Stop answering for every provider."""
        for provider_id in list(self._subs):
            await self.stopped(provider_id)
