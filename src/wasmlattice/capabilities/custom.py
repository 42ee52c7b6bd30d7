"""Custom interfaces: an import no capability implements is routed by its link to a component export.

Reference §5.4 ("anything else"): a component importing `ns:pkg/iface` calls whatever the link
named `default` from it for that interface targets. A target running on this host is called
in-process (a fresh instance of the target, within its `max_instances`); values pass as Python
values, lifted from the caller and lowered into the callee. Calls to targets on other hosts go
over wRPC (the remote path plugs into `call_target`).

A missing link, or a target that is not running, traps the calling instance with a logged message
naming the link: a custom interface has no error type the host could answer with instead.
"""

from __future__ import annotations

from typing import Any

from wasmlattice.capabilities.base import CapabilityError, ComponentContext, component
from wasmlattice.host.invoke import InvokeError
from wasmlattice.runtime.component import InterfaceName
from wasmlattice.runtime.fastcall import GuestTrap, Trap
from wasmlattice.runtime.linking import HostFunc, HostInterface
from wasmlattice.runtime.witypes import (
    FuncSig,
    HandleT,
    ListT,
    OptionT,
    RecordT,
    ResultT,
    TupleT,
    VariantT,
    WitType,
)


def _has_handle(t: WitType | None) -> bool:
    if t is None:
        return False
    if isinstance(t, HandleT):
        return True
    if isinstance(t, (ListT,)):
        return _has_handle(t.elem)
    if isinstance(t, OptionT):
        return _has_handle(t.inner)
    if isinstance(t, ResultT):
        return _has_handle(t.ok) or _has_handle(t.err)
    if isinstance(t, TupleT):
        return any(_has_handle(e) for e in t.elems)
    if isinstance(t, RecordT):
        return any(_has_handle(e) for _, e in t.fields)
    if isinstance(t, VariantT):
        return any(_has_handle(e) for _, e in t.cases)
    return False


def call_target(comp: ComponentContext, interface: str, func: str, args: tuple[Any, ...]) -> Any:
    """Call `interface#func` on the target of the calling component's link; the callee's result."""
    lk = comp.link(interface)
    components = comp.services.components
    if components is None or components.get(lk.target) is None:
        raise comp.error(
            f"`{lk.target}` (the target of link `{lk.name}` for `{interface}`) is not running on this host"
        )
    try:
        return comp.run(lambda: components.invoke(lk.target, interface, func, *args))
    except InvokeError as e:
        raise comp.error(f"calling {interface}#{func} on `{lk.target}` failed: {e}") from None
    except GuestTrap as e:
        raise comp.error(f"`{lk.target}` trapped in {interface}#{func}: {e.reason}") from None


def _forwarder(interface: str, func: str, sig: FuncSig) -> HostFunc:
    if any(_has_handle(t) for _, t in sig.params) or _has_handle(sig.result):

        def unsupported(*_args: Any) -> Any:
            raise Trap(f"{interface}#{func} passes resources, which cannot cross components yet")

        return unsupported

    def forward(*args: Any) -> Any:
        try:
            return call_target(component(), interface, func, args)
        except CapabilityError as e:
            raise Trap(str(e)) from None

    return forward


def dynamic_interface(name: InterfaceName, imported: dict[str, FuncSig]) -> HostInterface:
    """An implementation of a custom import that forwards each call along the caller's link."""
    iface = name.unversioned
    functions = {fname: _forwarder(iface, fname, sig) for fname, sig in imported.items()}
    return HostInterface(iface, functions, versions=("",) if name.version is None else (name.version,))
