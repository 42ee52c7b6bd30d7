"""`wasmcloud:bus/lattice` (1.0.0 and 2.0.x): a component picks which named links its later calls use.

`set-link-name(name, interfaces)` records, for the calling instance only, the link name to use for
each `namespace:package/interface` listed (docs/protocol.md#interfaces); capability and custom-interface calls
read it through `base.current_link_name`. `default` resets an interface to the default link.
Instances are fresh per invocation, so a choice lasts for the rest of the invocation that made it.
Version 2.x answers an error (and changes nothing) when an interface listed has no link of that
name from the calling component; 1.0.0 cannot answer errors and records the name regardless.
"""

from __future__ import annotations

from wasmlattice.capabilities.base import (
    DEFAULT_LINK_NAME,
    CapabilityError,
    ComponentContext,
    component,
    no_link_message,
)
from wasmlattice.runtime.linking import HostInterface
from wasmlattice.runtime.witypes import STRING, Err, func, lst, own, result
from wasmlattice.wasi.ctx import ctx

LATTICE = "wasmcloud:bus/lattice"


class CallTargetInterface:
    """One interface a link name applies to (`namespace:package/interface`)."""

    __slots__ = ("interface", "namespace", "package")

    def __init__(self, namespace: str, package: str, interface: str) -> None:
        self.namespace, self.package, self.interface = namespace, package, interface

    @property
    def name(self) -> str:
        """`ns:pkg/iface`, the key links are found by."""
        return f"{self.namespace}:{self.package}/{self.interface}"


def set_link_name(name: str, interfaces: list[CallTargetInterface]) -> None:
    """Use the links named `name` for these interfaces from now on in this instance."""
    names = ctx().link_names
    for target in interfaces:
        if name == DEFAULT_LINK_NAME:
            names.pop(target.name, None)
        else:
            names[target.name] = name


def set_link_name_checked(name: str, interfaces: list[CallTargetInterface]) -> None:
    """2.x: as `set_link_name`, but `Err` naming the first interface without such a link."""
    comp = component_or_none()
    if comp is not None:
        for target in interfaces:
            if comp.services.find_link(comp.component_id, target.name, name) is None:
                raise Err(no_link_message(target.name, name))
    set_link_name(name, interfaces)


def component_or_none() -> ComponentContext | None:
    """The calling component's context, or None outside a lattice host (nothing to check)."""
    try:
        return component()
    except CapabilityError:
        return None


def interfaces() -> list[HostInterface]:
    """`wasmcloud:bus/lattice` 1.x and 2.x."""
    target = "call-target-interface"
    return [
        HostInterface(
            LATTICE,
            {f"[constructor]{target}": CallTargetInterface, "set-link-name": set_link_name_checked},
            versions=("2.",),
            signatures={
                f"[constructor]{target}": func(STRING, STRING, STRING, returns=own(target)),
                "set-link-name": func(STRING, lst(own(target)), returns=result(None, STRING)),
            },
        ),
        HostInterface(
            LATTICE,
            {f"[constructor]{target}": CallTargetInterface, "set-link-name": set_link_name},
            versions=("1.",),
            signatures={
                f"[constructor]{target}": func(STRING, STRING, STRING, returns=own(target)),
                "set-link-name": func(STRING, lst(own(target))),
            },
        ),
    ]
