"""HTTP for the tests: the upstream server guests call out to, clients, and polling helpers."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl

# ---------------------------------------------------------------------------------------------
# Upstream server for outgoing requests
# ---------------------------------------------------------------------------------------------


class _UpstreamHandler(http.server.BaseHTTPRequestHandler):
    """`/hello` -> 200 text; `/status/N` -> status N; `/bytes/N` -> N pattern bytes; `/headers` -> the
    request's x-* headers; else 404."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path
        if path == "/headers":
            # The request's x-* headers as received (http.server decodes them as Latin-1).
            lines = [f"{k.lower()}: {v}" for k, v in self.headers.items() if k.lower().startswith("x-")]
            self._send(200, "\n".join(lines).encode("latin-1"))
        elif path == "/hello":
            self._send(200, b"hello from upstream\n")
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            self._send(code, f"upstream status {code}\n".encode())
        elif path.startswith("/bytes/"):
            n = int(path.rsplit("/", 1)[1])
            self._send(200, pattern_bytes(n))
        else:
            self._send(404, b"upstream: no such path\n")


def pattern_bytes(n: int) -> bytes:
    """The bytes `/bytes?n=N` serves: i % 251."""
    period = bytes(range(251))
    return (period * (n // 251 + 1))[:n]


@dataclass
class Upstream:
    """A loopback HTTP server for the guests' outgoing requests."""

    port: int

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.authority}{path}"


@contextmanager
def upstream_server() -> Iterator[Upstream]:
    """An HTTP/1.1 server on 127.0.0.1 (in a thread), shut down on exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _UpstreamHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="upstream", daemon=True)
    thread.start()
    try:
        yield Upstream(port=server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """One HTTP response as received: status, headers in wire order (names lowercased), body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        """All values of a header."""
        return [v for n, v in self.headers if n == name.lower()]


class HttpClient:
    """A keep-alive aiohttp client: one connection per host, reused, so framing errors show up."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def request(
        self,
        base_url: str,
        method: str,
        path: str,
        *,
        headers: Any = None,
        data: Any = None,
        timeout: float = 120.0,
        **kwargs: Any,
    ) -> Reply:
        """Send `method path` exactly as given (no re-encoding of the path or query)."""
        url = yarl.URL(base_url + path, encoded=True)
        async with self.session.request(
            method,
            url,
            headers=headers,
            data=data,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
            **kwargs,
        ) as resp:
            body = await resp.read()
            hdrs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in resp.raw_headers]
            return Reply(resp.status, hdrs, body)


async def get(url: str, timeout: float = 60.0) -> tuple[int, str]:
    """One GET in a fresh session: status and body (decoded as Latin-1)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, s.get(url) as r:
        return r.status, (await r.read()).decode("latin-1")


async def get_json(url: str, timeout: float = 60.0) -> tuple[int, Any]:
    """One GET: status and the body parsed as JSON (the body text itself if it is not JSON)."""
    status, body = await get(url, timeout=timeout)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


async def wait_status(url: str, status: int, timeout: float = 30.0) -> str:
    """Poll `url` until it answers `status` (routes follow the KV watch asynchronously)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            got, body = await get(url, timeout=30.0)
            if got == status:
                return body
            last = (got, body)
        except aiohttp.ClientError as e:
            last = e
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {timeout}s; last: {last}")


async def wait_body(url: str, status: int, needle: str, timeout: float = 30.0) -> str:
    """Poll `url` until it answers `status` with `needle` in the body (links apply asynchronously)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await get(url)
        if last[0] == status and needle in last[1]:
            return str(last[1])
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} with {needle!r} within {timeout}s; last: {last}")


def request_blocking(method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    """One HTTP request from a plain (non-async) test: (status, body), an error status included."""
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
