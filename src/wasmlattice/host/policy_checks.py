"""The host's side of the policy service: the `claims` it describes, and the invocation check.

`policy_claims` is the one place that turns a component's or provider's claims into the policy
request's `claims`. Signed claims are not wired in yet: every entity counts as unsigned
(`claims: null`, docs/policy.md); when they are, only `policy_claims` changes.

`invocation_denial` is what every path into a component runs before the guest when the host has a
policy (`capabilities.base.InvocationPolicy`): incoming wRPC calls (`host/exports.py`,
`host/wrpc_http.py`), calls routed to a local instance (`host/router.py`) and local HTTP ingress.
A cached decision answers without a coroutine switch to NATS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wasmlattice.capabilities.base import InvocationPolicy
from wasmlattice.protocol.policy import PolicyClaims, PolicyDecision, denial_text


def policy_claims(claims: Any) -> PolicyClaims | None:
    """The policy `claims` of an entity whose verified claims are `claims` (None: unsigned)."""
    if claims is None:
        return None
    # Until signed claims land nothing passes a claims object here; describing one as unsigned
    # would tell the policy service something untrue.
    raise TypeError(f"cannot describe claims of type {type(claims).__name__} to the policy service")


def invocation_denied_text(component_id: str, instance: str, function: str, decision: PolicyDecision) -> str:
    """The error a denied invocation answers with, naming the policy decision."""
    return denial_text(f"invoke component `{component_id}` ({instance}#{function})", decision)


async def invocation_denial(
    policy: InvocationPolicy,
    component_id: str,
    image_ref: str,
    annotations: Mapping[str, str],
    claims: Any,
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
