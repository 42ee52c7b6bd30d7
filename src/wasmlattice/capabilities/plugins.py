"""Capability plugins: providers that pip-installed packages add to the host (docs/plugins.md).

The contract: a package declares an entry point in the group `wasmlattice.capabilities`; the object
it names is a `PluginSpec`, or a callable with no arguments that returns one. The spec names a
provider `builtin://NAME` and brings what a builtin capability module brings: the factory of its
provider (called with the same `ProviderSpec` as ours), the host functions of the interfaces it
serves (`HostInterface`s, found by component imports at link time), the WIT of those interfaces
(for guests to build against), and the config keys its provider reads (`ProviderKeys`).

Host functions reach the calling component's link and the provider's backend exactly as builtin
capabilities do: `base.component().backend(INTERFACE)`, with the provider a `LinkTargetProvider`.

A plugin that cannot be used (its import fails, it returns something else, its name or an interface
is already served by the host or by another plugin) is reported with its package and skipped: one
warning in the host log, `broken (reason)` in `wasmlattice plugins`; the host runs without it.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from wasmlattice.capabilities.base import CapabilityError, Provider, ProviderSpec
from wasmlattice.capabilities.config_keys import ProviderKeys
from wasmlattice.runtime.fastcall import Trap
from wasmlattice.runtime.linking import HostInterface

log = logging.getLogger("wasmlattice.capabilities.plugins")

ENTRY_POINT_GROUP = "wasmlattice.capabilities"
# A provider name: it becomes `builtin://NAME`, and appears in manifests and control messages.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# `ns:pkg/iface` without a version (WIT identifiers: lower-case words joined by `-`).
_WORD = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"
INTERFACE_RE = re.compile(rf"^{_WORD}:{_WORD}/{_WORD}$")

F = TypeVar("F", bound=Callable[..., Any])


class PluginError(ValueError):
    """What is wrong with what a plugin's entry point gives."""


@dataclass(frozen=True)
class PluginSpec:
    """What a capability plugin's entry point gives the host."""

    # The provider is started as `builtin://NAME`.
    name: str
    # Makes the provider from what the host starts it with (as `manager.BUILTINS` factories do).
    provider: Callable[[ProviderSpec], Provider]
    # The host functions of each interface the plugin serves (`ns:pkg/iface`, with its versions).
    interfaces: Sequence[HostInterface]
    # The WIT text of the package those interfaces belong to (guests build against it).
    wit: str = ""
    # The keys the provider reads, per config (typos in them are refused, as for builtins).
    config_keys: ProviderKeys | None = None

    @property
    def ref(self) -> str:
        """The provider reference: `builtin://NAME`."""
        return f"builtin://{self.name}"


@dataclass
class PluginInfo:
    """One installed plugin as the host found it; `spec` is None when it is broken."""

    entry_point: str
    package: str
    version: str
    spec: PluginSpec | None = None
    problem: str | None = None
    interfaces: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """`ok`, or `broken (why)`."""
        return "ok" if self.problem is None else f"broken ({self.problem})"

    @property
    def ref(self) -> str | None:
        """The provider reference it serves (None when broken)."""
        return None if self.spec is None else self.spec.ref

    def to_json(self) -> dict[str, Any]:
        """The `wasmlattice plugins -o json` entry."""
        return {
            "name": self.spec.name if self.spec is not None else self.entry_point,
            "entry_point": self.entry_point,
            "package": self.package,
            "version": self.version,
            "provider": self.ref,
            "interfaces": self.interfaces,
            "status": self.status,
        }


def trap_on_capability_error(fn: F) -> F:
    """Wrap a host function of an interface without an error type: a `CapabilityError` (no link,
    provider not running) traps the guest with its message, as custom interfaces do."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except CapabilityError as e:
            raise Trap(str(e)) from None

    return wrapper  # type: ignore[return-value]


def interface_names(ifaces: Iterable[HostInterface]) -> list[str]:
    """`ns:pkg/iface@version-prefix` of each implementation (unversioned ones bare)."""
    out = []
    for iface in ifaces:
        for v in iface.versions:
            out.append(iface.name if not v else f"{iface.name}@{v.rstrip('.')}")
    return out


def _distribution(ep: EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"] or "?", dist.version or "?"


def _check(obj: Any) -> PluginSpec:
    """The spec an entry point's object gives; `PluginError` saying what is wrong with it."""
    if not isinstance(obj, PluginSpec) and callable(obj):
        obj = obj()
    if not isinstance(obj, PluginSpec):
        raise PluginError(f"the entry point gives a {type(obj).__name__}, not a PluginSpec")
    if not isinstance(obj.name, str) or not NAME_RE.match(obj.name):
        raise PluginError(f"name {obj.name!r} is not a provider name (lower-case letters, digits, '-')")
    if not callable(obj.provider):
        raise PluginError("provider is not callable")
    if not obj.interfaces or not all(isinstance(i, HostInterface) for i in obj.interfaces):
        raise PluginError("interfaces must be a non-empty list of HostInterface")
    for iface in obj.interfaces:
        if not isinstance(iface.name, str) or not INTERFACE_RE.match(iface.name):
            raise PluginError(f"interface name {iface.name!r} is not `namespace:package/interface`")
        bad = [f for f, fn in iface.functions.items() if not callable(fn)]
        if bad:
            raise PluginError(f"{iface.name}#{bad[0]} is not callable")
    if not isinstance(obj.wit, str):
        raise PluginError("wit must be WIT text")
    if obj.config_keys is not None and not isinstance(obj.config_keys, ProviderKeys):
        raise PluginError("config_keys must be a ProviderKeys")
    return obj


def discover(
    reserved_refs: Iterable[str],
    reserved_interfaces: Iterable[str],
    found: Sequence[EntryPoint] | None = None,
) -> list[PluginInfo]:
    """Load every installed plugin (entry points of `ENTRY_POINT_GROUP`, by name).

    A plugin whose provider reference is in `reserved_refs`, or that serves an interface in
    `reserved_interfaces` (the host's own) or one an earlier plugin serves, is broken: it would
    shadow what is there. Nothing a plugin does while loading escapes this function.
    """
    # Who already serves each reference and interface: the host, or an earlier plugin.
    owners = {ref: "this host" for ref in reserved_refs}
    owners.update({name: "this host" for name in reserved_interfaces})
    if found is None:
        try:
            found = entry_points(group=ENTRY_POINT_GROUP)
        except Exception:  # unreadable package metadata: the host runs without plugins
            log.exception("cannot list capability plugins (entry points of %s)", ENTRY_POINT_GROUP)
            return []
    eps = sorted(found, key=lambda e: e.name)
    out: list[PluginInfo] = []
    for ep in eps:
        package, version = _distribution(ep)
        info = PluginInfo(ep.name, package, version)
        out.append(info)
        try:
            spec = _check(ep.load())
        except (Exception, SystemExit) as e:  # a plugin's own bug: reported and skipped, whatever it is
            info.problem = str(e) if isinstance(e, PluginError) else f"{type(e).__name__}: {e}"
        else:
            info.interfaces = interface_names(spec.interfaces)
            clash = sorted({i.name for i in spec.interfaces} & owners.keys())
            if spec.ref in owners:
                info.problem = f"{spec.ref} is already served by {owners[spec.ref]}"
            elif clash:
                info.problem = f"{clash[0]} is already served by {owners[clash[0]]}"
            else:
                info.spec = spec
                me = f"plugin {ep.name} ({package})"
                owners[spec.ref] = me
                owners.update({i.name: me for i in spec.interfaces})
        if info.problem is not None:
            log.warning(
                "capability plugin %r from package %s %s is skipped: %s",
                ep.name,
                package,
                version,
                info.problem,
            )
        else:
            log.info(
                "capability plugin %s (%s %s): %s", info.ref, package, version, ", ".join(info.interfaces)
            )
    return out
