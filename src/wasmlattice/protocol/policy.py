"""The wasmCloud v1 policy-service wire format: request bodies, the response, topic checks.

A host with a policy topic asks the policy service before it starts a component or a provider
and before it runs an incoming invocation (docs/policy.md). Requests are JSON objects
`{requestId, kind, version: "v1", host: {publicKey, lattice, labels}, request: {...}}`; the
answer is `{requestId, permitted, message?}`. Field names, their order and null-versus-absent
are the wasmCloud host's; tests/unit/test_policy_wire.py pins every shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wasmlattice.protocol import limits

POLICY_VERSION = "v1"
KIND_START_COMPONENT = "startComponent"
KIND_START_PROVIDER = "startProvider"
KIND_PERFORM_INVOCATION = "performInvocation"
# The v1 host's default `--policy-timeout-ms`.
DEFAULT_POLICY_TIMEOUT_MS = 1000
# A policy answer is a small JSON object; anything bigger is not one (and is not parsed).
MAX_POLICY_RESPONSE = 64 * 1024
# A denial message is shown in ctl replies, events and app status: keep it readable.
MAX_POLICY_MESSAGE = 4096


class PolicyTopicError(ValueError):
    """A policy topic that is not a valid, non-wildcard NATS subject."""


class PolicyResponseError(ValueError):
    """A policy answer that is not `{requestId, permitted, message?}`; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class PolicyClaims:
    """The `claims` a policy request carries for a signed component or provider.

    `issued_at` is a string (as the v1 host sends it); `expires_at` epoch seconds or None (never).
    """

    public_key: str
    issuer: str
    issued_at: str
    expires_at: int | None
    expired: bool


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """A policy service's answer for one request (or the fail-closed denial standing for it)."""

    permitted: bool
    message: str | None = None
    request_id: str = ""


def check_policy_topic(topic: str, what: str = "--policy-topic") -> str:
    """`topic` if it is a valid NATS subject without wildcards; `PolicyTopicError` naming `what`."""
    if not topic:
        raise PolicyTopicError(f"{what}: a policy topic cannot be empty")
    try:
        limits.check_subject(topic)
    except limits.LimitError as e:
        raise PolicyTopicError(f"{what}: {e}") from None
    for i, token in enumerate(topic.split(".")):
        if token in ("*", ">"):
            raise PolicyTopicError(f"{what}: wildcard token {token!r} at position {i}; give one subject")
        try:
            limits.check_token(token, limits.MAX_SUBJECT_LEN)
        except limits.LimitError as e:
            raise PolicyTopicError(f"{what}: token {i} ({limits.quote(token)}): {e}") from None
    return topic


def claims_body(claims: PolicyClaims | None) -> dict[str, Any] | None:
    """The `claims` field: null for an unsigned entity, else the five fields in the v1 order."""
    if claims is None:
        return None
    return {
        "publicKey": claims.public_key,
        "issuer": claims.issuer,
        "issuedAt": claims.issued_at,
        "expiresAt": claims.expires_at,
        "expired": claims.expired,
    }


def start_component_body(
    component_id: str,
    image_ref: str,
    max_instances: int,
    annotations: Mapping[str, str] | None,
    claims: PolicyClaims | None,
) -> dict[str, Any]:
    """The `request` of a `startComponent` request."""
    return {
        "componentId": component_id,
        "imageRef": image_ref,
        "maxInstances": max_instances,
        "annotations": dict(annotations or {}),
        "claims": claims_body(claims),
    }


def start_provider_body(
    provider_id: str, image_ref: str, annotations: Mapping[str, str] | None, claims: PolicyClaims | None
) -> dict[str, Any]:
    """The `request` of a `startProvider` request."""
    return {
        "providerId": provider_id,
        "imageRef": image_ref,
        "annotations": dict(annotations or {}),
        "claims": claims_body(claims),
    }


def perform_invocation_body(
    interface: str,
    function: str,
    component_id: str,
    image_ref: str,
    annotations: Mapping[str, str] | None,
    claims: PolicyClaims | None,
) -> dict[str, Any]:
    """The `request` of a `performInvocation` request; the target's `maxInstances` is always 0."""
    return {
        "interface": interface,
        "function": function,
        "target": {
            "componentId": component_id,
            "imageRef": image_ref,
            "maxInstances": 0,
            "annotations": dict(annotations or {}),
            "claims": claims_body(claims),
        },
    }


def policy_request(
    request_id: str,
    kind: str,
    host_id: str,
    lattice: str,
    labels: Mapping[str, str],
    body: Mapping[str, Any],
) -> bytes:
    """The encoded request: `{requestId, kind, version, host, request}` in that order."""
    request = {
        "requestId": request_id,
        "kind": kind,
        "version": POLICY_VERSION,
        "host": {"publicKey": host_id, "lattice": lattice, "labels": dict(labels)},
        "request": dict(body),
    }
    return json.dumps(request, separators=(",", ":")).encode()


def parse_policy_response(data: bytes) -> PolicyDecision:
    """A `{requestId, permitted, message?}` answer; `PolicyResponseError` naming the bad field."""
    if len(data) > MAX_POLICY_RESPONSE:
        raise PolicyResponseError(f"the reply has {len(data)} bytes, more than {MAX_POLICY_RESPONSE}")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise PolicyResponseError(f"the reply is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise PolicyResponseError(f"the reply is a JSON {type(obj).__name__}, not an object")
    request_id = obj.get("requestId")
    if not isinstance(request_id, str):
        raise PolicyResponseError("`requestId` is missing or not a string")
    permitted = obj.get("permitted")
    if not isinstance(permitted, bool):
        raise PolicyResponseError("`permitted` is missing or not a boolean")
    message = obj.get("message")
    if message is not None and not isinstance(message, str):
        raise PolicyResponseError("`message` is not a string")
    if message is not None and len(message) > MAX_POLICY_MESSAGE:
        message = message[:MAX_POLICY_MESSAGE] + "…"
    return PolicyDecision(permitted=permitted, message=message, request_id=request_id)


def denial_text(action: str, decision: PolicyDecision) -> str:
    """The error text of a denied action (`scale component \\`c\\``): the policy's message, if any."""
    text = f"Policy denied request to {action}"
    return f"{text}: {decision.message}" if decision.message else text
