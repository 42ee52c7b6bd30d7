"""Lattice-wide state in JetStream KV: links and claims (`LATTICEDATA_<lattice>`), named config
(`CONFIGDATA_<lattice>`), laid out exactly as the wasmCloud v1 host does (docs/protocol.md#kv-layout,
docs/protocol.md#named-config).

Every host keeps an in-memory view of `LATTICEDATA` current through a KV watch, so all hosts answer
`link.get` and `claims.get` alike, and a restarted host rebuilds the view from KV. Writes that read
and modify a spec (link put/delete) read the authoritative KV value, not the cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from wasmlattice.aio import wait_for
from wasmlattice.protocol import subjects as sj
from wasmlattice.protocol.kv import KvBucket, KvEvent, KvWatch, open_bucket
from wasmlattice.protocol.models import (
    MSG_CONFIG_NOT_MAP,
    MSG_LINK_CONFLICT,
    ComponentSpecification,
    DeleteInterfaceLinkDefinitionRequest,
    Link,
    NamedConfig,
    PayloadError,
    StoredComponentClaims,
    StrMap,
    parse_payload,
)
from wasmlattice.protocol.wire import decode_json

log = logging.getLogger(__name__)

# How long a (re)started watch may take to deliver the bucket's current contents.
INITIAL_REPLAY_TIMEOUT_S = 10.0
CONFIG_VALIDATION_PREFIX = "Failed to validate configuration and secrets. "


class LinkRejectedError(ValueError):
    """A `link.put` was refused (missing config, conflicting target); the message is the reply text."""


class ConfigNotFoundError(LookupError):
    """A named config required by a component or provider does not exist."""


class LatticeState:
    """Links, claims and named config of one lattice, backed by its two KV buckets."""

    def __init__(self, lattice: str, lattice_data: KvBucket, config_data: KvBucket) -> None:
        self.lattice = lattice
        self.lattice_data = lattice_data
        self.config_data = config_data
        self._specs: dict[str, ComponentSpecification] = {}
        # Every link, rebuilt on each change: a whole new tuple, so readers on other threads
        # (capability calls from wasm threads) always see a consistent one.
        self._links: tuple[Link, ...] = ()
        self._claims: dict[str, dict[str, Any]] = {}
        # Link put/delete are read-modify-write on one key; serialize them within this host.
        self._write_lock = asyncio.Lock()
        self._synced = asyncio.Event()
        self.listeners: list[Callable[[KvEvent], None]] = []
        # Called with the name of each named config that changed in `CONFIGDATA` (put, delete or
        # purge), or with None when changes may have been missed (the config watch restarted).
        self.config_listeners: list[Callable[[str | None], None]] = []
        # Bumped on every change of the view, so derived indexes know when to rebuild.
        self.generation = 0

    @classmethod
    async def open(cls, js: Any, lattice: str) -> LatticeState:
        """Open (creating if absent) `LATTICEDATA_<lattice>` and `CONFIGDATA_<lattice>`."""
        lattice_data = await open_bucket(js, sj.lattice_data_bucket(lattice))
        config_data = await open_bucket(js, sj.config_data_bucket(lattice))
        return cls(lattice, lattice_data, config_data)

    # -- in-memory view ----------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """Whether the view has replayed the bucket's contents at least once."""
        return self._synced.is_set()

    async def wait_synced(self, timeout: float = INITIAL_REPLAY_TIMEOUT_S) -> None:
        """Wait until the first replay of `LATTICEDATA` is complete."""
        await wait_for(self._synced.wait(), timeout)

    async def watch_forever(self) -> None:
        """Replay `LATTICEDATA` into the view, then apply every change; returns only if the watch ends.

        Each call rebuilds the view from the replay, so a supervisor that restarts this after a
        failure cannot keep entries that were deleted while nobody watched.
        """
        async with self.lattice_data.watch() as watch:
            await watch.wait_initial(INITIAL_REPLAY_TIMEOUT_S)
            specs: dict[str, ComponentSpecification] = {}
            claims: dict[str, dict[str, Any]] = {}
            for event in watch.drain():
                self._apply(event, specs, claims)
            self._specs, self._claims = specs, claims
            self._changed()
            self._synced.set()
            log.info("lattice %s: replayed %d specs and %d claims", self.lattice, len(specs), len(claims))
            async for event in watch:
                self._apply(event, self._specs, self._claims)
                self._changed()
                for listener in self.listeners:
                    listener(event)

    async def watch_config_forever(self) -> None:
        """Tell `config_listeners` about every change of `CONFIGDATA`; returns only if the watch ends.

        Values are not read here (listeners read what they need from KV). Changes made before the
        watch (re)started are unknown, so listeners first get one None ("anything may have changed").
        """
        # Keys and operations only: values (secret references among them) need not cross the wire.
        async with KvWatch(self.config_data, headers_only=True) as watch:
            await watch.wait_initial(INITIAL_REPLAY_TIMEOUT_S)
            watch.drain()  # the current keys: covered by the None below
            self._notify_config(None)
            async for event in watch:
                self._notify_config(event.key)

    def _notify_config(self, name: str | None) -> None:
        for listener in list(self.config_listeners):
            try:
                listener(name)
            except Exception:
                log.exception("a config listener failed on a change of %s", name or "CONFIGDATA")

    def _apply(
        self, event: KvEvent, specs: dict[str, ComponentSpecification], claims: dict[str, dict[str, Any]]
    ) -> None:
        parsed = sj.parse_lattice_key(event.key)
        if parsed.kind == "component":
            if event.value is None:
                specs.pop(parsed.ident, None)
                return
            try:
                specs[parsed.ident] = parse_payload(ComponentSpecification, event.value)
            except PayloadError as e:
                log.warning("ignoring malformed %s in %s: %s", event.key, self.lattice_data.name, e)
        elif parsed.kind == "claims":
            if event.value is None:
                claims.pop(parsed.ident, None)
                return
            try:
                obj = decode_json("claims", event.value)
            except PayloadError as e:
                log.warning("ignoring malformed %s in %s: %s", event.key, self.lattice_data.name, e)
                return
            if not isinstance(obj, dict):
                log.warning("ignoring %s in %s: not a JSON object", event.key, self.lattice_data.name)
                return
            subject = obj.get("subject", obj.get("sub"))
            if subject != parsed.ident:
                log.warning("ignoring %s: its subject %r does not match the key", event.key, subject)
                return
            claims[parsed.ident] = obj
        elif parsed.kind == "legacy":
            log.debug("ignoring legacy key %s", event.key)
        else:
            log.debug("ignoring unknown key %s in %s", event.key, self.lattice_data.name)

    def links(self) -> list[Link]:
        """Every link this host knows, flattened over all component specs (what `link.get` returns)."""
        return list(self._links)

    def _changed(self) -> None:
        self._links = tuple(link for spec in self._specs.values() for link in spec.links)
        self.generation += 1

    def spec(self, component_id: str) -> ComponentSpecification | None:
        """The cached spec of a component or provider, if any."""
        return self._specs.get(component_id)

    def claims(self) -> list[StrMap]:
        """Every known claim as the string maps `claims.get` returns (docs/protocol.md#payloads)."""
        return [claims_map(obj) for _, obj in sorted(self._claims.items())]

    async def put_claims(self, claims: StoredComponentClaims) -> None:
        """Store a signed component's claims as `CLAIMS_<subject>` (docs/protocol.md#kv-layout) and
        update the local view at once (the watch confirms it later)."""
        sj.check_token(claims.subject)
        await self.lattice_data.put(sj.claims_key(claims.subject), claims.to_wire())
        self._claims[claims.subject] = claims.to_json_obj()
        self._changed()

    # -- component specs and links (authoritative reads from KV) -----------------------------

    async def get_spec(self, component_id: str) -> ComponentSpecification | None:
        """Read `COMPONENT_<id>` from KV; None if absent."""
        raw = await self.lattice_data.get(sj.component_spec_key(component_id))
        return None if raw is None else parse_payload(ComponentSpecification, raw)

    async def put_spec(self, component_id: str, spec: ComponentSpecification) -> None:
        """Write `COMPONENT_<id>` and update the local view at once (the watch confirms it later)."""
        await self.lattice_data.put(sj.component_spec_key(component_id), spec.to_wire())
        self._specs[component_id] = spec
        self._changed()

    async def ensure_spec(self, component_id: str, url: str) -> None:
        """Write an empty `COMPONENT_<id>` spec with `url` unless one exists (scale, provider start)."""
        async with self._write_lock:
            if await self.get_spec(component_id) is None:
                await self.put_spec(component_id, ComponentSpecification(url=url))

    async def put_link(self, link: Link) -> None:
        """Store a link with the v1 `link.put` rules; raises `LinkRejectedError` with the reason.

        The rules: docs/protocol.md#link-put.
        """
        missing = await self.missing_config(list(link.source_config) + list(link.target_config))
        if missing:
            raise LinkRejectedError(CONFIG_VALIDATION_PREFIX + "".join(missing))
        async with self._write_lock:
            spec = await self.get_spec(link.source_id) or ComponentSpecification(url="", links=[])
            links: list[Link] = []
            replaced = False
            for existing in spec.links:
                same_slot = (
                    existing.source_id == link.source_id
                    and existing.wit_namespace == link.wit_namespace
                    and existing.wit_package == link.wit_package
                    and existing.name == link.name
                )
                if same_slot and existing.target != link.target:
                    if set(existing.interfaces) & set(link.interfaces):
                        raise LinkRejectedError(MSG_LINK_CONFLICT)
                elif same_slot:
                    # Identical (source, target, namespace, package, name): replace wholesale.
                    if not replaced:
                        links.append(link)
                        replaced = True
                    continue
                links.append(existing)
            if not replaced:
                links.append(link)
            await self.put_spec(link.source_id, ComponentSpecification(url=spec.url, links=links))

    async def delete_link(self, req: DeleteInterfaceLinkDefinitionRequest) -> tuple[bool, Link | None]:
        """Remove the first link matching (source, namespace, package, name) (docs/protocol.md#link-delete).

        Returns whether the source's spec exists and the removed link (None if nothing matched).
        """
        async with self._write_lock:
            spec = await self.get_spec(req.source_id)
            if spec is None:
                return False, None
            for i, existing in enumerate(spec.links):
                if (
                    existing.wit_namespace == req.wit_namespace
                    and existing.wit_package == req.wit_package
                    and existing.name == req.name
                ):
                    links = spec.links[:i] + spec.links[i + 1 :]
                    await self.put_spec(req.source_id, ComponentSpecification(url=spec.url, links=links))
                    return True, existing
            return True, None

    # -- named config (read from KV each time: the wasmCloud host does not cache for CTL reads) --

    async def put_config(self, name: str, raw: bytes) -> None:
        """Store a named config exactly as sent, after checking it is a string -> string map.

        A put replaces the whole map (no merge with the previous value), as the v1 host does.
        """
        sj.check_token(name)
        try:
            parse_payload(NamedConfig, raw)
        except PayloadError as e:
            raise ValueError(f"{MSG_CONFIG_NOT_MAP}: {e}") from None
        await self.config_data.put(sj.config_key(name), raw)

    async def get_config(self, name: str) -> StrMap | None:
        """The stored map of a named config, or None if it does not exist."""
        raw = await self.config_data.get(sj.config_key(name))
        if raw is None:
            return None
        return parse_payload(NamedConfig, raw).root

    async def delete_config(self, name: str) -> None:
        """Purge a named config (idempotent)."""
        await self.config_data.purge(sj.config_key(name))

    async def missing_config(self, names: Iterable[str]) -> list[str]:
        """Validation messages for each config or secret name that is not in `CONFIGDATA`."""
        out: list[str] = []
        for name in names:
            if await self.config_data.get(name) is not None:
                continue
            if sj.is_secret_reference(name):
                out.append(f"Secret reference {name} not found in config store. ")
            else:
                out.append(f"Configuration {name} not found in config store. ")
        return out

    async def live_config(self, names: Iterable[str]) -> StrMap:
        """Merge named configs in order like `merged_config`, a missing one counting as empty.

        See docs/protocol.md#named-config.

        This is the view of a running component after one of its configs was deleted.
        """
        merged: StrMap = {}
        for name in names:
            merged.update(await self.get_config(name) or {})
        return merged

    async def merged_config(self, names: Iterable[str]) -> StrMap:
        """Merge named configs in order, later ones override earlier keys (docs/protocol.md#named-config)."""
        merged: StrMap = {}
        for name in names:
            found = await self.get_config(name)
            if found is None:
                raise ConfigNotFoundError(f"Config {name} does not exist")
            merged.update(found)
        return merged


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value)


def claims_map(stored: dict[str, Any]) -> StrMap:
    """Turn stored claims into the `claims.get` map, keeping the short `iss/rev/sub` duplicates."""
    issuer = _text(stored.get("issuer", stored.get("iss")))
    revision = _text(stored.get("revision", stored.get("rev")))
    subject = _text(stored.get("subject", stored.get("sub")))
    out: StrMap = {
        "iss": issuer,
        "issuer": issuer,
        "name": _text(stored.get("name")),
        "rev": revision,
        "revision": revision,
        "sub": subject,
        "subject": subject,
        "version": _text(stored.get("version")),
    }
    # Provider subjects are service keys ('V...'); components are module keys ('M...').
    if subject.startswith("V") or "config_schema" in stored:
        if stored.get("config_schema") is not None:
            out["config_schema"] = _text(stored["config_schema"])
    else:
        out["call_alias"] = _text(stored.get("call_alias"))
        out["tags"] = _text(stored.get("tags"))
    return out
