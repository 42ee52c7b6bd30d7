"""The control-interface server: answers wasmCloud control interface v1 requests for one host.

It subscribes to every control subject with the v1 host's queue groups (`subjects.host_subscriptions`),
parses each request into its wire model, replies with the `CtlResponse` envelope, and publishes the
lattice events. Every long-lived activity (one task per subscription, the heartbeat, the KV watch) is
a child of the server's supervisor (`wasmlattice.supervision`), restarted with backoff if it fails;
request handlers and the work that follows a reply are one-off tasks of the same supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from wasmlattice.aio import wait_for
from wasmlattice.capabilities.manager import ProviderManager
from wasmlattice.host.components import ComponentRegistry
from wasmlattice.host.host import Host, LabelError
from wasmlattice.lattice.context import ControlContext
from wasmlattice.lattice.health import DEFAULT_HEALTH_INTERVAL_S, ProviderHealth
from wasmlattice.lattice.policy import PolicyService
from wasmlattice.lattice.workloads import WORKLOAD_OPS, WorkloadOps
from wasmlattice.observability import tracing
from wasmlattice.protocol import events as ev
from wasmlattice.protocol import limits
from wasmlattice.protocol import subjects as sj
from wasmlattice.protocol.events import CloudEvent
from wasmlattice.protocol.models import (
    DEFAULT_HEARTBEAT_INTERVAL_S,
    MSG_CONFIG_DELETED,
    MSG_CONFIG_NOT_FOUND,
    MSG_CONFIG_PUT,
    MSG_HOST_STOP,
    MSG_LABEL_DELETED,
    MSG_LABEL_DELETED_ABSENT,
    MSG_LABEL_PUT,
    MSG_LINK_DELETED,
    MSG_LINK_DELETED_NO_SPEC,
    MSG_LINK_DESERIALIZE,
    MSG_LINK_SET,
    MSG_REGISTRIES_PUT,
    MSG_SCALE_DESERIALIZE,
    REQUEST_MODELS,
    ComponentAuctionRequest,
    CtlResponse,
    DeleteInterfaceLinkDefinitionRequest,
    HostLabel,
    HostLabelIdentifier,
    InterfaceLinkDefinition,
    Link,
    PayloadError,
    ProviderAuctionRequest,
    RegistryCredentialMap,
    StopHostCommand,
    StrMap,
    fallback_error_body,
    parse_payload,
)
from wasmlattice.protocol.state import LatticeState, LinkRejectedError
from wasmlattice.protocol.subjects import CtlOperation, UnsupportedSubjectError
from wasmlattice.supervision import Supervisor

log = logging.getLogger(__name__)

# Restart backoff of supervised tasks: doubles from the first value up to the cap (and a task that
# has run that long counts as recovered).
BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0
# How long shutdown waits for in-flight request handlers.
HANDLER_DRAIN_TIMEOUT_S = 2.0
# How often the host checks that its NATS connection is up, and how often it repeats its warning
# while the connection stays down (the host is invisible to the lattice meanwhile).
CONNECTION_CHECK_S = 1.0
CONNECTION_WARN_EVERY_S = 30.0

StopCallback = Callable[[float | None], None]
Reply = CtlResponse[Any] | None

_COMPONENT_OPS_UNSUPPORTED = (
    "this host does not run components or providers yet: {op} is not supported by wasmlattice "
    "{version}; use a host that supports it"
)


class ControlInterfaceServer:
    """Serves the control interface v1 for `host` on connection `nc` and publishes lattice events."""

    def __init__(
        self,
        host: Host,
        nc: Any,
        js: Any,
        state: LatticeState,
        *,
        topic_prefix: str = sj.DEFAULT_TOPIC_PREFIX,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL_S,
        ctl_host: str | None = None,
        js_domain: str | None = None,
        on_stop: StopCallback | None = None,
        component_auctions: bool = True,
        provider_auctions: bool = True,
        components: ComponentRegistry | None = None,
        providers: ProviderManager | None = None,
        health_interval: float = DEFAULT_HEALTH_INTERVAL_S,
        supervisor: Supervisor | None = None,
        policy: PolicyService | None = None,
    ) -> None:
        self.host = host
        self.nc = nc
        self.js = js
        self.state = state
        self.topic_prefix = topic_prefix
        self.heartbeat_interval = heartbeat_interval
        self.ctl_host = ctl_host
        self.js_domain = js_domain
        self.on_stop = on_stop
        self.providers = providers
        # The server's own supervisor, a child of the host's when one is given: the server starts
        # and stops it, the host's supervisor reports it and stops it at the latest with itself.
        self.supervisor = Supervisor("control-interface", parent=supervisor, logger=log)
        ctx = ControlContext(
            host=host, nc=nc, state=state, publish=self.publish, supervisor=self.supervisor, policy=policy
        )
        self.health = ProviderHealth(ctx, health_interval)
        # Without these the host refuses component and provider operations (as before they existed).
        self.workloads = (
            WorkloadOps(ctx, components, providers, self.health)
            if components is not None and providers is not None
            else None
        )
        self.subscriptions = sj.host_subscriptions(
            host.host_id,
            host.lattice,
            topic_prefix,
            component_auctions=component_auctions,
            provider_auctions=provider_auctions,
        )
        self._subs: dict[sj.Subscription, Any] = {}
        self._stopping = False

    @property
    def lattice(self) -> str:
        """The lattice this server answers for."""
        return self.host.lattice

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to every control subject, start the KV watch and the heartbeat.

        Subscriptions are live (flushed) when this returns, as in the v1 host, so requests may
        arrive before `host_started`; the KV view is replayed before it returns.
        """
        self._stopping = False
        await self.supervisor.start()
        for spec in self.subscriptions:
            self._subs[spec] = await self._subscribe(spec)
        await self.nc.flush()
        for spec in self.subscriptions:
            self._supervise(f"ctl:{spec.subject}", functools.partial(self._serve, spec))
        self._supervise("kv-watch", self.state.watch_forever)
        if self.workloads is not None:
            # Running components follow changes of their named configs (docs/protocol.md#named-config).
            self.state.config_listeners.append(self.workloads.components.config_changed)
        self._supervise("config-watch", self.state.watch_config_forever)
        await self.state.wait_synced()
        self._supervise("heartbeat", self._heartbeat)
        self._supervise("connection-watch", self._watch_connection)
        if self.workloads is not None:
            self._supervise("provider-health", self.health.run)

    async def publish_started(self) -> None:
        """Publish `host_started` (after startup and KV replay)."""
        await self.publish(
            ev.host_started(
                self.host.host_id,
                friendly_name=self.host.friendly_name,
                labels=dict(self.host.labels),
                version=self.host.version,
            )
        )

    async def stop(self) -> None:
        """Stop serving: end the heartbeat, KV watch and subscriptions, wait for in-flight handlers."""
        self._stopping = True
        # Ends the long-lived tasks first (no new request is taken), then waits for the handlers.
        await self.supervisor.stop(HANDLER_DRAIN_TIMEOUT_S)
        for sub in list(self._subs.values()):
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        await self.health.close()

    async def shutdown(self) -> None:
        """Graceful shutdown: stop serving, publish `host_stopped`, flush."""
        await self.stop()
        await self.publish(ev.host_stopped(self.host.host_id, labels=dict(self.host.labels)))
        with contextlib.suppress(Exception):
            await wait_for(self.nc.flush(), 2.0)

    # -- supervision -------------------------------------------------------------------------

    def _supervise(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.supervisor.supervise(name, factory, first_retry=BACKOFF_START_S, max_retry=BACKOFF_MAX_S)

    async def _subscribe(self, spec: sj.Subscription) -> Any:
        if spec.queue is not None:
            return await self.nc.subscribe(spec.subject, queue=spec.queue)
        return await self.nc.subscribe(spec.subject)

    async def _serve(self, spec: sj.Subscription) -> None:
        """Hand each message of one subscription to its own handler task (requests run concurrently)."""
        sub = self._subs.get(spec)
        if sub is None:  # restarted after a failure: subscribe again
            sub = self._subs[spec] = await self._subscribe(spec)
        try:
            async for msg in sub.messages:
                self.supervisor.spawn("ctl-request", self.handle(msg))
        finally:
            if not self._stopping:
                self._subs.pop(spec, None)
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _heartbeat(self) -> None:
        """Publish `host_heartbeat` every interval; the first one comes one interval after start."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await self.publish(ev.host_heartbeat(self.host.inventory()))

    async def _watch_connection(self) -> None:
        """Log a WARNING naming what the lattice cannot reach while the NATS connection is down.

        nats-py buffers publishes while it reconnects, so a heartbeat sent then fails silently; this
        says within seconds that the host answers no ping and publishes no heartbeat, and again every
        `CONNECTION_WARN_EVERY_S` while that lasts.
        """
        loop = asyncio.get_running_loop()
        down_since: float | None = None
        warned_at = 0.0
        while True:
            await asyncio.sleep(CONNECTION_CHECK_S)
            now = loop.time()
            if self.nc.is_connected:
                if down_since is not None:
                    log.info(
                        "NATS connection back after %.1fs: host %s answers %s again",
                        now - down_since,
                        self.host.host_id,
                        self._ping_subject(),
                    )
                down_since = None
                continue
            if down_since is None:
                down_since, warned_at = now, now - CONNECTION_WARN_EVERY_S
            if now - warned_at >= CONNECTION_WARN_EVERY_S:
                warned_at = now
                state = "closed" if self.nc.is_closed else "reconnecting"
                error = self.nc.last_error
                log.warning(
                    "host %s is invisible to the lattice for %.0fs: it cannot answer %s nor publish %s "
                    "(NATS connection %s: %s)",
                    self.host.host_id,
                    now - down_since,
                    self._ping_subject(),
                    sj.event_subject(ev.EventType.HOST_HEARTBEAT, self.lattice),
                    state,
                    f"{type(error).__name__}: {error}" if error is not None else "no error reported",
                )

    def _ping_subject(self) -> str:
        return sj.ctl_subject(CtlOperation.HOST_PING, self.lattice, topic_prefix=self.topic_prefix)

    # -- events ------------------------------------------------------------------------------

    async def publish(self, event: CloudEvent) -> None:
        """Publish a lattice event on `wasmbus.evt.<lattice>.<type>`; failures are logged, not raised."""
        subject = event.subject(self.lattice)
        try:
            await self.nc.publish(subject, event.to_wire())
        except Exception as e:
            log.warning(
                "could not publish %s event on %s: %s: %s", event.event_type, subject, type(e).__name__, e
            )

    # -- request handling --------------------------------------------------------------------

    async def handle(self, msg: Any) -> None:
        """Answer one control request; never raises, replies `success:false` on any error."""
        if not tracing.enabled():
            return await self._answer(msg)
        # Named after the operation once the subject is parsed (`_dispatch`); the requester's
        # trace context, when its headers carry one, is the parent.
        attrs = {"messaging.destination.name": msg.subject, tracing.HOST_ID: self.host.host_id}
        with tracing.server_span("ctl", msg.headers, attrs):
            await self._answer(msg)

    async def _answer(self, msg: Any) -> None:
        try:
            reply = await self._dispatch(msg.subject, msg.data)
        except Exception as e:
            log.exception("control request on %s failed", msg.subject)
            reply = CtlResponse[Any].fail(f"{type(e).__name__}: {e}")
        if reply is not None and not reply.success:
            tracing.fail(tracing.current_span(), reply.message)
        if reply is None or not msg.reply:
            return
        try:
            body = reply.to_wire()
        except Exception as e:
            body = fallback_error_body(f"failed to serialize reply: {e}")
        max_payload = self.max_payload()
        if len(body) > max_payload:
            # A reply the server would refuse (link.get over many links, a large config) becomes an
            # error the requester can read, instead of no reply at all.
            body = CtlResponse[Any].fail(reply_too_large(len(body), max_payload)).to_wire()
        try:
            await self.nc.publish(msg.reply, body)
        except Exception as e:
            log.warning(
                "could not reply to %s on %s: %s: %s",
                _clip(msg.subject),
                _clip(msg.reply),
                type(e).__name__,
                e,
            )

    def max_payload(self) -> int:
        """The largest payload the connected server accepts (`max_payload` of its INFO)."""
        found = getattr(self.nc, "max_payload", None)
        return found if isinstance(found, int) and found > 0 else limits.MAX_PAYLOAD

    async def _dispatch(self, subject: str, data: bytes) -> Reply:
        try:
            parsed = sj.parse_ctl_subject(subject, self.topic_prefix)
        except UnsupportedSubjectError as e:
            return CtlResponse[Any].fail(str(e))
        op = parsed.operation
        span = tracing.current_span()
        if span is not None:
            span.update_name(f"ctl {op.value}")
            span.set_attribute(tracing.CTL_OPERATION, op.value)
        if parsed.host_id is not None and parsed.host_id != self.host.host_id:
            return CtlResponse[Any].fail(sj.UNSUPPORTED_SUBJECT)
        if len(data) > limits.MAX_PAYLOAD:
            return CtlResponse[Any].fail(
                f"{op.value}: payload of {len(data)} bytes is larger than {limits.MAX_PAYLOAD} bytes"
            )
        if parsed.config_name is not None:
            try:
                limits.check_config_name(parsed.config_name)
            except limits.LimitError as e:
                return CtlResponse[Any].fail(f"{op.value}: config name: {e}")
        try:
            return await self._operation(op, parsed, data)
        except PayloadError as e:
            return CtlResponse[Any].fail(_deserialize_message(op, e))

    async def _operation(self, op: CtlOperation, parsed: sj.CtlSubject, data: bytes) -> Reply:
        if op is CtlOperation.HOST_PING:
            info = self.host.info(ctl_host=self.ctl_host, rpc_host=self.ctl_host, js_domain=self.js_domain)
            return CtlResponse[Any].ok(info.to_json_obj())
        if op is CtlOperation.HOST_GET:
            return CtlResponse[Any].ok(self.host.inventory().to_json_obj())
        if op is CtlOperation.HOST_STOP:
            return self._host_stop(parse_payload(StopHostCommand, data))
        if op is CtlOperation.LABEL_PUT:
            return await self._label_put(parse_payload(HostLabel, data))
        if op is CtlOperation.LABEL_DEL:
            return await self._label_del(parse_payload(HostLabelIdentifier, data))
        if op is CtlOperation.LINK_PUT:
            return await self._link_put(parse_payload(Link, data))
        if op is CtlOperation.LINK_DEL:
            return await self._link_del(parse_payload(DeleteInterfaceLinkDefinitionRequest, data))
        if op is CtlOperation.LINK_GET:
            return CtlResponse[Any].ok([link.to_json_obj() for link in self.state.links()])
        if op is CtlOperation.CLAIMS_GET:
            return CtlResponse[Any].ok(self.state.claims())
        if op in sj.CONFIG_SCOPED_OPS:
            return await self._config(op, parsed.config_name or "", data)
        if op is CtlOperation.REGISTRY_PUT:
            self.host.put_registries(parse_payload(RegistryCredentialMap, data).root)
            return CtlResponse[Any].ok(message=MSG_REGISTRIES_PUT)
        if self.workloads is not None and op in WORKLOAD_OPS:
            return await self.workloads.handle(op, data)
        if op is CtlOperation.COMPONENT_AUCTION:
            # Parse so that a malformed request gets a precise error; a host that runs no
            # components is never a candidate, and non-candidates stay silent.
            parse_payload(ComponentAuctionRequest, data)
            return None
        if op is CtlOperation.PROVIDER_AUCTION:
            parse_payload(ProviderAuctionRequest, data)
            return None
        model = REQUEST_MODELS.get(op.value)
        if model is not None:
            parse_payload(model, data)
        return CtlResponse[Any].fail(
            _COMPONENT_OPS_UNSUPPORTED.format(op=op.value, version=self.host.version)
        )

    def _host_stop(self, cmd: StopHostCommand) -> Reply:
        if cmd.host_id and cmd.host_id != self.host.host_id:
            return CtlResponse[Any].fail(f"invalid host_id [{cmd.host_id}]")
        timeout = None if cmd.timeout is None else cmd.timeout / 1000.0
        if self.on_stop is not None:
            # Deferred so the reply is published before the runner starts shutting down.
            asyncio.get_running_loop().call_soon(self.on_stop, timeout)
        return CtlResponse[Any].ok(message=MSG_HOST_STOP)

    async def _label_put(self, label: HostLabel) -> Reply:
        try:
            self.host.put_label(label.key, label.value)
        except LabelError as e:
            return CtlResponse[Any].fail(str(e))
        await self.publish(ev.labels_changed(self.host.host_id, labels=dict(self.host.labels)))
        return CtlResponse[Any].ok(message=MSG_LABEL_PUT)

    async def _label_del(self, label: HostLabelIdentifier) -> Reply:
        try:
            existed = self.host.delete_label(label.key)
        except LabelError as e:
            return CtlResponse[Any].fail(str(e))
        if not existed:
            return CtlResponse[Any].ok(message=MSG_LABEL_DELETED_ABSENT)
        await self.publish(ev.labels_changed(self.host.host_id, labels=dict(self.host.labels)))
        return CtlResponse[Any].ok(message=MSG_LABEL_DELETED)

    async def _link_put(self, link: Link) -> Reply:
        # A misspelt key on a builtin provider's side would be ignored there (docs/config-keys.md).
        typos = [] if self.providers is None else await self.providers.link_typos(link)
        if typos:
            await self.publish(ev.linkdef_set_failed(self.host.host_id, link, error="; ".join(typos)))
            return CtlResponse[Any].fail("; ".join(typos))
        try:
            await self.state.put_link(link)
        except LinkRejectedError as e:
            await self.publish(ev.linkdef_set_failed(self.host.host_id, link, error=str(e)))
            return CtlResponse[Any].fail(str(e))
        await self._publish_compat_link(link)
        await self.publish(ev.linkdef_set(self.host.host_id, link))
        return CtlResponse[Any].ok(message=MSG_LINK_SET)

    async def _publish_compat_link(self, link: Link) -> None:
        """Publish the stored link to `wasmbus.rpc.<lattice>.<end>.linkdefs.put` for both ends.

        See docs/protocol.md#link-put and docs/protocol.md#provider-messages.

        This is the v1 host's backwards-compatible delivery for providers built for wasmCloud 1.0,
        which listen on their provider ID: an `InterfaceLinkDefinition` whose configs are the
        resolved (merged) named-config maps, secrets null. A link naming any `SECRET*` config is
        not published, so secret values never travel unsealed.
        """
        names = [*link.source_config, *link.target_config]
        if any(sj.is_secret_reference(name) for name in names):
            return
        try:
            # Configs were validated just before; one deleted since then counts as empty
            # (docs/protocol.md#named-config) rather than failing a link that is already stored.
            ild = interface_link(
                link,
                source_config=await self.state.live_config(link.source_config),
                target_config=await self.state.live_config(link.target_config),
            ).to_wire()
            if len(ild) > self.max_payload():
                raise limits.LimitError(reply_too_large(len(ild), self.max_payload()))
            for end in (link.source_id, link.target):
                await self.nc.publish(limits.check_subject(sj.linkdefs_put(end, self.lattice)), ild)
        except Exception as e:
            # The link is stored and reaches providers of this project through the KV watch; a
            # failed compatibility publish is only worth a warning, as in the v1 host.
            log.warning("could not publish linkdefs.put for link from %s: %s", link.source_id, e)

    async def _link_del(self, req: DeleteInterfaceLinkDefinitionRequest) -> Reply:
        exists, removed = await self.state.delete_link(req)
        if not exists:
            return CtlResponse[Any].ok(message=MSG_LINK_DELETED_NO_SPEC)
        if removed is not None:
            # Tell both ends (providers listen on these); configs are empty on delete.
            ild = interface_link(removed).to_wire()
            for end in (removed.source_id, removed.target):
                with contextlib.suppress(Exception):
                    await self.nc.publish(limits.check_subject(sj.linkdefs_del(end, self.lattice)), ild)
        await self.publish(
            ev.linkdef_deleted(
                self.host.host_id,
                source_id=req.source_id,
                name=req.name,
                wit_namespace=req.wit_namespace,
                wit_package=req.wit_package,
                removed=removed,
            )
        )
        return CtlResponse[Any].ok(message=MSG_LINK_DELETED)

    async def _config(self, op: CtlOperation, name: str, data: bytes) -> Reply:
        if op is CtlOperation.CONFIG_PUT:
            try:
                await self.state.put_config(name, data)
            except ValueError as e:
                return CtlResponse[Any].fail(str(e))
            await self.publish(ev.config_set(self.host.host_id, config_name=name))
            return CtlResponse[Any].ok(message=MSG_CONFIG_PUT)
        if op is CtlOperation.CONFIG_GET:
            found = await self.state.get_config(name)
            if found is None:
                return CtlResponse[Any].ok(message=MSG_CONFIG_NOT_FOUND)
            return CtlResponse[Any].ok(found)
        await self.state.delete_config(name)
        await self.publish(ev.config_deleted(self.host.host_id, config_name=name))
        return CtlResponse[Any].ok(message=MSG_CONFIG_DELETED)


def interface_link(
    link: Link, *, source_config: StrMap | None = None, target_config: StrMap | None = None
) -> InterfaceLinkDefinition:
    """The `InterfaceLinkDefinition` providers receive for `link`, with resolved configs.

    See docs/protocol.md#provider-link-definition.
    """
    return InterfaceLinkDefinition(
        source_id=link.source_id,
        target=link.target,
        name=link.name,
        wit_namespace=link.wit_namespace,
        wit_package=link.wit_package,
        interfaces=list(link.interfaces),
        source_config=dict(source_config or {}),
        target_config=dict(target_config or {}),
    )


def _clip(subject: str, limit: int = 200) -> str:
    """A subject for the log, cut short: a requester chooses its reply subject's length."""
    return subject if len(subject) <= limit else f"{subject[:limit]}…({len(subject)} characters)"


def reply_too_large(size: int, max_payload: int) -> str:
    """Reply text for a reply or message larger than the server's payload limit."""
    return f"the reply of {size} bytes exceeds the NATS server's max_payload of {max_payload} bytes"


def _deserialize_message(op: CtlOperation, error: PayloadError) -> str:
    """The reply text for a body that does not parse: the v1 host's wording, then the precise cause."""
    if op is CtlOperation.COMPONENT_SCALE:
        return f"{MSG_SCALE_DESERIALIZE}: {error.message}"
    if op is CtlOperation.LINK_PUT:
        return f"{MSG_LINK_DESERIALIZE}: {error.message}"
    return error.message
