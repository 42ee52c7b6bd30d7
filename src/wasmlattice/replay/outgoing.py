"""Record and replay of outgoing HTTP: `wasi:http/outgoing-handler.handle` (docs/record-replay.md).

Recording (`record_outgoing`, bound at link time like every recording wrapper): one `handle`
call is one entry of the invocation's call log, in call order. It holds the request the guest
sent (method, scheme, authority, path with query, headers with credentials redacted, and the
body bytes the guest wrote, tapped from its body pipe) and what came back. The guest is handed a
future of the recorder's own, which resolves once the host has read the whole response body
(within `MAX_EXCHANGE_BODY`), so the file holds exactly what the guest then reads from the same
`IncomingResponse`. A body over the cap is handed on as it streams, unrecorded, and the entry is
marked `unreplayable` with the reason (a truncated body would replay as a different response).

Replay (`ReplayLog.answer_outgoing` in replayer.py, with the helpers here): the guest's request is
compared with the recorded one field by field, its body as it is written (a tap that keeps the
pipe empty, so the guest never waits for a network there is none of), and the guest gets a
future already resolved to an `IncomingResponse` with the recorded status, headers and an
in-memory body stream, or to the recorded `error-code`. Nothing is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from wasmlattice.replay.values import (
    REDACTED,
    REDACTED_HEADERS,
    RecordingError,
    decode,
    decode_bytes,
    encode,
    encode_bytes,
)
from wasmlattice.runtime.execution import NeedsLoop
from wasmlattice.runtime.fastcall import Trap
from wasmlattice.runtime.linking import HostFunc
from wasmlattice.runtime.witypes import Err, FuncSig, Ok, ResultT, WitType
from wasmlattice.wasi.ctx import WasiCtx, ctx
from wasmlattice.wasi.http_outgoing import (
    FutureIncomingResponse,
    IncomingResponse,
    OutgoingRequest,
    RequestOptions,
)
from wasmlattice.wasi.http_types import internal_error, method_from_wit
from wasmlattice.wasi.io import BytePipe, IoError, tap_writes

log = logging.getLogger("wasmlattice.replay")

OUTGOING_HANDLER = "wasi:http/outgoing-handler"
# The most one recorded request or response body holds; a larger one makes its call unreplayable.
MAX_EXCHANGE_BODY = 8 * 1024 * 1024
# The most all recorded bodies of one invocation hold together (a recording file is refused over
# 64 MiB, and base64 grows bodies by a third).
MAX_EXCHANGE_TOTAL = 32 * 1024 * 1024
REQUEST_FIELDS = ("method", "scheme", "authority", "path_with_query", "headers", "body")
OPTION_FIELDS = ("connect_timeout", "first_byte_timeout", "between_bytes_timeout")


def scheme_text(s: Any) -> str | None:
    """The `scheme` option of a request as text: "http", "https", the other scheme, or None."""
    if s is None:
        return None
    name, payload = s
    return "http" if name == "HTTP" else "https" if name == "HTTPS" else str(payload)


def request_json(request: OutgoingRequest) -> dict[str, Any]:
    """A guest's outgoing request as recorded, without its body (credential headers redacted)."""
    return {
        "method": method_from_wit(request.method()),
        "scheme": scheme_text(request.scheme()),
        "authority": request.authority(),
        "path_with_query": request.path_with_query(),
        "headers": [
            [k, REDACTED if k.lower() in REDACTED_HEADERS else v.decode("latin-1")]
            for k, v in request.fields.entries
        ],
    }


def options_json(options: RequestOptions | None) -> dict[str, Any] | None:
    """A request's `request-options` (timeouts in nanoseconds, null when unset) as recorded."""
    if options is None:
        return None
    return {
        "connect_timeout": options.connect,
        "first_byte_timeout": options.first_byte,
        "between_bytes_timeout": options.between_bytes,
    }


def error_type(sig: FuncSig) -> WitType | None:
    """The `error-code` type of `handle`'s result."""
    return sig.result.err if isinstance(sig.result, ResultT) else None


def too_big(what: str, size: int) -> str:
    """The reason an entry is unreplayable because a body is over the cap."""
    return (
        f"the {what} body is over {MAX_EXCHANGE_BODY} bytes, the most a recording holds per body "
        f"({size}+ bytes)"
    )


class BodyTap:
    """The bytes a guest writes into a request body: kept up to `cap`, then only counted."""

    def __init__(self, cap: int = MAX_EXCHANGE_BODY) -> None:
        self.cap = cap
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        """One write (the pipe's tap)."""
        self.size += len(data)
        if self.size <= self.cap:
            self.parts.append(data)
        else:
            self.parts.clear()

    @property
    def over(self) -> bool:
        """Whether more than `cap` bytes were written."""
        return self.size > self.cap

    def data(self) -> bytes:
        """What was written (empty once over the cap)."""
        return b"".join(self.parts)


def tap_request_body(request: OutgoingRequest, forward: bool) -> tuple[BodyTap | None, BytePipe | None]:
    """A tap on the body pipe of `request` (None, None when the guest took no body)."""
    body = request.body_obj
    if body is None:
        return None, None
    tap = BodyTap()
    tap_writes(body.pipe, tap.add, forward)
    return tap, body.pipe


# -- recording ----------------------------------------------------------------------------------


class RecordedExchange:
    """One `handle` call being recorded: its entry, filled in as the response and body arrive.

    `log` is the invocation's `recording.CallLog` (its `handles` number resources, its
    `exchange_bytes` counts the bodies recorded so far). The response part is written on the
    event loop, and `settle` (the request body) runs there too, just before the file is written.
    """

    def __init__(self, log: Any, entry: dict[str, Any], tap: BodyTap | None, err_t: WitType | None) -> None:
        self.log = log
        self.entry = entry
        self.tap = tap
        self.err_t = err_t

    def unreplayable(self, reason: str) -> None:
        """Mark the entry as one replay cannot answer (the first reason stays)."""
        self.entry.setdefault("unreplayable", reason)

    def _count(self, n: int) -> bool:
        if self.log.exchange_bytes + n > MAX_EXCHANGE_TOTAL:
            self.unreplayable(
                f"the invocation's recorded HTTP bodies are over {MAX_EXCHANGE_TOTAL} bytes in all"
            )
            return False
        self.log.exchange_bytes += n
        return True

    def settle(self) -> None:
        """Write the request body the guest wrote into the entry."""
        request = self.entry["args"][0]
        tap = self.tap
        if tap is None:
            request["body"] = encode_bytes(b"")
        elif tap.over:
            request["body"] = None
            self.unreplayable(too_big("request", tap.size))
        else:
            data = tap.data()
            request["body"] = encode_bytes(data) if self._count(len(data)) else None

    async def follow(self, inner: FutureIncomingResponse, outer: FutureIncomingResponse) -> None:
        """Wait for the response, read its body whole (within the cap), record it, resolve `outer`."""
        try:
            await self._follow(inner, outer)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug here must not leave the guest waiting for its deadline
            log.exception("recording an outgoing HTTP response failed")
            self.unreplayable(f"recording the response failed: {type(e).__name__}: {e}")
            outer.resolve(Err(internal_error(f"recording the response failed: {e}")))

    async def _follow(self, inner: FutureIncomingResponse, outer: FutureIncomingResponse) -> None:
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future[Any] = loop.create_future()

        def deliver(result: Any) -> None:
            if not arrived.done():
                arrived.set_result(result)

        def arrive(result: Any) -> None:  # on the event loop, or the guest's thread if already set
            loop.call_soon_threadsafe(deliver, result)

        inner.when_resolved(arrive)
        try:
            result = await arrived
        except asyncio.CancelledError:
            # The guest dropped its future before the response came: stop the request as well.
            if inner.task is not None:
                inner.task.cancel()
            raise
        if isinstance(result, Err):
            self.entry["response"] = {"error": encode(self.err_t, result.value, self.log.handles)}
            outer.resolve(result)
            return
        resp: IncomingResponse = result
        head: dict[str, Any] = {
            "status": resp.status(),
            "headers": [[k, v.decode("latin-1")] for k, v in resp.headers().entries],
        }
        pipe = resp.pipe
        parts: list[bytes] = []
        size = 0
        try:
            while size <= MAX_EXCHANGE_BODY:
                try:
                    chunk = await pipe.aread()
                except OSError:
                    break  # the body failed: `pipe.error` says how
                if chunk is None:
                    break
                parts.append(chunk)
                size += len(chunk)
        except asyncio.CancelledError:
            if inner.task is not None:
                inner.task.cancel()
            raise
        data = b"".join(parts)
        # The guest reads the body from its first byte, from the same pipe (the rest, if any,
        # is still streaming into it from the network).
        pipe.give_back(data)
        self.entry["response"] = head
        if size > MAX_EXCHANGE_BODY:
            self.unreplayable(too_big("response", size))
        elif self._count(size):
            head["body"] = encode_bytes(data)
            error = pipe.error
            head["body_error"] = (
                None
                if error is None
                else {
                    "message": error.message,
                    "code": None if error.code is None else encode(self.err_t, error.code, self.log.handles),
                }
            )
        outer.resolve(resp)


def record_outgoing(full: str, sig: FuncSig, fn: HostFunc) -> HostFunc:
    """`handle` for a component linked for recording (see the module docstring)."""
    err_t = error_type(sig)

    def recorded(request: OutgoingRequest, options: RequestOptions | None) -> Any:
        wctx = ctx()
        calls = wctx.recording
        if calls is None:  # an invocation nobody records
            return fn(request, options)
        entry: dict[str, Any] = {"call": full, "args": [request_json(request), options_json(options)]}
        tap, _ = tap_request_body(request, forward=True)
        exchange = RecordedExchange(calls, entry, tap, err_t)
        try:
            inner = fn(request, options)
        except NeedsLoop:
            raise  # the attempt is abandoned; its log with it
        except Err as e:
            entry["result"] = {"err": encode(err_t, e.value, calls.handles)}
            calls.add_exchange(entry, exchange.settle)
            raise
        except BaseException as e:
            entry["trap"] = str(e) if isinstance(e, Trap) else f"{type(e).__name__}: {e}"
            calls.add_exchange(entry, exchange.settle)
            raise
        outer = FutureIncomingResponse(wctx)
        entry["result"] = encode(sig.result, Ok(outer), calls.handles)
        entry["response"] = None  # until it is known
        calls.add_exchange(entry, exchange.settle)
        loop = wctx.loop
        assert loop is not None, "a recorded invocation runs with an event loop"
        outer.task = asyncio.run_coroutine_threadsafe(exchange.follow(inner, outer), loop)
        return outer

    return recorded


# -- checking a recording -----------------------------------------------------------------------


def check_entry(c: dict[str, Any], where: str) -> None:
    """Check the parts of a `handle` entry that are its own; `RecordingError` naming the field."""
    reason = c.get("unreplayable")
    if reason is not None and not isinstance(reason, str):
        raise RecordingError(f"{where}.unreplayable: expected a string")
    args = c["args"]
    if len(args) != 2:
        raise RecordingError(f"{where}.args: expected [request, options], got {len(args)} items")
    req = args[0]
    if not isinstance(req, dict):
        raise RecordingError(f"{where}.args[0]: expected the request object")
    for key in REQUEST_FIELDS:
        if key not in req:
            raise RecordingError(f"{where}.args[0].{key}: missing")
    if not isinstance(req["method"], str):
        raise RecordingError(f"{where}.args[0].method: expected a string")
    for key in ("scheme", "authority", "path_with_query"):
        if req[key] is not None and not isinstance(req[key], str):
            raise RecordingError(f"{where}.args[0].{key}: expected a string or null")
    check_headers(req["headers"], f"{where}.args[0].headers")
    if req["body"] is not None or reason is None:
        decode_bytes(req["body"], f"{where}.args[0].body")
    opts = args[1]
    if opts is not None:
        if not isinstance(opts, dict) or set(opts) != set(OPTION_FIELDS):
            raise RecordingError(
                f"{where}.args[1]: expected null or an object with {', '.join(OPTION_FIELDS)}"
            )
        for key in OPTION_FIELDS:
            v = opts[key]
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**64):
                raise RecordingError(f"{where}.args[1].{key}: expected nanoseconds (u64) or null")
    if "response" not in c:
        return
    resp = c["response"]
    rw = f"{where}.response"
    if resp is None:
        return
    if not isinstance(resp, dict):
        raise RecordingError(f"{rw}: expected an object or null")
    if "error" in resp:
        if set(resp) != {"error"}:
            raise RecordingError(f"{rw}: an error response has only `error`")
        return  # its type is checked when the call is replayed
    status = resp.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 999:
        raise RecordingError(f"{rw}.status: expected an HTTP status 100-999, got {status!r}"[:200])
    check_headers(resp.get("headers"), f"{rw}.headers")
    if "body" not in resp:
        if reason is None:
            raise RecordingError(f"{rw}.body: missing (only an unreplayable call may leave it out)")
        return
    decode_bytes(resp["body"], f"{rw}.body")
    err = resp.get("body_error")
    if err is not None and (not isinstance(err, dict) or not isinstance(err.get("message"), str)):
        raise RecordingError(f'{rw}.body_error: expected null or {{"message": ..., "code": ...}}')


def check_headers(hs: Any, where: str) -> list[tuple[str, bytes]]:
    """`[[name, value], ...]` with Latin-1 values, as (name, bytes) pairs."""
    if not isinstance(hs, list):
        raise RecordingError(f"{where}: expected an array of [name, value] pairs")
    out = []
    for i, h in enumerate(hs):
        if not (isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)):
            raise RecordingError(f"{where}[{i}]: expected [name, value] strings")
        try:
            out.append((h[0], h[1].encode("latin-1")))
        except UnicodeEncodeError:
            raise RecordingError(f"{where}[{i}]: a header value must be Latin-1 text") from None
    return out


# -- replaying ----------------------------------------------------------------------------------


def request_difference(expected: list[Any], got: list[Any]) -> tuple[str, str, str] | None:
    """The first field (but the body) where the guest's request differs from the recorded one:
    (field, expected, got) as text, or None."""
    exp_req, got_req = expected[0], got[0]
    for key in ("method", "scheme", "authority", "path_with_query"):
        if exp_req.get(key) != got_req[key]:
            return f"request.{key}", _json(exp_req.get(key)), _json(got_req[key])
    eh, gh = exp_req.get("headers"), got_req["headers"]
    if eh != gh:
        for i in range(max(len(eh), len(gh))):
            e = eh[i] if i < len(eh) else None
            g = gh[i] if i < len(gh) else None
            if e != g:
                return f"request.headers[{i}]", _header_text(e), _header_text(g)
    if expected[1] != got[1]:
        return "options", _json(expected[1]), _json(got[1])
    return None


class ReplayedExchange:
    """A replayed `handle` call whose request body is still being written (compared once ended)."""

    def __init__(
        self, index: int, full: str, expected: bytes, tap: BodyTap | None, pipe: BytePipe | None
    ) -> None:
        self.index = index
        self.full = full
        self.expected = expected
        self.tap = tap
        self.pipe = pipe
        self.checked = False

    def check(self, final: bool) -> tuple[str, str, str] | None:
        """Compare the body once the guest ended it (or, `final`, whatever it wrote): the divergence."""
        if self.checked or (not final and self.pipe is not None and not self.pipe.eof):
            return None
        self.checked = True
        tap = self.tap
        got = b"" if tap is None else tap.data()
        where = f"call {self.index} ({self.full}) request.body"
        if tap is not None and tap.over:
            return where, body_text(self.expected), f"over {tap.cap} bytes ({tap.size}+)"
        if got == self.expected:
            return None
        at = next((i for i, (a, b) in enumerate(zip(self.expected, got, strict=False)) if a != b), None)
        at = min(len(self.expected), len(got)) if at is None else at
        return f"{where} (byte {at})", body_text(self.expected), body_text(got)


def replayed_result(sig: FuncSig, entry: dict[str, Any], where: str, wctx: WasiCtx) -> Any:
    """What a replayed `handle` answers: a resolved future, or `Err(error-code)` to raise."""
    value = decode(sig.result, entry["result"], f"{where}.result")
    if isinstance(value, Err):
        return value
    err_t = error_type(sig)
    resp = entry.get("response")
    fut = FutureIncomingResponse(wctx)
    if resp is None:
        # The recorded invocation ended before the response came, so the guest never read it.
        fut.result = Err(internal_error("replay: the recorded invocation ended before this response arrived"))
    elif "error" in resp:
        fut.result = Err(decode(err_t, resp["error"], f"{where}.response.error"))
    else:
        pipe = BytePipe.complete(wctx, decode_bytes(resp["body"], f"{where}.response.body"))
        err = resp.get("body_error")
        if err is not None:
            code = err.get("code")
            pipe.error = IoError(
                err["message"],
                None if code is None else decode(err_t, code, f"{where}.response.body_error.code"),
            )
        headers = check_headers(resp["headers"], f"{where}.response.headers")
        fut.result = IncomingResponse(resp["status"], headers, pipe)
    return Ok(fut)


def body_text(body: bytes) -> str:
    """A body for a divergence report: its length and its first 200 bytes."""
    enc = encode_bytes(body[:200])
    shown = enc.get("text", enc.get("base64", ""))
    return f"{len(body)} bytes: {shown!r}" + ("..." if len(body) > 200 else "")


def _json(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"))


def _header_text(h: list[str] | None) -> str:
    return "(none)" if h is None else f"{h[0]}: {h[1]}"
