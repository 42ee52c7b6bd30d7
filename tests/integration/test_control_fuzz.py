"""Fuzzing the control interface of ONE real host process with hypothesis-generated payloads.

Every control subject gets generated bodies: payloads shaped like the operation's model with
hostile values in every field (over-long, wildcard, white space, control characters, unpaired
surrogates, wrong types), arbitrary JSON, and raw bytes. Each batch is sent concurrently; then the
test asserts that every reply is a success or a clear error (docs/protocol.md#replies), that the
host still answers `host.ping`, and that its inventory lists no component that a payload did not
validly ask for.

`WASMLATTICE_FUZZ_EXAMPLES` sets how many payloads are generated (default 5000); a small number
gives a quick inner loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import string
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.lattice import LatticeEnv
from wasmlattice.protocol import subjects as sj

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

EXAMPLES = int(os.environ.get("WASMLATTICE_FUZZ_EXAMPLES", "5000"))
# Requests sent at once; the host's visibility and inventory are checked after each batch.
BATCH = 50
# Auctions are answered only by candidates: silence is a valid answer, so they wait briefly.
SILENT_OK_TIMEOUT_S = 0.3
REPLY_TIMEOUT_S = 5.0
# A message that names a Python exception type is a handler that failed, not a clear error.
UNHANDLED = re.compile(r"^[A-Za-z_.]*(Error|Exception)\b")
VALID_IDS = ["fuzz-a", "fuzz-b", "fuzz-c"]

SPECIALS = [
    "",
    "*",
    ">",
    ".",
    "a.b",
    "a b",
    "\t",
    "\x00",
    "\x7f",
    "\u2028",
    "hostcore.os",
    "HostCore.arch",
    "SECRET_x",
    "default",
    "é",
    "😀",
    "x" * 256,
    "x" * 257,
    "x" * 4097,
    "x" * 5000,
    "../../etc/passwd",
]
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]

with_surrogate = st.tuples(st.text(max_size=4), st.sampled_from(SURROGATES), st.text(max_size=4)).map("".join)
hostile = st.one_of(
    st.text(max_size=16),
    st.sampled_from(SPECIALS),
    with_surrogate,
    # Around the 256-character cap (drawn whole: character by character is slow to generate).
    st.builds(lambda n, c: c * n, st.integers(min_value=250, max_value=262), st.sampled_from("a-_.")),
)
ids = st.one_of(st.sampled_from(VALID_IDS), st.sampled_from(VALID_IDS), hostile)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | hostile,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile, inner, max_size=4),
    max_leaves=8,
)
string_maps = st.dictionaries(hostile, hostile, max_size=4) | st.integers(min_value=60, max_value=70).map(
    lambda n: {f"k{i}": "v" for i in range(n)}
)
config_names = st.lists(st.sampled_from(["cfg-a", "SECRET_b"]) | hostile, max_size=4)
counts = st.integers(min_value=0, max_value=3) | st.integers(min_value=-(2**40), max_value=2**40)
# Subject tokens a client can publish at all (NATS ends a subject at white space); `.` adds tokens.
subject_tokens = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), exclude_characters=".*>"),
    min_size=1,
    max_size=300,
)


def loose(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: mostly of its type, sometimes any JSON value."""
    return st.one_of(strategy, strategy, strategy, json_values)


def shaped(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects with some of `fields` (loosely typed) and sometimes an unknown key."""
    return st.fixed_dictionaries(
        {}, optional={**{k: loose(v) for k, v in fields.items()}, "extra": json_values}
    )


@dataclass(frozen=True)
class Request:
    """One generated control request: operation, subject target (None: the real host) and body."""

    op: str
    target: str | None
    body: bytes


# Valid values, so that many payloads are accepted (and some components do start).
WORD = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=8)
valid_ids = st.sampled_from(VALID_IDS)
valid_maps = st.dictionaries(st.sampled_from(["zone", "app", "wasmcloud.dev/x"]), WORD, max_size=2)
valid_configs = st.lists(st.sampled_from(["cfg-a", "cfg-b"]), max_size=2)


def field_table(
    op: str, host_id: str, echo_ref: str, refs: st.SearchStrategy[str]
) -> tuple[dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]], tuple[str, ...]]:
    """For each field of `op`'s body (docs/protocol.md#payloads): (valid values, hostile values),
    and the fields a valid body always has."""
    valid_refs = st.sampled_from([echo_ref, "file:///nonexistent/c.wasm"])
    host_ids = st.sampled_from([host_id, ""])
    names = st.sampled_from(["default", "other"])
    table: dict[str, dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]]] = {
        "component.auction": {
            "component_ref": (valid_refs, refs),
            "component_id": (valid_ids, ids),
            "constraints": (st.sampled_from([{}, {"zone": "test"}]), string_maps),
        },
        "provider.auction": {
            "provider_ref": (valid_refs, refs),
            "provider_id": (valid_ids, ids),
            "constraints": (st.sampled_from([{}, {"zone": "test"}]), string_maps),
        },
        "component.scale": {
            "component_ref": (valid_refs, refs),
            "component_id": (valid_ids, ids),
            "count": (st.integers(min_value=0, max_value=3), counts),
            "annotations": (valid_maps, string_maps),
            "component_limits": (st.just({}), string_maps),
            "host_id": (host_ids, hostile),
            "config": (valid_configs, config_names),
            "allow_update": (st.booleans(), json_values),
        },
        "component.update": {
            "component_id": (valid_ids, ids),
            "new_component_ref": (valid_refs, refs),
            "host_id": (host_ids, hostile),
            "annotations": (valid_maps, string_maps),
        },
        "provider.start": {
            "provider_id": (valid_ids, ids),
            "provider_ref": (st.sampled_from(["file:///nonexistent/p", "wasmcloud+builtin://nope"]), hostile),
            "host_id": (host_ids, hostile),
            "config": (valid_configs, config_names),
            "annotations": (valid_maps, string_maps),
        },
        "provider.stop": {"provider_id": (valid_ids, ids), "host_id": (host_ids, hostile)},
        "label.put": {"key": (WORD, hostile), "value": (WORD, hostile)},
        "label.del": {"key": (WORD, hostile)},
        "link.put": {
            "source_id": (valid_ids, ids),
            "target": (valid_ids, ids),
            "name": (names, hostile),
            "wit_namespace": (st.sampled_from(["wasi", "wasmcloud"]), hostile),
            "wit_package": (st.sampled_from(["keyvalue", "http"]), hostile),
            "interfaces": (
                st.lists(st.sampled_from(["store", "atomics"]), min_size=1, max_size=2),
                st.lists(hostile, max_size=4),
            ),
            "source_config": (valid_configs, config_names),
            "target_config": (valid_configs, config_names),
        },
        "link.del": {
            "source_id": (valid_ids, ids),
            "name": (names, hostile),
            "wit_namespace": (st.just("wasi"), hostile),
            "wit_package": (st.just("keyvalue"), hostile),
        },
        "config.put": {"k": (WORD, hostile), "other": (WORD, hostile)},
        "registry.put": {
            "ghcr.io": (
                st.just({"username": "u", "password": "p"}),
                st.fixed_dictionaries({}, optional={"username": hostile, "token": hostile}),
            )
        },
    }
    required = {
        "component.auction": ("component_id", "constraints"),
        "provider.auction": ("provider_id", "constraints"),
        "component.scale": ("component_id", "component_ref", "count"),
        "provider.start": ("provider_id",),
        "label.put": ("key", "value"),
        "label.del": ("key",),
        "link.put": ("source_id", "target", "wit_namespace", "wit_package", "interfaces"),
        "link.del": ("source_id", "wit_namespace", "wit_package"),
    }
    return table.get(op, {}), required.get(op, ())


def bodies(op: str, host_id: str, echo_ref: str, refs: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Bodies for `op`: valid ones, valid ones with one hostile field, hostile shapes, any JSON, bytes."""
    fields, required = field_table(op, host_id, echo_ref, refs)
    valid = st.fixed_dictionaries(
        {k: fields[k][0] for k in required},
        optional={k: v for k, (v, _) in fields.items() if k not in required},
    )

    @st.composite
    def mutated(draw: st.DrawFn) -> dict[str, Any]:
        body = draw(valid)
        if fields:
            key = draw(st.sampled_from(sorted(fields)))
            body[key] = draw(loose(fields[key][1]))
        return body

    return st.one_of(
        valid,
        valid,
        mutated(),
        mutated(),
        shaped({k: h for k, (_, h) in fields.items()}),
        json_values,
    ).map(lambda b: json.dumps(b).encode()) | st.binary(max_size=64)


def requests_for(host_id: str, echo_ref: str) -> st.SearchStrategy[Request]:
    """Any control request, on every subject of the control interface."""
    refs = st.one_of(
        st.just(echo_ref),
        st.just("file:///nonexistent/c.wasm"),
        hostile.map(lambda s: "file:///nonexistent/" + s),
        hostile,
    )

    @st.composite
    def one(draw: st.DrawFn) -> Request:
        op = draw(st.sampled_from([o.value for o in sj.CtlOperation]))
        target: str | None = None
        if op in {o.value for o in sj.HOST_SCOPED_OPS}:
            target = draw(st.just(host_id) | st.just(host_id) | st.just(host_id) | subject_tokens)
        elif op in {o.value for o in sj.CONFIG_SCOPED_OPS}:
            target = draw(st.sampled_from(["cfg-a", "SECRET_b"]) | subject_tokens)
        if op == "host.stop":
            # Never the real stop: a body naming another host ID (or not parsing) is refused.
            other = draw(
                hostile.filter(lambda s: s not in ("", host_id))
                | json_values.filter(lambda v: not isinstance(v, str))
            )
            extra = draw(st.dictionaries(st.just("timeout"), json_values, max_size=1))
            return Request(op, target, json.dumps({"host_id": other, **extra}).encode())
        return Request(op, target, draw(bodies(op, host_id, echo_ref, refs)))

    return one()


@dataclass
class Fuzz:
    """What the fuzzer sent and saw, shared between the hypothesis thread and the event loop."""

    env: LatticeEnv
    host_id: str
    echo_ref: str
    loop: asyncio.AbstractEventLoop
    sent: int = 0
    # Component IDs a payload validly asked to run (a scale with count > 0 the host acknowledged).
    asked: set[str] = field(default_factory=set)

    def subject(self, req: Request) -> str:
        base = f"{sj.ctl_prefix(self.env.lattice)}.{req.op}"
        if req.op in {o.value for o in sj.HOST_SCOPED_OPS | sj.CONFIG_SCOPED_OPS}:
            return f"{base}.{self.host_id if req.target is None else req.target}"
        return base

    async def send(self, req: Request) -> dict[str, Any] | None:
        import nats.errors

        silent_ok = req.op in ("component.auction", "provider.auction") or (
            req.target is not None
            and req.target != self.host_id
            and req.op in {o.value for o in sj.HOST_SCOPED_OPS}
        )
        timeout = SILENT_OK_TIMEOUT_S if silent_ok else REPLY_TIMEOUT_S
        try:
            msg = await self.env.nc.request(self.subject(req), req.body, timeout=timeout)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            assert silent_ok, f"no reply to {req}"
            return None
        reply = json.loads(msg.data)
        assert isinstance(reply, dict) and set(reply) <= {"success", "message", "response"}, (req, reply)
        assert isinstance(reply.get("success"), bool) and isinstance(reply.get("message"), str), (req, reply)
        if not reply["success"]:
            message = reply["message"]
            assert message and "response" not in reply, (req, reply)
            assert not UNHANDLED.match(message) and "Traceback" not in message, (req, reply)
        if req.op == "component.scale" and reply["success"]:
            body = json.loads(req.body)
            if (
                isinstance(body, dict)
                and body.get("count", 0) > 0
                and body.get("component_ref") == self.echo_ref
            ):
                self.asked.add(body["component_id"])
        result: dict[str, Any] = reply
        return result

    async def batch(self, reqs: list[Request]) -> None:
        await asyncio.gather(*(self.send(r) for r in reqs))
        self.sent += len(reqs)
        # The host stays visible and runs nothing it was not validly asked to run.
        ping = await self.env.nc.request(sj.ctl_subject("host.ping", self.env.lattice), b"", timeout=5.0)
        assert json.loads(ping.data)["response"]["id"] == self.host_id, "host not visible to host.ping"
        inventory = await self.env.inventory(self.host_id)
        running = {c.id for c in inventory.components}
        assert running <= self.asked, f"components nobody validly asked for: {running - self.asked}"


async def test_fuzzed_control_payloads_get_clear_replies_and_leave_the_host_whole(
    env: LatticeEnv, echo_ref: str
) -> None:
    env.start_host()
    (host_id,) = await env.host_ids(1)
    fuzz = Fuzz(env, host_id, echo_ref, asyncio.get_running_loop())
    pending: list[Request] = []

    def flush() -> None:
        # hypothesis drives examples synchronously: each batch runs on the test's event loop.
        batch = pending[:]
        pending.clear()
        asyncio.run_coroutine_threadsafe(fuzz.batch(batch), fuzz.loop).result(120)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        # No shrinking: each step would replay requests against the live host; a failure names its
        # request instead.
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(requests_for(host_id, echo_ref))
    def run(req: Request) -> None:
        # One example is one request; they go out in concurrent batches.
        pending.append(req)
        if len(pending) >= BATCH:
            flush()

    done = threading.Event()
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            run()
            if pending:
                flush()
        except BaseException as e:  # reported on the test's thread below
            errors.append(e)
        finally:
            done.set()

    threading.Thread(target=drive, name="hypothesis", daemon=True).start()
    while not done.is_set():
        await asyncio.sleep(0.05)
    if errors:
        raise errors[0]
    assert fuzz.sent >= EXAMPLES
    assert env.host_tracebacks() == []
