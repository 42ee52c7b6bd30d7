"""NATS subjects, queue groups and KV names of the wasmCloud v1 control interface and lattice events.

Control subjects are `<topic_prefix>.v1.<lattice>.<area>.<verb>[.<host_id|config_name>]` with the
default topic prefix `wasmbus.ctl`. Events are always `wasmbus.evt.<lattice>.<event_type>` (that
prefix is not configurable in wasmCloud).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from wasmlattice.protocol import limits

DEFAULT_LATTICE = "default"
DEFAULT_TOPIC_PREFIX = "wasmbus.ctl"
CTL_VERSION = "v1"
EVENT_PREFIX = "wasmbus.evt"
RPC_PREFIX = "wasmbus.rpc"
UNSUPPORTED_SUBJECT = "unsupported subject"

LATTICE_DATA_BUCKET_PREFIX = "LATTICEDATA_"
CONFIG_DATA_BUCKET_PREFIX = "CONFIGDATA_"
COMPONENT_KEY_PREFIX = "COMPONENT_"
CLAIMS_KEY_PREFIX = "CLAIMS_"
# Keys written by older hosts; a v1.9 host ignores them (debug log only).
LEGACY_KEY_PREFIXES = ("LINKDEF_", "REFMAP_")
# Any config name with this prefix is a secret reference, not plain config.
SECRET_PREFIX = "SECRET"


class CtlOperation(StrEnum):
    """Every control-interface operation, named `<area>.<verb>` as in the subject."""

    COMPONENT_AUCTION = "component.auction"
    COMPONENT_SCALE = "component.scale"
    COMPONENT_UPDATE = "component.update"
    PROVIDER_AUCTION = "provider.auction"
    PROVIDER_START = "provider.start"
    PROVIDER_STOP = "provider.stop"
    HOST_PING = "host.ping"
    HOST_GET = "host.get"
    HOST_STOP = "host.stop"
    LABEL_PUT = "label.put"
    LABEL_DEL = "label.del"
    LINK_PUT = "link.put"
    LINK_DEL = "link.del"
    LINK_GET = "link.get"
    CLAIMS_GET = "claims.get"
    CONFIG_PUT = "config.put"
    CONFIG_GET = "config.get"
    CONFIG_DEL = "config.del"
    REGISTRY_PUT = "registry.put"


# Operations addressed to one host: the host ID is the subject's last token.
HOST_SCOPED_OPS = frozenset(
    {
        CtlOperation.COMPONENT_SCALE,
        CtlOperation.COMPONENT_UPDATE,
        CtlOperation.PROVIDER_START,
        CtlOperation.PROVIDER_STOP,
        CtlOperation.HOST_GET,
        CtlOperation.HOST_STOP,
        CtlOperation.LABEL_PUT,
        CtlOperation.LABEL_DEL,
    }
)
# Operations whose last token is a named-config name.
CONFIG_SCOPED_OPS = frozenset({CtlOperation.CONFIG_PUT, CtlOperation.CONFIG_GET, CtlOperation.CONFIG_DEL})
# Operations with no trailing token.
LATTICE_SCOPED_OPS = frozenset(CtlOperation) - HOST_SCOPED_OPS - CONFIG_SCOPED_OPS


def ctl_prefix(lattice: str = DEFAULT_LATTICE, topic_prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """Return `<topic_prefix>.v1.<lattice>`, the root of every control subject of a lattice."""
    return f"{topic_prefix}.{CTL_VERSION}.{lattice}"


def ctl_subject(
    op: CtlOperation | str,
    lattice: str = DEFAULT_LATTICE,
    target: str | None = None,
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
) -> str:
    """Build the subject of `op`; `target` is the host ID or config name the operation requires."""
    op = CtlOperation(op)
    needs_target = op in HOST_SCOPED_OPS or op in CONFIG_SCOPED_OPS
    if needs_target and not target:
        raise ValueError(f"{op.value} needs a host ID or config name in its subject")
    if not needs_target and target is not None:
        raise ValueError(f"{op.value} takes no trailing subject token, got {target!r}")
    if target is not None:
        check_token(target)
        return f"{ctl_prefix(lattice, topic_prefix)}.{op.value}.{target}"
    return f"{ctl_prefix(lattice, topic_prefix)}.{op.value}"


def check_token(token: str) -> str:
    """Ensure a host ID or config name is usable as one subject token (no `.`, `*`, `>`, whitespace).

    Raises `limits.LimitError` (a ValueError) naming the rule; the cap is `limits.MAX_ID_LEN`.
    """
    try:
        return limits.check_token(token, limits.MAX_ID_LEN)
    except limits.LimitError as e:
        raise limits.LimitError(f"{limits.quote(token)} cannot be a NATS subject token: {e}") from None


# --- what a host subscribes to (server side) ---


@dataclass(frozen=True, slots=True)
class Subscription:
    """One NATS subscription of the control-interface server; `queue` None means a plain subscribe."""

    subject: str
    queue: str | None = None


def link_queue_group(lattice: str = DEFAULT_LATTICE, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """Queue group shared by all hosts for `link.*` (exactly one host answers)."""
    return f"{ctl_prefix(lattice, prefix)}.link"


def claims_queue_group(lattice: str = DEFAULT_LATTICE, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """Queue group shared by all hosts for `claims.get`."""
    return f"{ctl_prefix(lattice, prefix)}.claims"


def config_queue_group(lattice: str = DEFAULT_LATTICE, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """Queue group shared by all hosts for `config.>`."""
    return f"{ctl_prefix(lattice, prefix)}.config"


def host_subscriptions(
    host_id: str,
    lattice: str = DEFAULT_LATTICE,
    prefix: str = DEFAULT_TOPIC_PREFIX,
    *,
    component_auctions: bool = True,
    provider_auctions: bool = True,
) -> list[Subscription]:
    """Every control subscription a host makes, with queue groups, as the v1 host does."""
    check_token(host_id)
    p = ctl_prefix(lattice, prefix)
    subs: list[Subscription] = []
    if component_auctions:
        subs.append(Subscription(f"{p}.component.auction"))
    if provider_auctions:
        subs.append(Subscription(f"{p}.provider.auction"))
    subs += [
        Subscription(f"{p}.component.*.{host_id}"),
        Subscription(f"{p}.provider.*.{host_id}"),
        Subscription(f"{p}.host.*.{host_id}"),
        Subscription(f"{p}.host.ping"),
        Subscription(f"{p}.label.*.{host_id}"),
        Subscription(f"{p}.link.*", link_queue_group(lattice, prefix)),
        Subscription(f"{p}.claims.get", claims_queue_group(lattice, prefix)),
        Subscription(f"{p}.config.>", config_queue_group(lattice, prefix)),
        Subscription(f"{p}.registry.put"),
    ]
    return subs


@dataclass(frozen=True, slots=True)
class CtlSubject:
    """A parsed control subject: the operation, the host it addresses (if any) and trailing tokens."""

    operation: CtlOperation
    host_id: str | None
    extra: tuple[str, ...]
    lattice: str

    @property
    def config_name(self) -> str | None:
        """The named-config name of a `config.*` subject, else None."""
        return self.extra[0] if self.operation in CONFIG_SCOPED_OPS else None


class UnsupportedSubjectError(ValueError):
    """The subject is not a control-interface operation; reply `"unsupported subject"`."""

    def __init__(self, subject: str) -> None:
        super().__init__(UNSUPPORTED_SUBJECT)
        self.subject = subject


def parse_ctl_subject(subject: str, topic_prefix: str = DEFAULT_TOPIC_PREFIX) -> CtlSubject:
    """Map an incoming control subject to its operation, host ID and extra tokens.

    Like the v1 host: strip the topic prefix, skip `v1` and the lattice, then match 2 or 3 tokens.
    Any other shape raises `UnsupportedSubjectError` (its message is the reply text).
    """
    head = topic_prefix + "."
    if not subject.startswith(head):
        raise UnsupportedSubjectError(subject)
    tokens = subject[len(head) :].split(".")
    if len(tokens) < 4 or tokens[0] != CTL_VERSION or not tokens[1]:
        raise UnsupportedSubjectError(subject)
    lattice, rest = tokens[1], tokens[2:]
    if len(rest) > 3 or any(not t for t in rest):
        raise UnsupportedSubjectError(subject)
    try:
        op = CtlOperation(f"{rest[0]}.{rest[1]}")
    except ValueError:
        raise UnsupportedSubjectError(subject) from None
    trailing = tuple(rest[2:])
    if op in HOST_SCOPED_OPS:
        if len(trailing) != 1:
            raise UnsupportedSubjectError(subject)
        return CtlSubject(op, trailing[0], (), lattice)
    if op in CONFIG_SCOPED_OPS:
        if len(trailing) != 1:
            raise UnsupportedSubjectError(subject)
        return CtlSubject(op, None, trailing, lattice)
    if trailing:
        raise UnsupportedSubjectError(subject)
    return CtlSubject(op, None, (), lattice)


# --- events ---


def event_subject(event_type: str, lattice: str = DEFAULT_LATTICE) -> str:
    """Return `wasmbus.evt.<lattice>.<event_type>`, where an event is published."""
    return f"{EVENT_PREFIX}.{lattice}.{event_type}"


def events_wildcard(lattice: str = DEFAULT_LATTICE) -> str:
    """Return `wasmbus.evt.<lattice>.>`, to receive every event of a lattice."""
    return f"{EVENT_PREFIX}.{lattice}.>"


# --- the lattice's log stream (ours; wasmCloud exports logs over OTLP only: docs/observability.md) ---

LOGS_PREFIX = "wasmlattice.logs"
LOGS_RECENT_PREFIX = "wasmlattice.logs_recent"
# The component token of a host's own log lines. Their `stream` is `host`, so a component that
# happens to be called `_host` is still told apart.
HOST_LOG_COMPONENT = "_host"


def logs_subject(lattice: str, host_id: str, component_id: str) -> str:
    """Return `wasmlattice.logs.<lattice>.<host_id>.<component_id>`, where a host publishes log records."""
    return f"{LOGS_PREFIX}.{lattice}.{host_id}.{component_id}"


def logs_filter(lattice: str, host_id: str | None = None, component_id: str | None = None) -> str:
    """The subscription for the log records of `host_id` and `component_id` (any when None)."""
    host = check_token(host_id) if host_id else "*"
    component = check_token(component_id) if component_id else "*"
    return f"{LOGS_PREFIX}.{lattice}.{host}.{component}"


def logs_recent_subject(lattice: str) -> str:
    """Return `wasmlattice.logs_recent.<lattice>`: every host answers with its recent log records."""
    return f"{LOGS_RECENT_PREFIX}.{lattice}"


# --- where a host serves Prometheus metrics (ours; docs/observability.md#metrics) ---

METRICS_ENDPOINTS_PREFIX = "wasmlattice.metrics_endpoints"


def metrics_endpoints_subject(lattice: str) -> str:
    """Return `wasmlattice.metrics_endpoints.<lattice>`: hosts with `--metrics-listen` answer with its URL."""
    return f"{METRICS_ENDPOINTS_PREFIX}.{lattice}"


# --- host <-> provider housekeeping (RPC connection) ---


def provider_health(provider_id: str, lattice: str = DEFAULT_LATTICE) -> str:
    """Health-check request subject of a provider."""
    return f"{RPC_PREFIX}.{lattice}.{provider_id}.health"


def provider_shutdown(provider_id: str, lattice: str = DEFAULT_LATTICE) -> str:
    """Graceful-shutdown request subject of a provider."""
    return f"{RPC_PREFIX}.{lattice}.{provider_id}.default.shutdown"


def linkdefs_put(target_key: str, lattice: str = DEFAULT_LATTICE) -> str:
    """Link-put publish subject for a provider ID or provider xkey."""
    return f"{RPC_PREFIX}.{lattice}.{target_key}.linkdefs.put"


def linkdefs_del(target_id: str, lattice: str = DEFAULT_LATTICE) -> str:
    """Link-delete publish subject for a link's source or target."""
    return f"{RPC_PREFIX}.{lattice}.{target_id}.linkdefs.del"


def provider_config_update(provider_id: str, lattice: str = DEFAULT_LATTICE) -> str:
    """Subject on which a provider receives its merged config after a change."""
    return f"{RPC_PREFIX}.{lattice}.{provider_id}.config.update"


def config_service_request(lattice: str = DEFAULT_LATTICE) -> str:
    """Subject of the optional config-service request made at host start."""
    return f"wasmbus.cfg.{lattice}.req"


# --- JetStream KV ---


def lattice_data_bucket(lattice: str = DEFAULT_LATTICE) -> str:
    """KV bucket holding component specs (with links) and claims: `LATTICEDATA_<lattice>`."""
    return f"{LATTICE_DATA_BUCKET_PREFIX}{lattice}"


def config_data_bucket(lattice: str = DEFAULT_LATTICE) -> str:
    """KV bucket holding named config and secret references: `CONFIGDATA_<lattice>`."""
    return f"{CONFIG_DATA_BUCKET_PREFIX}{lattice}"


def component_spec_key(component_id: str) -> str:
    """KV key of a component's (or provider's) spec: `COMPONENT_<id>`."""
    return f"{COMPONENT_KEY_PREFIX}{component_id}"


def claims_key(subject_public_key: str) -> str:
    """KV key of stored claims: `CLAIMS_<subject public key>`."""
    return f"{CLAIMS_KEY_PREFIX}{subject_public_key}"


def config_key(name: str) -> str:
    """KV key of a named config in `CONFIGDATA_<lattice>`: the name itself."""
    return name


def is_secret_reference(config_name: str) -> bool:
    """Whether a config name refers to a secret (it starts with `SECRET`)."""
    return config_name.startswith(SECRET_PREFIX)


@dataclass(frozen=True, slots=True)
class LatticeKey:
    """A parsed `LATTICEDATA` key: kind is "component", "claims", "legacy" or "unknown"."""

    kind: str
    ident: str


def parse_lattice_key(key: str) -> LatticeKey:
    """Classify a `LATTICEDATA_<lattice>` key and extract the ID after its prefix."""
    if key.startswith(COMPONENT_KEY_PREFIX):
        return LatticeKey("component", key[len(COMPONENT_KEY_PREFIX) :])
    if key.startswith(CLAIMS_KEY_PREFIX):
        return LatticeKey("claims", key[len(CLAIMS_KEY_PREFIX) :])
    for legacy in LEGACY_KEY_PREFIXES:
        if key.startswith(legacy):
            return LatticeKey("legacy", key[len(legacy) :])
    return LatticeKey("unknown", key)
