"""Options shared by the commands that run a host or an app manager: `host`, `up`, `app-manager`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from wasmlattice.cli.common import NatsCredsOpt, fail, up_credentials

# Each setting reads our variable first, then the wasmCloud host's name for it
# (docs/protocol.md#host-settings), so an environment written for a `wasmcloud` host starts a
# wasmlattice host unchanged.
NatsJwtOpt = Annotated[
    str | None,
    typer.Option(
        "--nats-jwt",
        envvar=["WASMLATTICE_NATS_JWT", "WASMCLOUD_NATS_JWT"],
        help="NATS user JWT (needs --nats-seed).",
    ),
]
NatsSeedOpt = Annotated[
    str | None,
    typer.Option(
        "--nats-seed",
        envvar=["WASMLATTICE_NATS_SEED", "WASMCLOUD_NATS_SEED"],
        help="NATS user nkey seed (SU...).",
    ),
]
# The TLS variables are the ones every other command reads (`cli_nats_options`): set them once.
NatsTlsOpt = Annotated[
    bool, typer.Option("--nats-tls", envvar="WASMLATTICE_NATS_TLS", help="Require TLS to the NATS server.")
]
NatsTlsCaOpt = Annotated[
    Path | None,
    typer.Option(
        "--nats-tls-ca",
        envvar="WASMLATTICE_NATS_TLS_CA",
        help="CA file to trust for NATS TLS (implies --nats-tls).",
    ),
]
NatsTlsCertOpt = Annotated[
    Path | None,
    typer.Option(
        "--nats-tls-cert",
        envvar="WASMLATTICE_NATS_TLS_CERT",
        help="TLS client certificate for NATS (with --nats-tls-key; implies --nats-tls).",
    ),
]
NatsTlsKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--nats-tls-key",
        envvar="WASMLATTICE_NATS_TLS_KEY",
        help="Private key of --nats-tls-cert.",
    ),
]
JsDomainOpt = Annotated[
    str | None,
    typer.Option(
        "--js-domain", envvar=["WASMLATTICE_JS_DOMAIN", "WASMCLOUD_JS_DOMAIN"], help="JetStream domain."
    ),
]
# Replicas of the lattice's KV buckets and object stores; the default asks the server how big its
# cluster is (docs/nats.md#replicas).
JS_REPLICAS_ENV = "WASMLATTICE_JS_REPLICAS"
JsReplicasOpt = Annotated[
    int | None,
    typer.Option(
        "--js-replicas",
        min=1,
        max=5,
        envvar=JS_REPLICAS_ENV,
        help="Replicas of the KV buckets and object stores this process creates (1-5). "
        "Default: the NATS cluster's size, at most 3 (1 on a single server).",
    ),
]
FriendlyNameOpt = Annotated[
    str | None,
    typer.Option("--friendly-name", help="Display name of the host (derived from its ID if unset)."),
]
HostSeedOpt = Annotated[
    str | None,
    typer.Option(
        "--host-seed",
        envvar=["WASMLATTICE_HOST_SEED", "WASMCLOUD_HOST_SEED"],
        help="nkeys server seed (SN...).",
    ),
]
HeartbeatOpt = Annotated[
    float | None,
    typer.Option(
        "--heartbeat-interval",
        "--heartbeat-interval-seconds",
        min=0.1,
        envvar=["WASMLATTICE_HEARTBEAT_INTERVAL", "WASMCLOUD_HEARTBEAT_INTERVAL"],
        help="Seconds between host_heartbeat events (30).",
    ),
]

# Tiered compilation (docs/architecture.md#tiered-compilation): on unless the flag or variable says off.
TieredCompileOpt = Annotated[
    bool | None,
    typer.Option(
        "--tiered-compile/--no-tiered-compile",
        envvar="WASMLATTICE_TIERED_COMPILE",
        show_default=False,
        help="Serve a component not yet compiled from its Winch build within seconds, then from its "
        "optimised Cranelift build once compiled in the background (on).",
    ),
]

# What control messages may reach on the host's machine (docs/security.md). wasmCloud has
# `--allow-file-load`; the allowed directories and the file size cap are ours.
ALLOW_FILE_LOAD_ENV = ["WASMLATTICE_ALLOW_FILE_LOAD", "WASMCLOUD_ALLOW_FILE_LOAD"]
ALLOW_FILE_LOAD_HELP = (
    "Load file:// components (only regular files under --allow-dir). Off by default, as in wasmCloud."
)
AllowFileLoadOpt = Annotated[
    bool,
    typer.Option(
        "--allow-file-load/--no-allow-file-load", envvar=ALLOW_FILE_LOAD_ENV, help=ALLOW_FILE_LOAD_HELP
    ),
]
ALLOW_DIR_HELP = (
    "Directory that file:// components and blobstore-fs roots may be in (symbolic links resolved); "
    "repeatable. Nothing outside these is loaded or used as a blob root, whatever a control message says."
)
AllowDirOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--allow-dir",
        envvar="WASMLATTICE_ALLOW_DIRS",
        file_okay=False,
        metavar="DIR",
        help=ALLOW_DIR_HELP + f" Variable: `{os.pathsep}`-separated.",
    ),
]
MaxComponentSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--max-component-size",
        min=1,
        envvar="WASMLATTICE_MAX_COMPONENT_SIZE",
        help="Bytes a component may have, from a file or a registry (268435456, 256 MiB).",
    ),
]


# wasmCloud's `--tls-ca-path` (`WASMCLOUD_TLS_CA_PATH`): extra CA certificates for registries.
TLS_CA_PATH_ENV = "WASMCLOUD_TLS_CA_PATH"
TlsCaPathOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--tls-ca-path",
        envvar=TLS_CA_PATH_ENV,
        metavar="CA.pem",
        help="PEM file of CA certificates trusted for registry HTTPS, besides the system's; repeatable "
        f"(${TLS_CA_PATH_ENV}: whitespace-separated).",
    ),
]


def tls_ca_paths(paths: list[Path] | None) -> list[Path]:
    """The `--tls-ca-path` files made absolute once each is a readable CA file; exit 2 otherwise."""
    from wasmlattice.artifacts.oci import registry_ssl_context
    from wasmlattice.artifacts.source import ArtifactError

    resolved = [p.resolve() for p in paths or []]
    for given, path in zip(paths or [], resolved, strict=True):
        if not path.is_file():
            fail(f"--tls-ca-path {given}: {'no such file' if not path.exists() else 'not a file'}", code=2)
        try:
            registry_ssl_context([path])
        except ArtifactError as e:
            fail(str(e), code=2)
    return resolved


@dataclass(frozen=True)
class OciAccess:
    """How a host reaches OCI registries (docs/artifacts.md); the wasmCloud host's flags and variables."""

    allow_latest: Annotated[
        bool,
        typer.Option(
            "--allow-latest",
            envvar="WASMCLOUD_OCI_ALLOW_LATEST",
            help="Fetch OCI references tagged latest (or with no tag). Off: they are refused.",
        ),
    ] = False
    allowed_insecure: Annotated[
        str | None,
        typer.Option(
            "--allowed-insecure",
            envvar="WASMCLOUD_OCI_ALLOWED_INSECURE",
            metavar="HOST[:PORT],...",
            help="Registries spoken to over plain HTTP (comma-separated); HTTPS to every other.",
        ),
    ] = None
    oci_registry: Annotated[
        str | None,
        typer.Option(
            "--oci-registry",
            envvar="WASMCLOUD_OCI_REGISTRY",
            help="Registry that --oci-user/--oci-password are for (all three together).",
        ),
    ] = None
    oci_user: Annotated[
        str | None, typer.Option("--oci-user", envvar="WASMCLOUD_OCI_REGISTRY_USER", help="Registry user.")
    ] = None
    oci_password: Annotated[
        str | None,
        typer.Option("--oci-password", envvar="WASMCLOUD_OCI_REGISTRY_PASSWORD", help="Registry password."),
    ] = None
    tls_ca_path: TlsCaPathOpt = None

    def host_kwargs(self) -> dict[str, Any]:
        """The OCI fields of `HostOptions`; exit 2 unless the three credential flags go together."""
        creds = (self.oci_registry, self.oci_user, self.oci_password)
        if any(creds) and not all(creds):
            fail("--oci-registry, --oci-user and --oci-password go together: set all three", code=2)
        return {
            "allow_latest": self.allow_latest,
            "allowed_insecure": [h.strip() for h in (self.allowed_insecure or "").split(",") if h.strip()],
            "oci_registry": self.oci_registry,
            "oci_user": self.oci_user,
            "oci_password": self.oci_password,
            "tls_ca_paths": tls_ca_paths(self.tls_ca_path),
        }


ALLOWED_ISSUERS_ENV = "WASMLATTICE_ALLOWED_ISSUERS"
AllowedIssuerOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allowed-issuer",
        envvar=ALLOWED_ISSUERS_ENV,
        metavar="ACCOUNT_KEY",
        help="Run only components signed by this account (A...); repeatable, or a comma list in "
        f"${ALLOWED_ISSUERS_ENV}. Unsigned components are then refused. Default: any component, "
        "signed ones only with valid claims (docs/claims.md).",
    ),
]


def allowed_issuers(values: list[str] | None) -> list[str]:
    """The `--allowed-issuer` keys (each value may be a comma list); exit 2 on a malformed key."""
    from wasmlattice.artifacts.nkey import KeyKind, NkeyError, check_public_key

    keys = [k.strip() for v in values or [] for k in v.split(",") if k.strip()]
    for key in keys:
        try:
            check_public_key(key, KeyKind.ACCOUNT)
        except NkeyError as e:
            fail(f"--allowed-issuer: {e}", code=2)
    return keys


def allowed_dirs(dirs: list[Path] | None) -> list[Path]:
    """The `--allow-dir` directories made absolute, or exit 2 if one is not a directory."""
    resolved = []
    for d in dirs or []:
        if not d.is_dir():
            fail(f"--allow-dir: {d} is not a directory", code=2)
        resolved.append(d.resolve())
    return resolved


HealthListenOpt = Annotated[
    str | None,
    typer.Option(
        "--health-listen",
        envvar="WASMLATTICE_HEALTH_LISTEN",
        metavar="HOST:PORT",
        help="Serve /livez (the event loop answers) and /readyz (NATS connected, lattice state loaded, "
        "HTTP listeners bound; 503 with the reasons otherwise) here (docs/lattice.md#probes).",
    ),
]


ManagerHealthListenOpt = Annotated[
    str | None,
    typer.Option(
        "--health-listen",
        envvar="WASMLATTICE_HEALTH_LISTEN",
        metavar="HOST:PORT",
        help="Serve /livez (the event loop answers) and /readyz (NATS connected, buckets open, API "
        "subscribed; 503 with the reasons otherwise) here (docs/apps.md#probes).",
    ),
]


UpHealthListenOpt = Annotated[
    str | None,
    typer.Option(
        "--health-listen",
        envvar="WASMLATTICE_HEALTH_LISTEN",
        metavar="HOST:PORT",
        help="Serve /livez and /readyz here: ready when the host is (NATS connected, lattice state "
        "loaded, HTTP listeners bound) and so is its app manager (buckets open, API subscribed; "
        "unless --no-app-manager) "
        "(docs/apps.md#probes).",
    ),
]


def health_listen(value: str | None) -> str | None:
    """The `--health-listen` value once it is a valid HOST:PORT; exit 2 otherwise."""
    from wasmlattice.probes import parse_listen

    if value:
        try:
            parse_listen(value)
        except ValueError as e:
            fail(f"--health-listen: {e}", code=2)
    return value or None


# wasmCloud's level names (`trace`, `warn`, `critical`) map onto Python's.
_LOG_LEVELS = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "critical": "critical",
}


def check_log_level(value: str) -> str:
    """The Python logging level for a level name (ours or wasmCloud's), or a usage error."""
    level = _LOG_LEVELS.get(value.strip().lower())
    if level is None:
        raise typer.BadParameter(f"{value!r} is not a log level: use debug, info, warning or error")
    return level


LogLevelOpt = Annotated[
    str,
    typer.Option(
        "--log-level",
        envvar=["WASMLATTICE_LOG_LEVEL", "WASMCLOUD_LOG_LEVEL"],
        callback=check_log_level,
        help="debug, info, warning or error.",
    ),
]

RESERVED_LABEL_MESSAGE = "labels under `hostcore.` are set by the host; choose another key"


def host_labels(args: list[str]) -> dict[str, str]:
    """The `--label` flags as a dict, once they and the WASMCLOUD_LABEL_* variables are valid.

    Exits with code 2 on a malformed label or a `hostcore.` key: the host would only drop such a
    label with a log line, and the user would wait for a label that never appears.
    """
    from wasmlattice.host.host import (
        LABEL_ENV_PREFIX,
        LabelError,
        label_cap_message,
        label_problem,
        labels_from_env,
        parse_label_args,
    )
    from wasmlattice.protocol.limits import MAX_LABELS
    from wasmlattice.protocol.models import BUILTIN_LABELS, is_reserved_label

    labels: dict[str, str] = {}
    for arg in args:
        try:
            labels.update(parse_label_args([arg]))
        except LabelError as e:
            fail(f"--label: {e}", code=2)
    for key in labels:
        if is_reserved_label(key):
            fail(f"--label {key}: {RESERVED_LABEL_MESSAGE}", code=2)
    env_labels = labels_from_env()
    for key, value in env_labels.items():
        if is_reserved_label(key):
            fail(f"{LABEL_ENV_PREFIX}{key}: {RESERVED_LABEL_MESSAGE} (or unset the variable)", code=2)
        problem = label_problem(key, value)
        if problem is not None:
            fail(f"{LABEL_ENV_PREFIX}{key[:40]}: {problem}", code=2)
    if len({**env_labels, **labels}) + len(BUILTIN_LABELS) > MAX_LABELS:
        builtin = len(BUILTIN_LABELS)
        fail(f"--label: {label_cap_message()} (including the {builtin} hostcore.* labels)", code=2)
    return labels


def existing_file(path: Path | None, option: str) -> Path | None:
    """`path` made absolute (the detached `up` runs elsewhere), or exit 2 if it is not a file."""
    if path is not None and not path.is_file():
        # One plain line: a path wrapped inside Typer's error box cannot be copied.
        fail(f"{option}: {path} is not a file", code=2)
    return path.resolve() if path is not None else None


@dataclass(frozen=True)
class NatsAuth:
    """How a host or app manager reaches a secured NATS: credentials, TLS, and the JetStream domain."""

    nats_creds: NatsCredsOpt = None
    nats_jwt: NatsJwtOpt = None
    nats_seed: NatsSeedOpt = None
    nats_tls: NatsTlsOpt = False
    nats_tls_ca: NatsTlsCaOpt = None
    nats_tls_cert: NatsTlsCertOpt = None
    nats_tls_key: NatsTlsKeyOpt = None
    js_domain: JsDomainOpt = None
    js_replicas: JsReplicasOpt = None

    def host_kwargs(self) -> dict[str, Any]:
        """The NATS connection fields of `HostOptions` (a CA or cert implies TLS); exit 2 if unusable."""
        tls_cert, tls_key = self.nats_tls_cert, self.nats_tls_key
        if (tls_cert is None) != (tls_key is None):
            given, missing = (
                ("--nats-tls-cert", "--nats-tls-key")
                if tls_key is None
                else ("--nats-tls-key", "--nats-tls-cert")
            )
            fail(f"{given} needs {missing} too: a TLS client certificate goes with its private key", code=2)
        return {
            "nats_creds": existing_file(self.nats_creds, "--nats-creds"),
            "nats_jwt": self.nats_jwt,
            "nats_seed": self.nats_seed,
            "nats_tls": self.nats_tls or self.nats_tls_ca is not None or tls_cert is not None,
            "nats_tls_ca": existing_file(self.nats_tls_ca, "--nats-tls-ca"),
            "nats_tls_cert": existing_file(tls_cert, "--nats-tls-cert"),
            "nats_tls_key": existing_file(tls_key, "--nats-tls-key"),
            "js_domain": self.js_domain,
            "js_replicas": self.js_replicas,
        }


def with_up_credentials(nats: dict[str, Any], nats_url: str, data_dir: Path | None) -> dict[str, Any]:
    """`nats` (from `NatsAuth.host_kwargs`), with the credentials of the `up` in `data_dir` when none
    were given and `nats_url` is that `up`'s NATS."""
    if nats.get("nats_creds") is not None or nats.get("nats_jwt") or nats.get("nats_seed"):
        return nats
    found = up_credentials(nats_url, data_dir)
    return nats if found is None else {**nats, "nats_creds": found}


def host_options(**kwargs: Any) -> Any:
    """Build `HostOptions`, passing only the fields it has (the host side owns that dataclass)."""
    import dataclasses

    from wasmlattice.lattice.run import HostOptions

    names = {f.name for f in dataclasses.fields(HostOptions)}
    return HostOptions(**{k: v for k, v in kwargs.items() if k in names and v is not None})


# -- the policy service (docs/policy.md): wasmCloud's flags and variable names ------------------
PolicyTopicOpt = Annotated[
    str | None,
    typer.Option(
        "--policy-topic",
        envvar=["WASMLATTICE_POLICY_TOPIC", "WASMCLOUD_POLICY_TOPIC"],
        help="NATS subject of the policy service, asked before starts and invocations (none: all allowed).",
    ),
]
PolicyChangesTopicOpt = Annotated[
    str | None,
    typer.Option(
        "--policy-changes-topic",
        envvar=["WASMLATTICE_POLICY_CHANGES_TOPIC", "WASMCLOUD_POLICY_CHANGES_TOPIC"],
        help="NATS subject on which the policy service revises earlier decisions (needs --policy-topic).",
    ),
]
PolicyTimeoutOpt = Annotated[
    int | None,
    typer.Option(
        "--policy-timeout-ms",
        min=1,
        envvar=["WASMLATTICE_POLICY_TIMEOUT", "WASMCLOUD_POLICY_TIMEOUT"],
        help="Milliseconds to wait for the policy service before denying (1000; needs --policy-topic).",
    ),
]


@dataclass(frozen=True)
class PolicyFlags:
    """`--policy-topic`, `--policy-changes-topic`, `--policy-timeout-ms` of `host` and `up`."""

    policy_topic: PolicyTopicOpt = None
    policy_changes_topic: PolicyChangesTopicOpt = None
    policy_timeout_ms: PolicyTimeoutOpt = None

    def host_kwargs(self) -> dict[str, Any]:
        """The policy fields of `HostOptions`; exit 2 on an invalid topic or a flag without a topic."""
        from wasmlattice.protocol.policy import PolicyTopicError, check_policy_topic

        if self.policy_topic is None:
            for given, flag in (
                (self.policy_changes_topic, "--policy-changes-topic"),
                (self.policy_timeout_ms, "--policy-timeout-ms"),
            ):
                if given is not None:
                    fail(f"{flag} needs --policy-topic", code=2)
            return {}
        try:
            check_policy_topic(self.policy_topic, "--policy-topic")
            if self.policy_changes_topic is not None:
                check_policy_topic(self.policy_changes_topic, "--policy-changes-topic")
        except PolicyTopicError as e:
            fail(str(e), code=2)
        return {
            "policy_topic": self.policy_topic,
            "policy_changes_topic": self.policy_changes_topic,
            "policy_timeout_ms": self.policy_timeout_ms,
        }


# -- limits on guests (docs/limits.md) --------------------------------------------------------
MaxInstanceMemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--max-instance-memory",
        envvar="WASMLATTICE_MAX_INSTANCE_MEMORY",
        metavar="SIZE",
        help="Linear memory one instance may use (256MiB); a component's max_memory_limit overrides it.",
    ),
]
GuestMemoryBudgetOpt = Annotated[
    str | None,
    typer.Option(
        "--guest-memory-budget",
        envvar="WASMLATTICE_GUEST_MEMORY_BUDGET",
        metavar="SIZE",
        help="Memory all guests may reserve: instances x memory each (half the machine's, at least 1GiB).",
    ),
]
GuestOutputLinesOpt = Annotated[
    float | None,
    typer.Option(
        "--guest-output-lines",
        min=0.001,
        envvar="WASMLATTICE_GUEST_OUTPUT_LINES",
        metavar="N",
        help="Lines per second one component may log, stdout, stderr and wasi:logging together (200).",
    ),
]
GuestOutputBytesOpt = Annotated[
    str | None,
    typer.Option(
        "--guest-output-bytes",
        envvar="WASMLATTICE_GUEST_OUTPUT_BYTES",
        metavar="SIZE",
        help="Bytes per second one component may log (256KiB).",
    ),
]
GuestOutputMaxLineOpt = Annotated[
    str | None,
    typer.Option(
        "--guest-output-max-line",
        envvar="WASMLATTICE_GUEST_OUTPUT_MAX_LINE",
        metavar="SIZE",
        help="Longest guest log line; longer ones are cut (16KiB).",
    ),
]

# HostOptions field -> flag, for `up --detach` to pass them on to its child.
LIMIT_FLAGS = (
    ("max_instance_memory", "--max-instance-memory"),
    ("guest_memory_budget", "--guest-memory-budget"),
    ("guest_output_lines", "--guest-output-lines"),
    ("guest_output_bytes", "--guest-output-bytes"),
    ("guest_output_max_line", "--guest-output-max-line"),
)


def size_option(text: str | None, flag: str) -> int | None:
    """Bytes from a size flag (`256MiB`, `1.5GiB`, `268435456`); exit 2 naming the flag if invalid."""
    if text is None:
        return None
    from wasmlattice.runtime.budget import parse_size

    try:
        size = parse_size(text)
    except ValueError as e:
        fail(f"{flag}: {e}", code=2)
    if size <= 0:
        fail(f"{flag}: must be positive, got {text!r}", code=2)
    return size


@dataclass(frozen=True)
class GuestLimitFlags:
    """`--max-instance-memory`, `--guest-memory-budget`, `--guest-output-*` of `host` and `up`."""

    max_instance_memory: MaxInstanceMemoryOpt = None
    guest_memory_budget: GuestMemoryBudgetOpt = None
    guest_output_lines: GuestOutputLinesOpt = None
    guest_output_bytes: GuestOutputBytesOpt = None
    guest_output_max_line: GuestOutputMaxLineOpt = None

    def host_kwargs(self) -> dict[str, Any]:
        """The guest-limit fields of `HostOptions` that were given; exit 2 on an invalid size."""
        given = {
            "max_instance_memory": size_option(self.max_instance_memory, "--max-instance-memory"),
            "guest_memory_budget": size_option(self.guest_memory_budget, "--guest-memory-budget"),
            "guest_output_lines": self.guest_output_lines,
            "guest_output_bytes": size_option(self.guest_output_bytes, "--guest-output-bytes"),
            "guest_output_max_line": size_option(self.guest_output_max_line, "--guest-output-max-line"),
        }
        return {k: v for k, v in given.items() if v is not None}


# -- observability (docs/observability.md): wasmCloud's flags; the variables are read by
# `ObservabilitySettings.from_env` (WASMCLOUD_*_ENABLED, OTEL_EXPORTER_OTLP_*, OTEL_SERVICE_NAME).
_SIGNAL_HELP = "Export {} over OTLP (default: as --enable-observability)."


@dataclass(frozen=True)
class ObservabilityFlags:
    """`--enable-observability`, `--enable-traces/metrics/logs`, the OTLP endpoint and protocol, and
    `--metrics-listen` of `host`, `up` and `app-manager` (off unless a flag or variable says so)."""

    enable_observability: Annotated[
        bool | None,
        typer.Option(
            "--enable-observability/--disable-observability",
            show_default=False,
            help="Export traces, metrics and logs over OTLP (WASMCLOUD_OBSERVABILITY_ENABLED; off).",
        ),
    ] = None
    enable_traces: Annotated[
        bool | None,
        typer.Option(
            "--enable-traces/--disable-traces", show_default=False, help=_SIGNAL_HELP.format("traces")
        ),
    ] = None
    enable_metrics: Annotated[
        bool | None,
        typer.Option(
            "--enable-metrics/--disable-metrics", show_default=False, help=_SIGNAL_HELP.format("metrics")
        ),
    ] = None
    enable_logs: Annotated[
        bool | None,
        typer.Option("--enable-logs/--disable-logs", show_default=False, help=_SIGNAL_HELP.format("logs")),
    ] = None
    observability_endpoint: Annotated[
        str | None,
        typer.Option(
            "--override-observability-endpoint",
            metavar="URL",
            help="Base OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT; http://127.0.0.1:4318 for http, "
            ":4317 for grpc); /v1/<signal> is appended for http.",
        ),
    ] = None
    traces_endpoint: Annotated[
        str | None,
        typer.Option("--override-traces-endpoint", metavar="URL", help="OTLP traces endpoint, used as is."),
    ] = None
    metrics_endpoint: Annotated[
        str | None,
        typer.Option("--override-metrics-endpoint", metavar="URL", help="OTLP metrics endpoint, used as is."),
    ] = None
    logs_endpoint: Annotated[
        str | None,
        typer.Option("--override-logs-endpoint", metavar="URL", help="OTLP logs endpoint, used as is."),
    ] = None
    observability_protocol: Annotated[
        str | None,
        typer.Option(
            "--observability-protocol",
            metavar="http|grpc",
            help="OTLP protocol (WASMCLOUD_OBSERVABILITY_PROTOCOL; http).",
        ),
    ] = None
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            "--metrics-listen",
            metavar="HOST:PORT",
            help="Serve Prometheus /metrics here (WASMLATTICE_METRICS_LISTEN; off).",
        ),
    ] = None

    def settings(self) -> Any:
        """The `ObservabilitySettings` of these flags and the environment; exit 2 if invalid."""
        import dataclasses

        from wasmlattice.observability.settings import ObservabilitySettings

        try:
            found = ObservabilitySettings.from_env(
                enable_observability=self.enable_observability,
                enable_traces=self.enable_traces,
                enable_metrics=self.enable_metrics,
                enable_logs=self.enable_logs,
                endpoint=self.observability_endpoint,
                protocol=self.observability_protocol,
                metrics_listen=self.metrics_listen,
            )
        except ValueError as e:
            fail(f"--observability-protocol: {e}", code=2)
        return dataclasses.replace(
            found,
            traces_endpoint=self.traces_endpoint or found.traces_endpoint,
            metrics_endpoint=self.metrics_endpoint or found.metrics_endpoint,
            logs_endpoint=self.logs_endpoint or found.logs_endpoint,
        )

    def args(self) -> list[str]:
        """These flags as given, for a child process (`up --detach`) to take them again."""
        out: list[str] = []
        for flag, value in (
            ("observability", self.enable_observability),
            ("traces", self.enable_traces),
            ("metrics", self.enable_metrics),
            ("logs", self.enable_logs),
        ):
            if value is not None:
                out.append(f"--{'enable' if value else 'disable'}-{flag}")
        for flag, text in (
            ("--override-observability-endpoint", self.observability_endpoint),
            ("--override-traces-endpoint", self.traces_endpoint),
            ("--override-metrics-endpoint", self.metrics_endpoint),
            ("--override-logs-endpoint", self.logs_endpoint),
            ("--observability-protocol", self.observability_protocol),
            ("--metrics-listen", self.metrics_listen),
        ):
            if text:
                out += [flag, text]
        return out
