"""The dashboard's HTTP server (aiohttp): the page, its static files, a live stream and the actions.

Routes: `GET /` (the page, with this process's token in a `<meta>`), `GET /static/<file>`,
`GET /api/state` (a snapshot), `GET /api/stream` (Server-Sent Events: a `snapshot`, then updates),
`POST /api/validate` (manifest checks) and `POST /api/<action>` (`actions.ACTIONS`).

Another site must not be able to drive the lattice through a user's browser (docs/ui.md#security):
- every `/api/` request carries the per-process token: POSTs in the `X-Wasmlattice-Token` header
  (a custom header, so a cross-site form or `fetch` cannot send it without a CORS preflight, which
  is never granted), the stream in its query (EventSource cannot set headers);
- the Host header must name this server (loopback names, the listen address, `--allowed-host`), so
  a DNS-rebinding page on another name cannot read the page and its token;
- a POST whose Origin is not this server's own is refused; POST bodies must be JSON;
- responses forbid framing and inline scripts (CSP), so the page cannot be clickjacked.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from wasmlattice.aio import wait_for
from wasmlattice.ui.actions import ACTIONS, ActionError, validate_manifest
from wasmlattice.ui.view import LatticeView, Update

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Wasmlattice-Token"
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
# A stream with nothing to say still sends a comment this often, so a closed page is noticed.
KEEPALIVE_S = 15.0
MAX_REQUEST_BYTES = 2 << 20
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


class ListenError(ValueError):
    """The listen address cannot be used (malformed, or not loopback without --allow-remote)."""


def parse_listen(listen: str, allow_remote: bool) -> tuple[str, int]:
    """(host, port) of `HOST:PORT`; a non-loopback host is refused unless `allow_remote`."""
    host, sep, port_text = listen.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ListenError(f"--listen: expected HOST:PORT such as 127.0.0.1:3030, got {listen!r}")
    if not allow_remote and not is_loopback(host):
        raise ListenError(
            f"--listen {listen}: the dashboard can change the lattice, so it listens only on a loopback "
            "address (127.0.0.1, ::1, localhost) unless you add --allow-remote"
        )
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address or `localhost` (names are not resolved)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(value: str) -> str:
    """The host part of a Host header (`name`, `name:port`, `[v6]:port`), lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class DashboardServer:
    """Serves one `LatticeView` on `host:port` (see the module docstring)."""

    def __init__(
        self,
        view: LatticeView,
        host: str,
        port: int,
        *,
        allowed_hosts: Iterable[str] = (),
        token: str | None = None,
    ) -> None:
        self.view = view
        self.host, self.port = host, port
        self.token = token or secrets.token_urlsafe(32)
        names = {h.strip().lower().strip("[]") for h in allowed_hosts if h.strip()}
        self.allowed_hosts = {n.strip("[]") for n in LOOPBACK_NAMES} | names | {host.lower()}
        self._runner: web.AppRunner | None = None
        self._streams: set[web.StreamResponse] = set()
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        """Where the page is (`http://HOST:PORT/`)."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/"

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_REQUEST_BYTES)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/stream", self._stream)
        app.router.add_post("/api/validate", self._validate)
        app.router.add_post("/api/{action:.+}", self._action)
        return app

    async def start(self) -> str:
        """Bind and serve; the URL (the bound port when 0 was asked for)."""
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        if self.port == 0 and server is not None and server.sockets:
            self.port = int(server.sockets[0].getsockname()[1])
        return self.url

    async def stop(self) -> None:
        """Close every stream and stop serving."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the guard -------------------------------------------------------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            status, message = refusal
            response: web.StreamResponse = web.json_response({"error": message}, status=status)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as e:
                response = web.json_response({"error": e.reason}, status=e.status)
        if not response.prepared:
            response.headers.update(SECURITY_HEADERS)
        return response

    def _refusal(self, request: web.Request) -> tuple[int, str] | None:
        """Why `request` is refused (status, message), or None; see the module docstring."""
        if _host_name(request.headers.get("Host", "")) not in self.allowed_hosts:
            return 421, "this dashboard does not answer for that host name (see --allowed-host)"
        if not request.path.startswith("/api/"):
            return None
        if request.method == "POST":
            given = request.headers.get(TOKEN_HEADER, "")
            origin = request.headers.get("Origin")
            if origin is not None and origin != "null":
                parts = urlsplit(origin)
                if parts.netloc.lower() != request.headers.get("Host", "").lower():
                    return 403, f"cross-origin request from {origin} refused"
            elif origin == "null":
                return 403, "request from an opaque origin refused"
            if request.content_type != "application/json":
                return 415, "send the action as JSON (Content-Type: application/json)"
        else:
            given = request.headers.get(TOKEN_HEADER) or request.query.get("token", "")
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            return 403, "missing or wrong dashboard token: reload the page"
        return None

    # -- pages -----------------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        page = _static_text("index.html")
        page = page.replace("__TOKEN__", html.escape(self.token)).replace(
            "__LATTICE__", html.escape(self.view.lattice)
        )
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = STATIC_FILES.get(name)
        if kind is None:
            raise web.HTTPNotFound(reason=f"no static file {name!r}")
        return web.Response(text=_static_text(name), content_type=kind, charset="utf-8")

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.view.snapshot())

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no", **SECURITY_HEADERS}
        )
        sub = self.view.subscribe()
        try:
            await response.prepare(request)
            await response.write(Update("snapshot", self.view.snapshot()).to_sse())
            while not self._closing.is_set() and not sub.dropped:
                try:
                    update = await wait_for(sub.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                await response.write(update.to_sse())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.view.unsubscribe(sub)
        with contextlib.suppress(Exception):
            await response.write_eof()
        return response

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise ActionError("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise ActionError("the request body must be a JSON object")
        return body

    async def _validate(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(validate_manifest(await self._body(request)))
        except ActionError as e:
            return _error(e)

    async def _action(self, request: web.Request) -> web.Response:
        action = ACTIONS.get(request.match_info["action"])
        if action is None:
            return web.json_response({"error": f"no action {request.match_info['action']!r}"}, status=404)
        try:
            result = await action(self.view, await self._body(request))
        except ActionError as e:
            return _error(e)
        return web.json_response({"ok": True, **result})


def _error(e: ActionError) -> web.Response:
    return web.json_response({"error": e.message, "errors": e.errors}, status=e.status)


def _static_text(name: str) -> str:
    return (resources.files("wasmlattice.ui") / "static" / name).read_text(encoding="utf-8")


def page_token(page: str) -> str | None:
    """The token in a served page (for scripts and tests that call the API as the page does)."""
    marker = 'name="wasmlattice-token" content="'
    start = page.find(marker)
    if start < 0:
        return None
    start += len(marker)
    return html.unescape(page[start : page.find('"', start)])
