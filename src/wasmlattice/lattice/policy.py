"""The host's policy-service client (wasmCloud v1 `--policy-topic`; docs/policy.md).

Before it starts a component or a provider, and before it runs an invocation of a component, a
host with a policy topic asks the policy service over NATS request/reply and waits at most the
policy timeout. It fails closed: no answer in time, nobody listening, a malformed answer or one
for another request all deny, with a message saying which. Such failures are not cached, so a
later attempt asks again; answers are cached per key (component: ID and image; provider: ID and
image; invocation: ID, image, interface and function), at most `MAX_CACHED_DECISIONS` of them
(least recently used dropped first: a dropped entry is only asked again). Messages on the policy
changes topic with the answer's shape replace the cached decision of the request they name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from wasmlattice.host.host import Host
from wasmlattice.protocol.events import ulid_uuid
from wasmlattice.protocol.policy import (
    DEFAULT_POLICY_TIMEOUT_MS,
    KIND_PERFORM_INVOCATION,
    KIND_START_COMPONENT,
    KIND_START_PROVIDER,
    PolicyClaims,
    PolicyDecision,
    PolicyResponseError,
    check_policy_topic,
    parse_policy_response,
    perform_invocation_body,
    policy_request,
    start_component_body,
    start_provider_body,
)

log = logging.getLogger(__name__)

# Bound on cached decisions (and on the request IDs a change message can name): a policy that
# answers for many distinct images or interfaces cannot grow the host's memory without end.
MAX_CACHED_DECISIONS = 10_000

CacheKey = tuple[str, ...]


@dataclass(frozen=True)
class PolicySettings:
    """`--policy-topic`, `--policy-changes-topic` and `--policy-timeout-ms` (validated)."""

    topic: str
    changes_topic: str | None = None
    timeout_ms: int = DEFAULT_POLICY_TIMEOUT_MS

    def __post_init__(self) -> None:
        check_policy_topic(self.topic, "--policy-topic")
        if self.changes_topic is not None:
            check_policy_topic(self.changes_topic, "--policy-changes-topic")
        if self.timeout_ms <= 0:
            raise ValueError(f"--policy-timeout-ms: must be positive, got {self.timeout_ms}")


class PolicyService:
    """Asks the policy service and caches its answers; implements `capabilities.base.InvocationPolicy`."""

    def __init__(
        self, nc: Any, host: Host, settings: PolicySettings, *, max_cached: int = MAX_CACHED_DECISIONS
    ):
        self.nc = nc
        self.host = host
        self.settings = settings
        self.max_cached = max_cached
        # key -> decision, least recently used first; request ID -> key, for change messages.
        self._cache: OrderedDict[CacheKey, PolicyDecision] = OrderedDict()
        self._by_request: dict[str, CacheKey] = {}
        # One request per key at a time: concurrent checks of an unknown key share its answer.
        self._pending: dict[CacheKey, asyncio.Future[PolicyDecision]] = {}
        self._changes_sub: Any = None

    async def start(self) -> None:
        """Subscribe to the changes topic, if there is one."""
        if self.settings.changes_topic is not None:
            self._changes_sub = await self.nc.subscribe(self.settings.changes_topic, cb=self._on_change)

    async def stop(self) -> None:
        """Stop following policy changes."""
        sub, self._changes_sub = self._changes_sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # -- the three checks --------------------------------------------------------------------

    async def check_start_component(
        self,
        component_id: str,
        image_ref: str,
        max_instances: int,
        annotations: Mapping[str, str] | None,
        claims: PolicyClaims | None,
    ) -> PolicyDecision:
        """May this component start (or scale)? Cached per component ID and image."""
        body = start_component_body(component_id, image_ref, max_instances, annotations, claims)
        return await self._decide(("component", component_id, image_ref), KIND_START_COMPONENT, body)

    async def check_start_provider(
        self,
        provider_id: str,
        image_ref: str,
        annotations: Mapping[str, str] | None,
        claims: PolicyClaims | None,
    ) -> PolicyDecision:
        """May this provider start? Cached per provider ID and image."""
        body = start_provider_body(provider_id, image_ref, annotations, claims)
        return await self._decide(("provider", provider_id, image_ref), KIND_START_PROVIDER, body)

    def cached_invocation(
        self, component_id: str, image_ref: str, interface: str, function: str
    ) -> PolicyDecision | None:
        """The cached decision for this invocation key, or None if the service must be asked."""
        key = ("invocation", component_id, image_ref, interface, function)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
        return found

    async def check_invocation(
        self,
        component_id: str,
        image_ref: str,
        annotations: Mapping[str, str],
        claims: PolicyClaims | None,
        interface: str,
        function: str,
    ) -> PolicyDecision:
        """May `interface#function` of this component run? Cached per ID, image, interface, function."""
        key = ("invocation", component_id, image_ref, interface, function)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        body = perform_invocation_body(interface, function, component_id, image_ref, annotations, claims)
        return await self._decide(key, KIND_PERFORM_INVOCATION, body)

    # -- asking ------------------------------------------------------------------------------

    async def _decide(self, key: CacheKey, kind: str, body: Mapping[str, Any]) -> PolicyDecision:
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[PolicyDecision] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            decision, cacheable = await self._ask(kind, body)
            if cacheable:
                self._remember(key, decision)
            future.set_result(decision)
            return decision
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        finally:
            del self._pending[key]

    async def _ask(self, kind: str, body: Mapping[str, Any]) -> tuple[PolicyDecision, bool]:
        """The service's decision, and whether it may be cached (failures to ask may not)."""
        request_id = ulid_uuid()
        data = policy_request(request_id, kind, self.host.host_id, self.host.lattice, self.host.labels, body)
        topic, timeout_ms = self.settings.topic, self.settings.timeout_ms
        try:
            msg = await self.nc.request(topic, data, timeout=timeout_ms / 1000)
        except NoRespondersError:
            return self._failed(request_id, f"no policy service answers on {topic} (failing closed)"), False
        except (NatsTimeoutError, TimeoutError):
            reason = f"the policy service on {topic} did not answer within {timeout_ms} ms (failing closed)"
            return self._failed(request_id, reason), False
        except Exception as e:
            return self._failed(
                request_id, f"asking the policy service on {topic} failed: {e} (failing closed)"
            ), False
        try:
            decision = parse_policy_response(msg.data)
        except PolicyResponseError as e:
            return self._failed(request_id, f"malformed policy service reply: {e} (failing closed)"), False
        if decision.request_id != request_id:
            reason = (
                f"the policy service answered request {decision.request_id!r}, not {request_id!r} "
                "(failing closed)"
            )
            return self._failed(request_id, reason), False
        log.info(
            "policy %s %s: %s%s",
            kind,
            request_id,
            "permitted" if decision.permitted else "denied",
            f" ({decision.message})" if decision.message else "",
        )
        return decision, True

    def _failed(self, request_id: str, reason: str) -> PolicyDecision:
        log.warning("policy request %s: %s", request_id, reason)
        return PolicyDecision(permitted=False, message=reason, request_id=request_id)

    def _remember(self, key: CacheKey, decision: PolicyDecision) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            self._by_request.pop(old.request_id, None)
        self._cache[key] = decision
        self._by_request[decision.request_id] = key
        while len(self._cache) > self.max_cached:
            _, dropped = self._cache.popitem(last=False)
            self._by_request.pop(dropped.request_id, None)

    # -- changes -----------------------------------------------------------------------------

    async def _on_change(self, msg: Any) -> None:
        try:
            change = parse_policy_response(msg.data)
        except PolicyResponseError as e:
            log.warning("ignoring a message on %s: %s", self.settings.changes_topic, e)
            return
        key = self._by_request.get(change.request_id)
        if key is None:
            log.debug("policy change for unknown request %s ignored", change.request_id)
            return
        self._cache[key] = change
        self._cache.move_to_end(key)
        log.info(
            "policy change for request %s: now %s",
            change.request_id,
            "permitted" if change.permitted else "denied",
        )
