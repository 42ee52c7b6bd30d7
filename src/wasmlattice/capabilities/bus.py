"""`wasmcloud:bus/lattice@1.0.0`: a component picks which named links its later calls use.

`set-link-name(name, interfaces)` records, for the calling instance only, the link name to use for
each `namespace:package/interface` listed (reference §5.4); capability calls read it through
`base.current_link_name`. `default` resets an interface to the default link. Instances are fresh per
invocation, so a choice lasts for the rest of the invocation that made it.
"""

from __future__ import annotations

from wasmlattice.capabilities.base import DEFAULT_LINK_NAME
from wasmlattice.runtime.linking import HostInterface
from wasmlattice.runtime.witypes import STRING, func, lst, own
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


def interfaces() -> list[HostInterface]:
    """`wasmcloud:bus/lattice` 1.x."""
    target = "call-target-interface"
    return [
        HostInterface(
            LATTICE,
            {f"[constructor]{target}": CallTargetInterface, "set-link-name": set_link_name},
            versions=("1.",),
            signatures={
                f"[constructor]{target}": func(STRING, STRING, STRING, returns=own(target)),
                "set-link-name": func(STRING, lst(own(target))),
            },
        )
    ]
