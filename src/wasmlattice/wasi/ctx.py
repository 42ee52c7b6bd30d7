"""The per-store WASI context: configuration a guest sees, and the lock every wait uses."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasmlattice.runtime.execution import DeadlineExceeded, NeedsLoop
from wasmlattice.runtime.fastcall import current_state
from wasmlattice.wasi.output_limit import OutputLimiter


@dataclass
class WasiConfig:
    """What a component's WASI view is built from (shared by all its instances)."""

    component_id: str = "component"
    env: list[tuple[str, str]] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    # Read-only directory grants: guest path -> host directory.
    read_only_dirs: dict[str, Path] = field(default_factory=dict)
    # Outgoing HTTP destinations allowed: "host", "host:port" or "*".
    allowed_outgoing: tuple[str, ...] = ()
    outgoing_timeout: float = 30.0
    # The running component's `capabilities.base.ComponentContext` on a lattice host (links,
    # config, secrets); None under `wasmlattice run`.
    component: Any = None
    # The component's allowance of output into the host log (stdio and wasi:logging), shared by
    # its instances; the defaults of `OutputLimits` when not given.
    output: OutputLimiter | None = None

    def __post_init__(self) -> None:
        if self.output is None:
            self.output = OutputLimiter(self.component_id)


# The guests' logger, looked up once: a context is made per request.
_GUEST_LOG = logging.getLogger("wasmlattice.guest")


class WasiCtx:
    """Per-store state of the WASI implementations.

    Every blocking wait of a guest happens on its wasm thread under `cond`; whatever makes a
    pollable ready (data from the event loop, a drained buffer, a response) notifies it.
    """

    def __init__(
        self,
        config: WasiConfig,
        loop: asyncio.AbstractEventLoop | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.loop = loop
        self.cond = threading.Condition(threading.Lock())
        self.deadline: float | None = None
        self.log = log or _GUEST_LOG
        self.outgoing: Callable[..., Any] | None = None
        self.cleanups: list[Callable[[], None]] = []
        self.sinks: dict[str, Any] = {}
        # Set while the guest runs on the event loop's own thread: any wait would deadlock, so
        # it aborts the attempt instead (nothing has left the process yet) and the call is
        # retried on a worker thread.
        self.inline = False
        # Link name per imported interface (`ns:pkg/iface`) chosen by this instance through
        # `wasmcloud:bus/lattice.set-link-name`; interfaces not listed use "default".
        self.link_names: dict[str, str] = {}
        # Set when the guest's output said an allocation failed: a trap after it is reported as
        # running out of memory (docs/limits.md).
        self.out_of_memory = False
        # The invocation's record or replay log when the component was linked for it
        # (docs/record-replay.md); None otherwise, and never looked at then.
        self.recording: Any = None

    def check_deadline(self) -> None:
        """Trap if the deadline has passed."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineExceeded("request deadline exceeded while the guest was waiting")

    def wait(self, timeout: float | None) -> None:
        """Wait on `cond` (held by the caller) for at most `timeout`, bounded by the deadline."""
        if self.inline:
            raise NeedsLoop("the guest has to wait")
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded("request deadline exceeded while the guest was waiting")
            timeout = left if timeout is None else min(timeout, left)
        self.cond.wait(timeout)
        self.check_deadline()


def ctx() -> WasiCtx:
    """The WASI context of the store whose guest is calling."""
    c: WasiCtx = current_state().wasi
    return c
