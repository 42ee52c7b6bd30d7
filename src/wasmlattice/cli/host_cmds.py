"""Running hosts: `wasmlattice host` and `app-manager`; `up` and `down` are in `up_cmds`."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated

import typer

from wasmlattice import aio
from wasmlattice.cli import up_cmds
from wasmlattice.cli.app import app, setup_logging
from wasmlattice.cli.common import (
    DEFAULT_CLI_NATS_URL,
    DataDirOpt,
    LabelOpt,
    LatticeOpt,
    NatsUrlOpt,
    fail,
    option_group,
)
from wasmlattice.cli.host_options import (
    AllowDirOpt,
    AllowedIssuerOpt,
    AllowFileLoadOpt,
    FriendlyNameOpt,
    GuestLimitFlags,
    HealthListenOpt,
    HeartbeatOpt,
    HostSeedOpt,
    LogLevelOpt,
    ManagerHealthListenOpt,
    MaxComponentSizeOpt,
    NatsAuth,
    ObservabilityFlags,
    OciAccess,
    PolicyFlags,
    TieredCompileOpt,
    allowed_dirs,
    allowed_issuers,
    health_listen,
    host_labels,
    host_options,
    with_up_credentials,
)


@option_group
def host_cmd(
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    label: LabelOpt = None,
    lattice: LatticeOpt = "default",
    host_seed: HostSeedOpt = None,
    friendly_name: FriendlyNameOpt = None,
    *,
    auth: NatsAuth,
    oci: OciAccess,
    data_dir: DataDirOpt = None,
    heartbeat_interval: HeartbeatOpt = None,
    invocation_timeout: Annotated[
        float | None,
        typer.Option(
            "--invocation-timeout",
            min=0.1,
            help="Seconds a call to a component on another host may take (10).",
        ),
    ] = None,
    # Deadlines, the host's concurrency cap and drain (docs/limits.md).
    max_execution_time: Annotated[
        float | None,
        typer.Option("--max-execution-time", min=1.0, help="Default deadline of one invocation, s (30)."),
    ] = None,
    max_concurrent_invocations: Annotated[
        int | None,
        typer.Option(
            "--max-concurrent-invocations",
            min=1,
            help="Guest calls running at once on this host, all components together (256).",
        ),
    ] = None,
    drain_timeout: Annotated[
        float | None,
        typer.Option(
            "--drain-timeout",
            min=0.0,
            help="Seconds a stopping host lets in-flight calls finish before interrupting them (10).",
        ),
    ] = None,
    tiered_compile: TieredCompileOpt = None,
    allow_file_load: AllowFileLoadOpt = False,
    allow_dir: AllowDirOpt = None,
    max_component_size: MaxComponentSizeOpt = None,
    policy: PolicyFlags,
    allowed_issuer: AllowedIssuerOpt = None,
    limits: GuestLimitFlags,
    health: HealthListenOpt = None,
    obs: ObservabilityFlags,
    log_level: LogLevelOpt = "info",
    record_dir: Annotated[
        Path | None,
        typer.Option(
            "--record-dir",
            metavar="DIR",
            help=(
                "Record, as JSON in DIR, the HTTP requests served by components annotated "
                "wasmlattice.dev/record=true (docs/record-replay.md)."
            ),
        ),
    ] = None,
    record_all: Annotated[
        bool, typer.Option("--record-all", help="With --record-dir: record every HTTP component.")
    ] = False,
) -> None:
    """Run one lattice host on an existing NATS server until Ctrl-C (file:// needs --allow-file-load)."""
    from wasmlattice.lattice.run import HostStartError, run_host
    from wasmlattice.protocol.connection import NatsConnectionError

    labels = host_labels(label or [])
    nats = with_up_credentials(auth.host_kwargs(), nats_url, data_dir)
    dirs = allowed_dirs(allow_dir)
    policy_kwargs = policy.host_kwargs()
    issuers = allowed_issuers(allowed_issuer)
    limit_kwargs = limits.host_kwargs()
    observability = obs.settings()
    setup_logging(log_level)
    try:
        opts = host_options(
            nats_url=nats_url,
            lattice=lattice,
            labels=labels,
            host_seed=host_seed,
            friendly_name=friendly_name,
            heartbeat_interval=heartbeat_interval,
            invocation_timeout=invocation_timeout,
            max_execution_time=max_execution_time,
            max_concurrent_invocations=max_concurrent_invocations,
            stop_timeout=drain_timeout,
            tiered_compile=tiered_compile,
            allow_file_load=allow_file_load,
            allow_dirs=dirs,
            record_dir=record_dir,
            record_all=record_all,
            max_component_size=max_component_size,
            **policy_kwargs,
            **oci.host_kwargs(),
            allowed_issuers=issuers,
            **limit_kwargs,
            health_listen=health_listen(health),
            observability=observability,
            **nats,
        )
        # run_host handles SIGINT/SIGTERM itself: it leaves the lattice gracefully.
        aio.run(run_host(opts))
    except (NatsConnectionError, HostStartError) as e:
        fail(str(e))


@option_group
def app_manager_cmd(
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    *,
    auth: NatsAuth,
    data_dir: DataDirOpt = None,
    host_timeout: Annotated[
        float,
        typer.Option(
            "--host-timeout", min=1.0, help="Seconds without an answer before a host counts as gone (10)."
        ),
    ] = 10.0,
    obs: ObservabilityFlags,
    health: ManagerHealthListenOpt = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run an app manager alone (the wadm API and reconciler) until Ctrl-C; several may run at once."""
    from wasmlattice.apps.manager import AppManagerStartError, run_app_manager
    from wasmlattice.observability import process as observability
    from wasmlattice.observability.metrics import MetricsError
    from wasmlattice.protocol.connection import NatsConnectionError

    settings = obs.settings()
    health = health_listen(health)
    setup_logging(log_level)
    observability.setup(settings, lattice=lattice, role="app-manager")
    opts = host_options(
        nats_url=nats_url,
        lattice=lattice,
        **with_up_credentials(auth.host_kwargs(), nats_url, data_dir),
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        await run_app_manager(
            opts.nats_options(),
            lattice,
            stop,
            host_timeout=host_timeout,
            observability=settings,
            health_listen=health,
        )

    try:
        aio.run(main())
    except (NatsConnectionError, MetricsError, AppManagerStartError) as e:
        fail(str(e))


# Registered here, in the order `wasmlattice --help` lists them (`up` and `down` live in `up_cmds`).
app.command("host")(host_cmd)
app.command("up")(up_cmds.up)
app.command("down")(up_cmds.down)
app.command("app-manager")(app_manager_cmd)
