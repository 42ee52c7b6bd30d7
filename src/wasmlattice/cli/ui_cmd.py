"""`wasmlattice ui`: serve the web dashboard of a lattice (docs/ui.md); `up` starts it too."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated

import typer

from wasmlattice import aio
from wasmlattice.cli.app import app, setup_logging
from wasmlattice.cli.common import (
    DEFAULT_CLI_NATS_URL,
    DataDirOpt,
    LatticeOpt,
    NatsCredsOpt,
    NatsUrlOpt,
    TimeoutOpt,
    cli_nats_options,
    fail,
)
from wasmlattice.cli.host_options import LogLevelOpt

UI_LISTEN_HELP = "Where the dashboard listens, HOST:PORT (loopback only unless --allow-remote)."
UiListenOpt = Annotated[str, typer.Option("--listen", envvar="WASMLATTICE_UI_LISTEN", help=UI_LISTEN_HELP)]
AllowRemoteOpt = Annotated[
    bool,
    typer.Option(
        "--allow-remote",
        help="Allow a non-loopback --listen address: anyone who can reach it and load the page can "
        "change the lattice.",
    ),
]
AllowedHostOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allowed-host",
        metavar="NAME",
        help="Another host name the page may be reached by (besides loopback names and the listen "
        "address); repeatable.",
    ),
]


def ui_cmd(
    listen: UiListenOpt = "127.0.0.1:3030",
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    nats_creds: NatsCredsOpt = None,
    data_dir: DataDirOpt = None,
    timeout: TimeoutOpt = 3.0,
    allow_remote: AllowRemoteOpt = False,
    allowed_host: AllowedHostOpt = None,
    refresh_interval: Annotated[
        float,
        typer.Option(
            "--refresh-interval",
            min=0.5,
            help="Seconds between full re-reads of the lattice (events update the page in between; "
            "a host killed without a word disappears within about this long).",
        ),
    ] = 10.0,
    log_level: LogLevelOpt = "warning",
) -> None:
    """Serve a live web dashboard of the lattice: hosts, components, providers, apps, links, logs."""
    from wasmlattice.protocol.connection import NatsConnectionError
    from wasmlattice.ui.run import run_dashboard
    from wasmlattice.ui.server import ListenError, parse_listen

    try:
        host, port = parse_listen(listen, allow_remote)
    except ListenError as e:
        fail(str(e))
    setup_logging(log_level)
    opts = cli_nats_options(nats_url, timeout, nats_creds, data_dir)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)

        def ready(url: str) -> None:
            typer.echo(f"Dashboard of lattice '{lattice}': {url}")
            typer.echo("Stop with Ctrl-C.")

        await run_dashboard(
            opts,
            lattice,
            host,
            port,
            stop,
            on_ready=ready,
            allowed_hosts=allowed_host or (),
            timeout=timeout,
            refresh_interval=refresh_interval,
        )

    try:
        aio.run(main())
    except NatsConnectionError as e:
        fail(str(e))
    except OSError as e:  # the port is taken, the address is not ours
        fail(f"cannot listen on {listen}: {e.strerror or e}")


app.command("ui")(ui_cmd)
