"""The types of a wadm-compatible application manifest (OAM `core.oam.dev/v1beta1`), once validated.

`load.py` turns YAML or JSON into these types through the checks of `check.py`; everything else in the
app manager (store, API, reconciler, placement) works on them. The accepted format follows wadm 0.21
(see docs/apps.md and https://github.com/wasmCloud/wadm).
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

OAM_API_VERSION = "core.oam.dev/v1beta1"
APPLICATION_KIND = "Application"
VERSION_ANNOTATION = "version"
DESCRIPTION_ANNOTATION = "description"
SHARED_ANNOTATION = "experimental.wasmcloud.dev/shared"
SECRET_POLICY_TYPE = "policy.secret.wasmcloud.dev/v1alpha1"
LATEST_VERSION = "latest"
DEFAULT_LINK_NAME = "default"


class ManifestError(ValueError):
    """A manifest that cannot be used: every error found (and the warnings seen on the way)."""

    def __init__(self, errors: list[str], warnings: list[str] | None = None) -> None:
        self.errors = list(errors)
        self.warnings = list(warnings or [])
        super().__init__("; ".join(self.errors))


@dataclass(frozen=True)
class ConfigProperty:
    """A named config: owned by the app when it has `properties`, external (must already exist) otherwise."""

    name: str
    properties: dict[str, str] | None


@dataclass(frozen=True)
class SecretProperty:
    """A reference to a secret: `key` (and optional `field`/`version`) in the backend of policy `policy`."""

    name: str
    key: str
    field: str | None
    version: str | None
    policy: str


@dataclass(frozen=True)
class SharedRef:
    """A reference to component `component` of the deployed shared application `name`."""

    name: str
    component: str


@dataclass(frozen=True)
class Spread:
    """A placement bucket: hosts whose labels match all `requirements`; weight None means 100."""

    name: str
    requirements: dict[str, str]
    weight: int | None


@dataclass(frozen=True)
class ScalerTrait:
    """A spreadscaler (split `instances` over the spreads) or daemonscaler (`instances` on every match)."""

    kind: Literal["spreadscaler", "daemonscaler"]
    instances: int
    spread: list[Spread]


@dataclass(frozen=True)
class LinkTrait:
    """A link from the component carrying the trait (the source) to component `target` of this manifest."""

    namespace: str
    package: str
    interfaces: list[str]
    name: str
    target: str
    source_config: list[ConfigProperty]
    target_config: list[ConfigProperty]
    source_secrets: list[SecretProperty]
    target_secrets: list[SecretProperty]


@dataclass(frozen=True)
class Component:
    """A component or provider with its scaler and outgoing links.

    A capability without a scaler trait gets an implicit 1-instance spreadscaler; a shared reference
    (`application` set) has no image and no scaler, since the shared application runs it.
    """

    name: str
    kind: Literal["component", "capability"]
    image: str | None
    application: SharedRef | None
    explicit_id: str | None
    config: list[ConfigProperty]
    secrets: list[SecretProperty]
    scaler: ScalerTrait | None
    links: list[LinkTrait]
    # Our extension (wadm has no per-component annotations): passed on with the component's scale
    # requests, e.g. the warm-instance settings of docs/instance-pools.md.
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """A named policy; only `policy.secret.wasmcloud.dev/v1alpha1` (needs `backend`) means anything."""

    name: str
    type: str
    properties: dict[str, str]


@dataclass(frozen=True)
class Manifest:
    """A validated application manifest; `raw` is its JSON-able form, as stored and served back."""

    name: str
    version: str | None
    description: str | None
    shared: bool
    annotations: dict[str, str]
    labels: dict[str, str]
    components: list[Component]
    policies: list[Policy]
    raw: dict[str, Any]

    def component_id(self, c: Component, shared_apps: Mapping[str, Manifest] | None = None) -> str:
        """The host-side ID of `c`: its explicit id, else `<manifest>-<component>` sanitized."""
        if c.explicit_id:
            return c.explicit_id
        if c.application is not None:
            # The ID belongs to the shared app; an explicit id there can only be seen with its manifest.
            owner = (shared_apps or {}).get(c.application.name)
            if owner is not None:
                target = owner.component_named(c.application.component)
                if target is not None and target.application is None:
                    return owner.component_id(target)
            return join_id(c.application.name, c.application.component)
        return join_id(self.name, c.name)

    def config_name(self, name: str) -> str:
        """The name under which an owned config (one with `properties`) is stored: `<manifest>-<name>`."""
        return join_id(self.name, name)

    def secret_name(self, name: str) -> str:
        """The config name that holds an app secret's reference: `SECRET_<manifest>-<name>`."""
        return "SECRET_" + join_id(self.name, name)

    def component_named(self, name: str) -> Component | None:
        """The component called `name` in this manifest, or None."""
        return next((c for c in self.components if c.name == name), None)

    def with_version(self, version: str) -> Manifest:
        """The same manifest with `metadata.annotations.version` set to `version` (in `raw` too)."""
        if not version or version == LATEST_VERSION:
            raise ValueError(
                f"version {version!r} cannot be stored: use a non-empty name other than 'latest'"
            )
        raw = copy.deepcopy(self.raw)
        metadata = raw.setdefault("metadata", {})
        annotations = metadata.get("annotations")
        if not isinstance(annotations, dict):
            annotations = {}
            metadata["annotations"] = annotations
        annotations[VERSION_ANNOTATION] = version
        return replace(
            self, version=version, annotations={**self.annotations, VERSION_ANNOTATION: version}, raw=raw
        )


def sanitize_id_part(text: str) -> str:
    """Lowercase `text` and replace every character that is not an ASCII letter or digit by `_`."""
    return "".join(ch if ch.isascii() and ch.isalnum() else "_" for ch in text.lower())


def join_id(manifest_name: str, name: str) -> str:
    """The ID `<manifest>-<name>`, both parts sanitized: how components and owned configs are named."""
    return f"{sanitize_id_part(manifest_name)}-{sanitize_id_part(name)}"


# Versions: a manifest put without `metadata.annotations.version` is stored under a new ULID.

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ulid_lock = threading.Lock()
_ulid_last: tuple[int, int] = (0, 0)


def _encode_ulid(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_version() -> str:
    """A new ULID (26 Crockford base32 chars): strictly increasing, even within one millisecond."""
    global _ulid_last
    with _ulid_lock:
        millis = time.time_ns() // 1_000_000
        last_ms, last_rand = _ulid_last
        if millis <= last_ms and last_rand < (1 << 80) - 1:
            # Same (or an earlier, clock stepped back) millisecond: bump the random part to stay ordered.
            millis, rand = last_ms, last_rand + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _ulid_last = (millis, rand)
    return _encode_ulid(((millis & ((1 << 48) - 1)) << 80) | rand)
