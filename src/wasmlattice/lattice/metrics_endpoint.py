"""Where a host's Prometheus endpoint is, for whoever on the lattice asks (the dashboard).

A host started with `--metrics-listen` answers requests on `wasmlattice.metrics_endpoints.<lattice>`
(every such host answers; the asker collects the replies) with
`{"host_id": "N...", "url": "http://HOST:PORT/metrics"}`. A host without a scrape endpoint does not
subscribe. This is a subject of our own: wasmCloud's wire payloads (ping, inventory, heartbeat)
stay exactly as they are (docs/protocol.md), and a label would be one a user could overwrite.

A wildcard listen address (`0.0.0.0`, `::`) is advertised under this machine's host name, which
is what another machine would use to reach it.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

from wasmlattice.protocol import subjects as sj

log = logging.getLogger(__name__)

_WILDCARDS = ("", "0.0.0.0", "::", "[::]", "*")


def advertised_url(listen_host: str, port: int) -> str:
    """The URL another process uses to scrape an endpoint bound to `listen_host:port`."""
    host = listen_host.strip("[]") if listen_host not in _WILDCARDS else socket.gethostname()
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/metrics"


class MetricsEndpointResponder:
    """Answers `wasmlattice.metrics_endpoints.<lattice>` with this host's scrape URL."""

    def __init__(self, nc: Any, lattice: str, host_id: str, url: str) -> None:
        self.nc, self.lattice, self.host_id, self.url = nc, lattice, host_id, url
        self._sub: Any = None

    async def start(self) -> None:
        """Answer from now on."""
        self._sub = await self.nc.subscribe(sj.metrics_endpoints_subject(self.lattice), cb=self._on_request)

    async def stop(self) -> None:
        """Stop answering (the connection may already be gone)."""
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as e:  # the connection is already closed: nothing left to undo
                log.debug("metrics endpoint: unsubscribe failed: %s", e)
            self._sub = None

    async def _on_request(self, msg: Any) -> None:
        if not msg.reply:
            return
        body = json.dumps({"host_id": self.host_id, "url": self.url}).encode()
        await self.nc.publish(msg.reply, body)
