"""Every capability module of the host, and the link-time registry built from them.

A capability module exposes `interfaces()` (the `HostInterface`s it implements) and, when it
brings providers, `PROVIDERS` (reference -> factory) and `ALIASES` (other spellings -> reference).
"""

from __future__ import annotations

from types import ModuleType

from wasmlattice.capabilities import blobstore, bus, guest_logging, http_client, keyvalue, messaging
from wasmlattice.capabilities import config as config_capability
from wasmlattice.capabilities import plugins as plugin_loader
from wasmlattice.capabilities import secrets as secrets_capability
from wasmlattice.runtime.linking import HostRegistry
from wasmlattice.wasi.registry import wasi_registry

# Capability modules, in the order their interfaces are tried.
MODULES: list[ModuleType] = [
    http_client,
    messaging,
    guest_logging,
    config_capability,
    secrets_capability,
    keyvalue,
    bus,
    blobstore,
]


def host_registry() -> HostRegistry:
    """WASI plus every capability interface, and link-routed custom interfaces for the rest."""
    from wasmlattice.capabilities import custom

    reg = wasi_registry()
    for module in MODULES:
        reg.extend(module.interfaces())
    for plugin in plugins():
        if plugin.spec is not None:
            reg.extend(plugin.spec.interfaces)
    reg.dynamic = custom.dynamic_interface
    return reg


_PLUGINS: list[plugin_loader.PluginInfo] | None = None


def plugins() -> list[plugin_loader.PluginInfo]:
    """Installed capability plugins (docs/plugins.md), loaded once; broken ones carry their problem."""
    global _PLUGINS
    if _PLUGINS is None:
        from wasmlattice.capabilities import http_server

        refs = set(http_server.CONFIG_KEYS)
        for module in MODULES:
            refs.update(getattr(module, "PROVIDERS", {}))
            refs.update(getattr(module, "ALIASES", {}))
        builtin = wasi_registry()
        for module in MODULES:
            builtin.extend(module.interfaces())
        _PLUGINS = plugin_loader.discover(refs, builtin.interfaces)
    return _PLUGINS
