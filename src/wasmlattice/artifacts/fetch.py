"""The fetcher: the host's policy and the digest cache around every artifact source.

`ArtifactFetcher.fetch(ref)` picks the source registered for the reference's scheme (`oci` for a
bare reference and `oci://`/`http(s)://`; `fetcher.register("lattice", source)` adds others),
asks it which digest the reference names now, answers from the cache when that digest is there,
else pulls, checks the bytes against the digest and the size cap, and caches them. `file://`
references are not the fetcher's: the host reads them through `runtime/hostfiles.py`.

The OCI source resolves a tag with one manifest request per fetch (tags move) and a reference
pinned by digest from the cached manifest, with no network at all once both are cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Collection
from dataclasses import dataclass

from wasmlattice.artifacts.auth import Credentials
from wasmlattice.artifacts.cache import ArtifactCache, PendingWrites, sha256_digest, written
from wasmlattice.artifacts.lattice_store import LATTICE_SCHEME, LatticeRef, LatticeStore, parse_lattice_ref
from wasmlattice.artifacts.oci import (
    MAX_MANIFEST_BYTES,
    Descriptor,
    Manifest,
    OciClient,
    Progress,
    parse_manifest,
)
from wasmlattice.artifacts.reference import OciReference, parse_oci_ref, scheme_of
from wasmlattice.artifacts.source import ArtifactError, ArtifactSource

log = logging.getLogger(__name__)

# As the runtime's `--max-component-size` default (runtime/hostfiles.py), without importing it.
DEFAULT_MAX_ARTIFACT_SIZE = 256 * 1024 * 1024
ALLOW_LATEST_HINT = "start the host with --allow-latest (WASMCLOUD_OCI_ALLOW_LATEST=true)"
INSECURE_HINT = "--allowed-insecure (WASMCLOUD_OCI_ALLOWED_INSECURE)"
MAX_INDEX_DEPTH = 2
# Layer sizes an `OciSource` remembers between resolving a reference and pulling its layer.
MAX_REMEMBERED_SIZES = 256


@dataclass(frozen=True)
class FetchPolicy:
    """What a host lets references fetch: `latest`, plain-HTTP registries, and the size cap."""

    allow_latest: bool = False
    allowed_insecure: frozenset[str] = frozenset()
    max_size: int = DEFAULT_MAX_ARTIFACT_SIZE
    allow_latest_hint: str = ALLOW_LATEST_HINT

    @classmethod
    def of(
        cls,
        allow_latest: bool = False,
        allowed_insecure: Collection[str] = (),
        max_size: int = DEFAULT_MAX_ARTIFACT_SIZE,
    ) -> FetchPolicy:
        """A policy with the insecure registry list normalized (lowercase, blanks dropped)."""
        insecure = frozenset(h.strip().lower() for h in allowed_insecure if h.strip())
        return cls(allow_latest, insecure, max_size)

    def check_oci(self, ref: str) -> OciReference:
        """The parsed reference if the policy allows it; `ArtifactError` saying why not."""
        parsed = parse_oci_ref(ref)
        if parsed.is_latest and not self.allow_latest:
            raise self._latest_refused(ref, tagged=bool(parsed.tag))
        insecure = (
            parsed.registry.lower() in self.allowed_insecure
            or parsed.hostname.lower() in self.allowed_insecure
        )
        if ref.strip().lower().startswith("http://") and not insecure:
            raise ArtifactError(
                f"cannot fetch {ref!r}: it names plain HTTP, but registry {parsed.registry} is not in "
                f"{INSECURE_HINT}; this host speaks HTTPS to every other registry"
            )
        return parsed

    def check_lattice(self, ref: str) -> LatticeRef:
        """The parsed `lattice://` reference if the policy allows it (the same `latest` rule as OCI)."""
        parsed = parse_lattice_ref(ref)
        if parsed.is_latest and not self.allow_latest:
            raise self._latest_refused(ref, tagged=parsed.tag is not None)
        return parsed

    def _latest_refused(self, ref: str, tagged: bool) -> ArtifactError:
        what = "is tagged 'latest'" if tagged else "has no tag or digest, which means 'latest'"
        return ArtifactError(
            f"cannot fetch {ref!r}: it {what}, and fetching images tagged 'latest' is prohibited on this "
            f"host ({self.allow_latest_hint}); name a version tag or a digest"
        )


@dataclass(frozen=True)
class Artifact:
    """A fetched artifact: the reference, its digest and bytes, and whether the cache served them."""

    ref: str
    digest: str
    data: bytes | bytearray
    cached: bool


class OciSource:
    """The `ArtifactSource` of OCI registries (bare, `oci://` and `http(s)://` references)."""

    def __init__(
        self,
        client: OciClient,
        cache: ArtifactCache,
        max_size: int,
        progress: Progress | None = None,
        writes: PendingWrites | None = None,
    ) -> None:
        """`writes`: where manifests written to the cache in the background are tracked (the
        fetcher's, so its `close` waits for them)."""
        self.client = client
        self.cache = cache
        self.max_size = max_size
        self.progress = progress
        # `pull` hashes while the layer streams in and refuses a mismatch: no second pass needed.
        self.verifies_digest = True
        self.writes = writes if writes is not None else PendingWrites()
        # Layer sizes from manifests resolved recently: `pull` enforces the size the manifest named.
        self._sizes: dict[str, int] = {}

    async def resolve(self, ref: str) -> str:
        """The digest of the component layer `ref` names (a pinned, cached manifest: no network)."""
        return (await self.layer(parse_oci_ref(ref))).digest

    async def layer(self, ref: OciReference) -> Descriptor:
        """The component layer's descriptor, following a trivial image index."""
        for _ in range(MAX_INDEX_DEPTH + 1):
            manifest = await self.manifest(ref)
            if not manifest.is_index:
                layer = manifest.component_layer(str(ref))
                # A resolve answered from the cache is never pulled: keep only the recent sizes.
                while len(self._sizes) >= MAX_REMEMBERED_SIZES:
                    del self._sizes[next(iter(self._sizes))]
                self._sizes[layer.digest] = layer.size
                return layer
            ref = OciReference(ref.registry, ref.repository, ref.tag, manifest.pick_from_index(str(ref)))
        raise ArtifactError(f"{ref}: image indexes nested more than {MAX_INDEX_DEPTH} deep")

    async def manifest(self, ref: OciReference) -> Manifest:
        """The manifest `ref` names: from the cache when pinned by digest, else from the registry."""
        if ref.digest is not None:
            raw = await asyncio.to_thread(self.cache.get, ref.digest, MAX_MANIFEST_BYTES)
            if raw is not None:
                return parse_manifest(raw, ref.digest, None, str(ref))
        manifest = await self.client.get_manifest(ref)
        # Kept by digest, so a later reference pinned to it needs no registry.
        self.writes.put_later(self.cache, manifest.digest, manifest.raw, False)
        return manifest

    async def pull(self, ref: str, digest: str) -> bytearray:
        """The layer's bytes, streamed and checked against `digest` and the size cap."""
        size = self._sizes.pop(digest, None)
        return await self.client.get_blob(parse_oci_ref(ref), digest, self.max_size, size, self.progress)


class ArtifactFetcher:
    """Policy, per-scheme sources and the digest cache; one per host (or CLI command)."""

    def __init__(
        self,
        policy: FetchPolicy | None = None,
        credentials: Credentials | None = None,
        cache: ArtifactCache | None = None,
        progress: Progress | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context`: for HTTPS registries (`registry_ssl_context(--tls-ca-path files)`)."""
        self.policy = policy or FetchPolicy()
        self.cache = cache or ArtifactCache()
        self.oci = OciClient(credentials, insecure=self.policy.allowed_insecure, ssl_context=ssl_context)
        self._sources: dict[str, ArtifactSource] = {}
        self._checks: dict[str, Callable[[str], object]] = {}
        # One pull per digest at a time: concurrent scales of one image download it once.
        self._pulling: dict[str, asyncio.Lock] = {}
        self._writes = PendingWrites()
        self.register(
            "oci",
            OciSource(self.oci, self.cache, self.policy.max_size, progress, self._writes),
            self.policy.check_oci,
        )

    def register(
        self, scheme: str, source: ArtifactSource, check: Callable[[str], object] | None = None
    ) -> None:
        """Serve references of `scheme` (e.g. `lattice`) from `source`; `check` refuses refs up front."""
        self._sources[scheme.lower()] = source
        if check is not None:
            self._checks[scheme.lower()] = check

    def use_lattice_store(self, store: LatticeStore) -> None:
        """Serve `lattice://` references from the lattice's own artifact store (same policy, same cache)."""
        self.register(LATTICE_SCHEME.removesuffix("://"), store, self.policy.check_lattice)

    def handles(self, ref: str) -> bool:
        """Whether a source is registered for `ref`'s scheme."""
        return scheme_of(ref) in self._sources

    def check(self, ref: str) -> None:
        """`ArtifactError` if the policy refuses `ref` outright (malformed, `latest`, insecure, scheme)."""
        scheme = scheme_of(ref)
        if scheme not in self._sources:
            known = ", ".join(sorted(s + "://" if s != "oci" else "OCI" for s in self._sources))
            raise ArtifactError(
                f"cannot fetch {ref!r}: no source for {scheme}:// references (this host fetches: {known}, file://)"
            )
        check = self._checks.get(scheme)
        if check is not None:
            check(ref)

    async def fetch(self, ref: str) -> Artifact:
        """The bytes `ref` names now, checked against their digest; from the cache when it has them."""
        self.check(ref)
        source = self._sources[scheme_of(ref)]
        # A reference pinned by digest whose bytes are cached needs no source at all.
        pinned = getattr(source, "pinned_digest", None)
        digest = pinned(ref) if callable(pinned) else None
        if digest is not None:
            await written(self.cache, digest)
            hit = await asyncio.to_thread(self.cache.get, digest, self.policy.max_size)
            if hit is not None:
                return Artifact(ref, digest, hit, cached=True)
        digest = await source.resolve(ref)
        lock = self._pulling.setdefault(digest, asyncio.Lock())
        async with lock:
            try:
                await written(self.cache, digest)
                cached = await asyncio.to_thread(self.cache.get, digest, self.policy.max_size)
                if cached is not None:
                    log.debug("%s: %s from the artifact cache", ref, digest)
                    return Artifact(ref, digest, cached, cached=True)
                data = await source.pull(ref, digest)
                if len(data) > self.policy.max_size:
                    raise ArtifactError(
                        f"{ref}: the artifact has {len(data)} bytes; at most {self.policy.max_size} are "
                        "accepted (--max-component-size)"
                    )
                # A source that checks while streaming (OCI) is not hashed twice; any other is here.
                verified = getattr(source, "verifies_digest", False) is True
                actual = digest if verified else await asyncio.to_thread(sha256_digest, data)
                if actual != digest:
                    raise ArtifactError(
                        f"digest mismatch for {ref}: expected {digest}, the bytes have {actual}"
                    )
                # Written after the caller has the bytes (artifacts/cache.py says why); a later
                # fetch of this digest waits for the file.
                self._writes.put_later(self.cache, digest, data, True)
                log.info("%s: pulled %s (%d bytes)", ref, digest, len(data))
                return Artifact(ref, digest, data, cached=False)
            finally:
                # A waiter woken meanwhile still holds its reference; a newcomer may pull again
                # (the cache's atomic writes make that harmless).
                self._pulling.pop(digest, None)

    async def close(self) -> None:
        """Close the registry connections, once the cache writes started here have ended."""
        await self._writes.wait()  # layers and (through OciSource) manifests
        with contextlib.suppress(Exception):
            await self.oci.close()
