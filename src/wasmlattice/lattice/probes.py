"""Liveness and readiness probes for a host process, served on `--health-listen HOST:PORT`.

`/livez` answers 200 from the host's own event loop: a loop that is stuck (a blocking call, a
busy loop) cannot answer, so the probe times out and fails, which is what a process supervisor
needs to restart it. `/readyz` answers 200 only when the host can do its job: connected to NATS,
the lattice state (links, config) loaded, and every HTTP listener its http-server providers want
bound; otherwise 503 with a JSON body that names each reason. See docs/lattice.md#probes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from wasmlattice.capabilities.http_server import HttpServerProvider
from wasmlattice.capabilities.manager import ProviderManager
from wasmlattice.protocol.state import LatticeState

log = logging.getLogger(__name__)

HEALTH_LISTEN_ENV = "WASMLATTICE_HEALTH_LISTEN"


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) as (host, port); ValueError naming what is wrong."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:9090)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: the port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: the port {port} is not between 0 and 65535")
    return host, port


class HostProbes:
    """The readiness facts of one host, filled in as it starts, and the HTTP server that reports them.

    `nc`, `state` and `providers` are set by `run_host` once they exist; until then the host is
    not ready (and says why).
    """

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.nc: Any = None
        self.state: LatticeState | None = None
        self.providers: ProviderManager | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # the bound port (useful with port 0)

    def reasons(self) -> list[str]:
        """Why the host is not ready; empty when it is."""
        out: list[str] = []
        nc = self.nc
        if nc is None:
            out.append("nats: not connected yet")
        elif not nc.is_connected:
            state = "reconnecting" if nc.is_reconnecting else "disconnected"
            out.append(f"nats: {state} (the control interface and lattice calls are unavailable)")
        if self.state is None or not self.state.synced:
            out.append("lattice state: links and config not loaded yet")
        if self.providers is not None:
            for pid, provider in self.providers.items():
                if not isinstance(provider, HttpServerProvider):
                    continue
                ok, why = provider.health()
                if not ok:
                    out.append(f"http-server {pid}: {why or 'unhealthy'}")
        return out

    async def start(self) -> None:
        """Bind and serve the probes; OSError if the address cannot be bound."""
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, port = self.address
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses
        self.port = int(bound[0][1]) if bound else port
        log.info("probes on http://%s:%s/livez and /readyz", host, self.port)

    async def stop(self) -> None:
        """Stop serving the probes."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _livez(self, request: web.Request) -> web.Response:
        # Answered by the event loop itself: a stuck loop never gets here.
        return web.json_response({"status": "alive"})

    async def _readyz(self, request: web.Request) -> web.Response:
        reasons = self.reasons()
        if reasons:
            return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready", "reasons": []})


def probes_from(text: str | None, fail: Callable[[str], Exception]) -> HostProbes | None:
    """`HostProbes` for a `--health-listen` value (None without one); `fail(message)` is raised if invalid."""
    if not text:
        return None
    try:
        return HostProbes(parse_listen(text))
    except ValueError as e:
        raise fail(f"--health-listen: {e}") from None
