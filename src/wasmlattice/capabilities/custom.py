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

from wasmlattice.capabilities.base import (
    CapabilityError,
    ComponentContext,
    InvokeError,
    capability_span,
    component,
)
from wasmlattice.runtime.component import InterfaceName
from wasmlattice.runtime.fastcall import Trap
from wasmlattice.runtime.linking import HostFunc, HostInterface
from wasmlattice.runtime.witypes import FuncSig, has_handle


class Route:
    """Calls of one imported function, forwarded along the caller's link by the host's router."""

    def __init__(self, name: InterfaceName, func: str, sig: FuncSig) -> None:
        self.interface = name.unversioned
        self.instance = str(name)  # the version the caller imports is the one it calls remotely
        self.func = func
        self.sig = sig

    def call(self, comp: ComponentContext, args: tuple[Any, ...]) -> Any:
        """Call the function on the target of the calling component's link; the callee's result."""
        lk = comp.link(self.interface)
        router = comp.services.router
        if router is None:
            raise comp.error(f"this host cannot route calls to `{lk.target}`")
        timeout = comp.services.invocation_timeout
        try:
            with capability_span(comp, self.instance, self.func, lk, "component"):
                return comp.run(
                    lambda: router.call(
                        comp.component_id, lk.name, lk.target, self.instance, self.func, self.sig, args
                    ),
                    timeout=timeout + 1.0,
                )
        except InvokeError as e:
            raise comp.error(str(e)) from None


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
