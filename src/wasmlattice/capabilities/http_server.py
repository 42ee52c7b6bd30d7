"""The builtin HTTP server provider (docs/protocol.md#builtin-providers): HTTP ingress to components.

A link from the provider (`source_id` = provider ID) to a component on `wasi:http/incoming-handler`
routes requests to that component. Routing modes (provider config `routing_mode`):

- `address` (default): each link's source config names the listener, `address=HOST:PORT` (or
  `port=N` on `default_address`'s host); one component per address.
- `path`: one listener on the provider config's `default_address` (default `0.0.0.0:8000`); each
  link's source config `path=/prefix` routes requests whose path is that prefix, or starts with it
  followed by `/`, to the component (longest prefix wins; the guest sees the full path).
- `host`: one listener on `default_address`; each link's source config `host=name` routes requests
  whose `Host` header (or the header the provider config `header` names) is that name, compared
  case-insensitively and without the port. A request for no linked name gets 404.

TLS: the keys `tls_cert_file` and `tls_priv_key_file` (PEM files, as in wasmCloud's
`ServiceSettings`) in the provider config make its listeners serve HTTPS; in address mode a link's
source config may carry its own pair for its listener. A file that cannot be loaded fails the
provider's start (a bad pair in a link's config: that link is not served, and the reason is logged).

Client limits (`IngressLimits`, docs/lattice.md): `header_timeout`, `idle_timeout`, `body_timeout`
(seconds) and `max_connections` (per listener) in the provider config apply to its listeners; in
address mode a link's source config may set its own for its listener.

A listener that cannot be opened (the port is taken, a link's TLS files are unreadable) is tried
again with backoff (0.5 s doubling to 30 s, a supervised resync) without waiting for a lattice change;
while any is failing, `health()` is unhealthy with each address and its error, so the host's health
checks publish `health_check_failed` and log why.

Listeners use SO_REUSEPORT, so several hosts of a lattice may serve the same address. Links come
from the lattice state: a put or delete on any host reaches every host's view, and the host that
runs the provider re-applies its routes. Requests run on local instances of the target component
when this host runs it, within its `max_instances`. Otherwise they are forwarded over wRPC as
`wrpc:http/incoming-handler@0.1.0` `handle` to whichever host of the lattice runs it (its queue
group), with bodies streamed both ways (`host/wrpc_http.py`); when none does, the answer is 503.
The host's router makes that choice for every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from aiohttp import web

from wasmlattice.aio import wait_for
from wasmlattice.capabilities.base import ComponentRouter, HostServices, provider_supervisor
from wasmlattice.capabilities.config_keys import KeySet, ProviderKeys, first_typo
from wasmlattice.capabilities.http_ingress import (
    Forward,
    HttpHandler,
    HttpTarget,
    IngressLimits,
    IngressServer,
    PendingTarget,
    bind_socket,
    error_response,
)
from wasmlattice.protocol.models import Link, ProviderDescription, StrMap
from wasmlattice.protocol.state import LatticeState
from wasmlattice.supervision import RetryLater

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "0.0.0.0:8000"
ROUTING_MODES = ("address", "path", "host")
# Modes with one listener on `default_address` for the provider's lifetime, shared by all links.
SHARED_LISTENER_MODES = ("path", "host")
TLS_CERT_KEY = "tls_cert_file"
TLS_KEY_KEY = "tls_priv_key_file"
# Request limits of the provider's listeners (as `wasmlattice run`'s defaults).
MAX_BODY = 64 * 1024 * 1024
MAX_HEADER_SIZE = 8190
CLOSE_GRACE = 5.0  # seconds


class ProviderConfigError(ValueError):
    """The provider's or a link's configuration cannot be used; the message says why."""


def is_http_link(link: Link, provider_id: str) -> bool:
    """Whether `link` routes HTTP from this provider to a component."""
    return (
        link.source_id == provider_id
        and link.wit_namespace == "wasi"
        and link.wit_package == "http"
        and "incoming-handler" in link.interfaces
    )


def split_address(address: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 hosts in brackets) as a (host, port) pair; `ProviderConfigError` if invalid."""
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ProviderConfigError(f"invalid address {address!r}: use HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def _lower(config: Mapping[str, str]) -> StrMap:
    # Link and provider config keys are case-insensitive in wasmCloud's http-server.
    return {k.lower(): v for k, v in config.items()}


def host_key(value: str) -> str:
    """A host name as routes compare it: lower case, without port, brackets or a trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


# (certificate file, private key file) of a listener serving HTTPS.
TlsFiles = tuple[str, str]


def tls_files(config: Mapping[str, str], where: str) -> TlsFiles | None:
    """The TLS file pair named in a (lower-cased) config, None if neither key is set."""
    cert, key = config.get(TLS_CERT_KEY, "").strip(), config.get(TLS_KEY_KEY, "").strip()
    if not cert and not key:
        return None
    if not cert or not key:
        given, missing = (TLS_CERT_KEY, TLS_KEY_KEY) if cert else (TLS_KEY_KEY, TLS_CERT_KEY)
        raise ProviderConfigError(f"{where} sets `{given}` but not `{missing}`; HTTPS needs both files")
    return cert, key


def ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """A server-side TLS context from a PEM certificate (chain) and its private key."""
    cert, key = files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ProviderConfigError(
            f"cannot load the TLS certificate {cert!r} with private key {key!r}: {e}; "
            f"`{TLS_CERT_KEY}` and `{TLS_KEY_KEY}` must name readable PEM files of one key pair"
        ) from None
    return context


LIMIT_KEYS = ("header_timeout", "idle_timeout", "body_timeout", "max_connections")


def ingress_limits(config: Mapping[str, str], where: str, base: IngressLimits) -> IngressLimits:
    """`base` with the client limits a (lower-cased) config sets; `ProviderConfigError` if invalid."""
    changes: dict[str, float | int] = {}
    for key in LIMIT_KEYS:
        text = config.get(key, "").strip()
        if not text:
            continue
        try:
            value = int(text) if key == "max_connections" else float(text)
        except ValueError:
            value = 0
        if not 0 < value < 1e9:
            unit = "a whole number of connections" if key == "max_connections" else "seconds"
            raise ProviderConfigError(
                f"{where} sets `{key}` to {text!r}; it must be a positive number ({unit})"
            )
        changes[key] = value
    return replace(base, **changes) if changes else base  # type: ignore[arg-type]


# The keys this server reads from a link's source config.
LINK_CONFIG_KEYS = ("address", "port", "path", "host", TLS_CERT_KEY, TLS_KEY_KEY, *LIMIT_KEYS)
# Keys wasmCloud's http-server reads (its `ServiceSettings`) that this one does not act on: accepted,
# so manifests written for wasmCloud keep deploying, and never taken for typos.
FOREIGN_LINK_CONFIG_KEYS = (
    "config_json",
    "config_b64",
    "cors_allowed_origins",
    "cors_allowed_headers",
    "cors_allowed_methods",
    "cors_exposed_headers",
    "cors_max_age_secs",
    "timeout_ms",
    "readonly_mode",
    "max_content_len",
    "disable_keepalive",
    "cache_control",
)


# The keys this server reads from its provider config.
PROVIDER_CONFIG_KEYS = ("routing_mode", "default_address", "header", TLS_CERT_KEY, TLS_KEY_KEY, *LIMIT_KEYS)
# Every config this provider reads (capabilities/config_keys.py); nothing links to it as a target.
KEYS = ProviderKeys(
    "http-server",
    provider=KeySet(PROVIDER_CONFIG_KEYS, FOREIGN_LINK_CONFIG_KEYS),
    source=KeySet(LINK_CONFIG_KEYS, FOREIGN_LINK_CONFIG_KEYS),
)
CONFIG_KEYS = {"builtin://http-server": KEYS}


def path_matches(prefix: str, path: str) -> bool:
    """Whether a request path falls under a route prefix (`/api` matches `/api` and `/api/x`)."""
    prefix = prefix.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


@dataclass
class _Listener:
    """One listening socket and the routes it serves (one in address mode, several otherwise)."""

    address: tuple[str, int]
    runner: web.ServerRunner
    handler: HttpHandler
    tls: TlsFiles | None = None
    limits: IngressLimits = field(default_factory=IngressLimits)
    # Path prefix (path mode), host name (host mode) or "" (address mode) -> component ID.
    routes: dict[str, str] = field(default_factory=dict)


class HttpServerProvider:
    """An in-process `wasmcloud+builtin://http-server` provider on one host."""

    def __init__(
        self,
        provider_id: str,
        image_ref: str,
        *,
        state: LatticeState,
        router: ComponentRouter,
        config: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        services: HostServices | None = None,
    ) -> None:
        cfg = _lower(config or {})
        self.provider_id = provider_id
        self.image_ref = image_ref
        self.annotations = dict(annotations or {})
        self.state = state
        # Decides whether a local instance or another host of the lattice serves each request.
        self.router = router
        self.routing_mode = cfg.get("routing_mode", "address").lower()
        if self.routing_mode not in ROUTING_MODES:
            raise ProviderConfigError(
                f"routing_mode {self.routing_mode!r} is not supported; use one of {', '.join(ROUTING_MODES)}"
            )
        self.default_address = split_address(cfg.get("default_address", DEFAULT_ADDRESS))
        # Addresses chosen for want of a configured one (logged when their listener opens).
        self._defaulted: set[tuple[str, int]] = set()
        if "default_address" not in cfg and self.routing_mode in SHARED_LISTENER_MODES:
            self._defaulted.add(self.default_address)
        # The header host mode routes by (wasmCloud's provider config `header`).
        self.header = cfg.get("header", "host").strip() or "host"
        self.tls = tls_files(cfg, f"the config of provider {provider_id}")
        self.limits = ingress_limits(cfg, f"the config of provider {provider_id}", IngressLimits())
        self._listeners: dict[tuple[str, int], _Listener] = {}
        # Listeners the links want that could not be opened in the last sync: address -> why.
        self._listen_errors: dict[tuple[str, int], str] = {}
        # Links that cannot be served (bad config): target -> why; health reports them.
        self._link_errors: dict[str, str] = {}
        self._sync_lock = asyncio.Lock()
        self.sup = provider_supervisor(f"http-server {provider_id}", services)
        # Where requests are counted by component and status (None: metrics are off).
        self.metrics = services.metrics if services is not None else None
        self._resync = self.sup.resync(
            "listeners",
            self._sync_or_retry,
            what=f"http-server {provider_id}",
            failure="applying lattice changes failed",
        )
        self._stopped = False

    def description(self) -> ProviderDescription:
        """The inventory entry of this provider."""
        return ProviderDescription(
            id=self.provider_id, image_ref=self.image_ref, name="http-server", annotations=self.annotations
        )

    def health(self) -> tuple[bool, str | None]:
        """Healthy while it runs and every listener its links need is bound; else which failed, why."""
        if self._stopped:
            return False, "stopped"
        if self.routing_mode in SHARED_LISTENER_MODES and self.default_address not in self._listeners:
            why = self._listen_errors.get(self.default_address)
            return False, why or f"not listening on {_fmt(self.default_address)}"
        if self._listen_errors or self._link_errors:
            problems = [self._listen_error_text()] if self._listen_errors else []
            problems += [self._link_errors[t] for t in sorted(self._link_errors)]
            return False, "; ".join(problems)
        if self._resync.last_error is not None:
            # Applying link changes failed for another reason; it is being retried.
            return False, f"http-server {self.provider_id}: {self._resync.last_error}"
        return True, None

    def addresses(self) -> list[tuple[str, int]]:
        """The addresses this provider listens on now."""
        return sorted(self._listeners)

    async def start(self) -> None:
        """Bind what the mode needs now and apply the links already known; follow later changes."""
        if self.tls is not None:
            ssl_context(self.tls)  # unreadable files fail the start, in every mode
        if self.routing_mode in SHARED_LISTENER_MODES:
            # One listener for the provider's lifetime; a bind (or TLS) failure fails the start.
            await self._open(self.default_address, self.tls, self.limits)
        await self.sup.start()
        self.state.listeners.append(self._resync.poke)
        # A link's named config may change without the link: an address, TLS files, a fixed typo.
        self.state.config_listeners.append(self._resync.poke)
        # Through the resync, so a listener that cannot be opened now is retried with backoff.
        await self._resync.run_now()

    async def stop(self) -> None:
        """Stop listening (open connections are closed) and stop following links."""
        self._stopped = True
        with contextlib.suppress(ValueError):
            self.state.listeners.remove(self._resync.poke)
        with contextlib.suppress(ValueError):
            self.state.config_listeners.remove(self._resync.poke)
        await self.sup.stop()
        async with self._sync_lock:
            for address in list(self._listeners):
                await self._close(address)

    async def _sync_or_retry(self) -> None:
        """`sync`, then `RetryLater` naming each listener that could not be opened (Resync retries)."""
        await self.sync()
        if self._listen_errors:
            raise RetryLater(self._listen_error_text())

    async def sync(self) -> None:
        """Make listeners and routes match this provider's links in the lattice state.

        A listener that cannot be opened is left out and recorded (see `health`), not raised.
        """
        async with self._sync_lock:
            errors: dict[tuple[str, int], str] = {}
            wanted: dict[tuple[str, int], dict[str, str]] = {}
            wanted_tls: dict[tuple[str, int], TlsFiles | None] = {}
            wanted_limits: dict[tuple[str, int], IngressLimits] = {}
            if self.routing_mode in SHARED_LISTENER_MODES:
                wanted[self.default_address] = {}
                wanted_tls[self.default_address] = self.tls
                wanted_limits[self.default_address] = self.limits
            link_errors: dict[str, str] = {}
            for link in self.state.links():
                if not is_http_link(link, self.provider_id):
                    continue
                try:
                    address, prefix, tls, limits = await self._route_of(link)
                except Exception as e:
                    log.error("http-server %s: link to %s not served: %s", self.provider_id, link.target, e)
                    link_errors[link.target] = f"link to {link.target} not served: {e}"
                    continue
                wanted_tls.setdefault(address, tls)
                wanted_limits.setdefault(address, limits)
                routes = wanted.setdefault(address, {})
                if prefix in routes and routes[prefix] != link.target:
                    log.error(
                        "http-server %s: %s%s already routes to %s; link to %s not served",
                        self.provider_id,
                        _fmt(address),
                        prefix,
                        routes[prefix],
                        link.target,
                    )
                    continue
                routes[prefix] = link.target
            # A listener whose TLS files or limits changed is opened again with the new ones.
            stale = [
                a
                for a, lis in self._listeners.items()
                if a not in wanted or lis.tls != wanted_tls[a] or lis.limits != wanted_limits[a]
            ]
            for address in stale:
                await self._close(address)
            for address, routes in wanted.items():
                listener = self._listeners.get(address)
                if listener is None:
                    try:
                        listener = await self._open(address, wanted_tls[address], wanted_limits[address])
                    except (OSError, ProviderConfigError) as e:
                        # Logged by the resync (rate-limited) and reported by `health`.
                        errors[address] = self._listen_error(address, routes, e)
                        continue
                listener.routes = routes
            self._listen_errors = errors
            self._link_errors = link_errors

    def _listen_error_text(self) -> str:
        """Every listener that could not be opened, and why, in address order."""
        return "; ".join(self._listen_errors[a] for a in sorted(self._listen_errors))

    def _listen_error(self, address: tuple[str, int], routes: Mapping[str, str], error: Exception) -> str:
        """What to tell the user about a listener that could not be opened, and what to do."""
        targets = ", ".join(sorted(set(routes.values()))) or "its links"
        text = f"cannot listen on {_fmt(address)} for {targets}: {error}"
        if not isinstance(error, OSError):
            return text  # a TLS file problem; its message says which keys to fix
        setting = (
            "the provider's `default_address` config"
            if self.routing_mode in SHARED_LISTENER_MODES
            else "the link's `address` config"
        )
        if error.errno == errno.EADDRINUSE:
            return f"{text}; free the port or change {setting}"
        return f"{text}; change {setting}"

    async def _route_of(self, link: Link) -> tuple[tuple[str, int], str, TlsFiles | None, IngressLimits]:
        """A link's listener address, route key and (address mode) TLS files and client limits."""
        raw = await self.state.merged_config(link.source_config)
        typo = first_typo(raw, KEYS, "source")
        if typo is not None:
            raise ProviderConfigError(f"the source config of the link to {link.target}: {typo.message()}")
        cfg = _lower(raw)
        if self.routing_mode == "path":
            path = cfg.get("path")
            if not path:
                raise ProviderConfigError("path routing needs a `path` in the link's source config")
            prefix = "/" + path.strip("/") if path.strip("/") else ""
            return self.default_address, prefix, self.tls, self.limits
        if self.routing_mode == "host":
            host = host_key(cfg.get("host", ""))
            if not host:
                raise ProviderConfigError("host routing needs a `host` in the link's source config")
            return self.default_address, host, self.tls, self.limits
        if "address" in cfg:
            host, port = split_address(cfg["address"])
        else:
            host, port = self.default_address
            self._defaulted.add((host, int(cfg["port"]) if cfg.get("port", "").isdigit() else port))
        if "port" in cfg:
            if not cfg["port"].isdigit():
                raise ProviderConfigError(f"invalid port {cfg['port']!r}")
            port = int(cfg["port"])
        where = f"the source config of the link to {link.target}"
        tls = tls_files(cfg, where) or self.tls
        return (host, port), "", tls, ingress_limits(cfg, where, self.limits)

    async def _open(self, address: tuple[str, int], tls: TlsFiles | None, limits: IngressLimits) -> _Listener:
        context = None if tls is None else ssl_context(tls)
        sock = bind_socket(*address)
        holder: list[_Listener] = []
        handler = HttpHandler(
            lambda request: self._resolve(holder[0], request),
            max_body=MAX_BODY,
            body_timeout=limits.body_timeout,
        )
        metrics = self.metrics
        server = IngressServer(
            handler.handle
            if metrics is None
            else handler.counted(metrics, lambda r: self._routed(holder[0], r)),
            limits,
            max_line_size=MAX_HEADER_SIZE,
            max_field_size=MAX_HEADER_SIZE,
            access_log=None,
        )
        # In-flight requests get a short grace period when a link delete closes the listener.
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=CLOSE_GRACE)
        await runner.setup()
        try:
            await web.SockSite(runner, sock, ssl_context=context).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        listener = _Listener(address, runner, handler, tls, limits)
        holder.append(listener)
        self._listeners[address] = listener
        scheme = "https" if tls is not None else "http"
        log.info("http-server %s listening on %s (%s)", self.provider_id, _fmt(address), scheme)
        if address in self._defaulted:
            # Nobody named this address: say where it came from, so an unexpected
            # 0.0.0.0:8000 is explained in the log.
            where = (
                "a link's source config has no `address`"
                if self.routing_mode == "address"
                else "the provider config has no `default_address`"
            )
            log.info(
                "http-server %s: %s, so it listens on %s (from the default address %s)",
                self.provider_id,
                where,
                _fmt(address),
                _fmt(self.default_address),
            )
        return listener

    async def _close(self, address: tuple[str, int]) -> None:
        listener = self._listeners.pop(address, None)
        if listener is None:
            return
        with contextlib.suppress(Exception):
            await wait_for(listener.runner.cleanup(), CLOSE_GRACE + 5.0)
        await listener.handler.close()
        log.info("http-server %s stopped listening on %s", self.provider_id, _fmt(address))

    def _resolve(
        self, listener: _Listener, request: web.BaseRequest
    ) -> HttpTarget | PendingTarget | Forward | web.StreamResponse:
        """What serves `request` on `listener`: the local target (preferred), a forward to another
        host of the lattice, or the error response to send."""
        routed = self._route(listener, request)
        if not isinstance(routed, str):
            return routed
        target = self.router.http_route(routed, self.provider_id, MAX_BODY)
        if target is None:
            return error_response(503, f"component {routed} is not running on this host")
        return target

    def _routed(self, listener: _Listener, request: web.BaseRequest) -> str:
        """The ID of the component linked for `request` on `listener`, "" if none (metrics)."""
        routed = self._route(listener, request)
        return routed if isinstance(routed, str) else ""

    def _route(self, listener: _Listener, request: web.BaseRequest) -> str | web.StreamResponse:
        """The ID of the component linked for `request` on `listener`, or the error response to send."""
        if self.routing_mode == "path":
            path = request.rel_url.path
            matches = [p for p in listener.routes if path_matches(p, path)]
            if not matches:
                return error_response(404, f"no component is linked for path {path}")
            component_id = listener.routes[max(matches, key=len)]
        elif self.routing_mode == "host":
            value = request.headers.get(self.header)
            if value is None:
                return error_response(404, f"the request has no {self.header} header to route by")
            found = listener.routes.get(host_key(value))
            if found is None:
                return error_response(404, f"no component is linked for host {host_key(value)}")
            component_id = found
        else:
            if not listener.routes:
                return error_response(404, f"no component is linked to {_fmt(listener.address)}")
            component_id = listener.routes[""]
        return component_id


def _fmt(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
