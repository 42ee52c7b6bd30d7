"""The policy service (docs/policy.md) with host processes, a real nats-server and a policy
responder written here: starts and invocations permitted or denied, failing closed, the cache, the
changes topic, and what the app manager shows for a denied component.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_apps import Apps, component, manifest, spread
from tests.support.http import get, wait_body
from tests.support.lattice import LatticeEnv, eventually, serve_http
from tests.support.processes import free_port
from wasmlattice.protocol.models import Link

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

# A decision: (permitted, message), or one of the ways a policy service can misbehave.
Verdict = tuple[bool, str | None] | str
Decide = Callable[[dict[str, Any]], Verdict]


class Responder:
    """A policy service: answers requests on `topic` with `decide`, and records every request."""

    def __init__(self, env: LatticeEnv, decide: Decide) -> None:
        self.env = env
        self.topic = f"policy.{env.lattice}"
        self.changes = f"policy-changes.{env.lattice}"
        self.decide = decide
        self.requests: list[dict[str, Any]] = []

    async def start(self) -> None:
        await self.env.nc.subscribe(self.topic, cb=self._on_request)
        await self.env.nc.flush()

    def host_args(self, timeout_ms: int = 500) -> list[str]:
        return [
            "--policy-topic",
            self.topic,
            "--policy-changes-topic",
            self.changes,
            "--policy-timeout-ms",
            str(timeout_ms),
        ]

    async def _on_request(self, msg: Any) -> None:
        req = json.loads(msg.data)
        self.requests.append(req)
        verdict = self.decide(req)
        if verdict == "silent":
            return
        if verdict == "garbage":
            await msg.respond(b"{not json")
            return
        request_id = "someone-else" if verdict == "wrong-id" else req["requestId"]
        permitted, message = verdict if isinstance(verdict, tuple) else (True, None)
        answer: dict[str, Any] = {"requestId": request_id, "permitted": permitted}
        if message is not None:
            answer["message"] = message
        await msg.respond(json.dumps(answer).encode())

    def of(self, kind: str, entity: str) -> list[dict[str, Any]]:
        """The requests of `kind` about component or provider `entity`."""

        def subject(r: dict[str, Any]) -> str:
            body = r["request"]
            return str(body.get("componentId") or body.get("providerId") or body["target"]["componentId"])

        return [r for r in self.requests if r["kind"] == kind and subject(r) == entity]


async def scale_outcome(env: LatticeEnv, host: str, ref: str, cid: str, count: int) -> dict[str, Any]:
    """Scale and wait for this scale's event: `component_scaled` or `component_scale_failed`."""
    seen = len(env.events)
    assert await env.ctl.scale_component(host, ref, cid, count, annotations={"a": "b"}) == ""

    async def outcome() -> dict[str, Any]:
        for e in env.events[seen:]:
            kind = e["type"].rsplit(".", 1)[-1]
            if kind in ("component_scaled", "component_scale_failed") and e["data"]["component_id"] == cid:
                return e
        raise AssertionError(f"no scale event for {cid}")

    result: dict[str, Any] = await eventually(outcome, timeout=60)
    return result


def failed(event: dict[str, Any]) -> str:
    assert event["type"].endswith("component_scale_failed"), event
    return str(event["data"]["error"])


async def test_starts_are_permitted_or_denied(env: LatticeEnv, echo_ref: str) -> None:
    modes: dict[str, Verdict] = {
        "bad": (False, "bad is not trusted"),
        "quiet": "silent",
        "mangled": "garbage",
        "imposter": "wrong-id",
        "web": (False, "no providers here"),
    }

    def decide(req: dict[str, Any]) -> Verdict:
        body = req["request"]
        return modes.get(body.get("componentId") or body.get("providerId"), (True, None))

    policy = Responder(env, decide)
    await policy.start()
    env.start_host(*policy.host_args())
    (host,) = await env.host_ids(1)

    # Permitted: it runs, and the request has the v1 shape (field order included).
    ok = await scale_outcome(env, host, echo_ref, "good", 1)
    assert ok["type"].endswith("component_scaled"), ok
    (req,) = policy.of("startComponent", "good")
    assert list(req) == ["requestId", "kind", "version", "host", "request"]
    assert req["version"] == "v1"
    assert req["host"]["publicKey"] == host and req["host"]["lattice"] == env.lattice
    assert req["host"]["labels"]["zone"] == "test"
    assert req["request"] == {
        "componentId": "good",
        "imageRef": echo_ref,
        "maxInstances": 1,
        "annotations": {"a": "b"},
        "claims": None,
    }

    # Denied: the failure event carries the policy's message; nothing runs.
    assert failed(await scale_outcome(env, host, echo_ref, "bad", 1)) == (
        "Policy denied request to scale component `bad`: bad is not trusted"
    )
    assert [c.id for c in (await env.inventory(host)).components] == ["good"]

    # Cached: a rescale of the permitted component does not ask again.
    assert (await scale_outcome(env, host, echo_ref, "good", 2))["data"]["max_instances"] == 2
    assert len(policy.of("startComponent", "good")) == 1

    # Fail closed, each way saying which; failures are not cached.
    assert "did not answer within 500 ms" in failed(await scale_outcome(env, host, echo_ref, "quiet", 1))
    assert "malformed policy service reply" in failed(await scale_outcome(env, host, echo_ref, "mangled", 1))
    assert "answered request 'someone-else'" in failed(
        await scale_outcome(env, host, echo_ref, "imposter", 1)
    )
    modes["quiet"] = (True, None)
    assert (await scale_outcome(env, host, echo_ref, "quiet", 1))["type"].endswith("component_scaled")

    # A provider start denied: acknowledged, then provider_start_failed with the message.
    assert await env.ctl.start_provider(host, "wasmcloud+builtin://http-server", "web") == (
        "successfully started provider"
    )
    event = await env.wait_event("provider_start_failed", lambda e: e["data"]["provider_id"] == "web")
    assert event["data"]["error"] == "Policy denied request to start provider `web`: no providers here"
    assert (await env.inventory(host)).providers == []
    (preq,) = policy.of("startProvider", "web")
    assert preq["request"] == {
        "providerId": "web",
        "imageRef": "wasmcloud+builtin://http-server",
        "annotations": {},
        "claims": None,
    }

    # A change message replaces the cached decision of the request it names.
    change = {"requestId": req["requestId"], "permitted": False, "message": "revoked"}
    await env.nc.publish(policy.changes, json.dumps(change).encode())
    await env.nc.flush()
    count = iter(range(3, 100))

    async def revoked() -> None:
        assert "revoked" in failed(await scale_outcome(env, host, echo_ref, "good", next(count)))

    await eventually(revoked, timeout=30, what="the change applied")
    assert len(policy.of("startComponent", "good")) == 1  # decided by the change, not asked again


async def test_invocations_are_checked(env: LatticeEnv, build_component: Callable[[str], Path]) -> None:
    def decide(req: dict[str, Any]) -> Verdict:
        if req["kind"] == "performInvocation" and req["request"]["function"] == "divide":
            return (False, "no dividing")
        return (True, None)

    policy = Responder(env, decide)
    await policy.start()
    caller = "file://" + str(build_component("greeter_caller"))
    callee = "file://" + str(build_component("greeter_callee"))
    env.start_host(*policy.host_args())
    env.start_host(*policy.host_args())
    hosts = await env.host_ids(2)
    url = await serve_http(env, hosts[0], "caller", caller, port=free_port(), ready_path="/ready")
    await env.ctl.scale_component(hosts[1], callee, "callee", 2)
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "callee")
    await env.ctl.put_link(
        Link(
            source_id="caller",
            target="callee",
            wit_namespace="test",
            wit_package="greeter",
            interfaces=["greet"],
        )
    )
    # Permitted over wRPC (the callee runs on the other host).
    assert await wait_body(f"{url}/hello?name=ann&age=7", 200, "hello ann (7)") == "hello ann (7), call 1\n"
    # Denied: the callee's host answers with an error naming the decision; the caller fails the request.
    assert (await get(f"{url}/divide?a=4&b=2"))[0] == 500
    denial = (
        "Policy denied request to invoke component `callee` (test:greeter/greet@0.1.0#divide): no dividing"
    )
    await env.wait_log(denial)
    # Asked once per key, then cached: more calls ask nothing more.
    assert (await get(f"{url}/hello?name=bob&age=8"))[0] == 200
    assert (await get(f"{url}/divide?a=4&b=2"))[0] == 500
    hellos = [r for r in policy.of("performInvocation", "callee") if r["request"]["function"] == "hello"]
    (hello,) = hellos
    assert hello["request"] == {
        "interface": "test:greeter/greet@0.1.0",
        "function": "hello",
        "target": {
            "componentId": "callee",
            "imageRef": callee,
            "maxInstances": 0,
            "annotations": {},
            "claims": None,
        },
    }
    assert (
        len([r for r in policy.of("performInvocation", "callee") if r["request"]["function"] == "divide"])
        == 1
    )
    # HTTP ingress counts as an invocation of the caller's HTTP handler (docs/policy.md).
    (http,) = policy.of("performInvocation", "caller")
    assert (http["request"]["interface"], http["request"]["function"]) == (
        "wrpc:http/incoming-handler@0.1.0",
        "handle",
    )


async def test_a_denied_component_fails_its_app(env: LatticeEnv, echo_ref: str) -> None:
    def decide(req: dict[str, Any]) -> Verdict:
        if req["kind"] == "startComponent" and req["request"]["componentId"].endswith("-blocked"):
            return (False, "blocked by policy")
        return (True, None)

    policy = Responder(env, decide)
    await policy.start()
    env.start_host(*policy.host_args(), "--heartbeat-interval", "2")
    await env.host_ids(1)
    apps = Apps(env)
    try:
        await apps.start_manager()
        await apps.deploy(manifest("denied", "v1", [component("blocked", echo_ref, spread(1))]))
        await apps.wait_status("denied", "failed")

        async def still_failed() -> None:
            st = await apps.client.status("denied")
            assert st.status == "failed" and "blocked by policy" in st.message, st

        # It stays failed while the host keeps refusing, across the manager's retries: never back
        # to "reconciling" between two attempts.
        def refusals() -> int:
            return sum(
                1
                for e in env.events
                if e["type"].endswith("component_scale_failed")
                and e["data"]["component_id"] == "denied-blocked"
            )

        target = refusals() + 2
        while refusals() < target:  # two more attempts by the manager, each refused again
            await still_failed()
            await asyncio.sleep(0.1)
        await still_failed()
    finally:
        await apps.close()


async def test_requests_carry_the_verified_claims_of_a_signed_component(
    env: LatticeEnv, http_echo_wasm: Path, tmp_path: Path
) -> None:
    from wasmlattice.artifacts import claims as cl
    from wasmlattice.artifacts import nkey

    account, module = nkey.generate(nkey.KeyKind.ACCOUNT), nkey.generate(nkey.KeyKind.MODULE)
    unsigned = cl.new_claims(
        issuer=account.public_key, subject=module.public_key, name="echo", module_hash="", version="1.0.0"
    )
    signed = tmp_path / "echo-signed.wasm"
    signed.write_bytes(cl.sign_component(http_echo_wasm.read_bytes(), unsigned, account))
    ref = "file://" + str(signed)

    policy = Responder(env, lambda req: (True, None))
    await policy.start()
    env.start_host(*policy.host_args(timeout_ms=2000))
    (host,) = await env.host_ids(1)
    url = await serve_http(env, host, "signed", ref, port=free_port(), ready_path="/echo")
    assert (await get(url + "/echo"))[0] == 200

    (start,) = policy.of("startComponent", "signed")
    claims = start["request"]["claims"]
    assert list(claims) == ["publicKey", "issuer", "issuedAt", "expiresAt", "expired"]
    assert claims["publicKey"] == module.public_key and claims["issuer"] == account.public_key
    assert isinstance(claims["issuedAt"], str) and claims["issuedAt"].isdigit()
    assert claims["expiresAt"] is None and claims["expired"] is False
    # The HTTP request's invocation check names the same signer.
    (call,) = policy.of("performInvocation", "signed")
    assert call["request"]["target"]["claims"] == claims
