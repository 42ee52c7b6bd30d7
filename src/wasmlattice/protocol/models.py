"""Pydantic models of every wasmCloud v1 control-interface request and response payload.

Field names, required fields, defaults and omitted-when-None fields follow docs/protocol.md
(sections Payloads, Links and KV layout). "R" fields have no default, so a missing one is an error;
"opt" fields are listed in `omit_if_none`.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, AliasChoices, Field, ValidationError, field_validator

from wasmlattice.protocol import limits as lim
from wasmlattice.protocol.subjects import DEFAULT_LATTICE as DEFAULT_LATTICE
from wasmlattice.protocol.wire import (
    I32_MAX,
    I32_MIN,
    U32_MAX,
    U64_MAX,
    WireModel,
    WireRoot,
    describe_validation_error,
)
from wasmlattice.protocol.wire import PayloadError as PayloadError  # re-exported for callers
from wasmlattice.protocol.wire import parse_payload as parse_payload  # re-exported for callers

U32 = Annotated[int, Field(ge=0, le=U32_MAX)]
U64 = Annotated[int, Field(ge=0, le=U64_MAX)]
I32 = Annotated[int, Field(ge=I32_MIN, le=I32_MAX)]
StrMap = dict[str, str]

log = logging.getLogger(__name__)

# Request fields are checked against the input limits (protocol/limits.py, docs/protocol.md#field-limits)
# as they are parsed, so a refused value never reaches a handler. Reply and event models keep plain
# types: they are built from values that were checked on the way in.
Id = Annotated[str, AfterValidator(lim.check_id)]
OptId = Annotated[str, AfterValidator(lim.check_optional_id)]
Name = Annotated[str, AfterValidator(lim.check_name)]
Ref = Annotated[str, AfterValidator(lim.check_ref)]
ConfigName = Annotated[str, AfterValidator(lim.check_config_name)]
ConfigNames = Annotated[list[ConfigName], Field(max_length=lim.MAX_LIST_ITEMS)]
Interfaces = Annotated[list[Name], Field(max_length=lim.MAX_LIST_ITEMS)]
LabelKey = Annotated[str, AfterValidator(lim.check_label_key)]
LabelValue = Annotated[str, AfterValidator(lim.check_label_value)]
LabelMap = Annotated[dict[LabelKey, LabelValue], Field(max_length=lim.MAX_LABELS)]
CredentialText = Annotated[str, AfterValidator(partial(lim.check_text, max_len=lim.MAX_REF_LEN))]

DEFAULT_LINK_NAME = "default"
DEFAULT_REGISTRY_TYPE = "oci"
DEFAULT_HEARTBEAT_INTERVAL_S = 30
DEFAULT_REQUEST_TIMEOUT_S = 2.0
DEFAULT_AUCTION_TIMEOUT_S = 5.0
DEFAULT_HOST_STOP_TIMEOUT_S = 10.0
DEFAULT_PROVIDER_SHUTDOWN_DELAY_MS = 300
HOSTCORE_LABEL_PREFIX = "hostcore."
BUILTIN_LABELS = ("hostcore.arch", "hostcore.os", "hostcore.osfamily")

T = TypeVar("T")


# --- envelope ---


class CtlResponse(WireModel, Generic[T]):
    """The reply envelope `{success, message, response?}`; `response` is omitted when None."""

    omit_if_none = frozenset({"response"})
    payload_name = "ctl response"

    success: bool
    message: str
    response: T | None = None

    @classmethod
    def ok(cls, response: T | None = None, message: str = "") -> CtlResponse[T]:
        """A success reply, with an optional payload."""
        return cls(success=True, message=message, response=response)

    @classmethod
    def fail(cls, message: str) -> CtlResponse[T]:
        """A failure reply: `success:false`, a message, no payload."""
        return cls(success=False, message=message)


def fallback_error_body(error: str) -> bytes:
    """The last-resort body `{"success":false,"error":...}` used when a reply cannot be serialized."""
    return CtlFallbackError(error=error).to_wire()


class CtlFallbackError(WireModel):
    """Last-resort reply when the real reply failed to serialize (note `error`, not `message`)."""

    success: Literal[False] = False
    error: str


# --- components ---


class ScaleComponentCommand(WireModel):
    """`component.scale.<host>` body. The instance count's wire key is `count`; 0 stops."""

    omit_if_none = frozenset({"annotations", "component_limits"})
    payload_name = "component.scale"

    component_ref: Ref = ""
    component_id: Id
    count: U32 = 0
    annotations: LabelMap | None = None
    component_limits: LabelMap | None = None
    host_id: OptId = ""
    config: ConfigNames = Field(default_factory=list)
    allow_update: bool = False


class UpdateComponentCommand(WireModel):
    """`component.update.<host>` body."""

    omit_if_none = frozenset({"annotations"})
    payload_name = "component.update"

    component_id: OptId = ""
    new_component_ref: Ref = ""
    host_id: OptId = ""
    annotations: LabelMap | None = None


class ComponentAuctionRequest(WireModel):
    """`component.auction` body: hosts whose labels match every constraint answer."""

    payload_name = "component.auction"

    component_ref: Ref = ""
    component_id: Id
    constraints: LabelMap


class ComponentAuctionAck(WireModel):
    """A host's answer to a component auction."""

    payload_name = "component.auction ack"

    component_ref: str = ""
    component_id: str = ""
    host_id: str = ""
    constraints: StrMap = Field(default_factory=dict)


# --- providers ---


class StartProviderCommand(WireModel):
    """`provider.start.<host>` body."""

    omit_if_none = frozenset({"annotations"})
    payload_name = "provider.start"

    provider_id: Id
    provider_ref: Ref = ""
    host_id: OptId = ""
    config: ConfigNames = Field(default_factory=list)
    annotations: LabelMap | None = None


class StopProviderCommand(WireModel):
    """`provider.stop.<host>` body; `provider_ref` is accepted as an input alias of `provider_id`."""

    payload_name = "provider.stop"

    host_id: OptId = ""
    provider_id: OptId = Field("", validation_alias=AliasChoices("provider_id", "provider_ref"))


class ProviderAuctionRequest(WireModel):
    """`provider.auction` body."""

    payload_name = "provider.auction"

    provider_ref: Ref = ""
    provider_id: Id
    constraints: LabelMap


class ProviderAuctionAck(WireModel):
    """A host's answer to a provider auction."""

    payload_name = "provider.auction ack"

    host_id: str = ""
    provider_ref: str = ""
    provider_id: str = ""
    constraints: StrMap = Field(default_factory=dict)


class ProviderShutdownRequest(WireModel):
    """Body sent to `wasmbus.rpc.<lattice>.<provider_id>.default.shutdown`."""

    payload_name = "provider shutdown"

    host_id: str = ""


# --- hosts ---


class StopHostCommand(WireModel):
    """`host.stop.<host>` body; may be empty. `timeout` is in milliseconds."""

    omit_if_none = frozenset({"timeout"})
    payload_name = "host.stop"
    empty_payload_ok = True

    host_id: OptId = ""
    timeout: U64 | None = None


class Host(WireModel):
    """`host.ping` response payload: one per answering host."""

    omit_if_none = frozenset({"uptime_human", "version", "ctl_host", "rpc_host", "js_domain"})
    payload_name = "host.ping response"

    id: str = ""
    friendly_name: str = ""
    labels: StrMap = Field(default_factory=dict)
    lattice: str = DEFAULT_LATTICE
    uptime_seconds: U64 = 0
    uptime_human: str | None = None
    version: str | None = None
    ctl_host: str | None = None
    rpc_host: str | None = None
    js_domain: str | None = None


class ComponentDescription(WireModel):
    """A running component in a host inventory. `limits` serializes as `null` when absent."""

    omit_if_none = frozenset({"name", "annotations"})
    payload_name = "component description"

    id: str = ""
    image_ref: str = ""
    name: str | None = None
    annotations: StrMap | None = None
    revision: I32 = 0
    max_instances: U32 = 0
    limits: StrMap | None = None


class ProviderDescription(WireModel):
    """A running provider in a host inventory."""

    omit_if_none = frozenset({"image_ref", "name", "annotations"})
    payload_name = "provider description"

    id: str = ""
    image_ref: str | None = None
    name: str | None = None
    revision: I32 = 0
    annotations: StrMap | None = None


class HostInventory(WireModel):
    """`host.get` response payload and the `host_heartbeat` event data; `actors` is an input alias."""

    payload_name = "host.get response"

    host_id: str = ""
    friendly_name: str = ""
    labels: StrMap = Field(default_factory=dict)
    version: str = ""
    uptime_human: str = ""
    uptime_seconds: U64 = 0
    components: list[ComponentDescription] = Field(
        default_factory=list, validation_alias=AliasChoices("components", "actors")
    )
    providers: list[ProviderDescription] = Field(default_factory=list)


class HostLabel(WireModel):
    """`label.put.<host>` body."""

    payload_name = "label.put"

    key: LabelKey
    value: LabelValue

    def is_reserved(self) -> bool:
        """Whether the key is a `hostcore.*` label (case-insensitive), which cannot be set."""
        return is_reserved_label(self.key)


class HostLabelIdentifier(WireModel):
    """`label.del.<host>` body."""

    payload_name = "label.del"

    key: LabelKey


def is_reserved_label(key: str) -> bool:
    """Whether a label key starts with `hostcore.` in any case (rejected by label put/del)."""
    return key.lower().startswith(HOSTCORE_LABEL_PREFIX)


# --- links ---


class Link(WireModel):
    """A link (`link.put` body, `link.get` element, KV spec entry); every field is always serialized."""

    payload_name = "link.put"

    source_id: Id
    target: Id
    name: Name = DEFAULT_LINK_NAME
    wit_namespace: Name
    wit_package: Name
    interfaces: Interfaces
    source_config: ConfigNames = Field(default_factory=list)
    target_config: ConfigNames = Field(default_factory=list)


class DeleteInterfaceLinkDefinitionRequest(WireModel):
    """`link.del` body: the target is not needed to delete."""

    payload_name = "link.del"

    source_id: Id
    name: Name = DEFAULT_LINK_NAME
    wit_namespace: Name
    wit_package: Name


class LinkList(WireRoot[list[Link]]):
    """`link.get` response payload: every link the answering host knows."""

    payload_name = "link.get response"


class InterfaceLinkDefinition(WireModel):
    """What a provider receives: a link with resolved config maps and sealed secrets (byte arrays)."""

    payload_name = "interface link definition"

    source_id: str
    target: str
    name: str = DEFAULT_LINK_NAME
    wit_namespace: str
    wit_package: str
    interfaces: list[str]
    source_config: StrMap = Field(default_factory=dict)
    target_config: StrMap = Field(default_factory=dict)
    source_secrets: list[Annotated[int, Field(ge=0, le=255)]] | None = None
    target_secrets: list[Annotated[int, Field(ge=0, le=255)]] | None = None


class ComponentSpecification(WireModel):
    """Value of `COMPONENT_<id>` in `LATTICEDATA_<lattice>`: image URL and the source's links."""

    payload_name = "component spec"

    url: str
    links: list[Link] = Field(default_factory=list)

    @field_validator("links", mode="before")
    @classmethod
    def _skip_invalid_links(cls, value: Any) -> Any:
        # A link stored by an older host or by hand may break today's limits; it is skipped (and
        # so never published to a subject or a provider) rather than hiding the spec's other links.
        if not isinstance(value, list):
            return value
        kept: list[Any] = []
        for i, item in enumerate(value):
            try:
                kept.append(Link.model_validate(item, strict=True))
            except ValidationError as e:
                log.warning("skipping stored link %d: %s", i, describe_validation_error("link", e))
        return kept


# --- config, claims, registries ---


class NamedConfig(WireRoot[StrMap]):
    """`config.put.<name>` body and `config.get` response: a string -> string map."""

    payload_name = "config.put"


class ClaimsList(WireRoot[list[StrMap]]):
    """`claims.get` response payload: one string map per known component or provider."""

    payload_name = "claims.get response"


class StoredComponentClaims(WireModel):
    """Value of `CLAIMS_<pubkey>` for a component; `iss/rev/sub` accepted as input aliases."""

    payload_name = "component claims"

    call_alias: str | None = None
    issuer: str = Field("", validation_alias=AliasChoices("issuer", "iss"))
    name: str | None = None
    revision: str | None = Field(None, validation_alias=AliasChoices("revision", "rev"))
    subject: str = Field("", validation_alias=AliasChoices("subject", "sub"))
    tags: list[str] | None = None
    version: str | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _split_tags(cls, value: Any) -> Any:
        # Older writers stored tags as one comma-joined string.
        if isinstance(value, str):
            return [t for t in value.split(",") if t]
        return value


class StoredProviderClaims(WireModel):
    """Value of `CLAIMS_<pubkey>` for a provider."""

    omit_if_none = frozenset({"config_schema"})
    payload_name = "provider claims"

    issuer: str = Field("", validation_alias=AliasChoices("issuer", "iss"))
    name: str | None = None
    revision: str | None = Field(None, validation_alias=AliasChoices("revision", "rev"))
    subject: str = Field("", validation_alias=AliasChoices("subject", "sub"))
    version: str | None = None
    config_schema: str | None = None


class RegistryCredential(WireModel):
    """One registry's credentials in a `registry.put` body; note the camelCase `registryType`."""

    omit_if_none = frozenset({"username", "password", "token"})
    payload_name = "registry credential"

    username: CredentialText | None = None
    password: CredentialText | None = None
    token: CredentialText | None = None
    registry_type: str = Field(DEFAULT_REGISTRY_TYPE, alias="registryType")

    def auth_kind(self) -> Literal["basic", "token", "anonymous"]:
        """Which auth the host uses: user+password => basic, token alone => bearer, else anonymous."""
        if self.username is not None and self.password is not None and self.token is None:
            return "basic"
        if self.token is not None and self.username is None and self.password is None:
            return "token"
        return "anonymous"


RegistryHost = Annotated[str, AfterValidator(partial(lim.check_text, max_len=lim.MAX_NAME_LEN))]


class RegistryCredentialMap(
    WireRoot[Annotated[dict[RegistryHost, RegistryCredential], Field(max_length=lim.MAX_LIST_ITEMS)]]
):
    """`registry.put` body: credentials keyed by registry host (e.g. `ghcr.io`)."""

    payload_name = "registry.put"


class HealthCheckResponse(WireModel):
    """A provider's reply to a health request; `message` omitted when None."""

    omit_if_none = frozenset({"message"})
    payload_name = "health check response"

    healthy: bool
    message: str | None = None


# The request body model of each control operation that has one (None: no body is read).
REQUEST_MODELS: dict[str, type[Any] | None] = {
    "component.auction": ComponentAuctionRequest,
    "component.scale": ScaleComponentCommand,
    "component.update": UpdateComponentCommand,
    "provider.auction": ProviderAuctionRequest,
    "provider.start": StartProviderCommand,
    "provider.stop": StopProviderCommand,
    "host.ping": None,
    "host.get": None,
    "host.stop": StopHostCommand,
    "label.put": HostLabel,
    "label.del": HostLabelIdentifier,
    "link.put": Link,
    "link.del": DeleteInterfaceLinkDefinitionRequest,
    "link.get": None,
    "claims.get": None,
    "config.put": NamedConfig,
    "config.get": None,
    "config.del": None,
    "registry.put": RegistryCredentialMap,
}

# Fixed reply messages of the v1 host, so every reply text lives in one place.
MSG_SCALE_ACK = ""
MSG_PROVIDER_STARTED = "successfully started provider"
MSG_PROVIDER_ALREADY_RUNNING = "provider with that ID is already running"
MSG_PROVIDER_STOPPED = "successfully stopped provider"
MSG_PROVIDER_NOT_RUNNING = "provider with that ID is not running"
MSG_HOST_STOP = "successfully handled stop host"
MSG_LABEL_RESERVED = "hostcore.* labels cannot be set dynamically"
MSG_LABEL_PUT = "successfully put label"
MSG_LABEL_DELETED = "successfully deleted label"
MSG_LABEL_DELETED_ABSENT = "successfully deleted label (no such label)"
MSG_LINK_SET = "successfully set link"
MSG_LINK_DELETED = "successfully deleted link"
MSG_LINK_DELETED_NO_SPEC = "successfully deleted link (spec doesn't exist)"
MSG_LINK_CONFLICT = (
    "link already exists with different target, consider deleting the existing link or using a "
    "different link name"
)
MSG_CONFIG_PUT = "successfully put config"
MSG_CONFIG_NOT_FOUND = "Configuration not found"
MSG_CONFIG_DELETED = "successfully deleted config"
MSG_CONFIG_NOT_MAP = "config data should be a map of string -> string"
MSG_REGISTRIES_PUT = "successfully put registries"
MSG_SCALE_DESERIALIZE = "failed to deserialize component scale command"
MSG_LINK_DESERIALIZE = "failed to deserialize wrpc link definition"


def component_not_found(component_id: str) -> str:
    """Reply text of `component.update` for a component that is not running."""
    return f"component {component_id} not found"


def component_already_updated(component_id: str, ref: str) -> str:
    """Reply text of `component.update` when the image is already `ref`."""
    return f"component {component_id} already updated to {ref}"


def component_updating(component_id: str, old: str, new: str) -> str:
    """Reply text of an accepted `component.update`."""
    return f"component {component_id} updating from {old} to {new}"
