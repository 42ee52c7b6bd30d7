"""Running the dashboard: connect to NATS, follow the lattice, serve the page until told to stop.

`wasmlattice ui` runs it alone; `wasmlattice up` runs it beside its host (docs/ui.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Iterable

from wasmlattice.protocol.connection import NatsOptions, connect, jetstream
from wasmlattice.ui.metrics import PrometheusMetrics
from wasmlattice.ui.server import DashboardServer
from wasmlattice.ui.view import DEFAULT_REFRESH_INTERVAL_S, LatticeView

DEFAULT_UI_LISTEN = "127.0.0.1:3030"


class Dashboard:
    """A running dashboard: its NATS connection, lattice view and HTTP server."""

    def __init__(self, nc: object, view: LatticeView, server: DashboardServer) -> None:
        self.nc, self.view, self.server = nc, view, server

    @property
    def url(self) -> str:
        """Where the page is."""
        return self.server.url

    async def stop(self) -> None:
        """Stop serving, stop following the lattice, close the connection."""
        await self.server.stop()
        await self.view.stop()
        source = self.view.metrics_source
        if isinstance(source, PrometheusMetrics):
            await source.close()
        with contextlib.suppress(Exception):
            await self.nc.close()  # type: ignore[attr-defined]


async def start_dashboard(
    nats: NatsOptions,
    lattice: str,
    host: str,
    port: int,
    *,
    allowed_hosts: Iterable[str] = (),
    timeout: float = 3.0,
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL_S,
) -> Dashboard:
    """Connect with `nats` (the CLI's credentials), read the lattice once and start serving."""
    opts = dataclasses.replace(nats, name="wasmlattice-ui")
    nc = await connect(opts)
    try:
        # Request metrics from the hosts' `/metrics` endpoints (docs/ui.md#metrics).
        view = LatticeView(
            nc,
            lattice,
            js=jetstream(nc, opts),
            timeout=timeout,
            refresh_interval=refresh_interval,
            metrics=PrometheusMetrics(nc, lattice),
        )
        await view.start()
        server = DashboardServer(view, host, port, allowed_hosts=allowed_hosts)
        try:
            await server.start()
        except BaseException:
            await view.stop()
            raise
    except BaseException:
        with contextlib.suppress(Exception):
            await nc.close()
        raise
    return Dashboard(nc, view, server)


async def run_dashboard(
    nats: NatsOptions,
    lattice: str,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[str], None] | None = None,
    allowed_hosts: Iterable[str] = (),
    timeout: float = 3.0,
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL_S,
) -> None:
    """`start_dashboard`, tell `on_ready` the URL, and serve until `stop` is set."""
    dash = await start_dashboard(
        nats,
        lattice,
        host,
        port,
        allowed_hosts=allowed_hosts,
        timeout=timeout,
        refresh_interval=refresh_interval,
    )
    try:
        if on_ready is not None:
            on_ready(dash.url)
        await stop.wait()
    finally:
        await dash.stop()
