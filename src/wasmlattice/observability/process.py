"""The process-wide start of observability, called once by each composition root.

`lattice/run.py` (hosts), the app manager's entry and, optionally, `wasmlattice run` call `setup`
with their settings and what identifies the process (host ID, lattice); it starts whatever the
settings enable and nothing else, so a process with observability off pays nothing.
"""

from __future__ import annotations

from wasmlattice.observability import logcontext, tracing
from wasmlattice.observability.settings import ObservabilitySettings

__all__ = ["flush", "setup", "shutdown"]


def setup(
    settings: ObservabilitySettings,
    *,
    host_id: str | None = None,
    lattice: str | None = None,
    role: str = "host",
) -> None:
    """Start trace export and log export (as `settings` enable them) with this process's resource."""
    attributes = {
        "service.instance.id": host_id or "",
        tracing.HOST_ID: host_id or "",
        tracing.LATTICE: lattice or "",
        "wasmlattice.role": role,
    }
    tracing.setup(settings, attributes)
    logcontext.setup_log_export(settings, attributes)


def flush() -> None:
    """Send the spans batched so far (a host that stops; the process may go on)."""
    tracing.flush()


def shutdown() -> None:
    """Send what is still batched (spans); called when the process stops."""
    tracing.shutdown()
