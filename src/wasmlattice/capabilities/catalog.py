"""Every capability module of the host, and the link-time registry built from them.

A capability module exposes `interfaces()` (the `HostInterface`s it implements) and, when it
brings providers, `PROVIDERS` (reference -> factory) and `ALIASES` (other spellings -> reference).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from wasmlattice.capabilities import blobstore, bus, guest_logging, http_client, keyvalue, messaging
from wasmlattice.capabilities import config as config_capability
from wasmlattice.capabilities import plugins as plugin_loader
from wasmlattice.capabilities import secrets as secrets_capability
from wasmlattice.runtime.execution import NeedsLoop
from wasmlattice.runtime.linking import HostFunc, HostInterface, HostRegistry
from wasmlattice.runtime.witypes import Err
from wasmlattice.wasi.ctx import ctx
from wasmlattice.wasi.registry import wasi_registry

if TYPE_CHECKING:  # the OpenTelemetry SDK is imported only when metrics are on
    from wasmlattice.observability.metrics import HostMetrics

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


def host_registry(metrics: HostMetrics | None = None) -> HostRegistry:
    """WASI plus every capability interface, and link-routed custom interfaces for the rest.

    With `metrics`, every capability function (not WASI's) counts its calls by interface and
    outcome; without, the functions are bound as they are, at no cost.
    """
    from wasmlattice.capabilities import custom

    reg = wasi_registry()
    for module in MODULES:
        ifaces = module.interfaces()
        reg.extend(ifaces if metrics is None else [counted(iface, metrics) for iface in ifaces])
    for plugin in plugins():
        if plugin.spec is not None:
            found = list(plugin.spec.interfaces)
            reg.extend(found if metrics is None else [counted(iface, metrics) for iface in found])
    if metrics is None:
        reg.dynamic = custom.dynamic_interface
    else:
        dynamic = custom.dynamic_interface
        reg.dynamic = lambda name, imported: counted(dynamic(name, imported), metrics)
    return reg


def counted(iface: HostInterface, metrics: HostMetrics) -> HostInterface:
    """`iface` with each function counting its calls in `metrics` (resource drops are not calls)."""
    functions = {
        fname: fn if fname.startswith("[resource-drop]") else _counted(fn, iface.name, fname, metrics)
        for fname, fn in iface.functions.items()
    }
    return dataclasses.replace(iface, functions=functions)


def _counted(fn: HostFunc, interface: str, fname: str, metrics: HostMetrics) -> HostFunc:
    record: Callable[[str, str, str, bool], None] = metrics.capability_call

    def call(*args: Any) -> Any:
        try:
            result = fn(*args)
        except NeedsLoop:
            raise  # an inline attempt given up: the call is made again on a worker thread
        except BaseException:
            record(_caller(), interface, fname, False)
            raise
        # A function answers an error either by raising `Err` or by returning it.
        record(_caller(), interface, fname, not isinstance(result, Err))
        return result

    return call


def _caller() -> str:
    """The ID of the component whose guest is calling ("" outside a guest call)."""
    try:
        return ctx().config.component_id
    except AttributeError:
        return ""


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
