"""Starting and stopping a host's providers by reference.

Protocol: docs/protocol.md#provider-start-and-stop and docs/protocol.md#builtin-providers.

Every provider is builtin and in-process. `BUILTINS` maps each accepted reference (wasmCloud's
`wasmcloud+builtin://...` spellings are aliases of ours) to the factory that makes it; other
references are refused with a message naming the supported ones. Installed capability plugins
(`capabilities/plugins.py`, docs/plugins.md) add theirs on first use.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence

from wasmlattice.capabilities import http_server
from wasmlattice.capabilities.base import HostServices, Provider, ProviderSpec
from wasmlattice.capabilities.config_keys import KeyProblem, ProviderKeys, Role, key_problems
from wasmlattice.capabilities.http_server import HttpServerProvider
from wasmlattice.protocol import subjects as sj
from wasmlattice.protocol.models import Link, ProviderDescription
from wasmlattice.protocol.state import ConfigNotFoundError

log = logging.getLogger(__name__)

ProviderFactory = Callable[[ProviderSpec], Provider]


def _http_server(spec: ProviderSpec) -> Provider:
    router = spec.services.router
    assert router is not None
    return HttpServerProvider(
        spec.provider_id,
        spec.image_ref,
        state=spec.services.state,
        router=router,
        config=spec.config,
        annotations=spec.annotations,
        services=spec.services,
    )


# Canonical reference -> factory. Capability modules add their providers in `_register`.
BUILTINS: dict[str, ProviderFactory] = {"builtin://http-server": _http_server}
# wasmCloud's spellings of the same providers.
ALIASES: dict[str, str] = {"wasmcloud+builtin://http-server": "builtin://http-server"}
# Canonical reference -> the config keys the provider reads (capabilities/config_keys.py).
CONFIG_KEYS: dict[str, ProviderKeys] = dict(http_server.CONFIG_KEYS)


def _register_modules() -> None:
    from wasmlattice.capabilities.catalog import MODULES

    for module in MODULES:
        BUILTINS.update(getattr(module, "PROVIDERS", {}))
        ALIASES.update(getattr(module, "ALIASES", {}))
        CONFIG_KEYS.update(getattr(module, "CONFIG_KEYS", {}))


_plugins_registered = False


def _register_plugins() -> None:
    # Installed capability plugins (docs/plugins.md), loaded on first use rather than at import, so
    # the warnings about broken ones go to the host's configured log; broken ones are skipped.
    global _plugins_registered
    if _plugins_registered:
        return
    _plugins_registered = True
    from wasmlattice.capabilities.catalog import plugins

    for plugin in plugins():
        if plugin.spec is not None:
            BUILTINS[plugin.spec.ref] = plugin.spec.provider
            if plugin.spec.config_keys is not None:
                CONFIG_KEYS[plugin.spec.ref] = plugin.spec.config_keys


_register_modules()


def canonical_ref(ref: str) -> str | None:
    """Our reference for a builtin provider reference (aliases resolved), or None if unknown."""
    _register_plugins()
    ref = ALIASES.get(ref, ref)
    return ref if ref in BUILTINS else None


def provider_keys(ref: str) -> ProviderKeys | None:
    """The config keys of the builtin provider `ref` names (any spelling), None if not builtin."""
    canonical = canonical_ref(ref)
    return None if canonical is None else CONFIG_KEYS.get(canonical)


def config_key_problems(ref: str, config: Mapping[str, str], role: Role) -> list[KeyProblem]:
    """The keys of `config` that the builtin provider `ref` does not read in `role` (typos first)."""
    keys = provider_keys(ref)
    return [] if keys is None else key_problems(config, keys, role)


def supported_refs() -> list[str]:
    """Every accepted builtin reference, ours first."""
    _register_plugins()
    return sorted(BUILTINS) + sorted(ALIASES)


class ProviderError(RuntimeError):
    """A provider cannot be started or stopped; the message is the text to report."""


class ProviderManager:
    """The providers running on one host, by provider ID."""

    def __init__(self, services: HostServices) -> None:
        self.services = services
        self._providers: dict[str, Provider] = {}
        self._starting: set[str] = set()

    def running(self, provider_id: str) -> bool:
        """Whether a provider with that ID runs (or is starting) on this host."""
        return provider_id in self._providers or provider_id in self._starting

    def get(self, provider_id: str) -> Provider | None:
        """The running provider with that ID, if any."""
        return self._providers.get(provider_id)

    def items(self) -> list[tuple[str, Provider]]:
        """Every running provider with its ID, by ID."""
        return sorted(self._providers.items())

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
    ) -> Provider:
        """Start a provider from its reference; `ProviderError` (or a config error) if it cannot run."""
        self._starting.add(provider_id)
        try:
            if provider_id in self._providers:
                raise ProviderError(f"provider {provider_id} is already running")
            ref = canonical_ref(provider_ref)
            if ref is None:
                raise ProviderError(
                    f"cannot start provider {provider_ref!r}: this host runs only the builtin providers "
                    f"{', '.join(supported_refs())}"
                )
            # Secret references are not config: builtin providers take no secrets (yet), and a
            # reference's fields must not end up in a provider's settings.
            names = [n for n in config_names if not sj.is_secret_reference(n)]
            config = await self.services.state.merged_config(names)
            problems = config_key_problems(ref, config, "provider")
            typos = [p.message() for p in problems if p.is_typo]
            if typos:
                # A misspelt setting would be ignored and the provider run without it.
                raise ProviderError(f"cannot start provider {provider_id}: {'; '.join(typos)}")
            for problem in problems:
                log.warning("provider %s: %s", provider_id, problem.message())
            spec = ProviderSpec(
                provider_id,
                provider_ref,
                config,
                dict(annotations or {}),
                self.services,
                CONFIG_KEYS.get(ref),
            )
            provider = BUILTINS[ref](spec)
            try:
                await provider.start()
            except BaseException:
                # Whatever it opened before failing (listeners, its supervisor) is released.
                with contextlib.suppress(Exception):
                    await provider.stop()
                raise
            self._providers[provider_id] = provider
            log.info("provider %s (%s) started", provider_id, provider_ref)
            return provider
        finally:
            self._starting.discard(provider_id)

    async def link_typos(self, link: Link) -> list[str]:
        """Typos of config keys in `link`'s configs on the side of a builtin provider.

        The provider's reference comes from this host when it runs the provider, else from the
        provider's spec in the lattice state (written when any host started it), so every host
        answers alike once the provider has started somewhere. A provider not started yet, or a
        named config that does not exist yet, cannot be checked here; the provider that applies
        the link reports it then (docs/config-keys.md).
        """
        out: list[str] = []
        sides: tuple[tuple[str, list[str], Role], ...] = (
            (link.source_id, link.source_config, "source"),
            (link.target, link.target_config, "target"),
        )
        for end, names, role in sides:
            running = self._providers.get(end)
            spec = self.services.state.spec(end)
            ref = running.description().image_ref if running is not None else spec.url if spec else None
            if ref is None or provider_keys(ref) is None or not names:
                continue
            try:
                config = await self.services.state.merged_config(
                    [n for n in names if not sj.is_secret_reference(n)]
                )
            except ConfigNotFoundError:
                continue
            side = "source" if role == "source" else "target"
            out += [
                f"the {side} config of the link {link.source_id} -> {link.target}: {p.message()}"
                for p in config_key_problems(ref, config, role)
                if p.is_typo
            ]
        return out

    async def stop(self, provider_id: str) -> Provider | None:
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
