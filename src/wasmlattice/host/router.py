"""The host's one router: every call to a component goes to a local instance or to another host.

Capabilities reach components only through this router (the `ComponentRouter` port in
`capabilities/base.py`): messaging deliveries and key-value watch callbacks (local instances
only, since their subscriptions follow where the component runs), custom-interface calls along a
link, and HTTP requests from the http-server provider. A component running here is always
preferred; otherwise the call leaves over wRPC to the component's queue group, so whichever host
runs it answers (docs/lattice.md, "Calls between components").
"""

from __future__ import annotations

import functools
from typing import Any

from wasmlattice.capabilities.base import ComponentContext, InvokeError
from wasmlattice.capabilities.http_ingress import Forward, HttpTarget
from wasmlattice.host.components import ComponentRegistry
from wasmlattice.host.wrpc_http import RemoteHttp
from wasmlattice.protocol.wrpc.client import invoke
from wasmlattice.protocol.wrpc.primitives import CodecError
from wasmlattice.protocol.wrpc.transport import WrpcError, invocation_subject
from wasmlattice.protocol.wrpc.tuples import params_codec, results_codec
from wasmlattice.runtime.fastcall import GuestTrap
from wasmlattice.runtime.witypes import FuncSig


class _WireCall:
    """What calls of one imported function need on the wire, prepared once (codecs, subjects)."""

    __slots__ = ("params", "results", "sig", "subjects")

    def __init__(self, sig: FuncSig) -> None:
        self.sig = sig  # kept alive: the cache is keyed by its identity
        self.params = params_codec(sig)
        self.results = results_codec(sig)
        # (target, caller, link name) -> (subject, headers)
        self.subjects: dict[tuple[str, str, str], tuple[str, dict[str, str]]] = {}


class Router:
    """Decides, for every call to a component, whether a local instance or another host serves it."""

    def __init__(
        self,
        components: ComponentRegistry,
        *,
        nc: Any = None,
        lattice: str = "default",
        invocation_timeout: float = 10.0,
    ) -> None:
        self.components = components
        self.nc = nc
        self.lattice = lattice
        self.invocation_timeout = invocation_timeout
        self._wire: dict[int, _WireCall] = {}
        self._remote_http: dict[tuple[str, int], RemoteHttp] = {}

    def runs_here(self, component_id: str) -> bool:
        """Whether `component_id` runs on this host."""
        return self.components.get(component_id) is not None

    def context(self, component_id: str) -> ComponentContext | None:
        """The capability context of a component running here (None if it does not run here)."""
        running = self.components.get(component_id)
        return None if running is None else running.context

    async def call_here(
        self, component_id: str, interface: str, func: str, *args: Any, timeout: float | None = None
    ) -> Any:
        """Call an export of a component running here; `InvokeError` or `GuestTrap`."""
        return await self.components.invoke(component_id, interface, func, *args, timeout=timeout)

    async def call(
        self, source_id: str, link_name: str, target: str, instance: str, func: str, sig: FuncSig, args: Any
    ) -> Any:
        """Call `instance#func` on `target`: a local instance when it runs here, else over wRPC.

        Values are Python values; on the wire they are encoded with `sig`, the caller's view of
        the function. `InvokeError` names the target and what failed.
        """
        interface = instance.partition("@")[0]
        if self.runs_here(target):
            try:
                return await self.call_here(target, interface, func, *args)
            except InvokeError as e:
                raise InvokeError(f"calling {interface}#{func} on `{target}` failed: {e}") from None
            except GuestTrap as e:
                raise InvokeError(f"`{target}` trapped in {interface}#{func}: {e.reason}") from None
        if self.nc is None:
            raise InvokeError(
                f"`{target}` (the target of link `{link_name}` for `{interface}`) is not running on "
                "this host, and this host is not connected to a lattice"
            )
        wire = self._wire.get(id(sig))
        if wire is None:
            wire = self._wire[id(sig)] = _WireCall(sig)
        try:
            data = wire.params.encode(args)
        except CodecError as e:
            raise InvokeError(f"cannot send {instance}#{func} to `{target}`: {e}") from None
        key = (target, source_id, link_name)
        found = wire.subjects.get(key)
        if found is None:
            subject = invocation_subject(f"{self.lattice}.{target}", instance, func)
            found = wire.subjects[key] = (subject, {"source-id": source_id, "link-name": link_name})
        subject, headers = found
        try:
            reply = await invoke(self.nc, subject, data, headers=headers, timeout=self.invocation_timeout)
        except WrpcError as e:
            raise InvokeError(f"calling {instance}#{func} on `{target}` failed: {e}") from None
        try:
            values = wire.results.decode(reply)
        except CodecError as e:
            raise InvokeError(f"`{target}` answered {instance}#{func} with an invalid result: {e}") from None
        return values[0] if values else None

    def http_route(self, component_id: str, source_id: str, max_body: int) -> HttpTarget | Forward | None:
        """What serves an HTTP request for `component_id`: its local target, else a forwarder to
        the host running it (None when this host is on no lattice)."""
        running = self.components.get(component_id)
        if running is not None and running.target is not None:
            return running.target
        if self.nc is None:
            return None
        remote = self._remote_http.get((source_id, max_body))
        if remote is None:
            remote = RemoteHttp(
                self.nc, self.lattice, source_id, timeout=self.invocation_timeout, max_body=max_body
            )
            self._remote_http[(source_id, max_body)] = remote
        # Made per request, not cached per component ID: routes come and go with links.
        return functools.partial(remote.forward, component_id=component_id)
