"""The host's side of the policy service: the `claims` it describes, and the invocation check.

`policy_claims` is the one place that turns a component's or provider's claims into the policy
request's `claims`: a signed component's verified claims (`artifacts/claims.py`), or `null` for an
unsigned one (docs/policy.md).

`invocation_denial` is what every path into a component runs before the guest when the host has a
policy (`capabilities.base.InvocationPolicy`): incoming wRPC calls (`host/exports.py`,
`host/wrpc_http.py`), calls routed to a local instance (`host/router.py`) and local HTTP ingress.
A cached decision answers without a coroutine switch to NATS.
"""

from __future__ import annotations

from collections.abc import Mapping

from wasmlattice.artifacts.claims import ComponentClaims
from wasmlattice.capabilities.base import InvocationPolicy
from wasmlattice.protocol.policy import PolicyClaims, PolicyDecision, denial_text


def policy_claims(claims: ComponentClaims | None) -> PolicyClaims | None:
    """The policy `claims` of an entity whose verified claims are `claims` (None: unsigned)."""
    if claims is None:
        return None
    body = claims.policy_claims()
    return PolicyClaims(
        public_key=body["publicKey"],
        issuer=body["issuer"],
        issued_at=body["issuedAt"],
        expires_at=body["expiresAt"],
        expired=body["expired"],
    )


def invocation_denied_text(component_id: str, instance: str, function: str, decision: PolicyDecision) -> str:
    """The error a denied invocation answers with, naming the policy decision."""
    return denial_text(f"invoke component `{component_id}` ({instance}#{function})", decision)


async def invocation_denial(
    policy: InvocationPolicy,
    component_id: str,
    image_ref: str,
    annotations: Mapping[str, str],
    claims: ComponentClaims | None,
    instance: str,
    function: str,
) -> str | None:
    """None if the policy permits `instance#function` of the component, else the error text."""
    decision = policy.cached_invocation(component_id, image_ref, instance, function)
    if decision is None:
        decision = await policy.check_invocation(
            component_id, image_ref, annotations, policy_claims(claims), instance, function
        )
    return None if decision.permitted else invocation_denied_text(component_id, instance, function, decision)
