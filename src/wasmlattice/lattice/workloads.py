"""Component and provider operations of the control interface (docs/protocol.md#control-interface).

Scale, update and provider start are acknowledged at once; the work runs afterwards and its
outcome is published as lattice events (`component_scaled` / `component_scale_failed`,
`provider_started` / `provider_start_failed`), as the v1 host does.
"""

from __future__ import annotations

import logging
from typing import Any

from wasmlattice.artifacts.claims import ComponentClaims
from wasmlattice.capabilities.manager import ProviderManager
from wasmlattice.host.components import Admit, ComponentRefError, ComponentRegistry, different_ref_message
from wasmlattice.host.policy_checks import policy_claims
from wasmlattice.lattice.context import ControlContext
from wasmlattice.lattice.health import ProviderHealth
from wasmlattice.protocol import events as ev
from wasmlattice.protocol.events import CloudEvent
from wasmlattice.protocol.models import (
    MSG_PROVIDER_ALREADY_RUNNING,
    MSG_PROVIDER_NOT_RUNNING,
    MSG_PROVIDER_STARTED,
    MSG_PROVIDER_STOPPED,
    MSG_SCALE_ACK,
    ComponentAuctionAck,
    ComponentAuctionRequest,
    CtlResponse,
    ProviderAuctionAck,
    ProviderAuctionRequest,
    ScaleComponentCommand,
    StartProviderCommand,
    StopProviderCommand,
    StrMap,
    UpdateComponentCommand,
    component_already_updated,
    component_not_found,
    component_updating,
    parse_payload,
)
from wasmlattice.protocol.policy import denial_text
from wasmlattice.protocol.subjects import CtlOperation
from wasmlattice.runtime.budget import BudgetExceeded
from wasmlattice.runtime.reuse import ReuseError, parse_reuse

log = logging.getLogger(__name__)

WORKLOAD_OPS = frozenset(
    {
        CtlOperation.COMPONENT_AUCTION,
        CtlOperation.COMPONENT_SCALE,
        CtlOperation.COMPONENT_UPDATE,
        CtlOperation.PROVIDER_AUCTION,
        CtlOperation.PROVIDER_START,
        CtlOperation.PROVIDER_STOP,
    }
)
Reply = CtlResponse[Any] | None


class PolicyDenied(Exception):
    """The policy service denied a start (or could not be asked: it fails closed)."""


def _error_text(e: BaseException) -> str:
    # Our own errors carry complete messages; anything else is named by its type too.
    text = str(e)
    return text if text and not isinstance(e, KeyError) else f"{type(e).__name__}: {e}"


class WorkloadOps:
    """Answers the component/provider control operations for one host."""

    def __init__(
        self,
        ctx: ControlContext,
        components: ComponentRegistry,
        providers: ProviderManager,
        health: ProviderHealth,
    ) -> None:
        self.ctx = ctx
        self.components = components
        self.providers = providers
        self.health = health

    @property
    def host_id(self) -> str:
        """The answering host's ID (the `host_id` of the events it publishes)."""
        return self.ctx.host_id

    def matches(self, constraints: StrMap) -> bool:
        """Whether this host's labels satisfy every auction constraint exactly."""
        labels = self.ctx.host.labels
        return all(labels.get(k) == v for k, v in constraints.items())

    async def handle(self, op: CtlOperation, data: bytes) -> Reply:
        """Answer one of `WORKLOAD_OPS`; None means no reply (an auction this host does not bid on)."""
        if op is CtlOperation.COMPONENT_AUCTION:
            creq = parse_payload(ComponentAuctionRequest, data)
            # Only hosts that could newly start it bid: a host already running that component ID
            # stays silent, as the v1 host does (docs/protocol.md#auctions), so bidders are always new
            # placements.
            running = self.components.get(creq.component_id) is not None
            if running or not self.matches(creq.constraints):
                return None
            cack = ComponentAuctionAck(
                component_ref=creq.component_ref,
                component_id=creq.component_id,
                host_id=self.host_id,
                constraints=creq.constraints,
            )
            return CtlResponse[Any].ok(cack.to_json_obj())
        if op is CtlOperation.PROVIDER_AUCTION:
            preq = parse_payload(ProviderAuctionRequest, data)
            # A host already running that provider does not bid again.
            if not self.matches(preq.constraints) or self.providers.running(preq.provider_id):
                return None
            pack = ProviderAuctionAck(
                host_id=self.host_id,
                provider_ref=preq.provider_ref,
                provider_id=preq.provider_id,
                constraints=preq.constraints,
            )
            return CtlResponse[Any].ok(pack.to_json_obj())
        if op is CtlOperation.COMPONENT_SCALE:
            return self._scale(parse_payload(ScaleComponentCommand, data))
        if op is CtlOperation.COMPONENT_UPDATE:
            return self._update(parse_payload(UpdateComponentCommand, data))
        if op is CtlOperation.PROVIDER_START:
            return self._provider_start(parse_payload(StartProviderCommand, data))
        return await self._provider_stop(parse_payload(StopProviderCommand, data))

    # -- components --------------------------------------------------------------------------

    def _scale(self, cmd: ScaleComponentCommand) -> Reply:
        existing = self.components.get(cmd.component_id)
        message, update_after = MSG_SCALE_ACK, False
        if existing is not None and existing.image_ref != cmd.component_ref:
            # The v1 host warns whenever the running image differs, whatever the count
            # (docs/protocol.md#scale).
            # An update only follows a scale that leaves it running: after a stop there is
            # nothing to update, so the ack then says the image is not changed.
            update_after = cmd.allow_update and cmd.count > 0
            message = different_ref_message(
                cmd.component_id, existing.image_ref, cmd.component_ref, update_after
            )
        if (existing is None and cmd.count > 0) or update_after:
            refusal = self._refuse_ref(
                cmd.host_id, cmd.component_id, cmd.component_ref, cmd.count, cmd.annotations
            )
            if refusal is not None:
                return refusal
        try:
            # Known before the ack: a scale the host's guest-memory budget cannot hold (docs/limits.md),
            # and instance-pool annotations we refuse (docs/instance-pools.md).
            self.components.check_budget(cmd.component_id, cmd.count, cmd.component_limits)
            if cmd.count > 0:
                parse_reuse(cmd.annotations)
        except (BudgetExceeded, ReuseError) as e:
            return self._refusal(
                cmd.host_id, cmd.component_id, cmd.component_ref, cmd.count, cmd.annotations, e
            )
        self.ctx.supervisor.spawn(f"scale:{cmd.component_id}", self._do_scale(cmd, update_after))
        return CtlResponse[Any].ok(message=message)

    def _refuse_ref(
        self, host_id: str, component_id: str, ref: str, count: int, annotations: StrMap | None
    ) -> CtlResponse[Any] | None:
        """The failure reply (and `component_scale_failed` event) if the host's file policy refuses
        `ref` (docs/security.md); None if loading may go ahead."""
        try:
            self.components.check_ref(ref)
        except ComponentRefError as e:
            return self._refusal(host_id, component_id, ref, count, annotations, e)
        return None

    def _refusal(
        self, host_id: str, component_id: str, ref: str, count: int, annotations: StrMap | None, e: Exception
    ) -> CtlResponse[Any]:
        """The failure reply to a scale refused before its ack, and its `component_scale_failed` event."""
        log.warning("component %s: %s", component_id, e)
        event = ev.component_scale_failed(
            host_id,
            component_id=component_id,
            image_ref=ref,
            max_instances=count,
            error=str(e),
            annotations=annotations,
        )
        self.ctx.supervisor.spawn(f"refused:{component_id}", self._publish(event))
        return CtlResponse[Any].fail(str(e))

    async def _publish(self, event: CloudEvent) -> None:
        await self.ctx.publish(event)

    def _admit(self, component_id: str, max_instances: int, annotations: StrMap | None) -> Admit | None:
        """The policy check `ComponentRegistry` runs once the artifact is loaded (None: no policy).

        After the load, so the request carries the artifact's verified claims, as the v1 host's
        does; before anything of it runs.
        """
        if self.ctx.policy is None:
            return None

        async def admit(image_ref: str, claims: ComponentClaims | None) -> None:
            await self._check_component(component_id, image_ref, max_instances, annotations, claims)

        return admit

    async def _check_component(
        self,
        component_id: str,
        ref: str,
        max_instances: int,
        annotations: StrMap | None,
        claims: ComponentClaims | None,
    ) -> None:
        """`PolicyDenied` unless the policy service lets this component start (docs/policy.md)."""
        policy = self.ctx.policy
        if policy is None:
            return
        decision = await policy.check_start_component(
            component_id, ref, max_instances, annotations, policy_claims(claims)
        )
        if not decision.permitted:
            raise PolicyDenied(denial_text(f"scale component `{component_id}`", decision))

    async def _store_claims(self, claims: ComponentClaims | None) -> None:
        # A signed component's claims go to LATTICEDATA (`CLAIMS_<subject>`) before it is announced,
        # so every host answers `claims.get` with them (docs/claims.md).
        if claims is not None:
            await self.ctx.state.put_claims(claims.stored())

    def _scaled(
        self,
        host_id: str,
        component_id: str,
        image_ref: str,
        count: int,
        annotations: StrMap | None,
        claims: ComponentClaims | None,
    ) -> CloudEvent:
        # `public_key` and `claims` only for a signed component (docs/protocol.md#events).
        return ev.component_scaled(
            host_id,
            component_id=component_id,
            image_ref=image_ref,
            max_instances=count,
            annotations=annotations,
            public_key=claims.subject if claims is not None else None,
            claims=claims.event_claims() if claims is not None else None,
        )

    async def _do_scale(self, cmd: ScaleComponentCommand, update_after: bool) -> None:
        before = self.components.get(cmd.component_id)
        try:
            if cmd.count > 0:
                # A missing named config fails the scale ("Config X does not exist").
                await self.ctx.state.merged_config(cmd.config)
            # Every scale that leaves the component running asks the policy, a rescale too (answers
            # are cached), once the artifact and its claims are loaded and before anything runs. A
            # scale to zero is a stop, never refused (docs/policy.md).
            running = await self.components.scale(
                cmd.component_ref,
                cmd.component_id,
                cmd.count,
                annotations=cmd.annotations,
                config_names=cmd.config,
                limits=cmd.component_limits,
                admit=self._admit(cmd.component_id, cmd.count, cmd.annotations),
            )
            if running is not None:
                await self._store_claims(running.claims)
                await self.ctx.state.ensure_spec(cmd.component_id, cmd.component_ref)
        except Exception as e:
            log.warning("scaling %s failed: %s", cmd.component_id, e)
            await self.ctx.publish(
                ev.component_scale_failed(
                    cmd.host_id,
                    component_id=cmd.component_id,
                    image_ref=cmd.component_ref,
                    max_instances=cmd.count,
                    error=_error_text(e),
                    annotations=cmd.annotations,
                )
            )
            return
        # A stop is announced with the claims of what was stopped.
        shown = running if running is not None else before
        await self.ctx.publish(
            self._scaled(
                cmd.host_id,
                cmd.component_id,
                running.image_ref if running is not None else cmd.component_ref,
                cmd.count,
                cmd.annotations,
                shown.claims if shown is not None else None,
            )
        )
        if update_after:
            await self._do_update(cmd.component_id, cmd.component_ref, cmd.host_id, cmd.annotations)

    def _update(self, cmd: UpdateComponentCommand) -> Reply:
        existing = self.components.get(cmd.component_id)
        if existing is None:
            return CtlResponse[Any].fail(component_not_found(cmd.component_id))
        if existing.image_ref == cmd.new_component_ref:
            return CtlResponse[Any].ok(
                message=component_already_updated(cmd.component_id, cmd.new_component_ref)
            )
        refusal = self._refuse_ref(
            cmd.host_id, cmd.component_id, cmd.new_component_ref, existing.max_instances, cmd.annotations
        )
        if refusal is not None:
            return refusal
        try:
            parse_reuse(cmd.annotations)
        except ReuseError as e:
            ref, count = cmd.new_component_ref, existing.max_instances
            return self._refusal(cmd.host_id, cmd.component_id, ref, count, cmd.annotations, e)
        self.ctx.supervisor.spawn(
            f"update:{cmd.component_id}",
            self._do_update(cmd.component_id, cmd.new_component_ref, cmd.host_id, cmd.annotations),
        )
        return CtlResponse[Any].ok(
            message=component_updating(cmd.component_id, existing.image_ref, cmd.new_component_ref)
        )

    async def _do_update(
        self, component_id: str, new_ref: str, host_id: str, annotations: StrMap | None
    ) -> None:
        try:
            current = self.components.get(component_id)
            admit = None
            if current is not None:
                # The new image starts like a new component: the policy decides (docs/policy.md).
                ann = annotations if annotations is not None else current.annotations
                admit = self._admit(component_id, current.max_instances, ann)
            _, new = await self.components.update(component_id, new_ref, annotations, admit=admit)
            await self._store_claims(new.claims)
        except Exception as e:
            existing = self.components.get(component_id)
            log.warning("updating %s to %s failed: %s", component_id, new_ref, e)
            await self.ctx.publish(
                ev.component_scale_failed(
                    host_id,
                    component_id=component_id,
                    image_ref=new_ref,
                    max_instances=existing.max_instances if existing is not None else 0,
                    error=_error_text(e),
                    annotations=annotations,
                )
            )
            return
        # The v1 host's observable sequence (docs/protocol.md#update): scaled(new ref, max), then
        # scaled(new ref, 0) for the replaced instance set.
        for count in (new.max_instances, 0):
            await self.ctx.publish(
                self._scaled(host_id, component_id, new.image_ref, count, new.annotations, new.claims)
            )

    # -- providers ---------------------------------------------------------------------------

    def _provider_start(self, cmd: StartProviderCommand) -> Reply:
        if self.providers.running(cmd.provider_id):
            return CtlResponse[Any].fail(MSG_PROVIDER_ALREADY_RUNNING)
        self.providers.reserve(cmd.provider_id)
        self.ctx.supervisor.spawn(f"provider-start:{cmd.provider_id}", self._do_provider_start(cmd))
        return CtlResponse[Any].ok(message=MSG_PROVIDER_STARTED)

    async def _do_provider_start(self, cmd: StartProviderCommand) -> None:
        try:
            policy = self.ctx.policy
            if policy is not None:
                decision = await policy.check_start_provider(
                    cmd.provider_id, cmd.provider_ref, cmd.annotations, policy_claims(None)
                )
                if not decision.permitted:
                    raise PolicyDenied(denial_text(f"start provider `{cmd.provider_id}`", decision))
            await self.providers.start(
                cmd.provider_id, cmd.provider_ref, config_names=cmd.config, annotations=cmd.annotations
            )
            await self.ctx.state.ensure_spec(cmd.provider_id, cmd.provider_ref)
        except Exception as e:
            log.warning("starting provider %s failed: %s", cmd.provider_id, e)
            await self.providers.stop(cmd.provider_id)
            await self.ctx.publish(
                ev.provider_start_failed(
                    cmd.host_id or self.host_id,
                    provider_id=cmd.provider_id,
                    provider_ref=cmd.provider_ref,
                    error=_error_text(e),
                )
            )
            return
        provider = self.providers.get(cmd.provider_id)
        if provider is not None:
            await self.health.started(cmd.provider_id, provider)
        await self.ctx.publish(
            ev.provider_started(
                cmd.host_id or self.host_id,
                provider_id=cmd.provider_id,
                image_ref=cmd.provider_ref,
                annotations=cmd.annotations,
            )
        )

    async def _provider_stop(self, cmd: StopProviderCommand) -> Reply:
        provider = self.providers.get(cmd.provider_id)
        if provider is None:
            return CtlResponse[Any].fail(MSG_PROVIDER_NOT_RUNNING)
        await self.health.stopped(cmd.provider_id)
        await self.providers.stop(cmd.provider_id)
        await self.ctx.publish(
            ev.provider_stopped(
                cmd.host_id or self.host_id, provider_id=cmd.provider_id, annotations=provider.annotations
            )
        )
        return CtlResponse[Any].ok(message=MSG_PROVIDER_STOPPED)
