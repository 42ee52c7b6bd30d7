"""NATS connections for the lattice: options as in wasmCloud's host flags, reconnect forever, clear errors.

The first connection attempt fails fast with an actionable message (the usual causes: no server
runs, or it refuses a client without the right credentials); once connected, the client reconnects
forever and logs an outage without a flood (`OutageLog`: one warning, a reminder at most every 30 s,
one line when it is back), because a host must ride out a NATS restart rather
than die with it. That includes the server closing the
connection over one bad protocol line (`LatticeClient`); only a connection closed for good
(authorization revoked) is final, and its owner is told (`on_closed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import UserString
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import (
    DEFAULT_SUB_PENDING_BYTES_LIMIT,
    DEFAULT_SUB_PENDING_MSGS_LIMIT,
    Subscription,
)
from nats.errors import AuthorizationError

from wasmlattice.aio import wait_for
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


# JetStream keeps at most five replicas of a stream
# (https://docs.nats.io/nats-concepts/jetstream/streams#replicas).
MAX_JS_REPLICAS = 5


class NatsConnectionClosedError(NatsConnectionError):
    """An established NATS connection was closed for good (not by us); its owner must exit."""


# nats-server's default `max_control_line`: a PUB or SUB line whose arguments are longer makes it
# drop the connection (https://docs.nats.io/running-a-nats-service/configuration#limits).
SERVER_MAX_CONTROL_LINE = 4096
# What a line needs besides its subjects: the sizes, the subscription ID, separators.
_LINE_OVERHEAD = 64
# The longest subject (with its reply subject or queue group) this client sends.
MAX_SUBJECT_LINE = SERVER_MAX_CONTROL_LINE - _LINE_OVERHEAD


class SubjectTooLongError(nats_errors.BadSubjectError):
    """A subject (with its reply subject or queue group) too long for nats-server; nothing was sent."""

    def __init__(self, what: str, subject: str, size: int, with_other: str) -> None:
        super().__init__()
        shown = subject if len(subject) <= 60 else f"{subject[:60]}…"
        self.message = (
            f"{what} {shown!r} is {size} bytes long{with_other}, over the {MAX_SUBJECT_LINE} bytes a "
            "NATS protocol line has room for (nats-server's max_control_line); not sent"
        )

    def __str__(self) -> str:
        return self.message


def _check_line(what: str, subject: str, other: str, other_name: str) -> None:
    size = len(subject.encode()) + len(other.encode())
    if size > MAX_SUBJECT_LINE:
        raise SubjectTooLongError(what, subject, size, f" with its {other_name}" if other else "")


# Server errors (lower case, as nats-py hands them over) after which retrying cannot succeed with the
# same credentials: nats-py and the Go client close for good on these, and so do we.
_FINAL_SERVER_ERRORS = (
    "authorization violation",
    "user authentication expired",
    "user authentication revoked",
    "account authentication expired",
)


# How many reconnects in a row the server may refuse our credentials for before the client gives up:
# it is reachable and says no, so retrying the same credentials forever would only hide the host
# (the Go client also gives up on the second refusal).
FINAL_REFUSALS = 2


def _is_final(error: BaseException | str) -> bool:
    """Whether `error` (or a server error's text) is the server refusing our credentials."""
    text = str(error).lower()
    return any(final in text for final in _FINAL_SERVER_ERRORS)


class LatticeClient(Client):
    """nats-py's client, except that a server error that ends the connection leads to a reconnect.

    nats-py treats every `-ERR` from the server but a stale connection and a permissions violation
    as final: it closes the client and nothing reconnects it. nats-server sends most of them as it
    drops a connection over one protocol line it refuses (a subject longer than `max_control_line`,
    an unknown operation), so one publish derived from hostile input would cut a host off from the
    lattice for good while it keeps running. async-nats, the client of the wasmCloud host, reconnects
    after them and replays its subscriptions; this client does the same through nats-py's own
    reconnect path (the one a stale connection takes), so every subscription, JetStream watch and
    holder of the client carries on. Errors in `_FINAL_SERVER_ERRORS` stay final, and end a reconnect
    that the server refuses for them `FINAL_REFUSALS` times in a row.

    A PONG for a flush that stopped waiting (cancelled, or timed out) no longer ends the read loop
    (`_process_pong`).

    It also refuses to send a subject longer than a protocol line has room for (`MAX_SUBJECT_LINE`,
    from nats-server's default `max_control_line`), whatever put it there: a subscription on one
    would be replayed after every reconnect and drop the connection again each time.
    """

    def __init__(self) -> None:
        super().__init__()
        # Set once we close or drain the client ourselves, so that a close is known to be planned.
        self.closed_by_owner = False
        # Consecutive reconnects the server refused our credentials for, and the task that closes
        # the client once there are `FINAL_REFUSALS` of them.
        self.refusals = 0
        self.give_up_task: asyncio.Task[None] | None = None
        # `--js-replicas`: the replicas of the buckets created through this connection (None: as
        # many as the cluster holds, up to 3; protocol/kv.py `bucket_replicas`).
        self.js_replicas: int | None = None
        # Set once the first connect succeeded: later refusals are reconnects being refused.
        self.established = False

    async def give_up(self, error: Exception) -> None:
        """Close for good after `error`, reported as a close by the server (`on_closed` runs)."""
        self._err = error
        await super().close()

    async def _close(self, status: int, do_cbs: bool = True) -> None:
        # nats-py runs the disconnect and close callbacks last, after writing what is pending to a
        # transport the server may have reset; if that raises, they never run and nobody learns that
        # the client is closed for good. Run them whatever happened.
        if self.is_closed:
            await super()._close(status, do_cbs)
            return
        try:
            await super()._close(status, do_cbs=False)
        except Exception as e:
            log.debug("closing the NATS client: %s: %s", type(e).__name__, e)
        if do_cbs:
            if self._disconnected_cb is not None:
                await self._disconnected_cb()
            if self._closed_cb is not None:
                await self._closed_cb()

    async def _process_pong(self) -> None:
        # nats-py keeps each flush()'s future in `_pongs`, one per PING in order, and sets its result
        # when the PONG comes back. A flush whose wait ended first (its timeout, or its caller
        # cancelled, as a stopping app manager cancels its reconcile round) left a cancelled future
        # there; setting its result raised InvalidStateError, which ends nats-py's read loop for
        # good: the client still looks connected but reads nothing more, so every later request
        # times out. That PONG belongs to nobody now: take it off the line and carry on.
        if self._pongs and self._pongs[0].done():
            self._pongs.pop(0)
            self._pongs_received += 1
            self._pings_outstanding = 0
            return
        await super()._process_pong()

    async def _process_err(self, err_msg: str) -> None:
        text = err_msg.strip().strip("'")
        lowered = text.lower()
        if "stale connection" in lowered or "permissions violation" in lowered:
            await super()._process_err(err_msg)  # nats-py already reconnects / keeps the connection
            return
        if _is_final(lowered):
            await super()._process_err(err_msg)  # closes for good; `on_closed` tells the owner
            return
        err = nats_errors.Error(f"nats: {text}")
        self._err = err
        await self._error_cb(err)
        # Reconnect now rather than waiting for the server's end of file (and also after an error
        # the server does not close for, such as an invalid subject: a reconnect is harmless there,
        # closing for good is not). Ignored while a reconnect is already under way.
        await self._process_op_err(err)

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Publish, refusing (`SubjectTooLongError`) a line nats-server would drop the connection over."""
        _check_line("subject", subject, reply, "reply subject")
        await super().publish(subject, payload, reply, headers)

    async def subscribe(
        self,
        subject: str,
        queue: str = "",
        cb: Callable[[Msg], Awaitable[None]] | None = None,
        future: asyncio.Future[Any] | None = None,
        max_msgs: int = 0,
        pending_msgs_limit: int = DEFAULT_SUB_PENDING_MSGS_LIMIT,
        pending_bytes_limit: int = DEFAULT_SUB_PENDING_BYTES_LIMIT,
    ) -> Subscription:
        """Subscribe, refusing (`SubjectTooLongError`) a subject nats-server would drop the connection
        over: replayed after every reconnect, it would drop it again each time."""
        _check_line("subscription subject", subject, queue, "queue group")
        return await super().subscribe(
            subject, queue, cb, future, max_msgs, pending_msgs_limit, pending_bytes_limit
        )

    async def close(self) -> None:
        """Close for good, as planned by the owner."""
        self.closed_by_owner = True
        await super().close()

    async def drain(self) -> None:
        """Drain, then close for good, as planned by the owner."""
        self.closed_by_owner = True
        await super().drain()


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
    # Replicas of the KV buckets and object stores this connection creates (`--js-replicas`, 1 to
    # 5); None: as many servers as the cluster announces, at most 3 (docs/nats.md#replicas).
    js_replicas: int | None = None
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
        if self.js_replicas is not None and not 1 <= self.js_replicas <= MAX_JS_REPLICAS:
            raise NatsConnectionError(
                f"--js-replicas must be between 1 and {MAX_JS_REPLICAS} (JetStream's limit), "
                f"got {self.js_replicas}"
            )


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
        _, writer = await wait_for(asyncio.open_connection(host, port), timeout)
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


# Errors nats-py reports as a connection ends, before it calls the disconnect callback.
_CONNECTION_LOST = (
    OSError,
    nats_errors.UnexpectedEOF,
    nats_errors.StaleConnectionError,
    nats_errors.ConnectionClosedError,
)
# While NATS is unreachable, a failed reconnect attempt is logged at WARNING at most this often.
OUTAGE_WARNING_S = 30.0


class OutageLog:
    """Logs a NATS outage without a flood (nats-py retries every `reconnect_wait`, 0.5 s).

    One warning when the connection is lost; the failed attempts then at DEBUG, with one WARNING
    (the count and the last error) at most every `OUTAGE_WARNING_S`; one INFO line
    "reconnected ... after Xs" when it is back. Errors while connected are each worth a warning.
    """

    def __init__(self, name: str, every: float = OUTAGE_WARNING_S) -> None:
        self.name, self.every = name, every
        self.since: float | None = None  # monotonic time the connection was lost, None while up
        self.last_warning = 0.0
        self.failures = 0
        # The error that ended the connection (nats-py reports it just before the disconnect).
        self.cause: BaseException | None = None

    def lost(self) -> None:
        """The connection dropped; nats-py reconnects."""
        if self.since is None:
            self.since = self.last_warning = time.monotonic()
            self.failures = 0
            why = "" if self.cause is None else f": {type(self.cause).__name__}: {self.cause}"
            self.cause = None
            log.warning("disconnected from NATS (%s)%s; reconnecting", self.name, why)

    def error(self, e: BaseException, reconnecting: bool) -> None:
        """An error from nats-py (a failed reconnect attempt while `reconnecting`)."""
        if not reconnecting and self.since is None:
            if isinstance(e, _CONNECTION_LOST):
                self.cause = e  # told with the disconnect that follows
                log.debug("NATS connection %r: %s: %s", self.name, type(e).__name__, e)
            else:
                log.warning("NATS connection %r: %s: %s", self.name, type(e).__name__, e)
            return
        if self.since is None:  # the error came before the disconnect callback
            self.lost()
        assert self.since is not None
        self.failures += 1
        now = time.monotonic()
        if now - self.last_warning >= self.every:
            self.last_warning = now
            log.warning(
                "still not connected to NATS (%s) after %.0fs, %d failed attempts; last: %s: %s",
                self.name,
                now - self.since,
                self.failures,
                type(e).__name__,
                e,
            )
        else:
            log.debug("NATS connection %r: %s: %s", self.name, type(e).__name__, e)

    def back(self, url: str) -> None:
        """Reconnected."""
        after = "" if self.since is None else f" after {time.monotonic() - self.since:.1f}s"
        self.since = None
        log.info("reconnected to NATS at %s%s (%s)", url, after, self.name)


async def connect(
    opts: NatsOptions,
    *,
    on_disconnect: EventHook | None = None,
    on_reconnect: EventHook | None = None,
    on_closed: EventHook | None = None,
) -> Any:
    """Connect to NATS (a `LatticeClient`), failing fast and clearly if no server answers.

    `on_closed` runs if the connection is later closed for good other than by our own `close` or
    `drain` (the server refused our credentials): nothing reconnects it then.
    """
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

    async def error_cb(e: Exception) -> None:
        last_error[:] = [e]
        if not nc.established and len(servers) == 1 and _is_refusal(e):
            refused.set()
            return
        outage.error(e, nc.is_reconnecting)
        # Only after the first connect: until then connect() bounds the attempts and reports.
        if nc.established and _is_final(e):
            nc.refusals += 1
            if nc.refusals >= FINAL_REFUSALS:
                # nats-py would retry these forever; leave its reconnect task (we are inside it)
                # and close from a task of our own.
                nc.give_up_task = asyncio.get_running_loop().create_task(nc.give_up(e))

    async def disconnected_cb() -> None:
        # nats-py calls this on every close too: ours is not worth a warning, and a close for good
        # by the server is reported by closed_cb.
        if nc.closed_by_owner or nc.is_closed:
            log.debug("NATS connection closed (%s)", opts.name)
        else:
            outage.lost()
        if on_disconnect is not None:
            await on_disconnect()

    async def closed_cb() -> None:
        if nc.closed_by_owner:
            return
        log.error(
            "NATS connection %r is closed for good and will not reconnect: %s",
            opts.name,
            _describe(nc.last_error),
        )
        if on_closed is not None:
            await on_closed()

    async def reconnected_cb() -> None:
        nc.refusals = 0
        outage.back(public_url(nc))
        if on_reconnect is not None:
            await on_reconnect()

    nc = LatticeClient()
    nc.js_replicas = opts.js_replicas
    outage = OutageLog(opts.name)
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
        "closed_cb": closed_cb,
        **_auth_kwargs(opts),
        **opts.extra,
    }
    tls = _tls_context(opts)
    if tls is not None:
        kwargs["tls"] = tls
    # With reconnect-forever, nats-py retries the first connect forever too (e.g. on bad credentials);
    # bound it so the caller gets the reason instead of a hang.
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
    nc.established = True
    log.info("connected to NATS at %s as %r", public_url(nc) or servers, opts.name)
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


def without_userinfo(url: str) -> str:
    """`url` without a user or password in it (`nats://u:p@h:4222` -> `nats://h:4222`)."""
    parts = urlsplit(url.strip())
    if "@" not in parts.netloc:
        return url.strip()
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def public_url(nc: Any) -> str:
    """The URL `nc` is connected to, without credentials ("" when not connected).

    It is published in `host.ping` replies and logged, where a password would reach every reader.
    """
    url = getattr(nc, "connected_url", None)
    return "" if url is None else without_userinfo(url.geturl())


def _describe(error: BaseException | None) -> str:
    return f"{type(error).__name__}: {error}" if error is not None else "no error given"


def jetstream(nc: Any, opts: NatsOptions) -> Any:
    """A JetStream context for `nc`, under the configured JetStream domain if any."""
    if opts.js_domain:
        return nc.jetstream(domain=opts.js_domain)
    return nc.jetstream()
