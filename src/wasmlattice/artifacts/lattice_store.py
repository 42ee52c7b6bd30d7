"""The lattice's own artifact store: components pushed into the lattice's JetStream, pulled by any host.

A reference is `lattice://NAME[:TAG][@sha256:HEX]` (docs/artifacts.md, "The lattice's own artifact
store"). The bytes live once per digest in the JetStream object store `ARTIFACTS_<lattice>`
(object name `sha256:<hex>`); tags live in the KV bucket `ARTIFACTTAGS_<lattice>` (key
`<name>=<tag>`, value a JSON record with the digest, size, media type, annotations and push
time). So hosts on several machines share components through the NATS they already share: no
registry, no shared filesystem.

Reading an object does not use nats-py's `ObjectStore.get`: it follows the chunks with an ordered
push consumer and measured about 11 MB/s here (0.8 s for 18 MB, 3.2 s for 36 MB, most of it waiting
on the consumer's flow control), while asking the stream for each chunk by subject (a direct get,
`next_by_subj`) reads 36 MB in about 0.1 s, keeps memory bounded by the object's recorded size and
leaves no consumer behind on the server if the read fails half way. The layout it relies on
(`OBJ_<bucket>` stream, chunks on `$O.<bucket>.C.<nuid>`) is the NATS object store's (ADR-20,
https://github.com/nats-io/nats-architecture-and-design/blob/main/adr/ADR-20.md); the constants are
nats-py's own. Writes use nats-py's `put` (18 MB in under 0.1 s).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.object_store import (
    OBJ_CHUNKS_PRE_TEMPLATE,
    OBJ_DEFAULT_CHUNK_SIZE,
    OBJ_DIGEST_TYPE,
    OBJ_STREAM_TEMPLATE,
)

from wasmlattice.artifacts.source import ArtifactError
from wasmlattice.protocol import limits
from wasmlattice.protocol.kv import KvBucket, KvError, create_replicated, note_replicas, open_bucket
from wasmlattice.runtime.hostfiles import DEFAULT_MAX_COMPONENT_SIZE

LATTICE_SCHEME = "lattice://"
DEFAULT_TAG = "latest"
MEDIA_TYPE = "application/wasm"

# A name is an OCI repository path (lower-case components joined by '/'); its length cap is the
# one OCI registries commonly apply to a repository name.
MAX_NAME_LEN = 255
# OCI's tag grammar allows at most 128 characters.
MAX_TAG_LEN = 128
DEFAULT_CHUNK_SIZE = OBJ_DEFAULT_CHUNK_SIZE

BLOB_BUCKET_PREFIX = "ARTIFACTS_"
TAG_BUCKET_PREFIX = "ARTIFACTTAGS_"
# JetStream refuses stream names over 255 characters and the streams are `OBJ_<bucket>` and
# `KV_<bucket>`; 200 leaves room and matches the key-value provider's bucket cap.
MAX_BUCKET_LEN = 200

_NAME_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_BUCKET_CHARS_RE = re.compile(r"[A-Za-z0-9_-]+")
# A KV key separator that neither names nor tags may contain.
_KEY_SEP = "="
# Names listed in an error message, at most.
_SHOWN = 20


# --- references ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LatticeRef:
    """A parsed `lattice://NAME[:TAG][@sha256:HEX]`; `tag` is None when the reference gave none."""

    name: str
    tag: str | None = None
    digest: str | None = None

    @property
    def effective_tag(self) -> str:
        """The tag a lookup uses: the one given, else `latest`."""
        return self.tag if self.tag is not None else DEFAULT_TAG

    @property
    def is_latest(self) -> bool:
        """Whether it floats on `latest` (given or implied, no digest), so `--allow-latest` applies."""
        return self.digest is None and self.effective_tag == DEFAULT_TAG

    @property
    def key(self) -> str:
        """The tag's key in the tag bucket: `<name>=<tag>`."""
        return tag_key(self.name, self.effective_tag)

    def __str__(self) -> str:
        text = LATTICE_SCHEME + self.name
        if self.tag is not None:
            text += ":" + self.tag
        if self.digest is not None:
            text += "@" + self.digest
        return text


def is_lattice_ref(ref: str) -> bool:
    """Whether `ref` uses the `lattice://` scheme (the fetcher's dispatch test)."""
    return ref.startswith(LATTICE_SCHEME)


def check_digest(digest: str) -> str:
    """`digest` if it is `sha256:` and 64 lower-case hex digits, else `ArtifactError` saying what is wrong."""
    if _DIGEST_RE.fullmatch(digest):
        return digest
    if not digest.startswith("sha256:"):
        algo = digest.split(":", 1)[0] if ":" in digest else ""
        if algo:
            raise ArtifactError(
                f"digest {limits.quote(digest)}: unsupported algorithm {limits.quote(algo)}; use sha256"
            )
        raise ArtifactError(f"digest {limits.quote(digest)}: expected 'sha256:' and 64 hex digits")
    hexpart = digest[len("sha256:") :]
    if len(hexpart) != 64:
        raise ArtifactError(
            f"digest {limits.quote(digest)}: expected 64 hex digits after 'sha256:', got {len(hexpart)}"
        )
    raise ArtifactError(
        f"digest {limits.quote(digest)}: only lower-case hex digits 0-9 a-f are allowed after 'sha256:'"
    )


def check_name(name: str) -> str:
    """An artifact name: lower-case OCI repository path components (`a-z 0-9`, separators `. _ __ -`, `/`)."""
    if not name:
        raise ArtifactError("artifact name is empty")
    if len(name) > MAX_NAME_LEN:
        raise ArtifactError(f"artifact name is longer than {MAX_NAME_LEN} characters")
    if not _NAME_RE.fullmatch(name):
        raise ArtifactError(
            f"artifact name {limits.quote(name)}: use lower-case letters and digits, separated by '.', '_', "
            "'__' or '-' and grouped by '/' (each part starts and ends with a letter or digit)"
        )
    return name


def check_tag(tag: str) -> str:
    """A tag: OCI's grammar (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`) without '..' or a trailing '.'."""
    if not tag:
        raise ArtifactError("tag is empty")
    if len(tag) > MAX_TAG_LEN:
        raise ArtifactError(f"tag is longer than {MAX_TAG_LEN} characters")
    if not _TAG_RE.fullmatch(tag):
        raise ArtifactError(
            f"tag {limits.quote(tag)}: use letters, digits, '_', '.' and '-', "
            "starting with a letter, digit or '_'"
        )
    # The tag becomes part of a JetStream KV key, where '.' separates subject tokens.
    if ".." in tag or tag.endswith("."):
        raise ArtifactError(
            f"tag {limits.quote(tag)}: no '..' and no trailing '.' (it becomes part of a NATS subject)"
        )
    return tag


def parse_lattice_ref(ref: str) -> LatticeRef:
    """Parse `lattice://NAME[:TAG][@sha256:HEX]`; `ArtifactError` names the part that is wrong."""
    try:
        limits.check_ref(ref)
    except limits.LimitError as e:
        raise ArtifactError(f"reference {limits.quote(ref)}: {e}") from None
    if not is_lattice_ref(ref):
        raise ArtifactError(f"reference {limits.quote(ref)}: not a {LATTICE_SCHEME} reference")
    rest = ref[len(LATTICE_SCHEME) :]
    digest: str | None = None
    try:
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            check_digest(digest)
        tag: str | None = None
        # The tag follows the last ':' after the last '/' (names have no ':').
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            check_tag(tag)
        check_name(rest)
    except ArtifactError as e:
        raise ArtifactError(f"{limits.quote(ref, 120)}: {e}") from None
    return LatticeRef(rest, tag, digest)


def tag_key(name: str, tag: str) -> str:
    """The KV key of `name:tag`: `<name>=<tag>` ('=' occurs in neither, so the key is unambiguous)."""
    return f"{name}{_KEY_SEP}{tag}"


def digest_of(data: bytes) -> str:
    """`sha256:<hex>` of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _nats_digest(digest: str) -> str:
    """The object store's own digest field for bytes whose digest is `digest` (`SHA-256=<base64url>`)."""
    raw = bytes.fromhex(digest[len("sha256:") :])
    return OBJ_DIGEST_TYPE + base64.urlsafe_b64encode(raw).decode()


# --- bucket names -------------------------------------------------------------------------------


def _bucket(prefix: str, lattice: str) -> str:
    try:
        limits.check_id(lattice)
    except limits.LimitError as e:
        raise ArtifactError(f"invalid lattice name: {e}") from None
    plain = prefix + lattice
    if _BUCKET_CHARS_RE.fullmatch(lattice) and len(plain) <= MAX_BUCKET_LEN:
        return plain
    # Lattice names may hold '=' and '/' and be 256 characters long, which bucket names may not.
    # Such a lattice gets the readable part of its name and a hash; the prefix ends in '-' instead
    # of '_', so this form never equals the plain form of another lattice.
    readable = re.sub(r"[^A-Za-z0-9_-]", "-", lattice)[:64]
    hashed = hashlib.sha256(lattice.encode()).hexdigest()[:32]
    return f"{prefix[:-1]}-{readable}-{hashed}"


def blob_bucket(lattice: str) -> str:
    """The object store holding a lattice's component bytes, one object per digest: `ARTIFACTS_<lattice>`."""
    return _bucket(BLOB_BUCKET_PREFIX, lattice)


def tag_bucket(lattice: str) -> str:
    """The KV bucket holding a lattice's tags: `ARTIFACTTAGS_<lattice>`."""
    return _bucket(TAG_BUCKET_PREFIX, lattice)


# --- records ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    """What one tag points to: the digest and the metadata recorded when it was pushed."""

    name: str
    tag: str
    digest: str
    size: int
    media_type: str = MEDIA_TYPE
    annotations: dict[str, str] = field(default_factory=dict)
    created: str = ""

    @property
    def ref(self) -> str:
        """`lattice://name:tag`."""
        return f"{LATTICE_SCHEME}{self.name}:{self.tag}"

    def to_json(self) -> bytes:
        """The KV value of the tag."""
        return json.dumps(
            {
                "name": self.name,
                "tag": self.tag,
                "digest": self.digest,
                "size": self.size,
                "media_type": self.media_type,
                "annotations": self.annotations,
                "created": self.created,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, key: str, raw: bytes) -> StoredArtifact:
        """Read a tag record; `ArtifactError` if it is not one of ours."""
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            annotations = obj.get("annotations") or {}
            if not isinstance(annotations, dict):
                raise ValueError("annotations is not an object")
            record = cls(
                name=str(obj["name"]),
                tag=str(obj["tag"]),
                digest=check_digest(str(obj["digest"])),
                size=int(obj["size"]),
                media_type=str(obj.get("media_type", MEDIA_TYPE)),
                annotations={str(k): str(v) for k, v in annotations.items()},
                created=str(obj.get("created", "")),
            )
        except (ValueError, KeyError, TypeError, ArtifactError) as e:
            raise ArtifactError(
                f"tag record {limits.quote(key)} in the lattice store is malformed: {e}"
            ) from None
        if tag_key(record.name, record.tag) != key:
            raise ArtifactError(f"tag record {limits.quote(key)} names {record.ref} instead")
        return record

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (for `--json` listings)."""
        return {
            "ref": self.ref,
            "name": self.name,
            "tag": self.tag,
            "digest": self.digest,
            "size": self.size,
            "media_type": self.media_type,
            "annotations": dict(self.annotations),
            "created": self.created,
        }


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """What `delete` did: the tags removed, and whether the bytes went too (no tag pointed to them)."""

    digest: str
    untagged: list[str]
    blob_removed: bool


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _listing(items: list[str]) -> str:
    if not items:
        return "none"
    shown = ", ".join(items[:_SHOWN])
    return shown if len(items) <= _SHOWN else f"{shown}, ... ({len(items)} in all)"


# --- the store ----------------------------------------------------------------------------------


# The class has a method named `list`, which hides the builtin in its annotations.
Listing = list[StoredArtifact]


class _Missing(Exception):
    """A bucket of the store does not exist (nothing was pushed to this lattice yet)."""


class LatticeStore:
    """Components stored in the lattice's JetStream: push, resolve, pull, list and delete by reference.

    `js` is a nats-py JetStream context (the host's or the CLI's, with its JetStream domain). Only
    `push` creates the buckets; every host racing to create them succeeds. `max_size` caps what is
    pushed and what is pulled (the host's `--max-component-size`); `chunk_size` is the object
    store's chunk size for new blobs (at most the server's max payload).
    """

    def __init__(
        self,
        js: Any,
        lattice: str,
        *,
        replicas: int | None = None,
        max_size: int = DEFAULT_MAX_COMPONENT_SIZE,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if replicas is not None and not 1 <= replicas <= 5:
            raise ArtifactError(f"replicas must be between 1 and 5 (JetStream's limit), got {replicas}")
        if max_size <= 0:
            raise ArtifactError(f"max_size must be positive, got {max_size}")
        if chunk_size <= 0:
            raise ArtifactError(f"chunk_size must be positive, got {chunk_size}")
        self.js = js
        self.lattice = lattice
        self.blob_bucket = blob_bucket(lattice)
        self.tag_bucket = tag_bucket(lattice)
        self.replicas = replicas
        self.max_size = max_size
        self.chunk_size = chunk_size
        self._blobs: Any = None
        self._direct = True
        self._tags: KvBucket | None = None

    # -- buckets ---------------------------------------------------------------------------------

    def _nothing_pushed(self, ref: object) -> ArtifactError:
        return ArtifactError(
            f"{ref}: nothing was pushed to lattice {self.lattice!r} yet "
            f"(its artifact store {self.blob_bucket} does not exist); push with `wasmlattice push`"
        )

    def _nats_error(self, what: str, e: BaseException) -> ArtifactError:
        if isinstance(e, nats.errors.NoRespondersError | nats.js.errors.ServiceUnavailableError):
            return ArtifactError(
                f"{what}: JetStream did not answer; the lattice store needs a NATS server with JetStream "
                "enabled (`nats-server -js`) and, if a JetStream domain is set, the server's domain"
            )
        return ArtifactError(f"{what}: {type(e).__name__}: {e}")

    async def _blob_store(self, *, create: bool) -> Any:
        if self._blobs is not None:
            return self._blobs
        name = self.blob_bucket
        try:
            try:
                store = await self.js.object_store(name)
            except nats.js.errors.BucketNotFoundError:
                if not create:
                    raise _Missing(name) from None

                async def make(n: int) -> Any:
                    return await self.js.create_object_store(
                        name,
                        description=f"wasmlattice: component artifacts of lattice {self.lattice}",
                        replicas=n,
                    )

                try:
                    store = await create_replicated(self.js, f"object store {name}", make, self.replicas)
                except nats.js.errors.BadRequestError:
                    # Another host created it first with other settings (replicas): use theirs.
                    store = await self.js.object_store(name)
            info = await self.js.stream_info(OBJ_STREAM_TEMPLATE.format(bucket=name))
        except (nats.errors.Error, TimeoutError) as e:
            raise self._nats_error(f"cannot open the lattice artifact store {name}", e) from e
        except KvError as e:  # ReplicaPlacementError: --js-replicas more than the cluster can place
            raise ArtifactError(str(e)) from None
        note_replicas(f"object store {name}", int(info.config.num_replicas or 1), self.js, self.replicas)
        # Streams made by our nats-py allow direct gets; one made by other tools might not.
        self._direct = bool(info.config.allow_direct)
        self._blobs = store
        return store

    async def _tag_store(self, *, create: bool) -> KvBucket:
        if self._tags is not None:
            return self._tags
        try:
            self._tags = await open_bucket(
                self.js,
                self.tag_bucket,
                create=create,
                replicas=self.replicas,
                description=f"wasmlattice: component artifact tags of lattice {self.lattice}",
            )
        except KvError as e:
            # `open_bucket` says "does not exist" (and nothing else) when create=False finds none.
            if not create and "does not exist" in str(e):
                raise _Missing(self.tag_bucket) from None
            raise ArtifactError(f"cannot open the lattice artifact tags {self.tag_bucket}: {e}") from None
        return self._tags

    async def _blob_info(self, store: Any, digest: str) -> Any:
        """The object's info, or None when there is no live object for `digest`."""
        try:
            return await store.get_info(digest)
        except nats.js.errors.NotFoundError:  # ObjectNotFoundError is one
            return None
        except (nats.errors.Error, TimeoutError) as e:
            raise self._nats_error(f"cannot look up {digest} in {self.blob_bucket}", e) from e

    # -- push ------------------------------------------------------------------------------------

    async def push(self, ref: str, data: bytes, annotations: dict[str, str] | None = None) -> str:
        """Store `data` (once per digest) and point `ref`'s tag at it; the digest.

        A digest in `ref` must be the digest of `data`. Pushing the same bytes again writes only the
        tag record.
        """
        parsed = parse_lattice_ref(ref)
        if not data:
            raise ArtifactError(f"{parsed}: refusing to push an empty artifact")
        if len(data) > self.max_size:
            raise ArtifactError(
                f"{parsed}: artifact of {len(data)} bytes is larger than the limit of {self.max_size}"
            )
        try:
            notes = limits.check_label_map(annotations or {})
        except limits.LimitError as e:
            raise ArtifactError(f"{parsed}: annotations: {e}") from None
        digest = digest_of(data)
        if parsed.digest is not None and parsed.digest != digest:
            raise ArtifactError(f"{parsed}: the bytes to push have digest {digest}, not {parsed.digest}")
        store = await self._blob_store(create=True)
        tags = await self._tag_store(create=True)
        await self._put_blob(store, digest, data)
        record = StoredArtifact(
            name=parsed.name,
            tag=parsed.effective_tag,
            digest=digest,
            size=len(data),
            annotations=notes,
            created=_now(),
        )
        try:
            await tags.put(parsed.key, record.to_json())
        except KvError as e:
            raise ArtifactError(f"{parsed}: cannot write the tag: {e}") from None
        # A `delete` elsewhere may have removed the blob as unreferenced between our put and our
        # tag write; look again so the tag we leave points to bytes that exist.
        await self._put_blob(store, digest, data)
        return digest

    async def _put_blob(self, store: Any, digest: str, data: bytes) -> None:
        info = await self._blob_info(store, digest)
        # The object store records its own SHA-256 of what it holds: equal means these bytes are
        # already there (a blob overwritten with other bytes is repaired by writing ours again).
        if info is not None and info.digest == _nats_digest(digest) and info.size == len(data):
            return
        chunk = min(self.chunk_size, self._max_payload())
        meta = api.ObjectMeta(
            name=digest,
            description=MEDIA_TYPE,
            headers={"Content-Type": [MEDIA_TYPE]},
            options=api.ObjectMetaOptions(max_chunk_size=chunk),
        )
        try:
            await store.put(digest, data, meta=meta)
        except (nats.errors.Error, TimeoutError) as e:
            raise self._nats_error(f"cannot store {digest} in {self.blob_bucket}", e) from e

    def _max_payload(self) -> int:
        # Each chunk is one message; leave room for the headers JetStream adds.
        max_payload = getattr(getattr(self.js, "_nc", None), "max_payload", 0) or 1024 * 1024
        return max(1024, int(max_payload) - 4096)

    # -- resolve and pull ------------------------------------------------------------------------

    async def info(self, ref: str) -> StoredArtifact:
        """The record `ref`'s tag points to (the tag `latest` when none is given)."""
        parsed = parse_lattice_ref(ref)
        try:
            tags = await self._tag_store(create=False)
        except _Missing:
            raise self._nothing_pushed(parsed) from None
        return await self._record(tags, parsed)

    async def _record(self, tags: KvBucket, parsed: LatticeRef) -> StoredArtifact:
        try:
            raw = await tags.get(parsed.key)
        except KvError as e:
            raise ArtifactError(f"{parsed}: cannot read the tag: {e}") from None
        if raw is None:
            known = await self.tags(parsed.name)
            if known:
                listed = _listing([t.tag for t in known])
                implied = "" if parsed.tag is not None else " (no tag given, so :latest)"
                raise ArtifactError(
                    f"{parsed}{implied}: no such tag in the lattice store (tags of {parsed.name}: {listed})"
                )
            names = sorted({a.name for a in await self.list()})
            raise ArtifactError(
                f"{parsed}: no artifact named {parsed.name} in the lattice store "
                f"(names in lattice {self.lattice!r}: {_listing(names)})"
            )
        return StoredArtifact.from_json(parsed.key, raw)

    def pinned_digest(self, ref: str) -> str | None:
        """The digest `ref` pins, if any: the fetcher serves it from its cache without asking us."""
        return parse_lattice_ref(ref).digest

    async def resolve(self, ref: str) -> str:
        """The digest `ref` names now: its pinned digest (if the blob exists), else its tag's."""
        parsed = parse_lattice_ref(ref)
        if parsed.digest is not None:
            try:
                store = await self._blob_store(create=False)
            except _Missing:
                raise self._nothing_pushed(parsed) from None
            if await self._blob_info(store, parsed.digest) is None:
                raise ArtifactError(f"{parsed}: no artifact with digest {parsed.digest} in the lattice store")
            return parsed.digest
        return (await self.info(ref)).digest

    async def pull(self, ref: str, digest: str) -> bytes:
        """The bytes of `digest` (which `ref` resolved to); their sha256 is checked here too."""
        parsed = parse_lattice_ref(ref)
        try:
            check_digest(digest)
        except ArtifactError as e:
            raise ArtifactError(f"{parsed}: {e}") from None
        if parsed.digest is not None and parsed.digest != digest:
            raise ArtifactError(f"{parsed}: asked to pull {digest}, but the reference pins {parsed.digest}")
        try:
            store = await self._blob_store(create=False)
        except _Missing:
            raise self._nothing_pushed(parsed) from None
        info = await self._blob_info(store, digest)
        if info is None:
            raise ArtifactError(
                f"{parsed}: the lattice store has no blob {digest} (deleted since it was resolved?)"
            )
        size = int(info.size or 0)
        if size > self.max_size:
            raise ArtifactError(
                f"{parsed}: the stored artifact has {size} bytes, more than the limit of {self.max_size}"
            )
        data = await self._read_chunks(parsed, info, size)
        actual = digest_of(data)
        if actual != digest:
            raise ArtifactError(
                f"{parsed}: digest mismatch: expected {digest}, the lattice store's bytes have {actual}"
            )
        return data

    async def _read_chunks(self, parsed: LatticeRef, info: Any, size: int) -> bytes:
        """The object's bytes, chunk by chunk by direct get (see the module docstring for why)."""
        stream = OBJ_STREAM_TEMPLATE.format(bucket=self.blob_bucket)
        subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.blob_bucket, obj=info.nuid)
        buf = bytearray()
        seq = 1
        while len(buf) < size:
            try:
                msg = await self.js.get_msg(stream, seq=seq, subject=subject, direct=self._direct, next=True)
            except nats.js.errors.NotFoundError:
                raise ArtifactError(
                    f"{parsed}: the stored object is truncated: {len(buf)} of {size} bytes present"
                ) from None
            except (nats.errors.Error, TimeoutError) as e:
                raise self._nats_error(f"{parsed}: reading from {self.blob_bucket} failed", e) from e
            chunk = msg.data or b""
            if len(buf) + len(chunk) > size:
                raise ArtifactError(f"{parsed}: the stored object holds more than its recorded {size} bytes")
            buf += chunk
            seq = int(msg.seq) + 1
        return bytes(buf)

    # -- listing and delete ----------------------------------------------------------------------

    async def list(self) -> Listing:
        """Every tag of the lattice store, sorted by name and tag (empty when nothing was pushed)."""
        return await self._records(None)

    async def tags(self, name: str) -> Listing:
        """The tags of artifact `name`, sorted (empty if it has none)."""
        check_name(name)
        return await self._records(name)

    async def _records(self, name: str | None) -> Listing:
        try:
            tags = await self._tag_store(create=False)
        except _Missing:
            return []
        prefix = None if name is None else name + _KEY_SEP
        try:
            keys = await tags.keys(prefix)
            out: Listing = []
            for key in keys:
                raw = await tags.get(key)
                if raw is not None:  # deleted since the listing
                    out.append(StoredArtifact.from_json(key, raw))
        except KvError as e:
            raise ArtifactError(f"cannot list the lattice store {self.tag_bucket}: {e}") from None
        return sorted(out, key=lambda a: (a.name, a.tag))

    async def delete(self, ref: str) -> DeleteResult:
        """Remove `ref`'s tag (or, for `name@digest`, every tag of `name` on that digest); the blob
        goes too once no tag of any name points to it."""
        parsed = parse_lattice_ref(ref)
        try:
            tags = await self._tag_store(create=False)
        except _Missing:
            raise self._nothing_pushed(parsed) from None
        if parsed.digest is not None and parsed.tag is None:
            digest = parsed.digest
            keys = [tag_key(a.name, a.tag) for a in await self.tags(parsed.name) if a.digest == digest]
            if not keys:
                raise ArtifactError(f"{parsed}: no tag of {parsed.name} points to {digest}")
        else:
            record = await self._record(tags, parsed)
            if parsed.digest is not None and record.digest != parsed.digest:
                raise ArtifactError(f"{parsed}: the tag points to {record.digest}, not {parsed.digest}")
            digest = record.digest
            keys = [parsed.key]
        try:
            for key in keys:
                await tags.delete(key)
        except KvError as e:
            raise ArtifactError(f"{parsed}: cannot delete the tag: {e}") from None
        removed = False
        if not any(a.digest == digest for a in await self.list()):
            try:
                store = await self._blob_store(create=False)
                await store.delete(digest)
                removed = True
            except (_Missing, nats.js.errors.NotFoundError):
                pass
            except (nats.errors.Error, TimeoutError) as e:
                raise self._nats_error(f"{parsed}: cannot remove blob {digest}", e) from e
        return DeleteResult(digest, [k.replace(_KEY_SEP, ":", 1) for k in keys], removed)
