"""Custom interfaces: an import no capability implements is routed by its link to a component export.

As in docs/protocol.md#interfaces ("anything else"): a component importing `ns:pkg/iface` calls
whatever the link named `default` from it for that interface targets. A target running on this host is called
in-process (a fresh instance of the target, within its `max_instances`); values pass as Python
values, lifted from the caller and lowered into the callee.

A target running on another host is called over wRPC (docs/protocol.md#wrpc): the parameters encoded
with the imported function's types, sent to `<lattice>.<target>.wrpc.0.0.1.<instance>.<function>`
with the caller's ID and link name in headers; hosts running the target share calls through their
queue group. A missing link, a target that runs nowhere, a time-out or a trap in the callee traps
the calling instance with a logged message naming the link or target: a custom interface has no
error type the host could answer with instead.
"""

from __future__ import annotations

from typing import Any

from wasmlattice.capabilities.base import CapabilityError, ComponentContext, component
from wasmlattice.host.invoke import InvokeError
from wasmlattice.protocol.wrpc import codec, transport
from wasmlattice.runtime.component import InterfaceName
from wasmlattice.runtime.fastcall import GuestTrap, Trap
from wasmlattice.runtime.linking import HostFunc, HostInterface
from wasmlattice.runtime.witypes import FuncSig, has_handle


class Route:
    """How calls of one imported function travel: in-process, or over wRPC with these codecs."""

    def __init__(self, name: InterfaceName, func: str, sig: FuncSig) -> None:
        self.interface = name.unversioned
        self.instance = str(name)  # the version the caller imports is the one it calls remotely
        self.func = func
        self.sig = sig
        # Prepared once at link time: the hot path only encodes and decodes.
        self.params = codec.params_codec(sig)
        self.results = codec.results_codec(sig)
        self._wire: dict[tuple[str, str, str], tuple[str, dict[str, str]]] = {}

    def call(self, comp: ComponentContext, args: tuple[Any, ...]) -> Any:
        """Call the function on the target of the calling component's link; the callee's result."""
        lk = comp.link(self.interface)
        components = comp.services.components
        if components is not None and components.get(lk.target) is not None:
            return self._local(comp, components, lk.target, args)
        if comp.services.nc is None:
            raise comp.error(
                f"`{lk.target}` (the target of link `{lk.name}` for `{self.interface}`) is not running on "
                "this host, and this host is not connected to a lattice"
            )
        return self._remote(comp, lk.target, lk.name, args)

    def _local(self, comp: ComponentContext, components: Any, target: str, args: tuple[Any, ...]) -> Any:
        try:
            return comp.run(lambda: components.invoke(target, self.interface, self.func, *args))
        except InvokeError as e:
            raise comp.error(f"calling {self.interface}#{self.func} on `{target}` failed: {e}") from None
        except GuestTrap as e:
            raise comp.error(f"`{target}` trapped in {self.interface}#{self.func}: {e.reason}") from None

    def _remote(self, comp: ComponentContext, target: str, link_name: str, args: tuple[Any, ...]) -> Any:
        services = comp.services
        try:
            data = self.params.encode(args)
        except codec.CodecError as e:
            raise comp.error(f"cannot send {self.instance}#{self.func} to `{target}`: {e}") from None
        key = (target, comp.component_id, link_name)
        found = self._wire.get(key)
        if found is None:
            # Built once per (target, caller, link), not per call.
            subject = transport.invocation_subject(f"{services.lattice}.{target}", self.instance, self.func)
            found = self._wire[key] = (subject, {"source-id": comp.component_id, "link-name": link_name})
        subject, headers = found
        timeout = services.invocation_timeout

        async def invoke() -> bytes:
            return await transport.invoke(services.nc, subject, data, headers=headers, timeout=timeout)

        try:
            reply = comp.run(invoke, timeout=timeout + 1.0)
        except transport.WrpcError as e:
            raise comp.error(f"calling {self.instance}#{self.func} on `{target}` failed: {e}") from None
        try:
            values = self.results.decode(reply)
        except codec.CodecError as e:
            raise comp.error(
                f"`{target}` answered {self.instance}#{self.func} with an invalid result: {e}"
            ) from None
        return values[0] if values else None


def _forwarder(name: InterfaceName, func: str, sig: FuncSig) -> HostFunc:
    if any(has_handle(t) for _, t in sig.params) or has_handle(sig.result):

        def unsupported(*_args: Any) -> Any:
            raise Trap(f"{name}#{func} passes resources, which cannot cross components yet")

        return unsupported
    route = Route(name, func, sig)

    def forward(*args: Any) -> Any:
        try:
            return route.call(component(), args)
        except CapabilityError as e:
            raise Trap(str(e)) from None

    return forward


def dynamic_interface(name: InterfaceName, imported: dict[str, FuncSig]) -> HostInterface:
    """An implementation of a custom import that forwards each call along the caller's link."""
    functions = {fname: _forwarder(name, fname, sig) for fname, sig in imported.items()}
    return HostInterface(
        name.unversioned, functions, versions=("",) if name.version is None else (name.version,)
    )
