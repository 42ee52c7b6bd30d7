"""Lattice events: the CloudEvents 1.0 envelope and one builder per wasmCloud v1 event type.

Events are published on `wasmbus.evt.<lattice>.<event_type>` (see `subjects.event_subject`) with
`type = com.wasmcloud.lattice.<event_type>`, `source = <host id>` and a JSON object as `data`.
"""

from __future__ import annotations

import os
import time as _time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import Field

from wasmlattice.protocol.models import DEFAULT_LINK_NAME, U32, HostInventory, Link, StrMap
from wasmlattice.protocol.subjects import DEFAULT_LATTICE, event_subject
from wasmlattice.protocol.wire import WireModel

SPEC_VERSION = "1.0"
EVENT_TYPE_PREFIX = "com.wasmcloud.lattice."
DATA_CONTENT_TYPE = "application/json"
PROVIDER_STOP_REASON = "stop"


class EventType(StrEnum):
    """Every event type the v1 host publishes (the subject's last token)."""

    HOST_STARTED = "host_started"
    HOST_HEARTBEAT = "host_heartbeat"
    HOST_STOPPED = "host_stopped"
    LABELS_CHANGED = "labels_changed"
    COMPONENT_SCALED = "component_scaled"
    COMPONENT_SCALE_FAILED = "component_scale_failed"
    PROVIDER_STARTED = "provider_started"
    PROVIDER_START_FAILED = "provider_start_failed"
    PROVIDER_STOPPED = "provider_stopped"
    HEALTH_CHECK_PASSED = "health_check_passed"
    HEALTH_CHECK_FAILED = "health_check_failed"
    HEALTH_CHECK_STATUS = "health_check_status"
    LINKDEF_SET = "linkdef_set"
    LINKDEF_SET_FAILED = "linkdef_set_failed"
    LINKDEF_DELETED = "linkdef_deleted"
    CONFIG_SET = "config_set"
    CONFIG_DELETED = "config_deleted"


def ulid_uuid(now_ms: int | None = None) -> str:
    """A time-ordered UUID string: 48-bit milliseconds then 80 random bits (a ULID in UUID form)."""
    ms = int(_time.time() * 1000) if now_ms is None else now_ms
    return str(uuid.UUID(bytes=(ms & (2**48 - 1)).to_bytes(6, "big") + os.urandom(10)))


def rfc3339(moment: datetime) -> str:
    """Format a timestamp as RFC 3339 in UTC with microseconds and a `Z` suffix."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CloudEvent(WireModel):
    """A CloudEvents 1.0 structured-mode JSON event as published on the lattice."""

    payload_name = "cloud event"

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    time: str
    datacontenttype: str = DATA_CONTENT_TYPE
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def event_type(self) -> str:
        """The short event type (`type` without the `com.wasmcloud.lattice.` prefix)."""
        return self.type.removeprefix(EVENT_TYPE_PREFIX)

    def subject(self, lattice: str = DEFAULT_LATTICE) -> str:
        """The NATS subject this event is published on."""
        return event_subject(self.event_type, lattice)


def new_event(
    event_type: EventType | str,
    source: str,
    data: WireModel | Mapping[str, Any],
    *,
    now: datetime | None = None,
    event_id: str | None = None,
) -> CloudEvent:
    """Wrap event `data` in a CloudEvents envelope from host `source`."""
    moment = now or datetime.now(UTC)
    body = data.to_json_obj() if isinstance(data, WireModel) else dict(data)
    return CloudEvent(
        id=event_id or ulid_uuid(int(moment.timestamp() * 1000)),
        source=source,
        type=EVENT_TYPE_PREFIX + EventType(event_type).value,
        time=rfc3339(moment),
        data=body,
    )


def human_epoch(seconds: int | None) -> str:
    """Render a JWT `exp`/`nbf` for event claims: the epoch seconds as a string, or `never`."""
    return "never" if seconds is None else str(seconds)


# --- data models ---


class HostStartedData(WireModel):
    """`host_started` data."""

    friendly_name: str
    labels: StrMap
    uptime_seconds: int = 0
    version: str


class HostStoppedData(WireModel):
    """`host_stopped` data."""

    labels: StrMap


class LabelsChangedData(WireModel):
    """`labels_changed` data: the whole label map after the change."""

    host_id: str
    labels: StrMap


class ComponentClaimsData(WireModel):
    """The `claims` object of `component_scaled`; metadata keys are dropped when the JWT has none."""

    metadata_keys: ClassVar[frozenset[str]] = frozenset({"call_alias", "tags", "name", "version", "revision"})

    issuer: str
    call_alias: str | None = None
    tags: list[str] | None = None
    name: str | None = None
    version: str | None = None
    revision: int | None = None
    not_before_human: str = "never"
    expires_human: str = "never"
    has_metadata: bool = Field(True, exclude=True)

    def _keys_to_drop(self) -> frozenset[str]:
        # Without JWT metadata the host emits only issuer and the two times.
        return frozenset() if self.has_metadata else self.metadata_keys


class ProviderClaimsData(WireModel):
    """The `claims` object of `provider_started` (`tags` is always null)."""

    issuer: str
    tags: None = None
    name: str | None = None
    version: str | None = None
    not_before_human: str = "never"
    expires_human: str = "never"


class HealthCheckData(WireModel):
    """Data of the three `health_check_*` events."""

    host_id: str
    provider_id: str


class ConfigEventData(WireModel):
    """`config_set` / `config_deleted` data."""

    config_name: str


# --- builders (one per event type) ---


def host_started(
    host_id: str, *, friendly_name: str, labels: StrMap, version: str, now: datetime | None = None
) -> CloudEvent:
    """`host_started`, published after startup and KV replay."""
    data = HostStartedData(friendly_name=friendly_name, labels=labels, uptime_seconds=0, version=version)
    return new_event(EventType.HOST_STARTED, host_id, data, now=now)


def host_heartbeat(inventory: HostInventory, *, now: datetime | None = None) -> CloudEvent:
    """`host_heartbeat`: the full host inventory, every heartbeat interval."""
    return new_event(EventType.HOST_HEARTBEAT, inventory.host_id, inventory, now=now)


def host_stopped(host_id: str, *, labels: StrMap, now: datetime | None = None) -> CloudEvent:
    """`host_stopped`, published on graceful shutdown."""
    return new_event(EventType.HOST_STOPPED, host_id, HostStoppedData(labels=labels), now=now)


def labels_changed(host_id: str, *, labels: StrMap, now: datetime | None = None) -> CloudEvent:
    """`labels_changed` after a label put or an effective delete."""
    data = LabelsChangedData(host_id=host_id, labels=labels)
    return new_event(EventType.LABELS_CHANGED, host_id, data, now=now)


def component_scaled(
    host_id: str,
    *,
    component_id: str,
    image_ref: str,
    max_instances: U32,
    annotations: StrMap | None = None,
    public_key: str | None = None,
    claims: ComponentClaimsData | None = None,
    now: datetime | None = None,
) -> CloudEvent:
    """`component_scaled`; `public_key` and `claims` appear only for signed components."""
    data: dict[str, Any] = {
        "annotations": dict(annotations or {}),
        "host_id": host_id,
        "image_ref": image_ref,
        "max_instances": max_instances,
        "component_id": component_id,
    }
    if public_key is not None:
        data["public_key"] = public_key
    if claims is not None:
        data["claims"] = claims.to_json_obj()
    return new_event(EventType.COMPONENT_SCALED, host_id, data, now=now)


def component_scale_failed(
    host_id: str,
    *,
    component_id: str,
    image_ref: str,
    max_instances: U32,
    error: str,
    annotations: StrMap | None = None,
    public_key: str | None = None,
    now: datetime | None = None,
) -> CloudEvent:
    """`component_scale_failed` with the full error text; `public_key` only if signed."""
    data: dict[str, Any] = {
        "annotations": dict(annotations or {}),
        "component_id": component_id,
        "host_id": host_id,
        "image_ref": image_ref,
        "max_instances": max_instances,
        "error": error,
    }
    if public_key is not None:
        data["public_key"] = public_key
    return new_event(EventType.COMPONENT_SCALE_FAILED, host_id, data, now=now)


def provider_started(
    host_id: str,
    *,
    provider_id: str,
    image_ref: str,
    annotations: StrMap | None = None,
    claims: ProviderClaimsData | None = None,
    now: datetime | None = None,
) -> CloudEvent:
    """`provider_started`; a signed provider adds `claims` and the legacy id/key/link-name fields."""
    data: dict[str, Any] = {
        "host_id": host_id,
        "image_ref": image_ref,
        "provider_id": provider_id,
        "annotations": dict(annotations or {}),
    }
    if claims is not None:
        data["claims"] = claims.to_json_obj()
        # Backwards-compatibility fields the v1 host adds only in the signed branch.
        data["instance_id"] = provider_id
        data["public_key"] = provider_id
        data["link_name"] = DEFAULT_LINK_NAME
    return new_event(EventType.PROVIDER_STARTED, host_id, data, now=now)


def provider_start_failed(
    host_id: str, *, provider_id: str, provider_ref: str, error: str, now: datetime | None = None
) -> CloudEvent:
    """`provider_start_failed` from the asynchronous start task."""
    data = {
        "provider_ref": provider_ref,
        "provider_id": provider_id,
        "host_id": host_id,
        "error": error,
        "link_name": DEFAULT_LINK_NAME,
    }
    return new_event(EventType.PROVIDER_START_FAILED, host_id, data, now=now)


def provider_stopped(
    host_id: str,
    *,
    provider_id: str,
    annotations: StrMap | None = None,
    reason: str = PROVIDER_STOP_REASON,
    now: datetime | None = None,
) -> CloudEvent:
    """`provider_stopped` after `provider.stop` (reason "stop")."""
    data = {
        "host_id": host_id,
        "provider_id": provider_id,
        "annotations": dict(annotations or {}),
        "reason": reason,
        "instance_id": provider_id,
        "public_key": provider_id,
        "link_name": DEFAULT_LINK_NAME,
    }
    return new_event(EventType.PROVIDER_STOPPED, host_id, data, now=now)


def _health(kind: EventType, host_id: str, provider_id: str, now: datetime | None) -> CloudEvent:
    return new_event(kind, host_id, HealthCheckData(host_id=host_id, provider_id=provider_id), now=now)


def health_check_passed(host_id: str, *, provider_id: str, now: datetime | None = None) -> CloudEvent:
    """`health_check_passed`: a provider became healthy (the first healthy check counts)."""
    return _health(EventType.HEALTH_CHECK_PASSED, host_id, provider_id, now)


def health_check_failed(host_id: str, *, provider_id: str, now: datetime | None = None) -> CloudEvent:
    """`health_check_failed`: a provider went from healthy to unhealthy."""
    return _health(EventType.HEALTH_CHECK_FAILED, host_id, provider_id, now)


def health_check_status(host_id: str, *, provider_id: str, now: datetime | None = None) -> CloudEvent:
    """`health_check_status`: a provider's health did not change."""
    return _health(EventType.HEALTH_CHECK_STATUS, host_id, provider_id, now)


def linkdef_set(host_id: str, link: Link, *, now: datetime | None = None) -> CloudEvent:
    """`linkdef_set` after a successful `link.put`: every Link field."""
    return new_event(EventType.LINKDEF_SET, host_id, link, now=now)


def linkdef_set_failed(host_id: str, link: Link, *, error: str, now: datetime | None = None) -> CloudEvent:
    """`linkdef_set_failed` after a rejected `link.put`: every Link field plus `error`."""
    data = link.to_json_obj()
    data["error"] = error
    return new_event(EventType.LINKDEF_SET_FAILED, host_id, data, now=now)


def linkdef_deleted(
    host_id: str,
    *,
    source_id: str,
    name: str,
    wit_namespace: str,
    wit_package: str,
    removed: Link | None = None,
    now: datetime | None = None,
) -> CloudEvent:
    """`linkdef_deleted` on every `link.del`; `target`/`interfaces` only if a link was removed."""
    data: dict[str, Any] = {
        "source_id": source_id,
        "name": name,
        "wit_namespace": wit_namespace,
        "wit_package": wit_package,
    }
    if removed is not None:
        data["target"] = removed.target
        data["interfaces"] = list(removed.interfaces)
    return new_event(EventType.LINKDEF_DELETED, host_id, data, now=now)


def config_set(host_id: str, *, config_name: str, now: datetime | None = None) -> CloudEvent:
    """`config_set` after `config.put`."""
    return new_event(EventType.CONFIG_SET, host_id, ConfigEventData(config_name=config_name), now=now)


def config_deleted(host_id: str, *, config_name: str, now: datetime | None = None) -> CloudEvent:
    """`config_deleted` after `config.del` (also when nothing existed)."""
    return new_event(EventType.CONFIG_DELETED, host_id, ConfigEventData(config_name=config_name), now=now)
