"""The registry of every WASI 0.2 interface this host implements."""

from __future__ import annotations

from ..runtime.linking import HostRegistry
from . import cli, clocks, http, io, random


def wasi_registry() -> HostRegistry:
    """A registry with all WASI 0.2 interfaces: io, clocks, random, cli, filesystem, sockets, http."""
    reg = HostRegistry()
    modules: list[object] = [io, clocks, random, cli, http]
    try:
        from . import filesystem, sockets

        modules += [filesystem, sockets]
    except ImportError:  # pragma: no cover - present in every release; absent only mid-development
        pass
    for m in modules:
        for iface in m.interfaces():  # type: ignore[attr-defined]
            reg.add(iface)
    return reg
