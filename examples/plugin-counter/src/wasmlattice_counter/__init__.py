"""`builtin://counter`: a capability plugin serving `example:counter/counter` from a Python dict.

A component importing the interface is linked to a provider started from `builtin://counter`;
each link gets its own counts (the link's backend), starting after the target config key `start`
(default 0). Counts live in the host's memory: they are lost when the provider stops.
"""

from __future__ import annotations

from importlib.resources import files

from wasmlattice.capabilities.base import CapabilityError, LinkTargetProvider, component
from wasmlattice.capabilities.config_keys import KeySet, ProviderKeys
from wasmlattice.capabilities.plugins import PluginSpec, trap_on_capability_error
from wasmlattice.protocol.models import Link, StrMap
from wasmlattice.runtime.linking import HostInterface
from wasmlattice.runtime.witypes import STRING, U64, func

INTERFACE = "example:counter/counter"
U64_MAX = 2**64 - 1


class Counts:
    """The counts of one link."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.values: dict[str, int] = {}

    def increment(self, name: str) -> int:
        """One more for `name`; the new count (wraps to stay a u64)."""
        value = (self.values.get(name, self.start) + 1) & U64_MAX
        self.values[name] = value
        return value


class CounterProvider(LinkTargetProvider):
    """One `Counts` per link to it."""

    kind = "counter"

    async def open_backend(self, link: Link, config: StrMap) -> Counts:
        """Fresh counts for a link (`start` from its target config)."""
        raw = config.get("start", "0")
        try:
            start = int(raw)
        except ValueError:
            raise CapabilityError(
                f"target config `start` of the counter link must be an integer, not {raw!r}"
            ) from None
        return Counts(start)


@trap_on_capability_error
def increment(name: str) -> int:
    """`example:counter/counter#increment` for the calling component, on its link's counts."""
    counts: Counts = component().backend(INTERFACE)
    return counts.increment(name)


def plugin() -> PluginSpec:
    """The entry point `wasmlattice.capabilities: counter`."""
    return PluginSpec(
        name="counter",
        provider=CounterProvider,
        interfaces=[
            HostInterface(
                INTERFACE,
                {"increment": increment},
                versions=("0.1.",),
                signatures={"increment": func(STRING, returns=U64)},
            )
        ],
        wit=files(__package__).joinpath("counter.wit").read_text(),
        config_keys=ProviderKeys("counter", target=KeySet(known=("start",))),
    )
