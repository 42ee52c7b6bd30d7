"""The builtin HTTP client provider (docs/protocol.md#builtin-providers): outgoing HTTP of lattice components.

A component's `wasi:http/outgoing-handler.handle` resolves, on every call, the component's link for
`wasi:http/outgoing-handler` (link name `default` unless the instance chose another) to an
http-client provider running on this host, and sends the request through that provider's pooled,
keep-alive aiohttp client, with the timeouts of the guest's `request-options`. A deleted link fails
the next call; a re-added one serves it.

Destinations: the link's target config key `allowed_hosts` is a comma-separated allow-list of
`host`, `host:port` (IPv6 as `[addr]:port`) or `*`; a request elsewhere gets `HTTP-request-denied`
(and a log line). Without the key every destination is allowed: the link itself is the operator's
grant of outgoing HTTP, and wasmCloud's http-client, whose manifests we accept, has no allow-list.
`allowed_hosts=` (empty) allows none. `wasmlattice run` keeps its own deny-by-default
`--allow-outgoing` list; there is no link there.

Failures reach the guest in `wasi:http`'s own `error-code`: no link or no provider ->
`internal-error(message)` (logged with the component ID), unresolvable name -> `DNS-error`,
refused connection -> `connection-refused`, a timeout -> `connection-timeout`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from wasmlattice.capabilities.base import (
    CapabilityError,
    ComponentContext,
    LinkTargetProvider,
    ProviderSpec,
    capability_span,
    lower_config,
)
from wasmlattice.capabilities.config_keys import KeySet, ProviderKeys
from wasmlattice.protocol.models import Link, StrMap
from wasmlattice.runtime.execution import NeedsLoop
from wasmlattice.runtime.linking import HostInterface
from wasmlattice.runtime.witypes import Err
from wasmlattice.wasi.ctx import WasiCtx
from wasmlattice.wasi.http_client import OutgoingClient, destination_allowed, request_target
from wasmlattice.wasi.http_outgoing import (
    FutureIncomingResponse,
    OutgoingRequest,
    RequestOptions,
    set_component_sender,
)
from wasmlattice.wasi.http_types import internal_error

log = logging.getLogger(__name__)

OUTGOING_HANDLER = "wasi:http/outgoing-handler"
ALLOWED_HOSTS_KEY = "allowed_hosts"


@dataclass(frozen=True)
class DestinationPolicy:
    """Which destinations one link may reach: `allowed` entries, or every one when None."""

    allowed: tuple[str, ...] | None

    @classmethod
    def from_config(cls, config: StrMap) -> DestinationPolicy:
        """The policy of a link's merged target config (key `allowed_hosts`, case-insensitive)."""
        raw = lower_config(config).get(ALLOWED_HOSTS_KEY)
        if raw is None:
            return cls(None)
        entries = tuple(e.strip() for e in raw.split(",") if e.strip())
        for entry in entries:
            _check_entry(entry)
        return cls(entries)

    def permits(self, host: str, port: int) -> bool:
        """Whether a request to `host:port` may be sent."""
        return self.allowed is None or destination_allowed(self.allowed, host, port)

    def describe(self) -> str:
        """The allow-list as an operator wrote it (for log lines)."""
        return "*" if self.allowed is None else ",".join(self.allowed) or "(empty: nothing allowed)"


def _check_entry(entry: str) -> None:
    # A typo such as `example.com:80x` would otherwise silently deny every request.
    if entry == "*":
        return
    if entry.startswith("["):
        _, close, rest = entry.partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        bad = not close or (rest and not rest.startswith(":"))
    elif entry.count(":") == 1:
        port = entry.split(":")[1]
        bad = not entry.split(":")[0]
    else:
        port, bad = "", False
    if bad or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise CapabilityError(
            f"invalid entry {entry!r} in `{ALLOWED_HOSTS_KEY}`: use `host`, `host:port`, `[ipv6]:port` or `*`"
        )


class HttpClientProvider(LinkTargetProvider):
    """`builtin://http-client`: sends linked components' outgoing requests over one pooled client."""

    kind = "http-client"

    def __init__(self, spec: ProviderSpec) -> None:
        super().__init__(spec)
        # One connection pool for all links: keep-alive connections to a host are shared.
        self.client = OutgoingClient(spec.services.loop)

    async def open_backend(self, link: Link, config: StrMap) -> DestinationPolicy:
        """The destination policy of one link (its target config)."""
        return DestinationPolicy.from_config(config)

    async def close_backend(self, backend: Any) -> None:
        """Policies hold nothing; the shared client is closed with the provider."""

    async def stop(self) -> None:
        """Forget the links' policies and close pooled connections."""
        await super().stop()
        await self.client.close()


def send_outgoing(
    wctx: WasiCtx, request: OutgoingRequest, options: RequestOptions | None
) -> FutureIncomingResponse:
    """`outgoing-handler.handle` for a component on a lattice host; called on the guest's thread."""
    if wctx.inline:
        # Before resolving anything, so that a missing link is reported once, by the retry.
        raise NeedsLoop("an outgoing request needs the event loop")
    comp = wctx.config.component
    assert isinstance(comp, ComponentContext)
    metrics = comp.services.metrics
    if metrics is None:
        return _send(wctx, comp, request, options)
    # Counted as a capability call (docs/observability.md#metrics): an error is one `handle`
    # itself answers (no link, a denied destination); the response's own failure comes later.
    try:
        started = _send(wctx, comp, request, options)
    except BaseException:
        metrics.capability_call(comp.component_id, OUTGOING_HANDLER, "handle", False)
        raise
    metrics.capability_call(comp.component_id, OUTGOING_HANDLER, "handle", True)
    return started


def _send(
    wctx: WasiCtx, comp: ComponentContext, request: OutgoingRequest, options: RequestOptions | None
) -> FutureIncomingResponse:
    try:
        link, provider = comp.target(OUTGOING_HANDLER)
        if not isinstance(provider, HttpClientProvider):
            raise comp.error(
                f"`{link.target}` (the target of link `{link.name}` for `{OUTGOING_HANDLER}`) is not an "
                "http-client provider; link the component to one started from builtin://http-client"
            )
        try:
            policy: DestinationPolicy = comp.run(lambda: provider.backend(link))
        except CapabilityError as e:
            raise comp.error(f"link `{link.name}` for `{OUTGOING_HANDLER}` cannot be used: {e}") from None
    except CapabilityError as e:
        raise Err(internal_error(str(e))) from None
    target = request_target(request)
    if not policy.permits(target.host, target.port):
        log.warning(
            "component %s: outgoing request to %s:%s denied: not in `%s` (%s) of link `%s` to %s",
            comp.component_id,
            target.host,
            target.port,
            ALLOWED_HOSTS_KEY,
            policy.describe(),
            link.name,
            link.target,
        )
        raise Err(("HTTP-request-denied", None))
    with capability_span(comp, OUTGOING_HANDLER, "handle", link, "http-client"):
        return provider.client.start(wctx, request, options, target)


set_component_sender(send_outgoing)


def interfaces() -> list[HostInterface]:
    """None of its own: `wasi/http.py` binds `outgoing-handler`, which calls `send_outgoing` on a host."""
    return []


PROVIDERS = {"builtin://http-client": HttpClientProvider}
# Every config this provider reads (capabilities/config_keys.py). wasmCloud's http-client reads
# its TLS roots from these provider config keys; ours uses the system's.
CONFIG_KEYS = {
    "builtin://http-client": ProviderKeys(
        "http-client",
        provider=KeySet((), ("load_native_certs", "load_webpki_certs", "ssl_certs_file")),
        target=KeySet((ALLOWED_HOSTS_KEY,)),
    )
}
ALIASES = {"wasmcloud+builtin://http-client": "builtin://http-client"}
