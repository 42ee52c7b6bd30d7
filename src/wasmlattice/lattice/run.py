"""Run one host: connect to NATS, open lattice state, serve the control interface until told to stop.

`run_host(HostOptions(...))` is what the `wasmlattice host` command calls. For tests this module is
also runnable: `python -m wasmlattice.lattice.run --nats-url URL [--label k=v ...] [--lattice NAME]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wasmlattice import aio
from wasmlattice.artifacts.auth import (
    Credential,
    Credentials,
    CredentialSource,
    docker_config_source,
    flag_credentials,
    normalize_registry,
    static_source,
)
from wasmlattice.artifacts.claims import ClaimsError, ClaimsPolicy
from wasmlattice.artifacts.fetch import ArtifactFetcher, FetchPolicy
from wasmlattice.artifacts.lattice_store import LatticeStore
from wasmlattice.artifacts.oci import registry_ssl_context
from wasmlattice.artifacts.source import ArtifactError
from wasmlattice.capabilities.base import DEFAULT_INVOCATION_TIMEOUT_S, HostServices
from wasmlattice.capabilities.manager import ProviderManager
from wasmlattice.capabilities.secrets import key_file_path
from wasmlattice.host.components import DEFAULT_EXECUTION_TIME_S, ComponentRegistry
from wasmlattice.host.guest_limits import GuestLimits
from wasmlattice.host.host import Host, LabelError, labels_from_env, parse_label_args
from wasmlattice.host.identity import HostIdentity, HostIdentityError
from wasmlattice.host.router import Router
from wasmlattice.lattice.control import ControlInterfaceServer
from wasmlattice.lattice.health import DEFAULT_HEALTH_INTERVAL_S
from wasmlattice.lattice.logs import HostLogStream, host_log_stream
from wasmlattice.lattice.metrics_endpoint import MetricsEndpointResponder, advertised_url
from wasmlattice.lattice.policy import PolicyService, PolicySettings
from wasmlattice.lattice.probes import HEALTH_LISTEN_ENV, probes_from
from wasmlattice.observability import process as observability
from wasmlattice.observability.settings import PROTOCOLS, ObservabilitySettings
from wasmlattice.probes import ReadinessCheck
from wasmlattice.protocol.connection import (
    DEFAULT_NATS_URL,
    NatsConnectionClosedError,
    NatsConnectionError,
    NatsOptions,
    connect,
    jetstream,
    public_url,
    without_userinfo,
)
from wasmlattice.protocol.kv import KvError
from wasmlattice.protocol.models import (
    DEFAULT_HEARTBEAT_INTERVAL_S,
    DEFAULT_HOST_STOP_TIMEOUT_S,
    RegistryCredential,
)
from wasmlattice.protocol.policy import DEFAULT_POLICY_TIMEOUT_MS
from wasmlattice.protocol.state import LatticeState
from wasmlattice.protocol.subjects import DEFAULT_LATTICE, DEFAULT_TOPIC_PREFIX, check_token
from wasmlattice.runtime.budget import DEFAULT_INSTANCE_MEMORY, format_size, parse_size
from wasmlattice.runtime.execution import DEFAULT_MAX_CONCURRENT_INVOCATIONS, HostGate
from wasmlattice.runtime.hostfiles import DEFAULT_MAX_COMPONENT_SIZE, HostFiles
from wasmlattice.runtime.reuse import RECORD
from wasmlattice.supervision import Supervisor, where_tasks_wait
from wasmlattice.wasi.output_limit import OutputLimits

if TYPE_CHECKING:
    from wasmlattice.observability.metrics import HostMetrics

# Named, not `__name__`: run as `python -m wasmlattice.lattice.run` this module is `__main__`, and
# its lines must still be the host's (`wasmlattice.*`, which the lattice log stream publishes).
log = logging.getLogger("wasmlattice.lattice.run")


class HostStartError(RuntimeError):
    """The host could not start; the message says what failed and what to do."""


@dataclass
class HostOptions:
    """Everything a host needs to start; every field has the wasmCloud v1 host's default.

    - `nats_url`: NATS server URL(s), comma-separated (`--nats-url`).
    - `nats_creds` / `nats_jwt` + `nats_seed`: NATS authentication (creds file, or JWT and user seed).
    - `nats_tls`, `nats_tls_ca`: require TLS / trust this CA file.
    - `nats_tls_cert` + `nats_tls_key`: TLS client certificate and its key (both or neither).
    - `js_domain`: JetStream domain of the KV buckets.
    - `js_replicas`: replicas of the buckets and object stores the host creates (`--js-replicas`,
      1-5); None: the NATS cluster's size, at most 3 (docs/nats.md#replicas).
    - `lattice`: lattice name (`default`).
    - `labels`: extra host labels; `hostcore.*` keys are reserved and ignored.
    - `labels_from_env`: also read `WASMCLOUD_LABEL_<key>=<value>` (explicit `labels` win).
    - `host_seed`: nkeys server seed (`SN...`) fixing the host ID; random when None.
    - `friendly_name`: display name; derived from the host ID when None.
    - `heartbeat_interval`: seconds between `host_heartbeat` events (30).
    - `health_interval`: seconds between provider health checks (30; the first after 5 at most).
    - `invocation_timeout`: seconds a call to a component on another host may take (10).
    - `ctl_topic_prefix`: control subject prefix (`wasmbus.ctl`).
    - `stop_timeout`: the drain timeout (`--drain-timeout`): seconds a stopping host lets in-flight
      calls finish before it interrupts them and exits (10); a `host.stop` request's `timeout`
      overrides it. See docs/limits.md.
    - `max_concurrent_invocations`: guest calls running at once on this host, all components
      together (`--max-concurrent-invocations`, 256); more wait up to 1 s, then are refused.
    - `max_execution_time`: the default deadline of one invocation in seconds
      (`--max-execution-time`, 30); a component's `max_execution_time` limit overrides it.
    - `tiered_compile`: serve a component not in the compile cache from its Winch build at once,
      and from its Cranelift build once that is compiled in the background (`--tiered-compile`,
      on; `$WASMLATTICE_TIERED_COMPILE`). See docs/architecture.md#tiered-compilation.
    - `allow_file_load`: load `file://` components at all (`--allow-file-load`; off, as in wasmCloud).
    - `allow_dirs`: the only directories `file://` components and blobstore-fs roots may be in
      (`--allow-dir`; none). See docs/security.md.
    - `max_component_size`: bytes a component may have, from a file or a registry (256 MiB).
    - `allow_latest`: fetch OCI references tagged `latest` (or untagged) (`--allow-latest`; off).
    - `allowed_insecure`: registries spoken to over plain HTTP (`--allowed-insecure`); HTTPS otherwise.
    - `oci_registry` + `oci_user` + `oci_password`: credentials for one registry (all or none).
    - `tls_ca_paths`: PEM files of CA certificates trusted for registry HTTPS besides the system's
      (`--tls-ca-path`, repeatable).
    - `docker_config`: also use the registry credentials of the user's Docker `config.json` (on).
      See docs/artifacts.md.
    - `policy_topic`, `policy_changes_topic`, `policy_timeout_ms`: the policy service
      (`--policy-topic`; none: everything is permitted). See docs/policy.md.
    - `max_instance_memory`: linear memory one instance may use unless its component's
      `max_memory_limit` says otherwise (256 MiB; `--max-instance-memory`).
    - `guest_memory_budget`: bytes all guests may reserve (None: half the machine's memory, at
      least 1 GiB; `--guest-memory-budget`).
    - `guest_output_lines`, `guest_output_bytes`, `guest_output_max_line`,
      `guest_output_report_interval`: each component's allowance of log output (200 lines/s,
      256 KiB/s, lines up to 16 KiB, drops reported every 10 s). See docs/limits.md.
    - `allowed_issuers`: account keys (`A…`); when any are given, only components signed by one of
      them start (`--allowed-issuer`; none: any component, signed ones with valid claims;
      docs/claims.md).
    - `health_listen`: `HOST:PORT` for the `/livez` and `/readyz` probes (`--health-listen`; none).
      See docs/lattice.md#probes.
    - `observability`: which signals the process exports over OTLP, where, and the Prometheus
      endpoint (`--enable-observability`, ...; all off). See docs/observability.md.
    - `lattice_logs`: publish guest output and the host's own records (INFO and above) on
      `wasmlattice.logs.<lattice>.<host>.<component>` for `wasmlattice logs` (on;
      `WASMLATTICE_LATTICE_LOGS=0` turns it off). See docs/observability.md.
    """

    nats_url: str = DEFAULT_NATS_URL
    nats_creds: Path | None = None
    nats_jwt: str | None = None
    nats_seed: str | None = None
    nats_tls: bool = False
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    js_domain: str | None = None
    js_replicas: int | None = None
    lattice: str = DEFAULT_LATTICE
    labels: dict[str, str] = field(default_factory=dict)
    labels_from_env: bool = True
    host_seed: str | None = None
    friendly_name: str | None = None
    heartbeat_interval: float = float(DEFAULT_HEARTBEAT_INTERVAL_S)
    health_interval: float = DEFAULT_HEALTH_INTERVAL_S
    invocation_timeout: float = DEFAULT_INVOCATION_TIMEOUT_S
    ctl_topic_prefix: str = DEFAULT_TOPIC_PREFIX
    stop_timeout: float = DEFAULT_HOST_STOP_TIMEOUT_S
    allow_file_load: bool = False
    allow_dirs: list[Path] = field(default_factory=list)
    max_component_size: int = DEFAULT_MAX_COMPONENT_SIZE
    policy_topic: str | None = None
    policy_changes_topic: str | None = None
    policy_timeout_ms: int = DEFAULT_POLICY_TIMEOUT_MS
    max_instance_memory: int = DEFAULT_INSTANCE_MEMORY
    guest_memory_budget: int | None = None
    guest_output_lines: float = OutputLimits.lines_per_s
    guest_output_bytes: float = OutputLimits.bytes_per_s
    guest_output_max_line: int = OutputLimits.max_line
    guest_output_report_interval: float = OutputLimits.report_interval
    # Stream guest and host log records on NATS (docs/observability.md); off with
    # WASMLATTICE_LATTICE_LOGS=0.
    lattice_logs: bool = field(default_factory=lambda: _env_on("WASMLATTICE_LATTICE_LOGS", default=True))

    def guest_limits(self) -> GuestLimits:
        """The limits on this host's guests (docs/limits.md); `HostStartError` if out of range."""
        limits = GuestLimits(
            instance_memory=self.max_instance_memory,
            memory_budget=self.guest_memory_budget,
            output=OutputLimits(
                lines_per_s=self.guest_output_lines,
                bytes_per_s=self.guest_output_bytes,
                max_line=self.guest_output_max_line,
                report_interval=self.guest_output_report_interval,
            ),
        )
        try:
            limits.check()
        except ValueError as e:
            raise HostStartError(str(e)) from None
        return limits

    max_concurrent_invocations: int = DEFAULT_MAX_CONCURRENT_INVOCATIONS
    max_execution_time: float = DEFAULT_EXECUTION_TIME_S
    health_listen: str | None = None
    # Serve a component's Winch build while Cranelift optimises it (docs/architecture.md#tiered-compilation).
    tiered_compile: bool = field(default_factory=lambda: tiered_compile_default())
    # Record the HTTP requests served by components annotated `wasmlattice.dev/record: "true"`
    # (every component's, with `record_all`) into this directory (`--record-dir`,
    # docs/record-replay.md); None: nothing is recorded and nothing costs more.
    record_dir: Path | None = None
    record_all: bool = False

    def policy_settings(self) -> PolicySettings | None:
        """The validated policy settings (None without a policy topic); `HostStartError` if invalid."""
        if self.policy_topic is None:
            if self.policy_changes_topic is not None:
                raise HostStartError("--policy-changes-topic needs --policy-topic")
            return None
        try:
            return PolicySettings(self.policy_topic, self.policy_changes_topic, self.policy_timeout_ms)
        except ValueError as e:
            raise HostStartError(str(e)) from None

    allow_latest: bool = False
    allowed_insecure: list[str] = field(default_factory=list)
    oci_registry: str | None = None
    oci_user: str | None = None
    oci_password: str | None = None
    tls_ca_paths: list[Path] = field(default_factory=list)
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    docker_config: bool = True

    def fetcher(
        self, pushed: Callable[[], Mapping[str, RegistryCredential]] | None = None
    ) -> ArtifactFetcher:
        """The host's artifact fetcher; `pushed`: the credentials `registry.put` stored (they win).

        `HostStartError` if the `--oci-*` flags are incomplete.
        """
        try:
            flags = flag_credentials(self.oci_registry, self.oci_user, self.oci_password)
        except ArtifactError as e:
            raise HostStartError(str(e)) from None
        sources: list[CredentialSource] = []
        if pushed is not None:
            sources.append(_pushed_source(pushed))
        sources.append(static_source(flags))
        if self.docker_config:
            sources.append(docker_config_source())
        policy = FetchPolicy.of(self.allow_latest, self.allowed_insecure, self.max_component_size)
        try:
            ssl_context = registry_ssl_context(self.tls_ca_paths)
        except ArtifactError as e:
            raise HostStartError(str(e)) from None
        return ArtifactFetcher(policy, Credentials(sources), ssl_context=ssl_context)

    allowed_issuers: list[str] = field(default_factory=list)

    def claims_policy(self) -> ClaimsPolicy:
        """What component claims must satisfy on this host; `HostStartError` for a malformed key."""
        try:
            return ClaimsPolicy.of(self.allowed_issuers)
        except ClaimsError as e:
            raise HostStartError(str(e)) from None

    def host_files(self) -> HostFiles:
        """What control messages may reach on this machine (docs/security.md)."""
        # No blobstore-fs root may contain the host's own secrets, even inside an allowed dir.
        protected = [("secrets key", key_file_path())]
        protected += [(what, p) for what, p in self._credential_files() if p is not None]
        return HostFiles.of(
            allow_file_load=self.allow_file_load,
            allowed_dirs=self.allow_dirs,
            max_component_size=self.max_component_size,
            protected=protected,
        )

    def _credential_files(self) -> list[tuple[str, Path | None]]:
        return [("NATS credentials", self.nats_creds), ("NATS TLS key", self.nats_tls_key)]

    def nats_options(self) -> NatsOptions:
        """The NATS connection options of the control connection."""
        return NatsOptions(
            url=self.nats_url,
            creds_file=self.nats_creds,
            jwt=self.nats_jwt,
            seed=self.nats_seed,
            tls_required=self.nats_tls,
            tls_ca=self.nats_tls_ca,
            tls_cert=self.nats_tls_cert,
            tls_key=self.nats_tls_key,
            js_domain=self.js_domain,
            js_replicas=self.js_replicas,
        )


def _pushed_source(pushed: Callable[[], Mapping[str, RegistryCredential]]) -> CredentialSource:
    """A credential source reading the host's `registry.put` map at each lookup (it changes)."""

    def lookup(registry: str) -> Credential | None:
        for key, cred in pushed().items():
            if normalize_registry(key) != registry:
                continue
            kind = cred.auth_kind()
            if kind == "basic":
                return Credential(cred.username, cred.password, origin="registry.put")
            if kind == "token":
                return Credential(token=cred.token, origin="registry.put")
            return None  # anonymous, as the entry says
        return None

    return lookup


def build_host(opts: HostOptions) -> Host:
    """Create the Host from options: identity, labels (environment, then options), name."""
    try:
        check_token(opts.lattice)
    except ValueError as e:
        raise HostStartError(f"invalid lattice name: {e}") from None
    if opts.heartbeat_interval <= 0:
        raise HostStartError(f"heartbeat interval must be positive, got {opts.heartbeat_interval}")
    if opts.invocation_timeout <= 0:
        raise HostStartError(f"invocation timeout must be positive, got {opts.invocation_timeout}")
    if opts.max_component_size <= 0:
        raise HostStartError(f"max component size must be positive, got {opts.max_component_size}")
    if opts.max_concurrent_invocations < 1:
        raise HostStartError(
            f"--max-concurrent-invocations must be at least 1, got {opts.max_concurrent_invocations}"
        )
    if opts.max_execution_time < 1 or opts.stop_timeout < 0:
        raise HostStartError(
            f"--max-execution-time must be at least 1 s (got {opts.max_execution_time}) and "
            f"--drain-timeout at least 0 (got {opts.stop_timeout})"
        )
    for d in opts.allow_dirs:
        if not d.is_dir():
            raise HostStartError(f"--allow-dir {d}: not a directory")
    opts.claims_policy()
    opts.guest_limits()
    try:
        identity = HostIdentity.from_seed(opts.host_seed) if opts.host_seed else HostIdentity.generate()
    except HostIdentityError as e:
        raise HostStartError(str(e)) from None
    env = labels_from_env() if opts.labels_from_env else {}
    # Explicit labels win over the environment; Host adds the builtin hostcore.* labels.
    return Host(identity, lattice=opts.lattice, labels={**env, **opts.labels}, name=opts.friendly_name)


async def run_host(
    opts: HostOptions, ready: asyncio.Event | None = None, probe_checks: Iterable[ReadinessCheck] = ()
) -> None:
    """Run a host until SIGTERM/SIGINT or a `host.stop` request, then shut down gracefully.

    Raises `HostStartError` (or `NatsConnectionError`) with an actionable message if it cannot start,
    and `NatsConnectionClosedError` after shutting down if its NATS connection was closed for good:
    a host the lattice cannot see must not keep running components (docs/lattice.md#supervision).
    `ready` is set once the host serves requests and has published `host_started`. `probe_checks`
    are asked by `/readyz` after the host's own (`wasmlattice up` adds its app manager's).
    """
    host = build_host(opts)
    # Process-wide and once: a second host in the same process shares the first one's exporters.
    observability.setup(opts.observability, host_id=host.host_id, lattice=opts.lattice)
    policy_settings = opts.policy_settings()
    if opts.record_all and opts.record_dir is None:
        raise HostStartError("--record-all needs --record-dir DIR (where the recordings go)")
    # Before connecting: incomplete --oci-* flags are a start-up error, not a failed pull later.
    fetcher = opts.fetcher(lambda: host.registries)
    nats_opts = opts.nats_options()
    probes = probes_from(opts.health_listen, HostStartError, probe_checks)
    host_metrics: HostMetrics | None = None
    stop_requested = asyncio.Event()
    connection_lost: list[str] = []

    async def on_closed() -> None:
        # The client reconnects after every server error but a refusal of our credentials
        # (protocol/connection.py); after that nothing would answer ping, inventory or stop, so
        # leave and let the process supervisor (or the operator) start the host again.
        error = nc.last_error
        connection_lost.append(f"{type(error).__name__}: {error}" if error else "closed by the server")
        stop_requested.set()

    nc = await connect(nats_opts, on_closed=on_closed)
    # The host's supervisor: every long-lived task of this host runs under it (the control
    # interface's own supervisor is its child), and none outlives run_host.
    supervisor = Supervisor("host", logger=log)
    log_stream: HostLogStream | None = None
    endpoint: MetricsEndpointResponder | None = None
    slow_stop: asyncio.Task[None] | None = None
    try:
        await supervisor.start()
        if opts.lattice_logs:
            # First, so that the host's start-up lines reach `wasmlattice logs` too.
            log_stream = host_log_stream(nc, opts.lattice, host.host_id, asyncio.get_running_loop())
            await log_stream.start(supervisor)
        if probes is not None:
            probes.nc = nc
            try:
                await probes.start()
            except OSError as e:
                raise HostStartError(f"--health-listen {opts.health_listen}: cannot listen: {e}") from None
        js = jetstream(nc, nats_opts)
        try:
            state = await LatticeState.open(js, opts.lattice)
        except KvError as e:
            raise HostStartError(f"cannot open lattice state for {opts.lattice!r}: {e}") from None
        if probes is not None:
            probes.state = state
        # Metrics (docs/observability.md#metrics): off unless enabled (`--enable-metrics`,
        # `--metrics-listen`, the OTEL_* variables); the OpenTelemetry SDK is imported only then.
        if opts.observability.metrics_wanted:
            from wasmlattice.observability.metrics import MetricsError, start_host_metrics

            try:
                host_metrics = await start_host_metrics(opts.observability, host.host_id, opts.lattice)
            except MetricsError as e:
                raise HostStartError(str(e)) from None
            listen = opts.observability.metrics_listen
            if host_metrics is not None and listen is not None and host_metrics.metrics.port is not None:
                from wasmlattice.observability.metrics import parse_listen

                # Tell the lattice where `/metrics` is, for the dashboard (lattice/metrics_endpoint.py).
                endpoint = MetricsEndpointResponder(
                    nc,
                    opts.lattice,
                    host.host_id,
                    advertised_url(parse_listen(listen)[0], host_metrics.metrics.port),
                )
                await endpoint.start()

        services = HostServices(
            loop=asyncio.get_running_loop(),
            state=state,
            host_id=host.host_id,
            lattice=opts.lattice,
            nc=nc,
            js=js,
            invocation_timeout=opts.invocation_timeout,
            supervisor=supervisor,
            files=opts.host_files(),
            metrics=host_metrics,
        )
        _log_file_policy(services.files)
        policy: PolicyService | None = None
        if policy_settings is not None:
            policy = PolicyService(nc, host, policy_settings)
            await policy.start()
            services.policy = policy
            log.info(
                "policy service on %s (timeout %d ms%s)",
                policy_settings.topic,
                policy_settings.timeout_ms,
                f", changes on {policy_settings.changes_topic}" if policy_settings.changes_topic else "",
            )
        # `lattice://` references: the lattice's own artifact store, on this host's JetStream.
        fetcher.use_lattice_store(LatticeStore(js, opts.lattice, max_size=opts.max_component_size))
        claims_policy = opts.claims_policy()
        if claims_policy.allowed_issuers:
            log.info("components must be signed by: %s", ", ".join(sorted(claims_policy.allowed_issuers)))
        guest_limits = opts.guest_limits()
        components = ComponentRegistry(
            services=services,
            fetcher=fetcher,
            claims_policy=claims_policy,
            guest_limits=guest_limits,
            gate=HostGate(opts.max_concurrent_invocations),
            execution_time=opts.max_execution_time,
            tiered_compile=opts.tiered_compile,
            guest_output=log_stream.stream.guest_tap if log_stream is not None else None,
            record_dir=opts.record_dir,
            record_all=opts.record_all,
        )
        log.info(
            "guest limits: %s per instance, budget %s for all guests, output %s",
            format_size(guest_limits.instance_memory),
            format_size(components.budget.total),
            guest_limits.output.describe(),
        )
        if opts.record_dir is not None:
            log.info(
                "recording the HTTP requests of %s into %s (docs/record-replay.md)",
                "every component" if opts.record_all else f"components annotated {RECORD}=true",
                opts.record_dir,
            )
        await components.start()
        providers = ProviderManager(services)
        services.providers = providers
        services.router = Router(
            components, nc=nc, lattice=opts.lattice, invocation_timeout=opts.invocation_timeout
        )
        host.components, host.providers = components, providers
        if probes is not None:
            probes.providers = providers

        loop = asyncio.get_running_loop()
        deadline: list[float] = [opts.stop_timeout]

        def request_stop(timeout: float | None = None) -> None:
            if timeout is not None:
                deadline[0] = timeout
            stop_requested.set()

        server = ControlInterfaceServer(
            host,
            nc,
            js,
            state,
            topic_prefix=opts.ctl_topic_prefix,
            heartbeat_interval=opts.heartbeat_interval,
            ctl_host=public_url(nc) or ",".join(without_userinfo(u) for u in opts.nats_url.split(",")),
            js_domain=opts.js_domain,
            on_stop=request_stop,
            components=components,
            providers=providers,
            health_interval=opts.health_interval,
            supervisor=supervisor,
            policy=policy,
        )
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Only possible on the main thread of a Unix event loop; elsewhere the caller stops us.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, request_stop)
                installed.append(sig)
        try:
            await server.start()
            await server.publish_started()
            log.info("host %s (%s) joined lattice %s", host.host_id, host.friendly_name, host.lattice)
            if ready is not None:
                ready.set()
            await stop_requested.wait()
            if connection_lost:
                log.error(
                    "host %s lost its NATS connection for good (%s): it is invisible to the lattice; "
                    "stopping its components and exiting with an error so that it can be restarted",
                    host.host_id,
                    connection_lost[0],
                )
            else:
                log.info("host %s stopping", host.host_id)
        finally:
            slow_stop = loop.create_task(
                warn_if_still_stopping(host.host_id, deadline[0] + SLOW_STOP_GRACE_S), name="slow-stop-watch"
            )
            for sig in installed:
                loop.remove_signal_handler(sig)
            try:
                await aio.wait_for(
                    _shutdown(server, providers, components, deadline[0]), max(deadline[0], 0.1)
                )
            except TimeoutError:
                log.warning("graceful shutdown exceeded %.1fs; exiting anyway", deadline[0])
            # Whatever still runs past the drain timeout is interrupted: a stuck guest's thread
            # would otherwise keep the process alive (docs/limits.md#drain).
            components.interrupt_all(f"the host is stopping and the {deadline[0]:g}s drain timeout passed")
            if policy is not None:
                await policy.stop()
    finally:
        if probes is not None:
            await probes.stop()
        if log_stream is not None:
            await log_stream.stop()
        if endpoint is not None:
            await endpoint.stop()
        if host_metrics is not None:
            await host_metrics.release()
        await supervisor.stop(0.0)
        await fetcher.close()
        with contextlib.suppress(Exception):
            await aio.wait_for(nc.drain(), 2.0)
        with contextlib.suppress(Exception):
            await nc.close()
        if slow_stop is not None:
            slow_stop.cancel()
    if connection_lost:
        raise NatsConnectionClosedError(
            f"host {host.host_id} exited: its NATS connection was closed for good ({connection_lost[0]})"
        )
    # Off the loop: an unreachable collector makes the exporter wait (up to 5 s).
    await asyncio.to_thread(observability.flush)
    log.info("host %s stopped", host.host_id)


# A stop still under way this long after its drain timeout logs what it waits for (at most this
# many tasks).
SLOW_STOP_GRACE_S = 5.0
SLOW_STOP_TASKS_SHOWN = 40


async def warn_if_still_stopping(host_id: str, after: float) -> None:
    """After `after` seconds, log at WARNING every task still running and where it waits.

    A stop normally ends well before; if one does not, the log then names what holds it up,
    instead of a process that `wasmlattice down` kills without saying why.
    """
    await asyncio.sleep(after)
    waiting = where_tasks_wait()
    # A host with thousands of requests in flight must not write one unbounded line.
    shown = waiting[:SLOW_STOP_TASKS_SHOWN]
    if len(waiting) > len(shown):
        shown.append(f"and {len(waiting) - len(shown)} more")
    log.warning(
        "host %s is still stopping after %gs; tasks still running: %s",
        host_id,
        after,
        "; ".join(shown) or "none",
    )


async def _shutdown(
    server: ControlInterfaceServer, providers: ProviderManager, components: ComponentRegistry, drain: float
) -> None:
    # Stop taking requests first, then ingress, then the components behind it; the v1 host
    # publishes no per-component or per-provider events on host stop, only host_stopped.
    await server.stop()
    await providers.stop_all()
    await components.stop(drain)
    await server.shutdown()


def _log_file_policy(files: HostFiles) -> None:
    dirs = ", ".join(files.allowed_dirs) or "none"
    if files.allow_file_load:
        log.info("file:// components load from: %s (at most %d bytes)", dirs, files.max_component_size)
        if not files.allowed_dirs:
            log.warning("--allow-file-load without --allow-dir: every file:// reference is refused")
    else:
        log.info("file:// components are refused (no --allow-file-load)")
    log.info("blobstore-fs roots allowed under: %s", dirs)


def _env_on(name: str, *, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


TIERED_COMPILE_ENV = "WASMLATTICE_TIERED_COMPILE"


def tiered_compile_default() -> bool:
    """`--tiered-compile` unless `$WASMLATTICE_TIERED_COMPILE` says false (`0`, `false`, `no`, `off`)."""
    value = os.environ.get(TIERED_COMPILE_ENV)
    return value is None or value.strip().lower() not in ("0", "false", "no", "off")


def env_flag(*names: str) -> bool:
    """Whether the first of the variables `names` that is set says true (`1`, `true`, `yes`, `on`)."""
    for name in names:
        value = os.environ.get(name)
        if value is not None:
            return value.strip().lower() in ("1", "true", "yes", "on")
    return False


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wasmlattice.lattice.run", description="Run one wasmlattice host (for tests)."
    )
    p.add_argument("--nats-url", default=DEFAULT_NATS_URL, help="NATS server URL")
    p.add_argument("--nats-creds", type=Path, default=None, help="NATS credentials file")
    p.add_argument("--js-domain", default=None, help="JetStream domain for the KV buckets")
    env_replicas = os.environ.get("WASMLATTICE_JS_REPLICAS")
    p.add_argument(
        "--js-replicas",
        type=int,
        choices=range(1, 6),
        default=int(env_replicas) if env_replicas else None,
        metavar="N",
        help="replicas of the buckets the host creates (1-5; default: the cluster's size, at most 3)",
    )
    p.add_argument("-x", "--lattice", default=DEFAULT_LATTICE, help="lattice name")
    p.add_argument("-l", "--label", action="append", default=[], metavar="K=V", help="host label")
    p.add_argument("--host-seed", default=None, help="nkeys server seed (SN...) fixing the host ID")
    p.add_argument("--friendly-name", default=None, help="display name of the host")
    p.add_argument(
        "--heartbeat-interval", type=float, default=float(DEFAULT_HEARTBEAT_INTERVAL_S), help="seconds"
    )
    p.add_argument(
        "--health-interval",
        type=float,
        default=DEFAULT_HEALTH_INTERVAL_S,
        help="provider health check seconds",
    )
    p.add_argument(
        "--invocation-timeout",
        type=float,
        default=DEFAULT_INVOCATION_TIMEOUT_S,
        help="seconds a call to a component on another host may take",
    )
    p.add_argument("--ctl-topic-prefix", default=DEFAULT_TOPIC_PREFIX, help="control subject prefix")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULT_HOST_STOP_TIMEOUT_S,
        help="seconds a stopping host lets in-flight calls finish before interrupting them",
    )
    p.add_argument(
        "--max-concurrent-invocations",
        type=int,
        default=DEFAULT_MAX_CONCURRENT_INVOCATIONS,
        help="guest calls running at once on this host, all components together",
    )
    p.add_argument(
        "--max-execution-time",
        type=float,
        default=DEFAULT_EXECUTION_TIME_S,
        help="default deadline in seconds of one invocation",
    )
    p.add_argument(
        "--tiered-compile",
        action=argparse.BooleanOptionalAction,
        default=tiered_compile_default(),
        help="serve a new component's Winch build at once and its Cranelift build once compiled",
    )
    p.add_argument(
        "--allow-file-load",
        action="store_true",
        default=env_flag("WASMLATTICE_ALLOW_FILE_LOAD", "WASMCLOUD_ALLOW_FILE_LOAD"),
        help="load file:// components (only under --allow-dir)",
    )
    env_dirs = os.environ.get("WASMLATTICE_ALLOW_DIRS", "")
    p.add_argument(
        "--allow-dir",
        action="append",
        type=Path,
        default=[Path(d) for d in env_dirs.split(os.pathsep) if d],
        metavar="DIR",
        help="directory file:// components and blobstore-fs roots may be in (repeatable)",
    )
    p.add_argument(
        "--record-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=(
            "record, as JSON in DIR, the HTTP requests served by components annotated "
            "wasmlattice.dev/record=true (docs/record-replay.md)"
        ),
    )
    p.add_argument(
        "--record-all",
        action="store_true",
        help="with --record-dir: record every HTTP component",
    )
    p.add_argument(
        "--max-component-size",
        type=int,
        default=DEFAULT_MAX_COMPONENT_SIZE,
        help="bytes a component may have",
    )
    p.add_argument("--policy-topic", default=os.environ.get("WASMCLOUD_POLICY_TOPIC"), help="policy topic")
    p.add_argument(
        "--policy-changes-topic",
        default=os.environ.get("WASMCLOUD_POLICY_CHANGES_TOPIC"),
        help="policy changes topic",
    )
    p.add_argument(
        "--policy-timeout-ms", type=int, default=DEFAULT_POLICY_TIMEOUT_MS, help="policy request timeout"
    )
    p.add_argument(
        "--allow-latest",
        action="store_true",
        default=env_flag("WASMCLOUD_OCI_ALLOW_LATEST"),
        help="fetch OCI references tagged latest",
    )
    p.add_argument(
        "--allowed-insecure",
        action="append",
        default=[h for h in os.environ.get("WASMCLOUD_OCI_ALLOWED_INSECURE", "").split(",") if h.strip()],
        metavar="HOST[:PORT]",
        help="registry spoken to over plain HTTP (repeatable, or comma-separated)",
    )
    p.add_argument("--oci-registry", default=os.environ.get("WASMCLOUD_OCI_REGISTRY"))
    p.add_argument("--oci-user", default=os.environ.get("WASMCLOUD_OCI_REGISTRY_USER"))
    p.add_argument("--oci-password", default=os.environ.get("WASMCLOUD_OCI_REGISTRY_PASSWORD"))
    p.add_argument(
        "--tls-ca-path",
        action="append",
        type=Path,
        default=[Path(x) for x in os.environ.get("WASMCLOUD_TLS_CA_PATH", "").split()],
        metavar="CA.pem",
        help="CA certificates trusted for registry HTTPS besides the system's (repeatable)",
    )
    p.add_argument(
        "--allowed-issuer",
        action="append",
        default=[k for k in os.environ.get(ClaimsPolicy.ENV, "").split(",") if k.strip()],
        metavar="ACCOUNT_KEY",
        help="run only components signed by this account (A...); repeatable",
    )
    p.add_argument(
        "--max-instance-memory",
        type=_size_arg,
        default=DEFAULT_INSTANCE_MEMORY,
        metavar="SIZE",
        help="linear memory one instance may use (256MiB); a component's max_memory_limit overrides it",
    )
    p.add_argument(
        "--guest-memory-budget",
        type=_size_arg,
        default=None,
        metavar="SIZE",
        help="memory all guests may reserve (default: half the machine's memory, at least 1GiB)",
    )
    p.add_argument(
        "--guest-output-lines",
        type=float,
        default=OutputLimits.lines_per_s,
        metavar="N",
        help="lines per second one component may log (200)",
    )
    p.add_argument(
        "--guest-output-bytes",
        type=_size_arg,
        default=int(OutputLimits.bytes_per_s),
        metavar="SIZE",
        help="bytes per second one component may log (256KiB)",
    )
    p.add_argument(
        "--guest-output-max-line",
        type=_size_arg,
        default=OutputLimits.max_line,
        metavar="SIZE",
        help="longest guest log line; longer ones are cut (16KiB)",
    )
    p.add_argument(
        "--guest-output-report-interval",
        type=float,
        default=OutputLimits.report_interval,
        metavar="SECONDS",
        help="how often dropped guest output is reported (10)",
    )
    p.add_argument(
        "--health-listen",
        default=os.environ.get(HEALTH_LISTEN_ENV),
        metavar="HOST:PORT",
        help="serve the /livez and /readyz probes here",
    )
    p.add_argument("--log-level", default="INFO", help="log level")
    _observability_args(p)
    return p


def _observability_args(p: argparse.ArgumentParser) -> None:
    """wasmCloud's observability flags (`wasmlattice host` has the same; docs/observability.md)."""
    g = p.add_argument_group("observability (the WASMCLOUD_* and OTEL_* variables are read too)")
    for name in ("observability", "traces", "metrics", "logs"):
        g.add_argument(f"--enable-{name}", dest=f"enable_{name}", action="store_true", default=None)
        g.add_argument(f"--disable-{name}", dest=f"enable_{name}", action="store_false", default=None)
    g.add_argument("--override-observability-endpoint", default=None, metavar="URL")
    for signal_name in ("traces", "metrics", "logs"):
        g.add_argument(f"--override-{signal_name}-endpoint", default=None, metavar="URL")
    g.add_argument("--observability-protocol", choices=PROTOCOLS, default=None)
    g.add_argument("--metrics-listen", default=None, metavar="HOST:PORT")


def _observability(args: argparse.Namespace) -> ObservabilitySettings:
    import dataclasses

    try:
        found = ObservabilitySettings.from_env(
            enable_observability=args.enable_observability,
            enable_traces=args.enable_traces,
            enable_metrics=args.enable_metrics,
            enable_logs=args.enable_logs,
            endpoint=args.override_observability_endpoint,
            protocol=args.observability_protocol,
            metrics_listen=args.metrics_listen,
        )
    except ValueError as e:
        raise HostStartError(str(e)) from None
    return dataclasses.replace(
        found,
        traces_endpoint=args.override_traces_endpoint or found.traces_endpoint,
        metrics_endpoint=args.override_metrics_endpoint or found.metrics_endpoint,
        logs_endpoint=args.override_logs_endpoint or found.logs_endpoint,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m wasmlattice.lattice.run`; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        opts = HostOptions(
            nats_url=args.nats_url,
            nats_creds=args.nats_creds,
            js_domain=args.js_domain,
            js_replicas=args.js_replicas,
            lattice=args.lattice,
            labels=parse_label_args(args.label),
            host_seed=args.host_seed,
            friendly_name=args.friendly_name,
            heartbeat_interval=args.heartbeat_interval,
            health_interval=args.health_interval,
            invocation_timeout=args.invocation_timeout,
            ctl_topic_prefix=args.ctl_topic_prefix,
            stop_timeout=args.drain_timeout,
            max_concurrent_invocations=args.max_concurrent_invocations,
            max_execution_time=args.max_execution_time,
            tiered_compile=args.tiered_compile,
            allow_file_load=args.allow_file_load,
            allow_dirs=list(args.allow_dir),
            record_dir=args.record_dir,
            record_all=args.record_all,
            max_component_size=args.max_component_size,
            policy_topic=args.policy_topic,
            policy_changes_topic=args.policy_changes_topic,
            policy_timeout_ms=args.policy_timeout_ms,
            allow_latest=args.allow_latest,
            allowed_insecure=[h for item in args.allowed_insecure for h in item.split(",") if h.strip()],
            oci_registry=args.oci_registry,
            oci_user=args.oci_user,
            oci_password=args.oci_password,
            tls_ca_paths=list(args.tls_ca_path),
            allowed_issuers=list(args.allowed_issuer),
            max_instance_memory=args.max_instance_memory,
            guest_memory_budget=args.guest_memory_budget,
            guest_output_lines=args.guest_output_lines,
            guest_output_bytes=args.guest_output_bytes,
            guest_output_max_line=args.guest_output_max_line,
            guest_output_report_interval=args.guest_output_report_interval,
            health_listen=args.health_listen,
            observability=_observability(args),
        )
        aio.run(run_host(opts))
    except (HostStartError, NatsConnectionError, LabelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
