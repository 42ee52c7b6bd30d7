"""Golden tests: the policy-service requests and answers, byte for byte (docs/policy.md)."""

from __future__ import annotations

import json

import pytest

from wasmlattice.protocol.policy import (
    PolicyClaims,
    PolicyResponseError,
    PolicyTopicError,
    check_policy_topic,
    parse_policy_response,
    perform_invocation_body,
    policy_request,
    start_component_body,
    start_provider_body,
)

HOST = ("NHOST", "lat", {"zone": "a"})
CLAIMS = PolicyClaims("MABC", "AISSUER", "1700000000", None, False)


def encode(kind: str, body: dict[str, object]) -> str:
    return policy_request("req-1", kind, *HOST, body).decode()


def test_start_component_request() -> None:
    body = start_component_body("c1", "file:///c.wasm", 3, {"k": "v"}, None)
    assert encode("startComponent", body) == (
        '{"requestId":"req-1","kind":"startComponent","version":"v1",'
        '"host":{"publicKey":"NHOST","lattice":"lat","labels":{"zone":"a"}},'
        '"request":{"componentId":"c1","imageRef":"file:///c.wasm","maxInstances":3,'
        '"annotations":{"k":"v"},"claims":null}}'
    )


def test_start_provider_request_with_claims() -> None:
    body = start_provider_body("p1", "ghcr.io/p:1", None, PolicyClaims("VABC", "AISS", "12", 99, True))
    assert encode("startProvider", body) == (
        '{"requestId":"req-1","kind":"startProvider","version":"v1",'
        '"host":{"publicKey":"NHOST","lattice":"lat","labels":{"zone":"a"}},'
        '"request":{"providerId":"p1","imageRef":"ghcr.io/p:1","annotations":{},'
        '"claims":{"publicKey":"VABC","issuer":"AISS","issuedAt":"12","expiresAt":99,"expired":true}}}'
    )


def test_perform_invocation_request() -> None:
    body = perform_invocation_body("test:greeter/greet@0.1.0", "hello", "c1", "r", {}, CLAIMS)
    assert encode("performInvocation", body) == (
        '{"requestId":"req-1","kind":"performInvocation","version":"v1",'
        '"host":{"publicKey":"NHOST","lattice":"lat","labels":{"zone":"a"}},'
        '"request":{"interface":"test:greeter/greet@0.1.0","function":"hello",'
        '"target":{"componentId":"c1","imageRef":"r","maxInstances":0,"annotations":{},'
        '"claims":{"publicKey":"MABC","issuer":"AISSUER","issuedAt":"1700000000","expiresAt":null,'
        '"expired":false}}}}'
    )


def test_response_parsing() -> None:
    d = parse_policy_response(b'{"requestId":"r","permitted":false,"message":"no"}')
    assert (d.request_id, d.permitted, d.message) == ("r", False, "no")
    d = parse_policy_response(b'{"requestId":"r","permitted":true}')
    assert (d.permitted, d.message) == (True, None)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"nope", "not JSON"),
        (b"[]", "JSON list, not an object"),
        (b'{"permitted":true}', "`requestId`"),
        (b'{"requestId":"r","permitted":"yes"}', "`permitted`"),
        (b'{"requestId":"r","permitted":true,"message":3}', "`message`"),
        (json.dumps({"requestId": "r", "permitted": True, "pad": "x" * 70000}).encode(), "more than"),
    ],
)
def test_malformed_responses_name_the_problem(data: bytes, error: str) -> None:
    with pytest.raises(PolicyResponseError, match=error):
        parse_policy_response(data)


@pytest.mark.parametrize(
    ("topic", "error"),
    [
        ("", "empty"),
        ("policy.*", "wildcard"),
        ("policy.>", "wildcard"),
        ("a..b", "token 1"),
        ("has space", "token 0"),
        ("x" * 3000, "longer than"),
    ],
)
def test_policy_topics_are_checked(topic: str, error: str) -> None:
    with pytest.raises(PolicyTopicError, match=error):
        check_policy_topic(topic)
    assert check_policy_topic("wasmcloud.policy.v1") == "wasmcloud.policy.v1"
