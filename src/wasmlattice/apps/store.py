"""Application manifests in JetStream KV, in wadm's layout so existing wadm data and tools keep working.

Bucket `wadm_manifests` (history 1) holds, per lattice:
- key `{lattice}-{name}`: JSON `{"manifests": {version: manifest}, "deployed_version": str | null}`, the
  versions in the order they were put (the last one is the latest);
- key `{lattice}`: a JSON array of the lattice's app names, sorted.

Every change is a compare-and-set on the key's revision, retried when another writer (another app
manager in the same queue group) got there first, so concurrent writers never lose each other's versions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import nats.errors
import nats.js.errors

from wasmlattice.apps.manifest.load import parse_manifest
from wasmlattice.apps.manifest.model import Manifest, new_version
from wasmlattice.protocol.kv import KvBucket, KvError, open_bucket

log = logging.getLogger(__name__)

DEFAULT_BUCKET = "wadm_manifests"
# How often a compare-and-set is retried after losing a race before giving up.
CAS_ATTEMPTS = 8
# Parsed manifests kept in memory (keyed by their JSON text, so a changed manifest is never stale).
_PARSE_CACHE_SIZE = 256

R = TypeVar("R")
PutResult = Literal["created", "newversion"]


class AppStoreError(RuntimeError):
    """A manifest-store operation failed; the message says which app, what failed and why."""


class VersionExistsError(AppStoreError):
    """A put named a version the app already has."""


class AppNotFoundError(AppStoreError):
    """The app (or the requested version of it) is not stored."""


@dataclass
class _Record:
    """The stored value of one app: its versions in put order and the deployed one."""

    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployed_version: str | None = None

    @classmethod
    def decode(cls, key: str, data: bytes) -> _Record:
        try:
            obj = json.loads(data)
        except ValueError as e:
            raise AppStoreError(f"stored app record {key} is not valid JSON ({e}); delete the app") from None
        manifests = obj.get("manifests") if isinstance(obj, dict) else None
        deployed = obj.get("deployed_version") if isinstance(obj, dict) else None
        if not isinstance(manifests, dict) or not (deployed is None or isinstance(deployed, str)):
            raise AppStoreError(
                f"stored app record {key} does not have the expected shape "
                '{"manifests": {...}, "deployed_version": ...}; delete the app'
            )
        return cls(dict(manifests), deployed)

    def encode(self) -> bytes:
        return json.dumps({"manifests": self.manifests, "deployed_version": self.deployed_version}).encode()

    @property
    def latest(self) -> str | None:
        return next(reversed(self.manifests), None)


class _Conflict(Exception):
    """Another writer changed the key between our read and our write: read again and retry."""


class AppStore:
    """The manifests of one lattice's apps, stored like wadm does in KV bucket `wadm_manifests`."""

    def __init__(self, js: Any, lattice: str, bucket: str = DEFAULT_BUCKET) -> None:
        self.js = js
        self.lattice = lattice
        self.bucket_name = bucket
        self._bucket: KvBucket | None = None
        self._kv: Any = None
        self._parsed: dict[str, Manifest] = {}

    # -- bucket access ---------------------------------------------------------------------------

    @property
    def opened(self) -> bool:
        """Whether the bucket is open (the app manager's readiness probe asks)."""
        return self._bucket is not None

    async def open(self) -> None:
        """Open (or create) the bucket now rather than at the first request; `AppStoreError` if it cannot."""
        await self._open()

    async def _open(self) -> tuple[KvBucket, Any]:
        if self._bucket is None:
            bucket = await open_bucket(
                self.js, self.bucket_name, history=1, description="wadm application manifests"
            )
            # KvBucket has no compare-and-set, so the raw nats-py handle does the conditional writes.
            try:
                self._kv = await self.js.key_value(self.bucket_name)
            except (nats.errors.Error, TimeoutError) as e:
                raise AppStoreError(
                    f"cannot open KV bucket {self.bucket_name}: {type(e).__name__}: {e}"
                ) from e
            self._bucket = bucket
        return self._bucket, self._kv

    def app_key(self, name: str) -> str:
        """The KV key of app `name`'s record."""
        return f"{self.lattice}-{name}"

    @property
    def index_key(self) -> str:
        """The KV key of the lattice's sorted app-name list."""
        return self.lattice

    async def _read(self, key: str) -> tuple[bytes, int] | None:
        bucket, _ = await self._open()
        try:
            return await bucket.get_entry(key)
        except KvError as e:
            raise AppStoreError(str(e)) from e

    async def _write(self, key: str, value: bytes | None, revision: int | None) -> None:
        """Write (or delete, with None) `key` only if it is still at `revision` (None: absent)."""
        _, kv = await self._open()
        try:
            if value is None:
                await kv.delete(key, last=revision)
            elif revision is None:
                await kv.create(key, value)
            else:
                await kv.update(key, value, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise _Conflict() from None
        except nats.js.errors.BadRequestError as e:
            # create() on a key another writer just made reports "wrong last sequence" this way too.
            if "wrong last sequence" in str(e).lower() or getattr(e, "err_code", None) == 10071:
                raise _Conflict() from None
            raise AppStoreError(f"KV write {self.bucket_name}/{key} failed: {e}") from e
        except (nats.errors.Error, TimeoutError) as e:
            raise AppStoreError(f"KV write {self.bucket_name}/{key} failed: {type(e).__name__}: {e}") from e

    async def _update(self, name: str, change: Callable[[_Record | None], tuple[_Record | None, R]]) -> R:
        """Apply `change` to app `name`'s record with compare-and-set; a None record deletes the key."""
        key = self.app_key(name)
        for _ in range(CAS_ATTEMPTS):
            entry = await self._read(key)
            record = None if entry is None else _Record.decode(key, entry[0])
            new, result = change(record)
            if new is None and entry is None:
                return result
            try:
                await self._write(
                    key, None if new is None else new.encode(), None if entry is None else entry[1]
                )
            except _Conflict:
                log.debug("app record %s changed concurrently; retrying", key)
                continue
            return result
        raise AppStoreError(
            f"could not update app {name}: its record kept changing under concurrent writers "
            f"({CAS_ATTEMPTS} attempts); retry the request"
        )

    async def _record(self, name: str) -> _Record | None:
        key = self.app_key(name)
        entry = await self._read(key)
        return None if entry is None else _Record.decode(key, entry[0])

    async def _change_index(self, name: str, present: bool) -> None:
        """Add `name` to (or remove it from) the lattice's app list, retrying on concurrent changes."""
        key = self.index_key
        for _ in range(CAS_ATTEMPTS):
            entry = await self._read(key)
            names = set(self._decode_index(entry[0]) if entry else [])
            if (name in names) == present:
                return
            if present:
                names.add(name)
            else:
                names.discard(name)
            try:
                await self._write(
                    key, json.dumps(sorted(names)).encode(), None if entry is None else entry[1]
                )
            except _Conflict:
                continue
            return
        raise AppStoreError(
            f"could not update the app list of lattice {self.lattice}: it kept changing under concurrent "
            f"writers ({CAS_ATTEMPTS} attempts); retry the request"
        )

    def _decode_index(self, data: bytes) -> list[str]:
        try:
            names = json.loads(data)
        except ValueError:
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            log.warning(
                "app list %s/%s is not a JSON array of names; ignoring it", self.bucket_name, self.lattice
            )
            return []
        return names

    def _parse(self, raw: dict[str, Any], name: str, version: str) -> Manifest:
        text = json.dumps(raw, sort_keys=True)
        cached = self._parsed.get(text)
        if cached is not None:
            return cached
        try:
            manifest, _ = parse_manifest(text, "application/json")
        except ValueError as e:
            raise AppStoreError(
                f"stored manifest {name} version {version} no longer validates ({e}); delete that version"
            ) from e
        if len(self._parsed) >= _PARSE_CACHE_SIZE:
            self._parsed.pop(next(iter(self._parsed)))
        self._parsed[text] = manifest
        return manifest

    # -- public API --------------------------------------------------------------------------------

    async def put(self, manifest: Manifest) -> tuple[PutResult, int, str]:
        """Store a new version of an app: (created|newversion, number of versions, the stored version)."""
        version = manifest.version
        if version is None:
            version = new_version()
            manifest = manifest.with_version(version)
        name = manifest.name
        raw = manifest.raw

        def change(record: _Record | None) -> tuple[_Record | None, tuple[PutResult, int, str]]:
            result: PutResult = "created" if record is None else "newversion"
            record = record or _Record()
            if version in record.manifests:
                raise VersionExistsError(
                    f"version {version} of app {name} already exists: set a new "
                    "metadata.annotations.version (or leave it out to get a generated one)"
                )
            record.manifests[version] = raw
            return record, (result, len(record.manifests), version)

        out = await self._update(name, change)
        await self._change_index(name, True)
        return out

    async def get(self, name: str, version: str | None = None) -> Manifest | None:
        """App `name`'s manifest at `version` (the latest if None), or None if either is unknown."""
        found = await self.get_raw(name, version)
        if found is None:
            return None
        version, raw = found
        return self._parse(raw, name, version)

    async def get_raw(self, name: str, version: str | None = None) -> tuple[str, dict[str, Any]] | None:
        """(version, stored manifest JSON) of app `name` at `version` (latest if None), or None."""
        record = await self._record(name)
        if record is None:
            return None
        version = version if version is not None else record.latest
        if version is None or version not in record.manifests:
            return None
        return version, record.manifests[version]

    async def versions(self, name: str) -> list[tuple[str, bool]]:
        """App `name`'s versions in put order, each with whether it is the deployed one ([] if unknown)."""
        record = await self._record(name)
        if record is None:
            return []
        return [(v, v == record.deployed_version) for v in record.manifests]

    async def names(self) -> list[str]:
        """The lattice's app names, sorted."""
        entry = await self._read(self.index_key)
        return sorted(self._decode_index(entry[0])) if entry else []

    async def delete(self, name: str, version: str | None = None) -> tuple[bool, bool]:
        """Delete one version (or all if None): (whether anything was deleted, whether to undeploy).

        Deleting the deployed version or the last remaining one means the app must be undeployed.
        """

        def change(record: _Record | None) -> tuple[_Record | None, tuple[bool, bool]]:
            if record is None:
                return None, (False, False)
            if version is None:
                return None, (True, True)
            if version not in record.manifests:
                return record, (False, False)
            del record.manifests[version]
            undeploy = record.deployed_version == version or not record.manifests
            if record.deployed_version == version:
                record.deployed_version = None
            return (record if record.manifests else None), (True, undeploy)

        deleted, undeploy = await self._update(name, change)
        # Re-read rather than trust our own change: a concurrent put may already have re-created the app.
        if deleted and await self._record(name) is None:
            await self._change_index(name, False)
        return deleted, undeploy

    async def set_deployed(self, name: str, version: str | None) -> None:
        """Mark `version` of app `name` as deployed (None: undeployed); the app and version must exist."""

        def change(record: _Record | None) -> tuple[_Record | None, None]:
            if record is None:
                raise AppNotFoundError(f"app {name} does not exist in lattice {self.lattice}")
            if version is not None and version not in record.manifests:
                raise AppNotFoundError(f"app {name} has no version {version}")
            record.deployed_version = version
            return record, None

        await self._update(name, change)

    async def deployed_version(self, name: str) -> str | None:
        """The deployed version of app `name`, or None (undeployed or unknown)."""
        record = await self._record(name)
        return None if record is None else record.deployed_version

    async def deployed(self) -> dict[str, Manifest]:
        """Every deployed app of the lattice: name -> the deployed version's manifest."""
        out: dict[str, Manifest] = {}
        for name in await self.names():
            record = await self._record(name)
            if record is None or record.deployed_version is None:
                continue
            raw = record.manifests.get(record.deployed_version)
            if raw is None:
                log.warning("app %s: deployed version %s is not stored", name, record.deployed_version)
                continue
            out[name] = self._parse(raw, name, record.deployed_version)
        return out
