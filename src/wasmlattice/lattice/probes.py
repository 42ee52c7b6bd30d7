"""The host's readiness checks, served with `/livez` on `--health-listen HOST:PORT`.

The server is the shared one of `wasmlattice/probes.py`. `/readyz` answers 200 only when the host
can do its job: connected to NATS, the lattice state (links, config) loaded, and every HTTP
listener its http-server providers want bound; otherwise 503 with a JSON body that names each
reason. See docs/lattice.md#probes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from wasmlattice.capabilities.http_server import HttpServerProvider
from wasmlattice.capabilities.manager import ProviderManager
from wasmlattice.probes import HEALTH_LISTEN_ENV, ProbeServer, ReadinessCheck, nats_reason, parse_listen
from wasmlattice.protocol.state import LatticeState

__all__ = ["HEALTH_LISTEN_ENV", "HostProbes", "parse_listen", "probes_from"]


class HostProbes(ProbeServer):
    """The readiness facts of one host, filled in as it starts, and the HTTP server that reports them.

    `nc`, `state` and `providers` are set by `run_host` once they exist; until then the host is
    not ready (and says why). `extra` checks (the app manager inside `wasmlattice up`) are asked
    after the host's own.
    """

    def __init__(self, address: tuple[str, int], extra: Iterable[ReadinessCheck] = ()) -> None:
        super().__init__(address)
        self.nc: Any = None
        self.state: LatticeState | None = None
        self.providers: ProviderManager | None = None
        self.add_check(self.host_reasons)
        for check in extra:
            self.add_check(check)

    def host_reasons(self) -> list[str]:
        """Why the host itself is not ready; empty when it is."""
        out = nats_reason(self.nc, "the control interface and lattice calls are unavailable")
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


def probes_from(
    text: str | None, fail: Callable[[str], Exception], extra: Iterable[ReadinessCheck] = ()
) -> HostProbes | None:
    """`HostProbes` for a `--health-listen` value (None without one); `fail(message)` is raised if invalid."""
    if not text:
        return None
    try:
        return HostProbes(parse_listen(text), extra)
    except ValueError as e:
        raise fail(f"--health-listen: {e}") from None
