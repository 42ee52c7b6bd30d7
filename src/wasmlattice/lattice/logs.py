"""A host's log stream on NATS: guest and host log records for `wasmlattice logs` and the dashboard.

Each record (shape: `observability/logstream.py`) is published on
`wasmlattice.logs.<lattice>.<host_id>.<component_id>` (`_host` for the host's own lines), and
the host keeps its last records in a small ring buffer, answered on `wasmlattice.logs_recent.<lattice>`
(every host answers; the asker collects the replies). See docs/observability.md.

Request body of `logs_recent` (all optional): `{"component_id": "echo", "host_id": "N...",
"limit": 100}`; a host whose ID is not `host_id` does not answer. Reply: `{"host_id": "N...",
"records": [...]}` (oldest first, cut to fit the server's max payload), or `{"host_id": ...,
"error": "..."}` for an invalid request.

The records travel inside the lattice's own NATS account, like every invocation's payload: guest
output can hold whatever a guest printed (secrets included), so whoever may subscribe to the
lattice's subjects may read it. The host logs its guest output to its own stderr as well.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from wasmlattice.observability.logstream import DEFAULT_RING, LatticeLogHandler, LogStream
from wasmlattice.protocol import limits
from wasmlattice.protocol import subjects as sj
from wasmlattice.supervision import Supervisor

log = logging.getLogger(__name__)

# The logger whose records (and its children's) the handler streams.
HOST_LOGGER = "wasmlattice"
MAX_RECENT = 1000
# Room for the reply's envelope around the records.
_REPLY_MARGIN = 1024


class HostLogStream:
    """The log stream of one host: its `LogStream`, the logging handler, the `recent` responder."""

    def __init__(self, nc: Any, lattice: str, host_id: str, stream: LogStream) -> None:
        self.nc, self.lattice, self.host_id, self.stream = nc, lattice, host_id, stream
        self._handler: LatticeLogHandler | None = None
        self._sub: Any = None

    async def start(self, supervisor: Supervisor) -> None:
        """Publish from now on: the drain task under `supervisor`, the handler, the responder."""
        supervisor.supervise("log-stream", self.stream.run)
        self._sub = await self.nc.subscribe(sj.logs_recent_subject(self.lattice), cb=self._on_recent)
        self._handler = self.stream.handler()
        logging.getLogger(HOST_LOGGER).addHandler(self._handler)

    async def stop(self) -> None:
        """Stop streaming host records and answering `recent` (the drain task ends with the supervisor)."""
        if self._handler is not None:
            logging.getLogger(HOST_LOGGER).removeHandler(self._handler)
            self._handler = None
        try:
            await self.stream.flush()  # the host's last lines ("stopping", drain) still go out
        except Exception as e:
            log.debug("log stream: last flush failed: %s", e)
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as e:  # the connection is already gone: nothing left to undo
                log.debug("log stream: unsubscribe failed: %s", e)
            self._sub = None

    async def _on_recent(self, msg: Any) -> None:
        if not msg.reply:
            return
        try:
            component_id, host_id, limit = parse_recent_request(msg.data)
        except ValueError as e:
            await self.nc.publish(msg.reply, json.dumps({"host_id": self.host_id, "error": str(e)}).encode())
            return
        if host_id is not None and host_id != self.host_id:
            return
        room = int(getattr(self.nc, "max_payload", 1024 * 1024) or 1024 * 1024) - _REPLY_MARGIN
        records = self.stream.recent(component_id, limit, max_bytes=room)
        body = json.dumps({"host_id": self.host_id, "records": records}, separators=(",", ":")).encode()
        await self.nc.publish(msg.reply, body)


def parse_recent_request(data: bytes) -> tuple[str | None, str | None, int]:
    """`(component_id, host_id, limit)` of a `logs_recent` request body; ValueError naming the field."""
    if not data.strip():
        return None, None, DEFAULT_RING
    try:
        body = json.loads(data)
    except ValueError as e:
        raise ValueError(f"logs_recent request: not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ValueError("logs_recent request: expected a JSON object")
    ids: list[str | None] = []
    for field in ("component_id", "host_id"):
        value = body.get(field)
        if value is not None:
            if not isinstance(value, str):
                raise ValueError(f"logs_recent request: {field} must be a string")
            try:
                limits.check_id(value)
            except limits.LimitError as e:
                raise ValueError(f"logs_recent request: {field}: {e}") from None
        ids.append(value)
    limit = body.get("limit", DEFAULT_RING)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_RECENT:
        raise ValueError(f"logs_recent request: limit must be an integer from 0 to {MAX_RECENT}")
    return ids[0], ids[1], limit


def host_log_stream(nc: Any, lattice: str, host_id: str, loop: Any) -> HostLogStream:
    """The log stream of host `host_id`, publishing on `nc` (not started)."""
    stream = LogStream(
        host_id,
        loop,
        nc.publish,
        lambda component_id: sj.logs_subject(lattice, host_id, component_id),
    )
    return HostLogStream(nc, lattice, host_id, stream)
