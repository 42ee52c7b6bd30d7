"""An OCI distribution client on aiohttp: manifests, blobs, uploads, and the registry auth flows.

Why not a library: the maintained Python OCI clients (`oras`, and `docker`'s registry client) are
synchronous and requests-based, so each pull would hold a thread and the bearer-token flow would
run off the event loop; they also buffer a layer before its digest can be checked, and know the
container media types rather than the wasm ones. Here the few calls of the distribution spec
(https://github.com/opencontainers/distribution-spec/blob/main/spec.md) run on the host's event
loop with aiohttp (already a dependency): a layer is hashed while it streams in, bounded by the
host's size cap, with progress reported per chunk.

Auth (https://distribution.github.io/distribution/spec/auth/token/): a request goes out
anonymously (or with what the previous request of the same registry and scope needed); a `401`
answers with a `WWW-Authenticate` challenge: `Basic` is answered with the registry's credential,
`Bearer realm=..,service=..,scope=..` by asking the realm for a token (with the credential as
basic auth, if there is one) and retrying with it. A static token pushed with `registry.put` is
sent as a bearer token as is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import ssl
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin

import aiohttp

from wasmlattice.artifacts.auth import Credential, Credentials
from wasmlattice.artifacts.reference import OciReference, is_digest
from wasmlattice.artifacts.source import ArtifactError

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
# The OCI wasm artifact (https://tag-runtime.cncf.io/wgs/wasm/deliverables/wasm-oci-artifact/),
# what `wash push` writes, and wasmCloud's older component layer.
WASM_CONFIG = "application/vnd.wasm.config.v0+json"
WASM_LAYER = "application/wasm"
WASMCLOUD_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
COMPONENT_LAYERS = (WASM_LAYER, WASMCLOUD_LAYER)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
ACCEPT_MANIFESTS = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
# A manifest is a few hundred bytes; anything near this is not one of ours.
MAX_MANIFEST_BYTES = 4 << 20
# A token answer is a JWT or an opaque string in a small JSON document.
MAX_TOKEN_RESPONSE_BYTES = 1 << 20
# An error body is only read for the message it carries.
MAX_ERROR_BODY_BYTES = 16 << 10
# A CA bundle (the system's is about 200 KiB); a file far larger is not one.
MAX_CA_FILE_BYTES = 16 << 20
CHUNK = 1 << 20
USER_AGENT = "wasmlattice"

Progress = Callable[[int, int], None]


class RegistryError(ArtifactError):
    """A registry (or its token server) answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest says about one blob."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The descriptor as manifest JSON."""
        doc: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return doc


@dataclass(frozen=True)
class Manifest:
    """A manifest or an index as fetched: its bytes, their digest, and the parsed document."""

    digest: str
    media_type: str
    raw: bytes
    doc: dict[str, Any]

    @property
    def is_index(self) -> bool:
        """Whether this is an image index (a list of manifests) rather than one manifest."""
        return self.media_type in INDEX_TYPES

    def component_layer(self, where: str) -> Descriptor:
        """The one wasm layer of this manifest; `ArtifactError` naming what is there instead."""
        layers = self.doc.get("layers")
        if not isinstance(layers, list):
            raise ArtifactError(f"{where}: the manifest has no `layers` list")
        found = [d for d in (_descriptor(x, where) for x in layers) if d.media_type in COMPONENT_LAYERS]
        if len(found) == 1:
            return found[0]
        types = ", ".join(sorted({str(x.get("mediaType")) for x in layers if isinstance(x, dict)})) or "none"
        if not found:
            raise ArtifactError(
                f"{where} is not a wasm component artifact: no layer of type {' or '.join(COMPONENT_LAYERS)} "
                f"(its layers: {types})"
            )
        raise ArtifactError(f"{where} has {len(found)} wasm layers; expected exactly one")

    def pick_from_index(self, where: str) -> str:
        """The digest of the one manifest an index leads to (a single entry, or a single `wasm` one)."""
        entries = [m for m in self.doc.get("manifests") or [] if isinstance(m, dict)]
        if len(entries) != 1:
            entries = [m for m in entries if (m.get("platform") or {}).get("architecture") == "wasm"]
        if len(entries) != 1:
            raise ArtifactError(
                f"{where} is an image index of {len(self.doc.get('manifests') or [])} manifests, none of "
                "them the only wasm one; name the component's manifest by digest (REF@sha256:...)"
            )
        return _descriptor(entries[0], where).digest


def parse_manifest(raw: bytes, digest: str, media_type: str | None, where: str) -> Manifest:
    """A manifest from its bytes; `ArtifactError` if they are not a manifest or an index."""
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ArtifactError(f"{where}: the manifest is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ArtifactError(f"{where}: the manifest is not a JSON object")
    kind = doc.get("mediaType") or (media_type or "").split(";")[0].strip()
    if not kind:
        kind = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if kind not in MANIFEST_TYPES and kind not in INDEX_TYPES:
        raise ArtifactError(f"{where}: unsupported manifest type {kind!r}")
    return Manifest(digest, kind, raw, doc)


def _descriptor(obj: Any, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ArtifactError(f"{where}: a manifest descriptor is not an object")
    digest, size, kind = obj.get("digest"), obj.get("size"), obj.get("mediaType")
    if not isinstance(digest, str) or not is_digest(digest):
        raise ArtifactError(f"{where}: descriptor digest {digest!r} is not a sha256 digest")
    if not isinstance(size, int) or size < 0:
        raise ArtifactError(f"{where}: descriptor {digest} has no valid size")
    return Descriptor(str(kind or ""), digest, size)


@dataclass
class _Challenge:
    scheme: str  # "basic" or "bearer"
    params: dict[str, str]


_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def parse_challenge(header: str) -> _Challenge | None:
    """A `WWW-Authenticate` header's scheme and parameters (None if it is neither Basic nor Bearer)."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() not in ("basic", "bearer"):
        return None
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _PARAM.finditer(rest)
    }
    return _Challenge(scheme.lower(), params)


TLS_CA_FLAG = "--tls-ca-path"


def registry_ssl_context(ca_paths: Sequence[str | os.PathLike[str]] = ()) -> ssl.SSLContext | None:
    """The TLS context for registries: the system's CAs plus each PEM file of `ca_paths` (the
    wasmCloud host's `--tls-ca-path`); None without extra CAs (aiohttp's default context).

    `ArtifactError` naming the flag and the file when one cannot be read or holds no certificate.
    """
    if not ca_paths:
        return None
    ctx = ssl.create_default_context()
    for path in ca_paths:
        try:
            with open(path, "rb") as f:
                pem = f.read(MAX_CA_FILE_BYTES + 1)
        except OSError as e:
            raise ArtifactError(
                f"{TLS_CA_FLAG} {path}: cannot read the CA file ({e.strerror or e})"
            ) from None
        if len(pem) > MAX_CA_FILE_BYTES:
            raise ArtifactError(f"{TLS_CA_FLAG} {path}: larger than {MAX_CA_FILE_BYTES} bytes; not a CA file")
        try:
            ctx.load_verify_locations(cadata=pem.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as e:
            raise ArtifactError(f"{TLS_CA_FLAG} {path}: not a PEM file of CA certificates ({e})") from None
    return ctx


class OciClient:
    """Speaks the distribution API to any number of registries, with one connection pool.

    `insecure`: registries (`host:port` or `host`) spoken to over plain HTTP; every other registry
    over HTTPS. Create and use inside a running event loop; `close()` when done.
    """

    def __init__(
        self,
        credentials: Credentials | None = None,
        insecure: Collection[str] = (),
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 30.0,
        read_timeout: float = 120.0,
    ) -> None:
        self.credentials = credentials or Credentials()
        self.insecure = frozenset(h.strip().lower() for h in insecure if h.strip())
        self.ssl_context = ssl_context
        self.timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None
        # What each registry (and scope, for tokens) wanted last time: no 401 round trip next time.
        self._auth: dict[tuple[str, str], str] = {}

    async def __aenter__(self) -> OciClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def is_insecure(self, ref: OciReference) -> bool:
        """Whether `ref`'s registry is spoken to over plain HTTP."""
        return ref.registry.lower() in self.insecure or ref.hostname.lower() in self.insecure

    def base_url(self, ref: OciReference) -> str:
        """`http(s)://<api host>/v2/<repository>`."""
        scheme = "http" if self.is_insecure(ref) else "https"
        return f"{scheme}://{ref.api_host}/v2/{ref.repository}"

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self.ssl_context if self.ssl_context is not None else True)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self.timeout, headers={"User-Agent": USER_AGENT}
            )
        return self._session

    # -- requests with auth ------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        ref: OciReference,
        url: str,
        *,
        push: bool = False,
        headers: Mapping[str, str] | None = None,
        data: bytes | Callable[[], AsyncIterator[bytes]] | None = None,
    ) -> aiohttp.ClientResponse:
        """Send with the auth the registry wants (answering one 401 challenge); the open response.

        The caller reads and releases the response. Transport errors become `RegistryError`s naming
        the registry.
        """
        scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
        key = (ref.registry, scope)
        cred = self.credentials.lookup(ref.registry)
        auth = self._auth.get(key) or self._auth.get((ref.registry, "*"))
        if auth is None and cred is not None and cred.token and not cred.is_basic:
            auth = f"Bearer {cred.token}"
        resp = await self._send(method, ref, url, headers, data, auth)
        if resp.status != 401:
            return resp
        header = resp.headers.get("WWW-Authenticate", "")
        body = await _error_text(resp)
        challenge = parse_challenge(header)
        self._auth.pop(key, None)
        self._auth.pop((ref.registry, "*"), None)
        if challenge is None:
            raise RegistryError(self._refused(ref, cred, header, body), 401)
        if challenge.scheme == "basic":
            basic = None
            if cred is not None and cred.is_basic:
                basic = aiohttp.BasicAuth(cred.username or "", cred.password or "").encode()
            if basic is None or basic == auth:  # nothing (else) to answer with
                raise RegistryError(self._refused(ref, cred, header, body), 401)
            auth = basic
            self._auth[(ref.registry, "*")] = auth
        else:
            # A fresh token for this scope (the one remembered may have expired).
            token = await self._token(ref, challenge, scope, cred)
            auth = f"Bearer {token}"
            self._auth[key] = auth
        resp = await self._send(method, ref, url, headers, data, auth)
        if resp.status == 401:
            header = resp.headers.get("WWW-Authenticate", header)
            body = await _error_text(resp)
            self._auth.pop(key, None)
            self._auth.pop((ref.registry, "*"), None)
            raise RegistryError(self._refused(ref, cred, header, body), 401)
        return resp

    async def _send(
        self,
        method: str,
        ref: OciReference,
        url: str,
        headers: Mapping[str, str] | None,
        data: bytes | Callable[[], AsyncIterator[bytes]] | None,
        auth: str | None,
    ) -> aiohttp.ClientResponse:
        h = dict(headers or {})
        if auth is not None:
            h["Authorization"] = auth
        body: Any = data() if callable(data) else data
        try:
            return await self._get_session().request(method, url, headers=h, data=body)
        except aiohttp.ClientConnectorCertificateError as e:
            raise RegistryError(
                f"TLS certificate of registry {ref.registry} was not accepted: {e.certificate_error} "
                f"(a registry with a certificate from a private CA needs {TLS_CA_FLAG} CA.pem)"
            ) from None
        except (aiohttp.ClientSSLError, ssl.SSLError) as e:
            raise RegistryError(
                f"TLS with registry {ref.registry} failed: {e} (a registry that speaks plain HTTP must be "
                "listed in --allowed-insecure / --insecure)"
            ) from None
        except aiohttp.ClientError as e:
            hint = ""
            if "WRONG_VERSION_NUMBER" in str(e) or "record layer" in str(e):
                hint = " (it may speak plain HTTP: list it in --allowed-insecure / --insecure)"
            raise RegistryError(f"cannot reach registry {ref.registry} ({url}): {e}{hint}") from None
        except TimeoutError:
            raise RegistryError(f"registry {ref.registry} did not answer in time ({url})") from None

    def _refused(self, ref: OciReference, cred: Credential | None, header: str, body: str) -> str:
        who = (
            "anonymous access"
            if cred is None
            else f"the credentials of {cred.username or 'token'} ({cred.origin})"
        )
        realm = parse_challenge(header)
        realm_text = f"; realm {realm.params.get('realm')!r}" if realm and realm.params.get("realm") else ""
        return (
            f"registry {ref.registry} refused {who} to repository {ref.repository}: 401 Unauthorized"
            f"{realm_text}{': ' + body if body else ''}"
        )

    async def _token(self, ref: OciReference, ch: _Challenge, scope: str, cred: Credential | None) -> str:
        realm = ch.params.get("realm")
        if not realm or not realm.startswith(("https://", "http://")):
            raise RegistryError(f"registry {ref.registry} asked for a bearer token without a usable realm")
        query = {"scope": ch.params.get("scope") or scope}
        if ch.params.get("service"):
            query["service"] = ch.params["service"]
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        headers = {}
        if cred is not None and cred.is_basic:
            headers["Authorization"] = aiohttp.BasicAuth(cred.username or "", cred.password or "").encode()
        try:
            async with self._get_session().get(url, headers=headers) as resp:
                raw = await resp.content.read(MAX_TOKEN_RESPONSE_BYTES + 1)
                if resp.status != 200:
                    who = "anonymously" if cred is None else f"as {cred.username} ({cred.origin})"
                    text = raw[:MAX_ERROR_BODY_BYTES].decode(errors="replace").strip()
                    raise RegistryError(
                        f"token server {realm} of registry {ref.registry} refused a token for "
                        f"{query['scope']} {who}: {resp.status} {resp.reason}{': ' + text if text else ''}",
                        resp.status,
                    )
        except aiohttp.ClientError as e:
            raise RegistryError(
                f"cannot reach the token server {realm} of registry {ref.registry}: {e}"
            ) from None
        try:
            doc = json.loads(raw)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token server {realm} of registry {ref.registry} sent no token")
        return token

    # -- pull ---------------------------------------------------------------------------------

    async def get_manifest(self, ref: OciReference) -> Manifest:
        """The manifest (or index) `ref` names, checked against its digest when pinned."""
        url = f"{self.base_url(ref)}/manifests/{ref.reference}"
        resp = await self._request("GET", ref, url, headers={"Accept": ACCEPT_MANIFESTS})
        async with resp:
            if resp.status != 200:
                raise RegistryError(await self._status_error(ref, resp, "manifest"), resp.status)
            if (resp.content_length or 0) > MAX_MANIFEST_BYTES:
                raise ArtifactError(self._too_big_manifest(ref))
            raw = await resp.content.read(MAX_MANIFEST_BYTES + 1)
            if len(raw) > MAX_MANIFEST_BYTES:
                raise ArtifactError(self._too_big_manifest(ref))
            media_type = resp.headers.get("Content-Type")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if ref.digest is not None and digest != ref.digest:
            raise ArtifactError(
                f"digest mismatch for {ref}: the reference pins {ref.digest}, the registry sent a "
                f"manifest with digest {digest}"
            )
        return parse_manifest(raw, digest, media_type, str(ref))

    def _too_big_manifest(self, ref: OciReference) -> str:
        return f"the manifest of {ref} is larger than {MAX_MANIFEST_BYTES} bytes; refused"

    async def get_blob(
        self,
        ref: OciReference,
        digest: str,
        max_size: int,
        size: int | None = None,
        progress: Progress | None = None,
    ) -> bytearray:
        """The blob `digest` of `ref`'s repository, hashed while it streams in; at most `max_size` bytes.

        `size` (from the manifest) is enforced too. `ArtifactError` on a digest mismatch.
        """
        if size is not None and size > max_size:
            raise ArtifactError(self._too_big_blob(ref, digest, size, max_size))
        url = f"{self.base_url(ref)}/blobs/{digest}"
        resp = await self._request("GET", ref, url)
        async with resp:
            if resp.status != 200:
                raise RegistryError(await self._status_error(ref, resp, "blob", digest), resp.status)
            cap = min(max_size, size) if size is not None else max_size
            length = resp.content_length
            if length is not None and length > cap:
                raise ArtifactError(self._too_big_blob(ref, digest, length, cap))
            if length is not None and size is not None and length != size:
                raise ArtifactError(
                    f"registry {ref.registry} sends blob {digest} of {ref} with {length} bytes; the "
                    f"manifest says {size}"
                )
            try:
                data, actual = await self._receive(ref, digest, resp, cap, length, size, progress)
            except (aiohttp.ClientError, TimeoutError) as e:
                raise RegistryError(f"registry {ref.registry} broke off sending blob {digest}: {e}") from None
        if actual != digest:
            raise ArtifactError(
                f"digest mismatch for the layer of {ref}: the manifest names {digest}, the registry sent "
                f"{len(data)} bytes with digest {actual}"
            )
        return data

    async def _receive(
        self,
        ref: OciReference,
        digest: str,
        resp: aiohttp.ClientResponse,
        cap: int,
        length: int | None,
        size: int | None,
        progress: Progress | None,
    ) -> tuple[bytearray, str]:
        """The body and its digest. With a Content-Length each received buffer is copied into one
        buffer of that size and dropped, so the allocator hands the next receive the same (already
        mapped) memory and the layer is never joined; without one the buffer grows."""
        total = length if length is not None else (size or 0)
        known = length is not None
        data = bytearray(length) if length is not None else bytearray()
        view = memoryview(data) if length is not None else None
        hasher = _StreamHasher(view)
        received = 0
        try:
            # Let aiohttp buffer up to 2 x CHUNK before it stops reading the socket (a recent
            # aiohttp's method; older ones keep their default buffer).
            if hasattr(resp.content, "set_read_chunk_size"):
                resp.content.set_read_chunk_size(CHUNK)
            # `iter_chunks` hands over the buffers as received, where `iter_chunked(n)` joins
            # them into n-byte pieces: one copy of the layer fewer.
            async for chunk, _ in resp.content.iter_chunks():
                if not chunk:
                    continue
                end = received + len(chunk)
                if end > cap or (view is not None and end > len(data)):
                    raise ArtifactError(
                        self._too_big_blob(ref, digest, end, min(cap, len(data)) if known else cap)
                    )
                if view is not None:
                    view[received:end] = chunk
                    hasher.advance(end)
                else:
                    data += chunk
                    hasher.feed(chunk)
                received = end
                if progress is not None:
                    progress(received, total)
            if received != len(data):
                raise RegistryError(
                    f"registry {ref.registry} sent {received} of the {len(data)} bytes of blob {digest}"
                )
            actual = await hasher.result()
        finally:
            hasher.close()
        return data, actual

    def _too_big_blob(self, ref: OciReference, digest: str, size: int, cap: int) -> str:
        return (
            f"the layer {digest} of {ref} has {size} bytes or more; at most {cap} are accepted "
            "(--max-component-size)"
        )

    async def _status_error(
        self, ref: OciReference, resp: aiohttp.ClientResponse, what: str, digest: str = ""
    ) -> str:
        body = await _error_text(resp)
        codes = _error_codes(body)
        detail = f"{resp.status} {resp.reason}{': ' + body if body else ''}"
        if resp.status == 404:
            if "NAME_UNKNOWN" in codes:
                return f"registry {ref.registry} has no repository {ref.repository} ({detail})"
            if what == "manifest":
                name = f"digest {ref.digest}" if ref.digest else f"tag {ref.tag or 'latest'}"
                return f"registry {ref.registry}: repository {ref.repository} has no {name} ({detail})"
            return f"registry {ref.registry}: repository {ref.repository} has no blob {digest} ({detail})"
        if resp.status == 403:
            return f"registry {ref.registry} denied access to repository {ref.repository} ({detail})"
        return f"registry {ref.registry} answered {detail} for the {what} of {ref}"

    # -- push ---------------------------------------------------------------------------------

    async def blob_exists(self, ref: OciReference, digest: str) -> bool:
        """Whether the repository already has blob `digest` (HEAD)."""
        resp = await self._request("HEAD", ref, f"{self.base_url(ref)}/blobs/{digest}", push=True)
        async with resp:
            if resp.status == 200:
                return True
            if resp.status == 404:
                return False
            raise RegistryError(await self._status_error(ref, resp, "blob", digest), resp.status)

    async def push_blob(self, ref: OciReference, data: bytes, progress: Progress | None = None) -> str:
        """Upload `data` unless the registry has it (monolithic: POST, then PUT with the digest)."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if await self.blob_exists(ref, digest):
            if progress is not None:
                progress(len(data), len(data))
            return digest
        resp = await self._request("POST", ref, f"{self.base_url(ref)}/blobs/uploads/", push=True, data=b"")
        async with resp:
            if resp.status not in (201, 202):
                raise RegistryError(await self._status_error(ref, resp, "upload"), resp.status)
            location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {ref.registry} started an upload without a Location")
        url = urljoin(self.base_url(ref) + "/", location)
        url += ("&" if "?" in url else "?") + urlencode({"digest": digest})

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), CHUNK):
                yield data[start : start + CHUNK]
                if progress is not None:
                    progress(min(start + CHUNK, len(data)), len(data))

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        resp = await self._request("PUT", ref, url, push=True, headers=headers, data=chunks)
        async with resp:
            if resp.status != 201:
                raise RegistryError(await self._status_error(ref, resp, "upload", digest), resp.status)
        return digest

    async def put_manifest(self, ref: OciReference, raw: bytes, media_type: str = OCI_MANIFEST) -> str:
        """Store a manifest under `ref`'s tag (or digest); the manifest's digest."""
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        url = f"{self.base_url(ref)}/manifests/{ref.tag or ref.digest or digest}"
        resp = await self._request("PUT", ref, url, push=True, headers={"Content-Type": media_type}, data=raw)
        async with resp:
            if resp.status != 201:
                raise RegistryError(await self._status_error(ref, resp, "manifest"), resp.status)
        return digest


# A pull hashes on a thread of its own while the loop keeps receiving: hashlib releases the GIL
# while it hashes a large buffer, so on two cores the sha256 of the layer (about 0.5 ms per MiB)
# overlaps the transfer instead of following it. Batches are queued without waiting for the previous
# one (one thread, so they are hashed in order), and only the end of the pull waits for the last.
# A thread of its own rather than the loop's default executor, which a host fills with compiles
# that take seconds, and kept between pulls (starting one per pull cost milliseconds on a busy
# machine). Measured in BENCHMARKS.md ("Artifact pull").
_HASH_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oci-sha256")
# Bytes handed to the hashing thread at once.
HASH_BATCH = 1 << 20


class _StreamHasher:
    """sha256 of a blob fed in order, hashed on `_HASH_POOL` in batches.

    The blob arrives either into one preallocated buffer (`view`: `advance(end)` says its first
    `end` bytes are in, and a batch is one slice of it, never a copy) or as separate buffers
    (`feed`). Fed bytes must not change afterwards.
    """

    def __init__(self, view: memoryview | None = None) -> None:
        self._view = view
        self._sha = hashlib.sha256()
        self._end = 0  # `view`: bytes fed so far
        self._hashed = 0  # `view`: bytes handed to the thread so far
        self._pieces: list[memoryview | bytes] = []  # no `view`: fed, not handed over yet
        self._waiting = 0
        self._last: asyncio.Future[None] | None = None
        self._closed = False

    def feed(self, piece: bytes) -> None:
        """Queue a separate buffer (no preallocated `view`)."""
        self._pieces.append(piece)
        self._waiting += len(piece)
        if self._waiting >= HASH_BATCH:
            self._hand_over()

    def advance(self, end: int) -> None:
        """The first `end` bytes of `view` are in (and will not change)."""
        self._waiting += end - self._end
        self._end = end
        if self._waiting >= HASH_BATCH:
            self._hand_over()

    def _hand_over(self) -> None:
        pieces: list[memoryview | bytes]
        if self._view is not None:
            if self._end == self._hashed:
                return
            pieces = [self._view[self._hashed : self._end]]
            self._hashed = self._end
        else:
            if not self._pieces:
                return
            pieces, self._pieces = self._pieces, []
        self._waiting = 0
        self._last = asyncio.get_running_loop().run_in_executor(_HASH_POOL, self._update, pieces)

    def _update(self, pieces: list[memoryview | bytes]) -> None:
        for piece in pieces:
            if self._closed:  # the pull was abandoned: the rest is nobody's
                return
            self._sha.update(piece)

    async def result(self) -> str:
        """`sha256:<hex>` of everything fed, once the thread has hashed it all."""
        self._hand_over()
        if self._last is not None:
            # Batches run in order on one thread: once the last is done, so are all before it.
            await asyncio.shield(self._last)
        return "sha256:" + self._sha.hexdigest()

    def close(self) -> None:
        """Stop hashing what is queued (after `result`, a no-op)."""
        self._closed = True
        self._pieces = []
        last = self._last
        if last is not None and not last.done():
            # Retrieved when it ends, so asyncio does not log a failure nobody awaits.
            last.add_done_callback(lambda f: f.cancelled() or f.exception())


async def _error_text(resp: aiohttp.ClientResponse) -> str:
    """The registry's error messages (distribution error JSON), or the start of the body."""
    try:
        raw = await resp.content.read(MAX_ERROR_BODY_BYTES)
    except (TimeoutError, aiohttp.ClientError):
        return ""
    text = raw.decode(errors="replace").strip()
    try:
        errors = json.loads(text).get("errors")
        parts = [f"{e.get('code')} {e.get('message')}".strip() for e in errors if isinstance(e, dict)]
        return "; ".join(parts) or text
    except (ValueError, AttributeError, TypeError):
        return text[:500]


def _error_codes(text: str) -> set[str]:
    return set(re.findall(r"\b[A-Z][A-Z_]+_UNKNOWN\b|\bUNAUTHORIZED\b|\bDENIED\b", text))
