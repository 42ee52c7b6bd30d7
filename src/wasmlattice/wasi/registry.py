"""The registry of every WASI 0.2 interface this host implements."""

from __future__ import annotations

from wasmlattice.runtime.linking import HostRegistry
from wasmlattice.wasi import cli, clocks, filesystem, http, io, random, sockets


def wasi_registry() -> HostRegistry:
    """A registry with all WASI 0.2 interfaces: io, clocks, random, cli, filesystem, sockets, http."""
    reg = HostRegistry()
    for module in (io, clocks, random, cli, filesystem, sockets, http):
        for iface in module.interfaces():
            reg.add(iface)
    return reg
