"""What the control interface's helpers (provider health, workload operations) use of their server.

`ControlInterfaceServer` builds one `ControlContext` and hands it to `ProviderHealth` and
`WorkloadOps`, so that they depend on this small record rather than on the server (and the server's
module does not import itself through them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from wasmlattice.host.host import Host
from wasmlattice.lattice.policy import PolicyService
from wasmlattice.protocol.events import CloudEvent
from wasmlattice.protocol.state import LatticeState
from wasmlattice.supervision import Supervisor


@dataclass(frozen=True)
class ControlContext:
    """The host served, its NATS connection and lattice state, event publishing, and the supervisor.

    `publish` sends a lattice event (failures are logged, not raised); `supervisor` owns the work
    that outlives a request's reply (scale, update, provider start); `policy` asks the policy
    service before starts (None: no `--policy-topic`, everything is permitted).
    """

    host: Host
    nc: Any
    state: LatticeState
    publish: Callable[[CloudEvent], Awaitable[None]]
    supervisor: Supervisor
    policy: PolicyService | None = None

    @property
    def lattice(self) -> str:
        """The lattice the host belongs to."""
        return self.host.lattice

    @property
    def host_id(self) -> str:
        """The host's ID (the `host_id` of the events it publishes)."""
        return self.host.host_id
