"""The builtin NATS messaging provider (`wasmcloud:messaging@0.2.0`, docs/protocol.md#builtin-providers).

Provider `builtin://messaging-nats` (wasmCloud's spelling `wasmcloud+builtin://messaging-nats`
is an alias) serves both directions of the interface:

- **consumer** (component imports it; link component -> provider): `publish` and `request` go
  over the host's own NATS connection, or, when the link's target config has `cluster_uris`
  (comma list of URLs), over a connection opened for that link (optional `client_jwt` +
  `client_seed`, `tls_ca` (PEM), `custom_inbox_prefix`). `request` waits `timeout-ms` for one
  reply (0 means the default, 10 s). Every failure (no link, time-out, no responders, bad subject,
  lost connection) is the interface's `Err(string)`, saying what failed.
- **handler** (component exports it; link provider -> component, `wasmcloud:messaging`
  `["handler"]`): the link's source config `subscriptions` (comma list; `subject|queue` subscribes
  in a queue group; `cluster_uris` etc. as above select another NATS) names what to subscribe
  to, and every message is handed to the component's `handle-message` on a fresh instance, within
  its `max_instances` (enforced by `ComponentRegistry.invoke`). An `Err` or a trap is logged with
  the component ID, the subject and the reason; the next message is handled as usual.

Links are followed live: a put or delete anywhere in the lattice re-applies this provider's
subscriptions (one coalesced re-sync at a time, as the HTTP server provider does).

Only components running on this host are invoked. A link's subscriptions are held only while its
target component runs here (checked every `LOCAL_CHECK_S`), so a host without the component takes
no messages from a queue group that another host's instance of this provider (same provider ID)
serves. Without a queue group every host running both provider and component handles each
message, as in wasmCloud: use a queue group for work that must be done once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors

from wasmlattice.aio import wait_for
from wasmlattice.capabilities.base import (
    CapabilityError,
    ComponentContext,
    LinkTargetProvider,
    ProviderSpec,
    call_here_or_failure,
    capability_span,
    component,
    lower_config,
)
from wasmlattice.capabilities.config_keys import KeySet, ProviderKeys
from wasmlattice.protocol.connection import LatticeClient
from wasmlattice.protocol.models import Link, StrMap
from wasmlattice.runtime.linking import HostInterface
from wasmlattice.runtime.witypes import BYTES, STRING, U32, Err, FuncSig, func, option, record, result

log = logging.getLogger(__name__)

REF = "builtin://messaging-nats"
CONSUMER = "wasmcloud:messaging/consumer"
HANDLER = "wasmcloud:messaging/handler"

# `request` with timeout-ms 0 waits this long (wasmCloud's default invocation time-out).
DEFAULT_REQUEST_TIMEOUT_MS = 10_000
# Extra time the guest thread waits beyond a request's own time-out, so NATS reports it first.
RUN_MARGIN_S = 5.0
# How often the provider checks which linked components run on this host.
LOCAL_CHECK_S = 1.0
# After a link's subscriptions could not be made (its cluster unreachable), wait this long to retry.
RETRY_S = 10.0
# Messages being handed to components at once, per provider; beyond it the NATS subscription
# waits (its own pending limits then apply), so a flood cannot create unbounded tasks.
MAX_IN_FLIGHT = 1024
CONNECT_TIMEOUT_S = 5

BROKER_MESSAGE = record(subject=STRING, body=BYTES, reply_to=option(STRING))
SIGNATURES: dict[str, FuncSig] = {
    "request": func(STRING, BYTES, U32, returns=result(BROKER_MESSAGE, STRING)),
    "publish": func(BROKER_MESSAGE, returns=result(None, STRING)),
}

BrokerMessage = tuple[str, bytes, str | None]


def is_handler_link(link: Link, provider_id: str) -> bool:
    """Whether `link` delivers messages from this provider to a component's handler."""
    return (
        link.source_id == provider_id
        and link.wit_namespace == "wasmcloud"
        and link.wit_package == "messaging"
        and "handler" in link.interfaces
    )


def parse_subscriptions(value: str) -> list[tuple[str, str]]:
    """`a.b, c.*|workers` as [(subject, queue group or "")]; `ValueError` for an empty subject."""
    out: list[tuple[str, str]] = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            continue
        subject, sep, queue = entry.partition("|")
        subject, queue = subject.strip(), queue.strip()
        problem = subject_problem(subject, publishing=False)
        if problem is None and ((sep and not queue) or any(c.isspace() for c in queue)):
            problem = f"queue group {queue!r} is empty or contains whitespace"
        if problem is not None:
            raise ValueError(f"invalid subscription {entry!r} (use SUBJECT or SUBJECT|QUEUE): {problem}")
        out.append((subject, queue))
    return out


def subject_problem(subject: str, publishing: bool) -> str | None:
    """Why `subject` cannot be sent to, or None if it can."""
    if not subject:
        return "the subject is empty"
    if any(c.isspace() for c in subject):
        return f"subject {subject!r} contains whitespace"
    tokens = subject.split(".")
    if any(not t for t in tokens):
        return f"subject {subject!r} has an empty token (leading, trailing or double `.`)"
    if publishing and any(t in ("*", ">") for t in tokens):
        return f"subject {subject!r} has a wildcard; messages are sent to concrete subjects"
    return None


async def connect_for_link(config: StrMap, what: str) -> Any:
    """A NATS connection from a link's `cluster_uris` (and credentials); `CapabilityError` if refused."""
    servers = [u.strip() for u in config["cluster_uris"].split(",") if u.strip()]
    if not servers:
        raise CapabilityError(f"{what}: `cluster_uris` is empty; give one or more nats:// URLs")
    opts: dict[str, Any] = {
        "servers": servers,
        "name": f"wasmlattice {what}",
        "connect_timeout": CONNECT_TIMEOUT_S,
        "allow_reconnect": True,
        # Bounded while connecting (a wrong URL fails the call), unbounded once connected.
        "max_reconnect_attempts": 1,
    }
    if config.get("custom_inbox_prefix"):
        opts["inbox_prefix"] = config["custom_inbox_prefix"]
    jwt, seed = config.get("client_jwt"), config.get("client_seed")
    if bool(jwt) != bool(seed):
        raise CapabilityError(f"{what}: `client_jwt` and `client_seed` must be given together")
    if jwt and seed:
        import nkeys

        try:
            keys = nkeys.from_seed(seed.encode())
        except Exception as e:
            raise CapabilityError(f"{what}: `client_seed` is not a valid nkeys seed: {e}") from None
        opts["user_jwt_cb"] = lambda: jwt.encode()
        opts["signature_cb"] = lambda nonce: base64.b64encode(keys.sign(nonce.encode()))
    if config.get("tls_ca"):
        try:
            opts["tls"] = ssl.create_default_context(cadata=config["tls_ca"])
        except (ssl.SSLError, ValueError) as e:
            raise CapabilityError(f"{what}: `tls_ca` is not a usable PEM CA certificate: {e}") from None

    connected = False

    async def on_error(e: Exception) -> None:
        # Errors of the first connect are the exception below; later ones are worth a warning.
        if connected:
            log.warning("%s: NATS connection to %s: %s", what, ",".join(servers), e)

    opts["error_cb"] = on_error
    try:
        # Our client (docs/nats.md): a guest's subject that nats-server drops the connection over
        # leads to a reconnect, not a dead connection, and a cut-short flush leaves it reading.
        nc = LatticeClient()
        await nc.connect(**opts)
        nc.options["max_reconnect_attempts"] = -1
        connected = True
        return nc
    except Exception as e:
        raise CapabilityError(
            f"{what}: cannot connect to NATS at {','.join(servers)} (`cluster_uris`): {e or type(e).__name__}"
        ) from None


@dataclass
class NatsBackend:
    """What one consumer link sends through: a NATS connection, the host's or its own."""

    nc: Any
    owned: bool

    async def publish(self, subject: str, body: bytes, reply_to: str | None) -> None:
        """Publish one message; `CapabilityError` if NATS refuses it."""
        try:
            await self.nc.publish(subject, body, reply=reply_to or "")
        except nats.errors.MaxPayloadError:
            raise CapabilityError(
                f"publish to {subject} failed: the body ({len(body)} bytes) exceeds the NATS server's "
                f"max_payload ({self.nc.max_payload} bytes)"
            ) from None
        except nats.errors.Error as e:
            raise CapabilityError(f"publish to {subject} failed: {_describe(e)}") from None

    async def request(self, subject: str, body: bytes, timeout_ms: int) -> BrokerMessage:
        """Send a request and wait for one reply; `CapabilityError` on time-out or no responders."""
        try:
            msg = await self.nc.request(subject, body, timeout=timeout_ms / 1000)
        except nats.errors.NoRespondersError:
            raise CapabilityError(
                f"request to {subject} failed: no responders (nothing subscribes to it)"
            ) from None
        except (nats.errors.TimeoutError, TimeoutError):
            raise CapabilityError(f"request to {subject} timed out after {timeout_ms} ms") from None
        except nats.errors.MaxPayloadError:
            raise CapabilityError(
                f"request to {subject} failed: the body ({len(body)} bytes) exceeds the NATS server's "
                f"max_payload ({self.nc.max_payload} bytes)"
            ) from None
        except nats.errors.Error as e:
            raise CapabilityError(f"request to {subject} failed: {_describe(e)}") from None
        return (msg.subject, msg.data, msg.reply or None)

    async def close(self) -> None:
        """Close the connection if it is this link's own."""
        if self.owned:
            with contextlib.suppress(Exception):
                await wait_for(self.nc.drain(), 2.0)
            with contextlib.suppress(Exception):
                await self.nc.close()


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    return text or type(e).__name__


@dataclass
class _HandlerLink:
    """One handler link: its subscriptions, held while the target component runs on this host."""

    link: Link
    config: StrMap
    subscriptions: list[tuple[str, str]]
    conn: Any = None
    owned: bool = False
    subs: list[Any] = field(default_factory=list)
    retry_at: float = 0.0  # monotonic time before which a failed activation is not retried

    @property
    def active(self) -> bool:
        return self.conn is not None


class NatsMessagingProvider(LinkTargetProvider):
    """An in-process `messaging-nats` provider on one host."""

    kind = "messaging-nats"

    def __init__(self, spec: ProviderSpec) -> None:
        super().__init__(spec)
        self._links: dict[tuple[str, str], _HandlerLink] = {}
        self._sync_lock = asyncio.Lock()
        self._resync = self.sup.resync(
            "links",
            self.sync,
            what=f"messaging-nats {spec.provider_id}",
            failure="applying lattice changes failed",
        )
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)

    # -- consumer: component -> provider --------------------------------------------------------

    async def open_backend(self, link: Link, config: StrMap) -> NatsBackend:
        """The host's connection, or one of the link's own when its target config has `cluster_uris`."""
        cfg = lower_config(config)
        if cfg.get("cluster_uris"):
            what = f"messaging-nats {self.provider_id} link `{link.name}` from {link.source_id}"
            return NatsBackend(await connect_for_link(cfg, what), owned=True)
        if self.services.nc is None:
            raise CapabilityError(f"messaging-nats {self.provider_id}: the host has no NATS connection")
        return NatsBackend(self.services.nc, owned=False)

    # -- handler: provider -> component ---------------------------------------------------------

    async def start(self) -> None:
        """Apply the links already known and follow later changes."""
        await super().start()
        self.services.state.listeners.append(self._resync.poke)
        await self.sync()
        self.sup.supervise("local-components", self._check_local_forever, restart="transient")

    async def stop(self) -> None:
        """Unsubscribe everything, stop following links, close every connection opened."""
        self._stopped = True
        with contextlib.suppress(ValueError):
            self.services.state.listeners.remove(self._resync.poke)
        await self._resync.stop()
        child = self.sup.child("local-components")
        if child is not None:
            await child.stop()
        async with self._sync_lock:
            for key in list(self._links):
                await self._deactivate(self._links.pop(key))
        await super().stop()  # stops the supervisor: deliveries still running are cancelled

    def subscribed(self) -> list[tuple[str, str, str]]:
        """(component ID, subject, queue) of every subscription held now."""
        return sorted(
            (h.link.target, subject, queue)
            for h in self._links.values()
            if h.active
            for subject, queue in h.subscriptions
        )

    async def _check_local_forever(self) -> None:
        # Components scale without a LATTICEDATA change: notice them arriving and leaving here.
        while not self._stopped:
            await asyncio.sleep(LOCAL_CHECK_S)
            try:
                async with self._sync_lock:
                    await self._apply_local()
            except Exception:
                log.exception("messaging-nats %s: checking local components failed", self.provider_id)

    async def sync(self) -> None:
        """Make the subscriptions match this provider's handler links in the lattice state."""
        async with self._sync_lock:
            wanted: dict[tuple[str, str], tuple[Link, StrMap]] = {}
            for link in self.services.state.links():
                if not is_handler_link(link, self.provider_id):
                    continue
                try:
                    cfg = lower_config(await self.services.state.merged_config(link.source_config))
                except Exception as e:
                    log.error(
                        "messaging-nats %s: link `%s` to %s not served: its source config: %s",
                        self.provider_id,
                        link.name,
                        link.target,
                        e,
                    )
                    continue
                wanted[(link.name, link.target)] = (link, cfg)
            for key, current in list(self._links.items()):
                if wanted.get(key) != (current.link, current.config):
                    del self._links[key]
                    await self._deactivate(current)
            for key, (link, cfg) in wanted.items():
                if key in self._links:
                    continue
                try:
                    subscriptions = parse_subscriptions(cfg.get("subscriptions", ""))
                except ValueError as e:
                    log.error(
                        "messaging-nats %s: link to %s not served: %s", self.provider_id, link.target, e
                    )
                    continue
                if not subscriptions:
                    log.warning(
                        "messaging-nats %s: link `%s` to %s has no `subscriptions` in its source config; "
                        "it receives nothing",
                        self.provider_id,
                        link.name,
                        link.target,
                    )
                if cfg.get("consumers"):
                    log.warning(
                        "messaging-nats %s: link to %s: JetStream `consumers` are not supported; "
                        "only `subscriptions` are served",
                        self.provider_id,
                        link.target,
                    )
                self._links[key] = _HandlerLink(link, cfg, subscriptions)
            await self._apply_local()

    async def _apply_local(self) -> None:
        # Hold each link's subscriptions exactly while its target component runs on this host.
        router = self.services.router
        for handler in list(self._links.values()):
            here = router is not None and router.runs_here(handler.link.target)
            if here and not handler.active and handler.subscriptions and time.monotonic() >= handler.retry_at:
                await self._activate(handler)
            elif not here and handler.active:
                await self._deactivate(handler)

    async def _activate(self, handler: _HandlerLink) -> None:
        link = handler.link
        what = f"messaging-nats {self.provider_id} link `{link.name}` to {link.target}"
        try:
            if handler.config.get("cluster_uris"):
                conn, owned = await connect_for_link(handler.config, what), True
            elif self.services.nc is not None:
                conn, owned = self.services.nc, False
            else:
                raise CapabilityError(f"{what}: the host has no NATS connection")
        except CapabilityError as e:
            handler.retry_at = time.monotonic() + RETRY_S
            log.error("%s (retrying in %.0fs)", e, RETRY_S)
            return
        handler.conn, handler.owned = conn, owned
        deliver = self._deliverer(link.target)
        for subject, queue in handler.subscriptions:
            try:
                handler.subs.append(await conn.subscribe(subject, queue=queue, cb=deliver))
            except Exception as e:
                log.error("%s: cannot subscribe to %s: %s", what, subject, _describe(e))
                continue
            log.info("%s: subscribed to %s%s", what, subject, f" (queue group {queue})" if queue else "")
        if not owned:
            # The subscriptions reach the server with the next flush; make them effective now.
            with contextlib.suppress(Exception):
                await conn.flush(2)

    async def _deactivate(self, handler: _HandlerLink) -> None:
        subs, handler.subs = handler.subs, []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if handler.active:
            log.info(
                "messaging-nats %s: unsubscribed link `%s` to %s",
                self.provider_id,
                handler.link.name,
                handler.link.target,
            )
        conn, handler.conn = handler.conn, None
        if conn is not None and handler.owned:
            await NatsBackend(conn, owned=True).close()

    def _deliverer(self, component_id: str) -> Callable[[Any], Any]:
        async def on_message(msg: Any) -> None:
            # Waits (holding back this subscription) while MAX_IN_FLIGHT deliveries run.
            await self._in_flight.acquire()
            try:
                task = self.sup.spawn("delivery", self._deliver(component_id, msg))
            except BaseException:
                self._in_flight.release()
                raise
            task.add_done_callback(self._delivered)

        return on_message

    def _delivered(self, _task: asyncio.Task[None]) -> None:
        self._in_flight.release()

    async def _deliver(self, component_id: str, msg: Any) -> None:
        """Hand one message to the component's `handle-message`; log what goes wrong."""
        router = self.services.router
        subject = msg.subject
        if router is None or not router.runs_here(component_id):
            log.debug(
                "messaging-nats %s: message on %s skipped: %s is not running here",
                self.provider_id,
                subject,
                component_id,
            )
            return
        message: BrokerMessage = (subject, bytes(msg.data), msg.reply or None)
        outcome, failure = await call_here_or_failure(
            router, component_id, HANDLER, "handle-message", message, describe=_describe
        )
        if failure is None:
            if not isinstance(outcome, Err):
                return
            what, reason = "returned an error for", str(outcome.value)
        else:
            kinds = {"trapped": "trapped handling", "unavailable": "could not be given"}
            what, reason = kinds.get(failure.kind, "failed handling"), failure.reason
        log.error(
            "messaging-nats %s: component %s %s a message on %s: %s",
            self.provider_id,
            component_id,
            what,
            subject,
            reason,
        )


# -- host functions of `wasmcloud:messaging/consumer` ---------------------------------------------


def _backend() -> tuple[ComponentContext, NatsBackend, Link]:
    """The calling component, the backend its consumer link selects and the link; `Err` with the reason."""
    try:
        comp = component()
        lk, provider = comp.target(CONSUMER)
        if not isinstance(provider, NatsMessagingProvider):
            raise comp.error(f"`{lk.target}` (the target of link `{lk.name}`) does not serve `{CONSUMER}`")
        backend: NatsBackend = comp.run(lambda: provider.backend(lk))
    except CapabilityError as e:
        raise Err(str(e)) from None
    return comp, backend, lk


def _failed(comp: ComponentContext, e: CapabilityError) -> Err:
    # Time-outs and no-responders are a guest's everyday outcomes: a warning, not an error.
    log.warning("component %s: %s", comp.component_id, e)
    return Err(str(e))


def consumer_request(subject: str, body: bytes, timeout_ms: int) -> BrokerMessage:
    """`request`: send to `subject`, return the first reply (`Err` on time-out or no responders)."""
    comp, backend, lk = _backend()
    problem = subject_problem(subject, publishing=True)
    if problem is not None:
        raise _failed(comp, CapabilityError(f"request failed: {problem}"))
    wait_ms = timeout_ms or DEFAULT_REQUEST_TIMEOUT_MS
    try:
        with capability_span(comp, CONSUMER, "request", lk, "nats"):
            return comp.run(
                lambda: backend.request(subject, body, wait_ms), timeout=wait_ms / 1000 + RUN_MARGIN_S
            )
    except CapabilityError as e:
        raise _failed(comp, e) from None


def consumer_publish(msg: BrokerMessage) -> None:
    """`publish`: send one message (`Err` if it cannot be sent)."""
    subject, body, reply_to = msg
    comp, backend, lk = _backend()
    problem = subject_problem(subject, publishing=True)
    if problem is None and reply_to is not None:
        problem = subject_problem(reply_to, publishing=True)
        problem = None if problem is None else f"reply-to: {problem}"
    if problem is not None:
        raise _failed(comp, CapabilityError(f"publish failed: {problem}"))
    try:
        with capability_span(comp, CONSUMER, "publish", lk, "nats"):
            comp.run(lambda: backend.publish(subject, body, reply_to))
    except CapabilityError as e:
        raise _failed(comp, e) from None


def interfaces() -> list[HostInterface]:
    """`wasmcloud:messaging/consumer@0.2.0` (and its function-less `types`)."""
    return [
        HostInterface("wasmcloud:messaging/types", {}, versions=("0.2.0",)),
        HostInterface(
            CONSUMER,
            {"request": consumer_request, "publish": consumer_publish},
            versions=("0.2.0",),
            signatures=SIGNATURES,
        ),
    ]


def _factory(spec: ProviderSpec) -> NatsMessagingProvider:
    return NatsMessagingProvider(spec)


PROVIDERS = {REF: _factory}
# The keys of a link's own NATS connection (either side).
_CONNECTION_KEYS = ("cluster_uris", "client_jwt", "client_seed", "tls_ca", "custom_inbox_prefix")
# wasmCloud's messaging-nats also reads these (and takes every link key as a provider-wide
# default from its provider config); ours does not act on them.
_FOREIGN = ("tls_ca_file",)
# Every config this provider reads (capabilities/config_keys.py).
CONFIG_KEYS = {
    REF: ProviderKeys(
        "messaging-nats",
        provider=KeySet((), ("subscriptions", "consumers", *_CONNECTION_KEYS, *_FOREIGN)),
        source=KeySet(("subscriptions", "consumers", *_CONNECTION_KEYS), _FOREIGN),
        target=KeySet(_CONNECTION_KEYS, _FOREIGN),
    )
}
ALIASES = {"wasmcloud+builtin://messaging-nats": REF}
