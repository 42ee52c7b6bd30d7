"""A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on a free port.

`registry_server(tmp, auth=...)` starts it with a generated config and filesystem storage under
`tmp`: `auth=None` (anonymous), `"htpasswd"` (basic auth, bcrypt entries made with the `bcrypt`
package) or `"token"` (the distribution token flow: the registry verifies JWTs signed by a small
aiohttp token server the fixture runs, with a self-signed certificate as the root bundle).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.processes import free_port

USER, PASSWORD = "tester", "s3cret-pass"


@dataclass
class Registry:
    """A running registry: its `host:port`, storage directory and process."""

    host: str
    storage: Path
    proc: subprocess.Popen[bytes]
    log_path: Path

    def blob_path(self, digest: str) -> Path:
        """Where the registry stores blob `digest` (distribution's filesystem layout)."""
        hex_ = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"docker-registry did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """The token endpoint of the distribution auth spec, signing RS256 JWTs with a self-signed cert."""

    def __init__(self, directory: Path, service: str, issuer: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.service, self.issuer = service, issuer
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = directory / "token-root.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def token(self, scope: str, subject: str) -> str:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
        access = []
        for item in scope.split(" ") if scope else []:
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(sig)}"

    def start(self) -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            auth = request.headers.get("Authorization", "")
            self.requests.append({"query": dict(request.query), "auth": auth})
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if auth != expected:
                return web.json_response({"details": "wrong user or password"}, status=401)
            return web.json_response({"token": self.token(request.query.get("scope", ""), USER)})

        async def serve() -> web.AppRunner:
            app = web.Application()
            app.router.add_get("/token", handle)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            return runner

        self._thread.start()
        self._runner = asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@contextmanager
def registry_server(
    tmp: Path, auth: str | None = None, tls: tuple[Path, Path] | None = None
) -> Iterator[Registry]:
    """A `docker-registry` on 127.0.0.1:<free port>, storage in `tmp`; see the module docstring.

    `tls`: (certificate, key) PEM files: the registry then speaks HTTPS only.
    """
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed; `make system-deps` installs it")
    tmp.mkdir(parents=True, exist_ok=True)
    storage = tmp / "storage"
    port = free_port()
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {storage}",
        "  cache:",
        "    blobdescriptor: inmemory",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        f"  secret: {uuid.uuid4().hex}",
    ]
    if tls is not None:
        lines += ["  tls:", f"    certificate: {tls[0]}", f"    key: {tls[1]}"]
    token_server = None
    if auth == "htpasswd":
        import bcrypt

        htpasswd = tmp / "htpasswd"
        htpasswd.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
        lines += ["auth:", "  htpasswd:", "    realm: test-registry", f"    path: {htpasswd}"]
    elif auth == "token":
        token_server = TokenServer(tmp, "test-registry", "test-issuer")
        token_server.start()
        lines += [
            "auth:",
            "  token:",
            f"    realm: {token_server.realm}",
            "    service: test-registry",
            "    issuer: test-issuer",
            f"    rootcertbundle: {token_server.bundle}",
        ]
    elif auth is not None:
        raise ValueError(f"unknown registry auth {auth!r}")
    config = tmp / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    log_path = tmp / "registry.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    registry = Registry(f"127.0.0.1:{port}", storage, proc, log_path)
    try:
        _wait_port(port, proc, log_path)
        registry.token_server = token_server  # type: ignore[attr-defined]
        yield registry
    finally:
        registry.stop()
        if token_server is not None:
            token_server.stop()
