"""The wadm-compatible application API: `{prefix}.{lattice}.model.{op}[.{name}]` over NATS request/reply.

It answers wadm 0.21's model operations (put, get, list, versions, del, deploy, undeploy, status,
history) with wadm's JSON shapes and result strings, so `wash app` and wadm clients work against it.
Manifests are kept by `AppStore`; deployment decisions go to the reconciler through `AppHooks`, and
deploy/undeploy are announced with wadm's `com.wadm.manifest_*` CloudEvents. Every request gets an
answer: failures reply `{"result": "error", "message": ...}` and never stop the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from wasmlattice.apps.manifest.load import parse_manifest
from wasmlattice.apps.manifest.model import Manifest, ManifestError
from wasmlattice.apps.status import NO_STATUS_MESSAGE, status_json, status_message, status_type
from wasmlattice.apps.store import AppStore, AppStoreError, VersionExistsError
from wasmlattice.protocol import limits
from wasmlattice.protocol.events import CloudEvent, rfc3339, ulid_uuid
from wasmlattice.supervision import Supervisor

log = logging.getLogger(__name__)

DEFAULT_API_PREFIX = "wadm.api"
QUEUE_GROUP = "wadm_server"
EVENT_PREFIX = "wadm.evt"
MANIFEST_PUBLISHED = "manifest_published"
MANIFEST_UNPUBLISHED = "manifest_unpublished"
WADM_EVENT_TYPE_PREFIX = "com.wadm."
# How long `stop()` waits for requests being answered.
HANDLER_DRAIN_TIMEOUT_S = 2.0

# Ops that take no app-name token, need one, or may have one (`model.get` alone lists the apps).
_NO_NAME = frozenset({"put", "list"})
_NAME_REQUIRED = frozenset({"versions", "del", "deploy", "undeploy", "status", "history"})
_NAME_OPTIONAL = frozenset({"get"})
_OPS = _NO_NAME | _NAME_REQUIRED | _NAME_OPTIONAL

# Content types a put may declare; anything else is refused, as wadm does (a few common aliases
# of YAML are accepted too since they mean the same thing).
_CONTENT_TYPES = {
    "application/json": "application/json",
    "application/yaml": "application/yaml",
    "application/x-yaml": "application/yaml",
    "text/yaml": "application/yaml",
}


class AppHooks(Protocol):
    """What the API needs from the reconciler."""

    async def deployed(self, name: str, manifest: Manifest) -> None:
        """Called after a deploy is acknowledged and stored."""

    async def undeployed(self, name: str) -> None:
        """Called after an undeploy (or a delete that undeploys)."""

    def status(self, name: str) -> dict[str, Any] | None:
        """The app's Status JSON, or None if none was ever computed."""


class RequestError(Exception):
    """A request is refused; the message goes back as `{"result": "error", "message": ...}`."""


def parse_api_subject(subject: str, prefix: str, lattice: str) -> tuple[str, str | None]:
    """(op, app name or None) of an API subject; raises RequestError with wadm's subject messages."""
    base = f"{prefix}.{lattice}.model."
    if not subject.startswith(base):
        raise RequestError(f"Unsupported subject: {subject} is not under {base}*")
    tokens = subject[len(base) :].split(".")
    op, rest = tokens[0], tokens[1:]
    if op not in _OPS:
        raise RequestError(
            f"Unsupported subject: unknown operation {op!r} in {subject}; "
            f"known operations: {', '.join(sorted(_OPS))}"
        )
    if op in _NO_NAME and rest:
        raise RequestError(
            f"Invalid subject {subject}: Found extra components after model.{op} (it takes no app name)"
        )
    if len(rest) > 1:
        raise RequestError(
            f"Invalid subject {subject}: Found extra components after the app name "
            "(app names cannot contain dots)"
        )
    if op in _NAME_REQUIRED and not rest:
        raise RequestError(
            f"Invalid subject {subject}: model.{op} needs the app name as the last token, "
            f"e.g. {base}{op}.my-app"
        )
    name = rest[0] if rest else None
    if name is not None and not name.strip():
        raise RequestError(f"Invalid subject {subject}: the app name token is empty")
    if name is not None and len(name) > limits.MAX_NAME_LEN:
        raise RequestError(f"Invalid subject: the app name is longer than {limits.MAX_NAME_LEN} characters")
    return op, name


def _version_body(data: bytes, op: str) -> str | None:
    """The optional `version` of a get/del/deploy body (`{}` or empty: None)."""
    if not data.strip():
        return None
    try:
        obj = json.loads(data)
    except ValueError as e:
        raise RequestError(
            f'model.{op}: the request body is not valid JSON ({e}); send {{}} or {{"version": "v1"}}'
        ) from None
    if not isinstance(obj, dict):
        raise RequestError(f'model.{op}: the request body must be a JSON object such as {{"version": "v1"}}')
    version = obj.get("version")
    if version is not None and not isinstance(version, str):
        raise RequestError(f"model.{op}: version must be a string, found {json.dumps(version)}")
    return version or None


def _content_type(headers: dict[str, str] | None) -> str | None:
    value = None
    for key, v in (headers or {}).items():
        if key.lower() == "content-type":
            value = v
    if value is None or not value.strip():
        return None
    base = value.split(";", 1)[0].strip().lower()
    if base not in _CONTENT_TYPES:
        raise RequestError(
            f"unsupported Content-Type {value!r}: send the manifest as application/yaml or application/json "
            "(or without the header to have it detected)"
        )
    return _CONTENT_TYPES[base]


class ApiServer:
    """Serves the wadm model API of one lattice on NATS connection `nc`."""

    def __init__(
        self,
        nc: Any,
        lattice: str,
        store: AppStore,
        hooks: AppHooks,
        prefix: str = DEFAULT_API_PREFIX,
        *,
        source: str | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.nc = nc
        self.lattice = lattice
        self.store = store
        self.hooks = hooks
        self.prefix = prefix
        # The CloudEvents `source` of the manifest events: this app manager.
        self.source = source or f"wadm-{uuid.uuid4().hex[:12]}"
        self._sub: Any = None
        # Owns the request handlers; a child of the app manager's supervisor when one is given.
        self._supervisor = Supervisor("wadm-api", parent=supervisor, logger=log)
        # Changes are applied one at a time so that the reconciler sees deploys and undeploys in the
        # order they were stored (reads don't take it).
        self._lock = asyncio.Lock()

    @property
    def subject(self) -> str:
        """The subscription subject."""
        return f"{self.prefix}.{self.lattice}.model.>"

    @property
    def subscribed(self) -> bool:
        """Whether the API subscription is in place (the app manager's readiness probe asks)."""
        return self._sub is not None

    async def start(self) -> None:
        """Subscribe (in queue group `wadm_server`); requests are answered once this returns."""
        await self._supervisor.start()
        self._sub = await self.nc.subscribe(self.subject, queue=QUEUE_GROUP, cb=self._on_message)
        await self.nc.flush()

    async def stop(self) -> None:
        """Unsubscribe and wait briefly for requests being answered."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await self._supervisor.stop(HANDLER_DRAIN_TIMEOUT_S)

    async def _on_message(self, msg: Any) -> None:
        # One task per request, so a slow deploy doesn't hold up status or list requests.
        if self._supervisor.running:  # a message that arrives while stopping goes unanswered
            self._supervisor.spawn("wadm-request", self.handle(msg))

    async def handle(self, msg: Any) -> None:
        """Answer one request; never raises."""
        try:
            reply: Any = await self.dispatch(msg.subject, msg.data, msg.headers)
        except RequestError as e:
            reply = {"result": "error", "message": str(e)}
        except Exception as e:
            log.exception("app API request on %s failed", msg.subject)
            reply = {"result": "error", "message": f"internal error: {type(e).__name__}: {e}"}
        if not msg.reply:
            return
        body = json.dumps(reply).encode()
        max_payload = getattr(self.nc, "max_payload", limits.MAX_PAYLOAD)
        if isinstance(max_payload, int) and len(body) > max_payload:
            # The server would refuse it: answer with an error the requester can read instead.
            message = f"the reply of {len(body)} bytes exceeds the NATS server's max_payload of {max_payload}"
            body = json.dumps({"result": "error", "message": message}).encode()
        try:
            await self.nc.publish(msg.reply, body)
        except Exception as e:
            log.warning("could not reply to %s: %s: %s", msg.subject, type(e).__name__, e)

    async def dispatch(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> Any:
        """The JSON reply to one request (raises RequestError for a refused one)."""
        op, name = parse_api_subject(subject, self.prefix, self.lattice)
        if len(data) > limits.MAX_PAYLOAD:
            raise RequestError(
                f"model.{op}: the request body of {len(data)} bytes is larger than {limits.MAX_PAYLOAD} bytes"
            )
        try:
            if op == "put":
                async with self._lock:
                    return await self._put(data, headers)
            if op == "list":
                return await self._summaries()
            if op == "get":
                if name is None:
                    return {
                        "result": "success",
                        "message": "Successfully fetched list of applications",
                        "models": await self._summaries(),
                    }
                return await self._get(name, _version_body(data, op))
            assert name is not None  # parse_api_subject requires it for the remaining ops
            if op == "versions":
                return await self._versions(name)
            if op == "status":
                return await self._status(name)
            if op == "history":
                raise RequestError(
                    "model.history is not currently supported (as in wadm); use model.versions for the "
                    "list of versions"
                )
            async with self._lock:
                if op == "del":
                    return await self._delete(name, _version_body(data, op))
                if op == "deploy":
                    return await self._deploy(name, _version_body(data, op))
                return await self._undeploy(name)
        except AppStoreError as e:
            raise RequestError(str(e)) from e

    # -- operations --------------------------------------------------------------------------------

    async def _put(self, data: bytes, headers: dict[str, str] | None) -> dict[str, Any]:
        content_type = _content_type(headers)
        try:
            manifest, warnings = parse_manifest(data, content_type)
        except ManifestError as e:
            raise RequestError("; ".join(e.errors) or str(e)) from None
        except ValueError as e:
            raise RequestError(str(e)) from None
        try:
            result, total, version = await self.store.put(manifest)
        except VersionExistsError as e:
            raise RequestError(str(e)) from None
        notes = [f"Successfully put manifest {manifest.name} version {version}"]
        missing = await self._shared_problems(manifest, deployed_only=False)
        if missing:
            notes.append(
                "missing shared components (deploy will fail until they exist): " + "; ".join(missing)
            )
        if warnings:
            notes.append("warnings: " + "; ".join(warnings))
        return {
            "result": result,
            "total_versions": total,
            "current_version": version,
            "name": manifest.name,
            "message": ". ".join(notes),
        }

    async def _get(self, name: str, version: str | None) -> dict[str, Any]:
        found = await self.store.get_raw(name, None if version == "latest" else version)
        if found is None:
            what = f"app {name}" if version is None else f"version {version} of app {name}"
            return {"result": "notfound", "message": f"{what} not found in lattice {self.lattice}"}
        v, raw = found
        return {"result": "success", "message": f"Successfully fetched {name} version {v}", "manifest": raw}

    async def _versions(self, name: str) -> dict[str, Any]:
        versions = await self.store.versions(name)
        if not versions:
            return {
                "result": "notfound",
                "message": f"app {name} not found in lattice {self.lattice}",
                "versions": [],
            }
        return {
            "result": "success",
            "message": f"Successfully fetched versions of {name}",
            "versions": [{"version": v, "deployed": d} for v, d in versions],
        }

    async def _summaries(self) -> list[dict[str, Any]]:
        out = []
        for name in await self.store.names():
            versions = await self.store.versions(name)
            if not versions:
                continue  # removed between reading the index and the record
            latest = versions[-1][0]
            deployed = next((v for v, d in versions if d), None)
            manifest = await self.store.get(name, latest)
            detailed = self._hook_status(name) or status_json("waiting", NO_STATUS_MESSAGE)
            kind = status_type(detailed)
            summary: dict[str, Any] = {"name": name, "version": latest}
            if manifest is not None and manifest.description:
                summary["description"] = manifest.description
            if deployed is not None:
                summary["deployed_version"] = deployed
            summary["detailed_status"] = detailed
            # Old clients don't know `waiting` (wadm maps it down the same way).
            summary["status"] = "undeployed" if kind == "waiting" else kind
            message = status_message(detailed)
            if message:
                summary["status_message"] = message
            out.append(summary)
        return out

    def _hook_status(self, name: str) -> dict[str, Any] | None:
        try:
            return self.hooks.status(name)
        except Exception:
            log.exception("status of app %s could not be computed", name)
            return None

    async def _status(self, name: str) -> dict[str, Any]:
        status = self._hook_status(name)
        if status is None:
            if not await self.store.versions(name):
                return {"result": "notfound", "message": f"app {name} not found in lattice {self.lattice}"}
            status = status_json("undeployed")
        return {"result": "ok", "message": f"Successfully fetched status of {name}", "status": status}

    async def _delete(self, name: str, version: str | None) -> dict[str, Any]:
        existed = bool(await self.store.versions(name))
        deleted, undeploy = await self.store.delete(name, version)
        what = f"all versions of app {name}" if version is None else f"version {version} of app {name}"
        if not deleted:
            if not existed:
                # Nothing stored: make sure nothing keeps running under that name either (as wadm does).
                await self._notify_undeployed(name)
            return {"result": "noop", "message": f"{what} did not exist; nothing deleted", "undeploy": False}
        if undeploy:
            await self._notify_undeployed(name)
        message = f"Deleted {what}" + (" and undeployed it" if undeploy else "")
        return {"result": "deleted", "message": message, "undeploy": undeploy}

    async def _deploy(self, name: str, version: str | None) -> dict[str, Any]:
        versions = await self.store.versions(name)
        if not versions:
            return {
                "result": "notfound",
                "message": f"app {name} not found in lattice {self.lattice}: put its manifest first",
                "name": name,
                "version": version,
            }
        known = [v for v, _ in versions]
        if version is None or version == "latest":
            version = known[-1]
        elif version not in known:
            raise RequestError(f"app {name} has no version {version}; stored versions: {', '.join(known)}")
        manifest = await self.store.get(name, version)
        if manifest is None:
            raise RequestError(f"version {version} of app {name} was deleted while deploying; retry")
        await self._check_id_clashes(manifest)
        problems = await self._shared_problems(manifest, deployed_only=True)
        if problems:
            raise RequestError(f"cannot deploy {name} version {version}: " + "; ".join(problems))
        await self.store.set_deployed(name, version)
        try:
            await self.hooks.deployed(name, manifest)
        except Exception as e:
            log.exception("the reconciler failed to take deployment of %s", name)
            raise RequestError(
                f"{name} version {version} is marked deployed but the app manager could not start "
                f"reconciling it ({type(e).__name__}: {e}); see its log, then deploy again"
            ) from e
        await self._publish(MANIFEST_PUBLISHED, manifest.raw)
        log.info("app %s version %s deployed", name, version)
        return {
            "result": "acknowledged",
            "message": f"Deployment of {name} version {version} accepted",
            "name": name,
            "version": version,
        }

    async def _undeploy(self, name: str) -> dict[str, Any]:
        versions = await self.store.versions(name)
        if not versions:
            return {
                "result": "notfound",
                "message": f"app {name} not found in lattice {self.lattice}",
                "name": name,
                "version": None,
            }
        was_deployed = any(d for _, d in versions)
        if was_deployed:
            await self.store.set_deployed(name, None)
        # Resent even when already undeployed, so a manager that missed it still cleans up.
        await self._notify_undeployed(name)
        message = f"Undeployed {name}" if was_deployed else f"{name} was already undeployed"
        log.info("%s", message)
        return {"result": "acknowledged", "message": message, "name": name, "version": None}

    # -- checks and notifications --------------------------------------------------------------------

    async def _check_id_clashes(self, manifest: Manifest) -> None:
        """Refuse a deploy whose component IDs are already used by another deployed app.

        Capabilities with the same ID and image are not a clash: that is how apps share a provider
        (each counts the running copy; undeploying one leaves it to the others).
        """
        ours = {manifest.component_id(c): c for c in manifest.components if c.application is None}
        for other_name, other in (await self.store.deployed()).items():
            if other_name == manifest.name:
                continue
            for c in other.components:
                if c.application is not None:
                    continue
                cid = other.component_id(c)
                mine = ours.get(cid)
                if mine is not None:
                    if mine.kind == c.kind == "capability" and mine.image == c.image:
                        continue
                    raise RequestError(
                        f"cannot deploy {manifest.name}: component {mine.name!r} has ID {cid!r}, which "
                        f"deployed app {other_name} already uses (component {c.name!r}); give one of them "
                        "a different properties.id or undeploy the other app"
                    )

    async def _shared_problems(self, manifest: Manifest, *, deployed_only: bool) -> list[str]:
        """Why each shared-component reference of `manifest` cannot be resolved (empty if all can)."""
        problems: list[str] = []
        for c in manifest.components:
            ref = c.application
            if ref is None:
                continue
            where = f"component {c.name!r} refers to {ref.name}/{ref.component}"
            if deployed_only:
                version = await self.store.deployed_version(ref.name)
                other = None if version is None else await self.store.get(ref.name, version)
                if other is None:
                    problems.append(f"{where}, but app {ref.name} is not deployed")
                    continue
            else:
                other = await self.store.get(ref.name)
                if other is None:
                    problems.append(f"{where}, but app {ref.name} does not exist")
                    continue
            if not other.shared:
                problems.append(
                    f"{where}, but app {ref.name} is not shared "
                    '(it needs the annotation experimental.wasmcloud.dev/shared: "true")'
                )
            elif not any(oc.name == ref.component for oc in other.components):
                problems.append(f"{where}, but app {ref.name} has no component named {ref.component!r}")
        return problems

    async def _notify_undeployed(self, name: str) -> None:
        await self.hooks.undeployed(name)
        await self._publish(MANIFEST_UNPUBLISHED, {"name": name})

    async def _publish(self, kind: str, data: dict[str, Any]) -> None:
        """Publish a wadm CloudEvent on `wadm.evt.{lattice}.{kind}`; failures are logged, not raised."""
        moment = datetime.now(UTC)
        event = CloudEvent(
            id=ulid_uuid(int(moment.timestamp() * 1000)),
            source=self.source,
            type=WADM_EVENT_TYPE_PREFIX + kind,
            time=rfc3339(moment),
            data=data,
        )
        try:
            await self.nc.publish(f"{EVENT_PREFIX}.{self.lattice}.{kind}", event.to_wire())
        except Exception as e:
            log.warning("could not publish %s event: %s: %s", kind, type(e).__name__, e)
