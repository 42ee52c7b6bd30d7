"""The Host: identity, friendly name, labels, version, uptime and inventory.

Protocol: docs/protocol.md#payloads and docs/protocol.md#host-identity-and-labels.

The inventory lists the components and providers of the registries attached by the runner
(`Host.components`, `Host.providers`); a Host without them lists none.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import wasmlattice
from wasmlattice.host.identity import HostIdentity, friendly_name
from wasmlattice.protocol import limits
from wasmlattice.protocol.models import (
    BUILTIN_LABELS,
    HOSTCORE_LABEL_PREFIX,
    MSG_LABEL_RESERVED,
    HostInventory,
    RegistryCredential,
    StrMap,
    is_reserved_label,
)
from wasmlattice.protocol.models import (
    Host as HostInfo,
)
from wasmlattice.protocol.subjects import DEFAULT_LATTICE

if TYPE_CHECKING:
    from wasmlattice.capabilities.manager import ProviderManager
    from wasmlattice.host.components import ComponentRegistry

log = logging.getLogger(__name__)

LABEL_ENV_PREFIX = "WASMCLOUD_LABEL_"


class LabelError(ValueError):
    """A label cannot be set or removed; the message is the control-interface reply text."""


def _rust_arch() -> str:
    # wasmCloud reports Rust's `std::env::consts::ARCH`; map Python's spellings onto those.
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "i686": "x86", "i386": "x86"}.get(
        machine, machine or "unknown"
    )


def _rust_os() -> str:
    # Rust's `std::env::consts::OS` names.
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "darwin":
        return "macos"
    if sys.platform in ("win32", "cygwin"):
        return "windows"
    return sys.platform.rstrip("0123456789")


def builtin_labels() -> StrMap:
    """The `hostcore.*` labels every host sets: arch, os and os family, as wasmCloud names them."""
    os_name = _rust_os()
    return {
        "hostcore.arch": _rust_arch(),
        "hostcore.os": os_name,
        "hostcore.osfamily": "windows" if os_name == "windows" else "unix",
    }


def label_problem(key: str, value: str) -> str | None:
    """Why a label breaks the input limits (docs/protocol.md#field-limits), naming the field; or None."""
    try:
        limits.check_label_key(key)
    except limits.LimitError as e:
        return f"key: {e}"
    try:
        limits.check_label_value(value)
    except limits.LimitError as e:
        return f"value: {e}"
    return None


def label_cap_message() -> str:
    """Reply text for a label put that would take a host over `limits.MAX_LABELS`."""
    return f"labels: a host has at most {limits.MAX_LABELS} labels"


def parse_label_args(args: Iterable[str]) -> StrMap:
    """Parse `key=value` label arguments (exactly one `=`, non-empty key); raises `LabelError`."""
    out: StrMap = {}
    for arg in args:
        if arg.count("=") != 1 or not arg.split("=", 1)[0].strip():
            raise LabelError(f"invalid label {limits.quote(arg)}: use key=value with exactly one '='")
        key, value = arg.split("=", 1)
        problem = label_problem(key.strip(), value)
        if problem is not None:
            raise LabelError(f"invalid label {limits.quote(key.strip())}: {problem}")
        out[key.strip()] = value
    if len(out) + len(BUILTIN_LABELS) > limits.MAX_LABELS:
        raise LabelError(f"{label_cap_message()} (including the {len(BUILTIN_LABELS)} hostcore.* labels)")
    return out


def labels_from_env(environ: Mapping[str, str] | None = None) -> StrMap:
    """Labels from `WASMCLOUD_LABEL_<key>=<value>` environment variables."""
    env = os.environ if environ is None else environ
    return {
        name[len(LABEL_ENV_PREFIX) :]: value
        for name, value in env.items()
        if name.startswith(LABEL_ENV_PREFIX) and len(name) > len(LABEL_ENV_PREFIX)
    }


def merge_labels(env_labels: Mapping[str, str], cli_labels: Mapping[str, str]) -> StrMap:
    """Host labels: environment labels, then CLI labels (CLI wins), then the builtin `hostcore.*` ones.

    `hostcore.*` keys are reserved: user-supplied values for them are dropped with a warning.
    """
    labels: StrMap = {}
    for source in (env_labels, cli_labels):
        for key, value in source.items():
            if is_reserved_label(key):
                log.warning("ignoring label %s: %s* labels are set by the host", key, HOSTCORE_LABEL_PREFIX)
                continue
            problem = label_problem(key, value)
            if problem is not None:
                log.warning("ignoring label %s: %s", limits.quote(key), problem)
                continue
            labels[key] = value
    room = limits.MAX_LABELS - len(BUILTIN_LABELS)
    if len(labels) > room:
        # Every ping, inventory and heartbeat carries the labels: they must stay bounded.
        log.warning("ignoring %d labels: %s", len(labels) - room, label_cap_message())
        labels = dict(list(labels.items())[:room])
    labels.update(builtin_labels())
    return labels


def format_uptime(seconds: int) -> str:
    """Render an uptime like Rust's humantime with sub-seconds stripped, e.g. `1day 2h 3m 4s`."""
    if seconds <= 0:
        return "0s"
    # humantime's calendar: a year is 365.25 days, a month 30.44 days.
    units = (
        ("year", "years", 31_557_600),
        ("month", "months", 2_630_016),
        ("day", "days", 86_400),
        ("h", "h", 3_600),
        ("m", "m", 60),
        ("s", "s", 1),
    )
    parts: list[str] = []
    rest = seconds
    for one, many, size in units:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{one if count == 1 else many}")
    return " ".join(parts)


class Host:
    """One host of a lattice: who it is, its labels, and what it runs."""

    def __init__(
        self,
        identity: HostIdentity | None = None,
        *,
        lattice: str = DEFAULT_LATTICE,
        labels: Mapping[str, str] | None = None,
        name: str | None = None,
        version: str = wasmlattice.__version__,
    ) -> None:
        self.identity = identity or HostIdentity.generate()
        self.lattice = lattice
        self.friendly_name = name or friendly_name(self.identity.public_key)
        self.version = version
        self.labels: StrMap = merge_labels({}, labels or {})
        self.started_at = datetime.now(UTC)
        self._started_monotonic = time.monotonic()
        # Registry credentials pushed by `registry.put`, keyed by registry host; never logged.
        self.registries: dict[str, RegistryCredential] = {}
        # What the host runs; attached by the runner once the lattice state is open.
        self.components: ComponentRegistry | None = None
        self.providers: ProviderManager | None = None

    @property
    def host_id(self) -> str:
        """The host's public key."""
        return self.identity.public_key

    def uptime_seconds(self) -> int:
        """Whole seconds since the host started."""
        return int(time.monotonic() - self._started_monotonic)

    def inventory(self) -> HostInventory:
        """The `host.get` reply and heartbeat payload."""
        uptime = self.uptime_seconds()
        return HostInventory(
            host_id=self.host_id,
            friendly_name=self.friendly_name,
            labels=dict(self.labels),
            version=self.version,
            uptime_human=format_uptime(uptime),
            uptime_seconds=uptime,
            components=self.components.descriptions() if self.components is not None else [],
            providers=self.providers.descriptions() if self.providers is not None else [],
        )

    def info(
        self, *, ctl_host: str | None = None, rpc_host: str | None = None, js_domain: str | None = None
    ) -> HostInfo:
        """The `host.ping` reply payload."""
        uptime = self.uptime_seconds()
        return HostInfo(
            id=self.host_id,
            friendly_name=self.friendly_name,
            labels=dict(self.labels),
            lattice=self.lattice,
            uptime_seconds=uptime,
            uptime_human=format_uptime(uptime),
            version=self.version,
            ctl_host=ctl_host,
            rpc_host=rpc_host,
            js_domain=js_domain,
        )

    def put_label(self, key: str, value: str) -> None:
        """Set a label; `hostcore.*` keys (any case) and labels over the limits raise `LabelError`."""
        if is_reserved_label(key):
            raise LabelError(MSG_LABEL_RESERVED)
        problem = label_problem(key, value)
        if problem is not None:
            raise LabelError(problem)
        if key not in self.labels and len(self.labels) >= limits.MAX_LABELS:
            raise LabelError(label_cap_message())
        self.labels[key] = value

    def delete_label(self, key: str) -> bool:
        """Remove a label; whether it existed. `hostcore.*` keys raise `LabelError`."""
        if is_reserved_label(key):
            raise LabelError(MSG_LABEL_RESERVED)
        return self.labels.pop(key, None) is not None

    def put_registries(self, creds: Mapping[str, RegistryCredential]) -> None:
        """Merge pushed registry credentials: existing entries get new auth, new ones are added."""
        for registry, cred in creds.items():
            if cred.registry_type != "oci":
                log.warning("registry %s has type %r; treating it as OCI", registry, cred.registry_type)
            if cred.auth_kind() == "anonymous" and (cred.username or cred.password or cred.token):
                log.warning("registry %s: ambiguous credentials; using anonymous access", registry)
            self.registries[registry] = cred
        log.info("registry credentials updated for %s", ", ".join(sorted(creds)) or "no registries")
