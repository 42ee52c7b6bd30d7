"""Recording HTTP invocations of a component: the file format, and the link-time recording wrapper.

A component linked with `Recorder.wrap` has each host function whose answer comes from outside
the guest (clocks, random, key-value, messaging, config, secrets, logging, custom interfaces, ...)
bound through a wrapper that appends the call's name, arguments and result to the invocation's
`CallLog`; the plumbing the guest and host share (`wasi:io`, `wasi:http/types`, stdio, files,
sockets) is bound as it is, because replay runs it for real. The wrapper finds the log on the
store's WASI context (`WasiCtx.recording`), which the HTTP ingress sets for each attempt of a
recorded invocation, so an inline attempt given up and made again on a thread starts a new log.
Outgoing HTTP (`wasi:http/outgoing-handler`) is recorded as one entry per exchange, request and
response (replay/outgoing.py). The format is in docs/record-replay.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasmlattice.replay.outgoing import OUTGOING_HANDLER, check_entry, record_outgoing
from wasmlattice.replay.values import (
    REDACTED,
    REDACTED_HEADERS,
    Handles,
    RecordingError,
    decode_bytes,
    encode,
    encode_bytes,
    redact,
)
from wasmlattice.runtime.execution import NeedsLoop
from wasmlattice.runtime.fastcall import GuestTrap, Trap
from wasmlattice.runtime.linking import HostFunc
from wasmlattice.runtime.witypes import Err, FuncSig, ResultT
from wasmlattice.wasi.ctx import ctx

log = logging.getLogger("wasmlattice.replay")

FORMAT = "wasmlattice-recording"
VERSION = 1
# Bounds on what `load` accepts from a file.
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_CALLS = 1_000_000
# Recordings, and bytes of them, one quota allows (a host's, shared by every component it records,
# or one `run`'s): a host left recording under real traffic, or told by the lattice to record many
# components, must not fill its disk. After the last one it logs and records nothing more (restart
# to record again).
MAX_RECORDINGS = 10_000
MAX_RECORDING_BYTES = 1 << 30

# Interfaces (unversioned) run for real in replay, so never recorded: the guest's own plumbing.
LIVE_INTERFACES = frozenset(
    {
        "wasi:io/error",
        "wasi:io/poll",
        "wasi:io/streams",
        "wasi:http/types",
        "wasi:cli/stdin",
        "wasi:cli/stdout",
        "wasi:cli/stderr",
        "wasi:cli/exit",
        "wasi:cli/terminal-input",
        "wasi:cli/terminal-output",
        "wasi:cli/terminal-stdin",
        "wasi:cli/terminal-stdout",
        "wasi:cli/terminal-stderr",
        "wasi:filesystem/types",
        "wasi:filesystem/preopens",
    }
)
# Functions of recorded interfaces that hand out pollables the live `wasi:io/poll` waits on.
LIVE_FUNCTIONS = frozenset({"subscribe-duration", "subscribe-instant"})
# Interfaces whose answers are configuration or secrets: their strings and bytes are redacted.
REDACTED_INTERFACES = frozenset(
    {"wasi:config/runtime", "wasi:config/store", "wasmcloud:secrets/reveal", "wasi:cli/environment"}
)


def split_name(full: str) -> tuple[str, str]:
    """`ns:pkg/iface@ver#func` as (unversioned interface, function)."""
    iface, _, fname = full.partition("#")
    return iface.partition("@")[0], fname


def kind_of(full: str) -> str:
    """How record/replay treats an import function: "live", "recorded" or "http" (an outgoing
    HTTP exchange, replay/outgoing.py)."""
    iface, fname = split_name(full)
    if iface == OUTGOING_HANDLER:
        return "http"
    if iface in LIVE_INTERFACES or iface.startswith("wasi:sockets/") or fname.startswith("[resource-drop]"):
        return "live"
    if fname in LIVE_FUNCTIONS:
        return "live"
    return "recorded"


def encode_call_args(sig: FuncSig, args: tuple[Any, ...], handles: Handles) -> list[Any]:
    """The arguments of a call as JSON."""
    return [encode(t, a, handles) for (_, t), a in zip(sig.params, args, strict=True)]


def encode_result(full: str, sig: FuncSig, result: Any, handles: Handles) -> Any:
    """A call's result as JSON, redacted when its interface answers configuration or secrets."""
    if split_name(full)[0] in REDACTED_INTERFACES:
        result = redact(sig.result, result)
    return encode(sig.result, result, handles)


class CallLog:
    """The host calls of one attempt at an invocation, in order."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.handles = Handles()
        # Outgoing HTTP exchanges: what fills in each one's request body before the log is written,
        # and the body bytes recorded so far (bounded by `outgoing.MAX_EXCHANGE_TOTAL`).
        self.settlers: list[Callable[[], None]] = []
        self.exchange_bytes = 0

    def add_exchange(self, entry: dict[str, Any], settle: Callable[[], None]) -> None:
        """Append an outgoing HTTP exchange's entry, completed later by the exchange itself."""
        self.calls.append(entry)
        self.settlers.append(settle)

    def settle(self) -> None:
        """Complete the exchanges' entries (on the event loop, just before the log is written)."""
        settlers, self.settlers = self.settlers, []
        for settle in settlers:
            settle()

    def add(self, full: str, sig: FuncSig, args: tuple[Any, ...], outcome: Any, trapped: bool) -> None:
        """Append a call that answered `outcome` (or trapped with it)."""
        entry: dict[str, Any] = {"call": full, "args": encode_call_args(sig, args, self.handles)}
        if trapped:
            entry["trap"] = (
                str(outcome) if isinstance(outcome, Trap) else f"{type(outcome).__name__}: {outcome}"
            )
        else:
            entry["result"] = encode_result(full, sig, outcome, self.handles)
        self.calls.append(entry)


def recording_wrap(full: str, sig: FuncSig, fn: HostFunc) -> HostFunc:
    """The function to bind for import `full` in a component linked for recording."""
    kind = kind_of(full)
    if kind == "http":
        return record_outgoing(full, sig, fn)
    if kind != "recorded":
        return fn
    result_is_result = isinstance(sig.result, ResultT)

    def recorded(*args: Any) -> Any:
        calls: CallLog | None = ctx().recording
        if calls is None:  # an invocation nobody records (a message delivery, a wRPC call)
            return fn(*args)
        try:
            result = fn(*args)
        except NeedsLoop:
            raise  # the attempt is abandoned; its log with it
        except Err as e:
            if not result_is_result:
                calls.add(full, sig, args, e, trapped=True)
                raise
            calls.add(full, sig, args, e, trapped=False)
            raise
        except BaseException as e:
            calls.add(full, sig, args, e, trapped=True)
            raise
        calls.add(full, sig, args, result, trapped=False)
        return result

    return recorded


@dataclass
class Outcome:
    """What an invocation answered: the response the client got, and the guest's trap if any."""

    status: int
    headers: list[tuple[str, bytes]]
    body: bytes
    trap: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The `outcome` object of a recording."""
        return {
            "status": self.status,
            "headers": [[k, v.decode("latin-1")] for k, v in self.headers],
            "body": encode_bytes(self.body),
            "trap": self.trap,
        }


def trap_reason(e: BaseException | None) -> str | None:
    """How a guest's failure is written in an outcome (None: it did not fail)."""
    if e is None:
        return None
    if isinstance(e, GuestTrap):
        return e.reason
    return f"{type(e).__name__}: {e}"


@dataclass
class Request:
    """The request of a recorded invocation, as the guest saw it."""

    method: str
    path_with_query: str | None
    scheme: str | None
    authority: str | None
    headers: list[tuple[str, bytes]]
    body: bytes

    def to_json(self) -> dict[str, Any]:
        """The `request` object of a recording (credential headers redacted)."""
        return {
            "method": self.method,
            "path_with_query": self.path_with_query,
            "scheme": self.scheme,
            "authority": self.authority,
            "headers": [
                [k, REDACTED if k.lower() in REDACTED_HEADERS else v.decode("latin-1")]
                for k, v in self.headers
            ],
            "body": encode_bytes(self.body),
        }


@dataclass
class Recording:
    """A recording file's contents, checked."""

    component: dict[str, Any]
    request: Request
    calls: list[dict[str, Any]]
    outcome: Outcome
    recorded_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Session:
    """One recorded invocation: its request, each attempt's call log, and where it is written."""

    def __init__(self, recorder: Recorder, request: Request) -> None:
        self.recorder = recorder
        self.request = request
        self.log = CallLog()
        self.started = time.time()

    def attempt(self) -> CallLog:
        """A fresh log for a new attempt (an abandoned inline attempt's calls are dropped)."""
        self.log = CallLog()
        return self.log

    def finish(self, outcome: Outcome) -> Path | None:
        """Write the recording; its path (None when it could not be written, which is logged)."""
        return self.recorder.write(self, outcome)

    def finish_http(
        self, status: int, headers: list[tuple[str, bytes]], body: bytes, error: BaseException | None
    ) -> Path | None:
        """`finish` with the response the ingress served (what `HttpHandler` calls)."""
        return self.finish(Outcome(status, list(headers), body, trap_reason(error)))


class RecordingQuota:
    """How many recordings, and how many bytes of them, may still be written (thread-safe)."""

    def __init__(self, files: int = MAX_RECORDINGS, size: int = MAX_RECORDING_BYTES) -> None:
        self.files = files
        self.size = size
        self._files = 0
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def used_up(self) -> bool:
        """Whether no more file may be written."""
        return self._files >= self.files

    def take(self, nbytes: int) -> int | None:
        """Count one recording of `nbytes`; its number (from 1), or None when it does not fit."""
        with self._lock:
            if self._files >= self.files or self._bytes + nbytes > self.size:
                return None
            self._files += 1
            self._bytes += nbytes
            return self._files


class Recorder:
    """Writes one file per recorded invocation of one component into a directory, within `quota`
    (shared by the recorders of one host; by default one of `limit` files of its own)."""

    def __init__(
        self,
        directory: Path,
        component_id: str,
        path: str,
        data: bytes | None = None,
        limit: int = MAX_RECORDINGS,
        quota: RecordingQuota | None = None,
    ) -> None:
        self.directory = directory
        self.quota = quota if quota is not None else RecordingQuota(limit)
        self.component_id = component_id
        self.path = path
        self.sha256 = hashlib.sha256(data).hexdigest() if data is not None else None
        self._refused = False  # said once that the quota is used up
        directory.mkdir(parents=True, exist_ok=True)

    wrap = staticmethod(recording_wrap)

    def begin(self, request: Request) -> Session:
        """Start recording an invocation."""
        return Session(self, request)

    def begin_http(self, parts: Any, body: bytes) -> Session:
        """Start recording an HTTP invocation (`parts`: the ingress's `RequestParts`)."""
        return self.begin(
            Request(
                parts.method, parts.path_with_query, parts.scheme, parts.authority, list(parts.headers), body
            )
        )

    def write(self, session: Session, outcome: Outcome) -> Path | None:
        """Write `session` with its `outcome` as one JSON file; its path (None: not written)."""
        if self.quota.used_up:
            return None
        session.log.settle()
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "recorded_at": session.started,
            "component": {"id": self.component_id, "path": self.path, "sha256": self.sha256},
            "request": session.request.to_json(),
            "calls": session.log.calls,
            "outcome": outcome.to_json(),
        }
        data = (json.dumps(doc, indent=1) + "\n").encode()
        seq = self.quota.take(len(data))
        if seq is None:
            if not self._refused and not self.quota.used_up:
                self._refused = True
                log.warning(
                    "%s: not recorded: the recordings would pass %d bytes; later ones are not recorded",
                    self.component_id,
                    self.quota.size,
                )
            return None
        if seq == self.quota.files:
            log.warning(
                "%s: recording %d of at most %d; later invocations are not recorded",
                self.component_id,
                seq,
                self.quota.files,
            )
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.component_id)[:64]
        path = self.directory / f"{safe}-{int(session.started * 1000)}-{os.getpid()}-{seq:06d}.json"
        try:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError as e:
            log.warning("%s: cannot write the recording %s: %s", self.component_id, path, e)
            return None
        log.info(
            "%s: recorded %s %s -> %s",
            self.component_id,
            session.request.method,
            session.request.path_with_query,
            path,
        )
        return path


# -- reading ------------------------------------------------------------------------------------


def load(path: Path) -> Recording:
    """Read and check a recording file; `RecordingError` naming the field that is wrong."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise RecordingError(f"{path}: {e.strerror or e}") from None
    if size > MAX_FILE_BYTES:
        raise RecordingError(f"{path}: {size} bytes is over the limit of {MAX_FILE_BYTES} for a recording")
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise RecordingError(f"{path}: not a JSON recording: {e}") from None
    try:
        return parse(doc)
    except RecordingError as e:
        raise RecordingError(f"{path}: {e}") from None


def parse(doc: Any) -> Recording:
    """A `Recording` from a decoded JSON document; `RecordingError` naming the field that is wrong."""
    if not isinstance(doc, dict):
        raise RecordingError("expected a JSON object at the top")
    if doc.get("format") != FORMAT:
        raise RecordingError(f"format: expected {FORMAT!r}, got {doc.get('format')!r}")
    version = doc.get("version")
    if version != VERSION:
        raise RecordingError(f"version: this wasmlattice reads version {VERSION}, got {version!r}")
    comp = _obj(doc, "component")
    for key in ("id", "path"):
        _str(comp, key, "component")
    sha = comp.get("sha256")
    if sha is not None and not isinstance(sha, str):
        raise RecordingError("component.sha256: expected a string or null")
    req = _obj(doc, "request")
    request = Request(
        method=_str(req, "method", "request"),
        path_with_query=_opt_str(req, "path_with_query", "request"),
        scheme=_opt_str(req, "scheme", "request"),
        authority=_opt_str(req, "authority", "request"),
        headers=_headers(req, "request"),
        body=decode_bytes(req.get("body"), "request.body"),
    )
    calls = doc.get("calls")
    if not isinstance(calls, list):
        raise RecordingError("calls: expected an array")
    if len(calls) > MAX_CALLS:
        raise RecordingError(f"calls: {len(calls)} calls is over the limit of {MAX_CALLS}")
    for i, c in enumerate(calls):
        where = f"calls[{i}]"
        if not isinstance(c, dict):
            raise RecordingError(f"{where}: expected an object")
        name = c.get("call")
        if not isinstance(name, str) or "#" not in name:
            raise RecordingError(f"{where}.call: expected an import function name `ns:pkg/iface#func`")
        if not isinstance(c.get("args"), list):
            raise RecordingError(f"{where}.args: expected an array")
        if ("result" in c) == ("trap" in c):
            raise RecordingError(f"{where}: expected exactly one of `result` and `trap`")
        if "trap" in c and not isinstance(c["trap"], str):
            raise RecordingError(f"{where}.trap: expected a string")
        if kind_of(name) == "http":
            check_entry(c, where)
    out = _obj(doc, "outcome")
    status = out.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 999:
        raise RecordingError(f"outcome.status: expected an HTTP status 100-999, got {status!r}")
    trap = out.get("trap")
    if trap is not None and not isinstance(trap, str):
        raise RecordingError("outcome.trap: expected a string or null")
    outcome = Outcome(status, _headers(out, "outcome"), decode_bytes(out.get("body"), "outcome.body"), trap)
    recorded_at = doc.get("recorded_at", 0.0)
    if not isinstance(recorded_at, (int, float)) or isinstance(recorded_at, bool):
        raise RecordingError("recorded_at: expected a number")
    return Recording(comp, request, calls, outcome, float(recorded_at))


def _obj(doc: dict[str, Any], key: str) -> dict[str, Any]:
    v = doc.get(key)
    if not isinstance(v, dict):
        raise RecordingError(f"{key}: expected an object")
    return v


def _str(doc: dict[str, Any], key: str, where: str) -> str:
    v = doc.get(key)
    if not isinstance(v, str):
        raise RecordingError(f"{where}.{key}: expected a string, got {v!r}"[:200])
    return v


def _opt_str(doc: dict[str, Any], key: str, where: str) -> str | None:
    v = doc.get(key)
    if v is not None and not isinstance(v, str):
        raise RecordingError(f"{where}.{key}: expected a string or null")
    return v


def _headers(doc: dict[str, Any], where: str) -> list[tuple[str, bytes]]:
    hs = doc.get("headers")
    if not isinstance(hs, list):
        raise RecordingError(f"{where}.headers: expected an array of [name, value] pairs")
    out = []
    for i, h in enumerate(hs):
        if not (isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)):
            raise RecordingError(f"{where}.headers[{i}]: expected [name, value] strings")
        try:
            out.append((h[0], h[1].encode("latin-1")))
        except UnicodeEncodeError:
            raise RecordingError(f"{where}.headers[{i}]: a header value must be Latin-1 text") from None
    return out
