"""Starting and stopping a host's providers by reference (reference §2.4.5-2.4.6, §5.5).

Only builtin, in-process providers exist so far: `wasmcloud+builtin://http-server` (alias
`builtin://http-server`). Other references are refused with a message naming the supported ones.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from wasmlattice.capabilities.http_server import HttpServerProvider, TargetLookup
from wasmlattice.lattice.models import ProviderDescription
from wasmlattice.lattice.state import LatticeState

log = logging.getLogger(__name__)

HTTP_SERVER_REFS = ("wasmcloud+builtin://http-server", "builtin://http-server")
SUPPORTED_REFS = HTTP_SERVER_REFS


class ProviderError(RuntimeError):
    """A provider cannot be started or stopped; the message is the text to report."""


class ProviderManager:
    """The providers running on one host, by provider ID."""

    def __init__(self, state: LatticeState, lookup: TargetLookup) -> None:
        self.state = state
        self.lookup = lookup
        self._providers: dict[str, HttpServerProvider] = {}
        self._starting: set[str] = set()

    def running(self, provider_id: str) -> bool:
        """Whether a provider with that ID runs (or is starting) on this host."""
        return provider_id in self._providers or provider_id in self._starting

    def get(self, provider_id: str) -> HttpServerProvider | None:
        """The running provider with that ID, if any."""
        return self._providers.get(provider_id)

    def descriptions(self) -> list[ProviderDescription]:
        """Inventory entries of every running provider, by ID."""
        return [p.description() for _, p in sorted(self._providers.items())]

    def reserve(self, provider_id: str) -> None:
        """Mark an ID as starting, so a second start is refused before the first one finishes."""
        self._starting.add(provider_id)

    async def start(
        self,
        provider_id: str,
        provider_ref: str,
        *,
        config_names: Sequence[str] = (),
        annotations: Mapping[str, str] | None = None,
    ) -> HttpServerProvider:
        """Start a provider from its reference; `ProviderError` (or a config error) if it cannot run."""
        self._starting.add(provider_id)
        try:
            if provider_id in self._providers:
                raise ProviderError(f"provider {provider_id} is already running")
            if provider_ref not in SUPPORTED_REFS:
                raise ProviderError(
                    f"cannot start provider {provider_ref!r}: this host runs only the builtin providers "
                    f"{', '.join(SUPPORTED_REFS)}"
                )
            config = await self.state.merged_config(config_names)
            provider = HttpServerProvider(
                provider_id,
                provider_ref,
                state=self.state,
                lookup=self.lookup,
                config=config,
                annotations=annotations,
            )
            await provider.start()
            self._providers[provider_id] = provider
            log.info("provider %s (%s) started", provider_id, provider_ref)
            return provider
        finally:
            self._starting.discard(provider_id)

    async def stop(self, provider_id: str) -> HttpServerProvider | None:
        """Stop a provider; the stopped provider, or None if it was not running."""
        provider = self._providers.pop(provider_id, None)
        if provider is not None:
            await provider.stop()
            log.info("provider %s stopped", provider_id)
        return provider

    async def stop_all(self) -> None:
        """Stop every provider (host shutdown)."""
        for provider_id in list(self._providers):
            try:
                await self.stop(provider_id)
            except Exception:
                log.exception("stopping provider %s failed", provider_id)
