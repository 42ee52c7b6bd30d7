"""The status of a deployed application, in wadm's JSON shape: the app's state and its scalers'.

The reconciler computes it, the API serves it (`model.status`, `model.list`) and publishes it. The
states, their precedence and the input aliases follow wadm (see docs/apps.md and
https://github.com/wasmCloud/wadm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Precedence of scaler states in an app's status: the app shows the first one any scaler is in.
PRECEDENCE = ["failed", "undeployed", "waiting", "reconciling", "unhealthy", "deployed"]
# Input aliases of status types (older wadm names).
_STATUS_ALIASES = {"ready": "deployed", "compensating": "reconciling"}
NO_STATUS_MESSAGE = "Waiting for status: Lattice contains no hosts, deployment not started."


@dataclass
class ScalerStatus:
    """One scaler's entry in an app status."""

    id: str
    kind: str
    name: str
    state: str = "reconciling"
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        """The wadm scaler status shape."""
        status: dict[str, Any] = {"type": self.state}
        if self.message:
            status["message"] = self.message
        return {"id": self.id, "kind": self.kind, "name": self.name, "status": status}


def combine(states: list[str]) -> str:
    """An app's state from its scalers' states, by precedence."""
    if not states:
        return "undeployed"
    return min(states, key=PRECEDENCE.index)


def status_json(
    status_type: str, message: str = "", scalers: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A wadm Status object (with its deprecated `version` and `components` fields)."""
    info: dict[str, Any] = {"type": status_type}
    if message:
        info["message"] = message
    return {"status": info, "scalers": list(scalers or []), "version": "", "components": []}


def status_type(status: dict[str, Any]) -> str:
    """The top-level type of a Status object, aliases resolved (`undeployed` if it has none)."""
    info = status.get("status")
    kind = info.get("type") if isinstance(info, dict) else None
    if not isinstance(kind, str):
        return "undeployed"
    return _STATUS_ALIASES.get(kind, kind)


def status_message(status: dict[str, Any]) -> str:
    """The top-level message of a Status object ("" if none)."""
    info = status.get("status")
    message = info.get("message") if isinstance(info, dict) else None
    return message if isinstance(message, str) else ""
