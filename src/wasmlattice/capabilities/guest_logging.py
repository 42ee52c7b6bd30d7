"""`wasi:logging/logging`: a guest's log lines go into the host's log (docs/protocol.md#interfaces).

wasmCloud links `wasi:logging/logging@0.1.0-draft` and the unversioned name to the host's own
logger; so do we. Each line goes to the `wasmlattice.guest` logger with the component ID and the
guest's context, at the guest's level (within the component's output allowance,
`wasi/output_limit.py`): `trace` is below `debug` (shown only with a `TRACE`-or-lower
log level), `critical` is `CRITICAL`. Lines below the logger's level cost one level check.

Outside a lattice host (`wasmlattice run`) there is no `ComponentContext`; the component ID then
comes from the store's WASI config. The module is not called `logging` so that it cannot shadow the
standard library module inside this package.
"""

from __future__ import annotations

import logging

from wasmlattice.runtime.linking import HostInterface
from wasmlattice.runtime.witypes import STRING, FuncSig, enum, func
from wasmlattice.wasi.ctx import ctx
from wasmlattice.wasi.output_limit import OutputLimiter

log = logging.getLogger("wasmlattice.guest")

# Python has no TRACE level; this one sits below DEBUG, as tracing's TRACE does below DEBUG.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS: dict[str, int] = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

LEVEL = enum(*LEVELS)
SIGNATURES: dict[str, FuncSig] = {"log": func(LEVEL, STRING, STRING)}


def calling_component_id() -> str:
    """The ID of the component whose guest is calling (`?` when called outside any guest)."""
    try:
        config = ctx().config
    except AttributeError:
        return "?"
    comp = config.component
    # On a lattice host the context carries the component ID the lattice knows it by.
    component_id = getattr(comp, "component_id", None) if comp is not None else None
    return component_id if isinstance(component_id, str) else config.component_id


def _limiter() -> OutputLimiter | None:
    try:
        limiter: OutputLimiter | None = ctx().config.output
    except AttributeError:  # called outside any guest
        return None
    return limiter


def guest_log(level: str, context: str, message: str) -> None:
    """`log`: write one guest line to the host's log, with the component ID and context."""
    lvl = LEVELS.get(level, logging.INFO)
    if not log.isEnabledFor(lvl):
        return
    component_id = calling_component_id()
    # The same allowance as the component's stdout and stderr (wasi/output_limit.py).
    limiter = _limiter()
    if limiter is not None:
        cap = limiter.limits.max_line
        if len(message) > cap:
            message = message[:cap] + f" [... {len(message) - cap:,} more characters of this line cut]"
        if not limiter.admit("wasi:logging", len(context) + len(message)):
            return
        if limiter.tap is not None:  # the lattice's log stream (docs/observability.md)
            limiter.tap("log", level, f"{context}: {message}" if context else message)
    extra = {"component_id": component_id, "guest_context": context, "guest_level": level}
    if context:
        log.log(lvl, "component %s [%s] %s: %s", component_id, level, context, message, extra=extra)
    else:
        log.log(lvl, "component %s [%s]: %s", component_id, level, message, extra=extra)


def interfaces() -> list[HostInterface]:
    """`wasi:logging/logging` at `0.1.0-draft` and unversioned (same shape)."""
    return [
        HostInterface(
            "wasi:logging/logging",
            {"log": guest_log},
            versions=("0.1.0-draft", ""),
            signatures=SIGNATURES,
        )
    ]
