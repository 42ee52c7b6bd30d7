"""Replaying a recorded invocation against a component, locally, and finding where it diverges.

The component is linked with `replay_wrap`: every recorded kind of import answers from the
recording in order (no lattice, no network, no backend is reached; an outgoing HTTP request gets
its recorded response, replay/outgoing.py), and the guest's plumbing (`wasi:io`,
`wasi:http/types`, stdio) runs for real.
The first call whose name or arguments differ from the recording ends the run (the guest traps)
and is the reported divergence; otherwise the response is compared field by field.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from wasmlattice.capabilities.catalog import host_registry
from wasmlattice.capabilities.http_ingress import (
    INCOMING_HANDLER,
    HttpGuestCall,
    HttpTarget,
    RequestParts,
    serve_locally,
)
from wasmlattice.replay.outgoing import (
    ReplayedExchange,
    body_text,
    options_json,
    replayed_result,
    request_difference,
    request_json,
    tap_request_body,
)
from wasmlattice.replay.recording import (
    REDACTED_INTERFACES,
    Outcome,
    Recording,
    encode_call_args,
    kind_of,
    split_name,
    trap_reason,
)
from wasmlattice.replay.values import REDACTED, Handles, RecordingError, decode, decode_bytes, encode
from wasmlattice.runtime.component import CompileCache, ComponentError, default_cache_dir, read_component_file
from wasmlattice.runtime.engine import HostEngine
from wasmlattice.runtime.fastcall import Trap
from wasmlattice.runtime.linking import HostFunc, link
from wasmlattice.runtime.pool import InstancePool
from wasmlattice.runtime.witypes import (
    Err,
    FuncSig,
    ListT,
    Ok,
    OptionT,
    Prim,
    ResultT,
    TupleT,
    VariantT,
    WitType,
)
from wasmlattice.wasi.ctx import WasiConfig, ctx


@dataclass
class Divergence:
    """Where a replay first differs from its recording."""

    where: str  # "call 3 (wasi:keyvalue/store@0.2.0-draft#open)" or "outcome.status"
    expected: str
    got: str

    def text(self) -> str:
        """A few lines for the terminal."""
        return f"diverged at {self.where}\n  expected: {self.expected}\n  got:      {self.got}"


@dataclass
class Report:
    """The result of a replay: the first divergence (None: identical) and what the run answered."""

    divergence: Divergence | None
    outcome: Outcome
    calls: int
    notes: list[str] = field(default_factory=list)


class ReplayLog:
    """Answers one attempt's host calls from the recording, in order, noting the first divergence."""

    def __init__(self, recording: Recording, overrides: dict[str, str]) -> None:
        self.calls = recording.calls
        self.overrides = overrides
        self.pos = 0
        self.handles = Handles()
        self.divergence: Divergence | None = None
        # Outgoing HTTP requests whose bodies the guest may still be writing.
        self.exchanges: list[ReplayedExchange] = []

    def check_bodies(self, final: bool) -> None:
        """Compare the outgoing request bodies the guest has ended (`final`: all of them)."""
        for ex in self.exchanges:
            d = ex.check(final)
            if d is not None and self.divergence is None:
                self.divergence = Divergence(*d)

    def _stop_if_diverged(self) -> None:
        if self.exchanges:
            self.check_bodies(False)
        if self.divergence is not None:
            raise Trap(f"replay stopped: {self.divergence.where} diverged")

    def answer(self, full: str, sig: FuncSig, args: tuple[Any, ...]) -> Any:
        """The recorded answer to this call; traps the guest if it is not the call recorded next."""
        self._stop_if_diverged()
        got = encode_call_args(sig, args, self.handles)
        shown = _call_text(full, got)
        i = self.pos
        if i >= len(self.calls):
            return self._diverge(f"call {i}", "no more host calls (the recorded invocation ended)", shown)
        exp = self.calls[i]
        if exp["call"] != full or exp["args"] != got:
            return self._diverge(f"call {i}", _call_text(exp["call"], exp["args"]), shown)
        self.pos += 1
        if "trap" in exp:
            raise Trap(exp["trap"])
        try:
            value = decode(sig.result, exp["result"], f"calls[{i}].result")
        except RecordingError as e:
            self.divergence = Divergence(f"call {i} ({full})", "a valid recorded result", str(e))
            raise Trap(f"replay: {e}") from None
        iface = split_name(full)[0]
        if iface in REDACTED_INTERFACES and self.overrides:
            key = args[0] if args and isinstance(args[0], str) else None
            value = _unredact(sig.result, value, self.overrides, key)
        encode(sig.result, value, self.handles)  # number returned handles as the recording did
        if isinstance(value, Err):
            raise value
        return value.value if isinstance(value, Ok) else value

    def answer_outgoing(self, full: str, sig: FuncSig, request: Any, options: Any) -> Any:
        """`outgoing-handler.handle` answered from the recorded exchange (replay/outgoing.py)."""
        self._stop_if_diverged()
        got = [request_json(request), options_json(options)]
        i = self.pos
        if i >= len(self.calls):
            return self._diverge(
                f"call {i}", "no more host calls (the recorded invocation ended)", _call_text(full, got)
            )
        exp = self.calls[i]
        if exp["call"] != full:
            return self._diverge(f"call {i}", _call_text(exp["call"], exp["args"]), _call_text(full, got))
        diff = request_difference(exp["args"], got)
        if diff is not None:
            return self._diverge(f"call {i} ({full}) {diff[0]}", diff[1], diff[2])
        self.pos += 1
        tap, pipe = tap_request_body(request, forward=False)
        expected_body = decode_bytes(exp["args"][0]["body"], f"calls[{i}].args[0].body")
        self.exchanges.append(ReplayedExchange(i, full, expected_body, tap, pipe))
        if "trap" in exp:
            raise Trap(exp["trap"])
        try:
            value = replayed_result(sig, exp, f"calls[{i}]", ctx())
        except RecordingError as e:
            self.divergence = Divergence(f"call {i} ({full})", "a valid recorded result", str(e))
            raise Trap(f"replay: {e}") from None
        encode(sig.result, value, self.handles)  # number the future as the recording did
        if isinstance(value, Err):
            raise value
        return value.value

    def _diverge(self, where: str, expected: str, got: str) -> Any:
        self.divergence = Divergence(where, expected, got)
        raise Trap(f"replay diverged at {where}")


class ReplaySession:
    """The replay of one invocation: a fresh `ReplayLog` per attempt (what `HttpGuestCall` asks)."""

    def __init__(self, recording: Recording, overrides: dict[str, str]) -> None:
        self.recording = recording
        self.overrides = overrides
        self.log = ReplayLog(recording, overrides)

    def attempt(self) -> ReplayLog:
        """A fresh log for a new attempt."""
        self.log = ReplayLog(self.recording, self.overrides)
        return self.log


def replay_wrap(full: str, sig: FuncSig, fn: HostFunc) -> HostFunc:
    """The function to bind for import `full` in a component linked for replay."""
    kind = kind_of(full)
    if kind == "live":
        return fn
    if kind == "http":

        def answer_http(request: Any, options: Any) -> Any:
            calls: ReplayLog | None = ctx().recording
            if calls is None:
                raise Trap(f"{full} called outside a replayed invocation")
            return calls.answer_outgoing(full, sig, request, options)

        return answer_http

    def answer(*args: Any) -> Any:
        calls: ReplayLog | None = ctx().recording
        if calls is None:
            raise Trap(f"{full} called outside a replayed invocation")
        return calls.answer(full, sig, args)

    return answer


def replay(
    recording: Recording,
    wasm: str | None = None,
    overrides: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Report:
    """Replay `recording` against its component (or `wasm`); the report of where it diverged.

    `ComponentError` if the component cannot be loaded. Blocking; runs its own event loop.
    """
    return asyncio.run(_replay(recording, wasm, overrides or {}, timeout))


async def _replay(
    recording: Recording, wasm: str | None, overrides: dict[str, str], timeout: float
) -> Report:
    for i, c in enumerate(recording.calls):
        if "unreplayable" in c:
            raise RecordingError(f"calls[{i}] ({c['call']}) cannot be replayed: {c['unreplayable']}")
    path = wasm or recording.component["path"]
    notes: list[str] = []
    data = read_component_file(path)
    sha = recording.component.get("sha256")
    if wasm is None and sha is not None and hashlib.sha256(data).hexdigest() != sha:
        notes.append(f"{path} changed since the recording was made (sha256 differs)")
    engine = HostEngine()
    try:
        comp = CompileCache(default_cache_dir()).load(data, engine, path)
        linked = link(engine, comp, host_registry(), origin=path, wrap=replay_wrap)
        if not any(n.split("@")[0] == INCOMING_HANDLER for n in linked.exports):
            raise ComponentError(f"{path} does not export {INCOMING_HANDLER}")
        pool = InstancePool(engine, linked, INCOMING_HANDLER, "handle")
        config = WasiConfig(component_id=recording.component["id"])
        target = HttpTarget(recording.component["id"], pool, config, timeout=timeout, threads=1)
        req = recording.request
        parts = RequestParts(req.method, req.path_with_query, req.scheme, req.authority, req.headers)
        call = HttpGuestCall(target, parts, req.body, None)
        session = ReplaySession(recording, overrides)
        call.session = session
        try:
            tap, error = await serve_locally(target, call)
        finally:
            target.executor.shutdown(wait=True)
    finally:
        engine.close()
    assert tap.status is not None
    outcome = Outcome(tap.status, tap.headers, b"".join(tap.chunks), trap_reason(error))
    log = session.log
    log.check_bodies(True)
    divergence = log.divergence
    if divergence is None and log.pos < len(log.calls):
        exp = log.calls[log.pos]
        divergence = Divergence(
            f"call {log.pos}",
            _call_text(exp["call"], exp["args"]),
            "no more host calls (the invocation ended)",
        )
    if divergence is None:
        divergence = compare_outcomes(recording.outcome, outcome)
    return Report(divergence, outcome, log.pos, notes)


def compare_outcomes(expected: Outcome, got: Outcome) -> Divergence | None:
    """The first field of the response that differs (status, headers, body, trap), or None."""
    if expected.status != got.status:
        return Divergence("outcome.status", str(expected.status), str(got.status))
    exp_h, got_h = expected.to_json()["headers"], got.to_json()["headers"]
    if exp_h != got_h:
        for i in range(max(len(exp_h), len(got_h))):
            e = exp_h[i] if i < len(exp_h) else None
            g = got_h[i] if i < len(got_h) else None
            if e != g:
                return Divergence(f"outcome.headers[{i}]", _header_text(e), _header_text(g))
    if expected.body != got.body:
        at = next((i for i, (a, b) in enumerate(zip(expected.body, got.body, strict=False)) if a != b), None)
        at = min(len(expected.body), len(got.body)) if at is None else at
        return Divergence(f"outcome.body (byte {at})", body_text(expected.body), body_text(got.body))
    if expected.trap != got.trap:
        return Divergence("outcome.trap", str(expected.trap), str(got.trap))
    return None


def _unredact(t: WitType | None, v: Any, overrides: dict[str, str], key: str | None) -> Any:
    """`v` with redacted values of the keys in `overrides` replaced by the given values."""
    if v is None or t is None:
        return v
    if isinstance(t, Prim):
        return overrides[key] if v == REDACTED and key is not None and key in overrides else v
    if isinstance(t, ResultT):
        if isinstance(v, Err):
            return v
        return Ok(_unredact(t.ok, v.value if isinstance(v, Ok) else v, overrides, key))
    if isinstance(t, OptionT):
        return _unredact(t.inner, v, overrides, key)
    if isinstance(t, ListT):
        return [_unredact(t.elem, x, overrides, key) for x in v]
    if isinstance(t, TupleT) and len(t.elems) == 2 and t.elems[0] == Prim("string"):
        return (v[0], _unredact(t.elems[1], v[1], overrides, v[0]))
    if isinstance(t, VariantT) and not isinstance(v, str):
        return (v[0], _unredact(dict(t.cases).get(v[0]), v[1], overrides, key))
    return v


def _call_text(name: str, args: list[Any]) -> str:
    text = f"{name}({', '.join(_value_text(a) for a in args)})"
    return text if len(text) <= 300 else text[:297] + "..."


def _value_text(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"))


def _header_text(h: list[str] | None) -> str:
    return "(none)" if h is None else f"{h[0]}: {h[1]}"
