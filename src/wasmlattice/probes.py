"""Liveness and readiness probes for a long-running process, served on `--health-listen HOST:PORT`.

`/livez` answers 200 from the process's own event loop: a loop that is stuck (a blocking call, a
busy loop) cannot answer, so the probe times out and fails, which is what a process supervisor
needs to restart it. `/readyz` answers 200 only when every readiness check passes; otherwise 503
with a JSON body that names each reason. What "ready" means is the caller's: the host's checks
are in `lattice/probes.py`, the app manager's in `apps/manager.py` (docs/lattice.md#probes,
docs/apps.md#probes).

A leaf module (aiohttp only), so that any layer that runs a process can serve probes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from aiohttp import web

log = logging.getLogger(__name__)

HEALTH_LISTEN_ENV = "WASMLATTICE_HEALTH_LISTEN"

# A readiness check: why the process is not ready (one line per reason), empty when it is.
ReadinessCheck = Callable[[], list[str]]


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


class ProbeServer:
    """The `/livez` and `/readyz` HTTP server of one process; `/readyz` asks every check."""

    def __init__(self, address: tuple[str, int], checks: Iterable[ReadinessCheck] = ()) -> None:
        self.address = address
        self.checks: list[ReadinessCheck] = list(checks)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # the bound port (useful with port 0)

    def add_check(self, check: ReadinessCheck) -> None:
        """Ask `check` too on every `/readyz`."""
        self.checks.append(check)

    def reasons(self) -> list[str]:
        """Why the process is not ready, from every check; empty when it is."""
        out: list[str] = []
        for check in self.checks:
            try:
                out += check()
            except Exception as e:  # a broken check must say so, not answer 500 or "ready"
                log.exception("readiness check failed")
                out.append(f"readiness check failed: {type(e).__name__}: {e}")
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


def nats_reason(nc: object, effect: str) -> list[str]:
    """Why NATS connection `nc` (None: not made yet) is not ready, `effect` saying what that stops."""
    if nc is None:
        return ["nats: not connected yet"]
    if not getattr(nc, "is_connected", False):
        state = "reconnecting" if getattr(nc, "is_reconnecting", False) else "disconnected"
        return [f"nats: {state} ({effect})"]
    return []
