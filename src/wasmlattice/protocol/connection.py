"""NATS connections for the lattice: options as in wasmCloud's host flags, reconnect forever, clear errors.

The first connection attempt fails fast with an actionable message (the usual causes: no server
runs, or it refuses a client without the right credentials); once connected, the client reconnects
forever and logs each disconnect and reconnect, because a host must ride out a NATS restart rather
than die with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import UserString
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nats.aio.client import Client
from nats.errors import AuthorizationError

from wasmlattice.nats_server import user_seed_in

log = logging.getLogger(__name__)

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
# wasmCloud hosts name both their connections `wasmbus`; tools rely on it when listing connections.
DEFAULT_CONNECTION_NAME = "wasmbus"


class NatsConnectionError(RuntimeError):
    """A NATS connection could not be established or is misconfigured."""


class NatsUnreachableError(NatsConnectionError):
    """No NATS server answered at the configured address."""


class NatsNotAuthorizedError(NatsConnectionError):
    """The NATS server refused the connection: no credentials, or ones it does not accept."""


NOT_AUTHORIZED = "not authorized: pass --nats-creds or run on the machine that ran `up`"


@dataclass(frozen=True)
class NatsOptions:
    """How to connect to NATS (mirrors the wasmCloud host's `--nats-*` / `--js-domain` options)."""

    url: str = DEFAULT_NATS_URL
    name: str = DEFAULT_CONNECTION_NAME
    creds_file: Path | None = None
    jwt: str | None = None
    seed: str | None = None
    tls_required: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    js_domain: str | None = None
    connect_timeout: float = 2.0
    reconnect_wait: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)

    def servers(self) -> list[str]:
        """The server URLs (a comma-separated `url` names several)."""
        return [u.strip() for u in self.url.split(",") if u.strip()]

    def validate(self) -> None:
        """Reject contradictory settings with a message naming the options involved."""
        if self.creds_file is not None and (self.jwt or self.seed):
            raise NatsConnectionError(
                "--nats-creds conflicts with --nats-jwt/--nats-seed: give one or the other"
            )
        if self.jwt and not self.seed:
            raise NatsConnectionError("--nats-jwt needs --nats-seed (the user's nkey seed signs the nonce)")
        if self.seed and not self.seed.strip().startswith("S"):
            raise NatsConnectionError("--nats-seed must be an nkey seed (starting with 'S', e.g. 'SU...')")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise NatsConnectionError("TLS client auth needs both a certificate and a key file")
        for label, path in (
            ("credentials file", self.creds_file),
            ("TLS CA file", self.tls_ca),
            ("TLS certificate", self.tls_cert),
            ("TLS key", self.tls_key),
        ):
            if path is not None and not Path(path).is_file():
                raise NatsConnectionError(f"NATS {label} {path} does not exist")
        if not self.servers():
            raise NatsConnectionError("no NATS URL given")


def _tls_context(opts: NatsOptions) -> ssl.SSLContext | None:
    wants_tls = (
        opts.tls_required
        or opts.tls_ca
        or opts.tls_cert
        or any(u.startswith("tls://") for u in opts.servers())
    )
    if not wants_tls:
        return None
    ctx = ssl.create_default_context(cafile=str(opts.tls_ca) if opts.tls_ca else None)
    if opts.tls_cert is not None and opts.tls_key is not None:
        ctx.load_cert_chain(str(opts.tls_cert), str(opts.tls_key))
    return ctx


def _creds_text(jwt: str, seed: str) -> str:
    # nats-py parses this layout (the `.creds` file format) from an in-memory UserString, which lets
    # a JWT + seed pair use the same well-tested signing path as a creds file.
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt.strip()}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed.strip()}\n"
        "------END USER NKEY SEED------\n"
    )


def _creds_file_kwargs(path: Path) -> dict[str, Any]:
    """A `.creds` file (user JWT + seed), or a file holding a user nkey seed (what `up` writes)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        raise NatsConnectionError(f"cannot read NATS credentials file {path}: {e.strerror or e}") from None
    if "BEGIN NATS USER JWT" in text:
        return {"user_credentials": str(path)}
    seed = user_seed_in(text)
    if seed is None:
        # Never quote the content: it may be a secret in the wrong place.
        raise NatsConnectionError(
            f"NATS credentials file {path} holds neither a user JWT and seed (.creds) "
            "nor a user nkey seed (SU...)"
        )
    return {"nkeys_seed_str": seed}


def _is_refusal(e: BaseException) -> bool:
    """Whether `e` is the server refusing our credentials (`-ERR 'Authorization Violation'`)."""
    # nats-py raises a plain `Error` with the server's text during the handshake, and
    # AuthorizationError once connected.
    return isinstance(e, AuthorizationError) or "authorization violation" in str(e).lower()


def _refused_message(opts: NatsOptions, where: str) -> str:
    if opts.creds_file is None and not opts.seed:
        return f"{NOT_AUTHORIZED} (NATS at {where} refused a client without credentials)"
    if opts.creds_file is not None:
        given = f"the credentials in {opts.creds_file}"
    else:
        given = "the --nats-jwt/--nats-seed credentials" if opts.jwt else "the --nats-seed key"
    return f"not authorized: NATS at {where} refused {given}"


def _auth_kwargs(opts: NatsOptions) -> dict[str, Any]:
    if opts.creds_file is not None:
        return _creds_file_kwargs(opts.creds_file)
    if opts.jwt and opts.seed:
        return {"user_credentials": UserString(_creds_text(opts.jwt, opts.seed))}
    if opts.seed:
        # A bare nkey seed: nkey authentication without a JWT.
        return {"nkeys_seed_str": opts.seed.strip()}
    return {}


async def _probe(url: str, timeout: float) -> str | None:
    """None if something listens at the URL's address, else why not (e.g. 'connection refused')."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 4222
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer within {timeout}s"
    except socket.gaierror as e:
        return f"cannot resolve {host}: {e.strerror}"
    except OSError as e:
        return e.strerror or str(e)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


EventHook = Callable[[], Awaitable[None]]


async def connect(
    opts: NatsOptions,
    *,
    on_disconnect: EventHook | None = None,
    on_reconnect: EventHook | None = None,
) -> Any:
    """Connect to NATS (a `nats.aio.client.Client`), failing fast and clearly if no server answers."""
    opts.validate()
    servers = opts.servers()
    reasons = [await _probe(u, opts.connect_timeout) for u in servers]
    if all(r is not None for r in reasons):
        where = ", ".join(servers)
        why = "; ".join(dict.fromkeys(r for r in reasons if r))
        raise NatsUnreachableError(
            f"cannot reach NATS at {where}: {why}; start one with `wasmlattice up` or pass --nats-url"
        )

    last_error: list[BaseException] = []
    # Set when the only server refuses our credentials on the first connect: retrying cannot help.
    # (With several servers, another one may still take them.)
    refused = asyncio.Event()
    first_connect = True

    async def error_cb(e: Exception) -> None:
        last_error[:] = [e]
        if first_connect and len(servers) == 1 and _is_refusal(e):
            refused.set()
            return
        log.warning("NATS connection %r: %s: %s", opts.name, type(e).__name__, e)

    async def disconnected_cb() -> None:
        # nats-py calls this on our own close too; only an unplanned loss is worth a warning.
        if nc.is_closed or nc.is_draining:
            log.debug("NATS connection closed (%s)", opts.name)
        else:
            log.warning("disconnected from NATS (%s); reconnecting", opts.name)
        if on_disconnect is not None:
            await on_disconnect()

    async def reconnected_cb() -> None:
        log.info(
            "reconnected to NATS at %s (%s)",
            nc.connected_url.geturl() if nc.connected_url else "?",
            opts.name,
        )
        if on_reconnect is not None:
            await on_reconnect()

    nc = Client()
    kwargs: dict[str, Any] = {
        "servers": servers,
        "name": opts.name,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": opts.reconnect_wait,
        "connect_timeout": opts.connect_timeout,
        "error_cb": error_cb,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
        **_auth_kwargs(opts),
        **opts.extra,
    }
    tls = _tls_context(opts)
    if tls is not None:
        kwargs["tls"] = tls
    # With reconnect-forever, nats-py retries the first connect forever too (e.g. on bad credentials);
    # bound it so the caller gets the reason instead of a hang, and stop at once on a refusal.
    budget = max(opts.connect_timeout * 3, 5.0)
    where = ", ".join(servers)
    try:
        await _connect_unless_refused(nc, kwargs, refused, budget)
    except NatsNotAuthorizedError:
        with contextlib.suppress(Exception):
            await nc.close()
        raise NatsNotAuthorizedError(_refused_message(opts, where)) from None
    except TimeoutError:
        with contextlib.suppress(Exception):
            await nc.close()
        if last_error and _is_refusal(last_error[0]):
            raise NatsNotAuthorizedError(_refused_message(opts, where)) from None
        why = (
            f"{type(last_error[0]).__name__}: {last_error[0]}" if last_error else f"no handshake in {budget}s"
        )
        raise NatsConnectionError(f"cannot connect to NATS at {where}: {why}") from None
    except Exception as e:
        with contextlib.suppress(Exception):
            await nc.close()
        if _is_refusal(e):
            raise NatsNotAuthorizedError(_refused_message(opts, where)) from None
        raise NatsConnectionError(
            f"cannot connect to NATS at {', '.join(servers)}: {type(e).__name__}: {e}"
        ) from e
    first_connect = False
    log.info(
        "connected to NATS at %s as %r", nc.connected_url.geturl() if nc.connected_url else servers, opts.name
    )
    return nc


async def _connect_unless_refused(
    nc: Client, kwargs: dict[str, Any], refused: asyncio.Event, budget: float
) -> None:
    """`nc.connect(**kwargs)` within `budget` seconds; NatsNotAuthorizedError as soon as `refused` is set."""
    connecting = asyncio.ensure_future(nc.connect(**kwargs))
    refusal = asyncio.ensure_future(refused.wait())
    try:
        done, _ = await asyncio.wait(
            {connecting, refusal}, timeout=budget, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        refusal.cancel()
        if not connecting.done():
            connecting.cancel()
            # Let the cancelled connect unwind before the caller closes the client.
            await asyncio.wait({connecting})
    if connecting in done:
        connecting.result()
        return
    if refusal in done:
        raise NatsNotAuthorizedError("refused")
    raise TimeoutError


def jetstream(nc: Any, opts: NatsOptions) -> Any:
    """A JetStream context for `nc`, under the configured JetStream domain if any."""
    if opts.js_domain:
        return nc.jetstream(domain=opts.js_domain)
    return nc.jetstream()
