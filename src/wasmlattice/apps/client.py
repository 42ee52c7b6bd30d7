"""Typed async client of the wadm-compatible app API (`wadm.api.{lattice}.model.*`).

Each method sends one request and parses wadm's reply. A `result: error` reply raises `AppApiError`
with the app manager's message; a missing app raises `AppNotFoundError` (except `get`, which returns
None); silence raises `AppNoManagerError` telling how to start an app manager.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass, field
from typing import Any

import nats.errors

from wasmlattice.apps.api import DEFAULT_API_PREFIX

DEFAULT_TIMEOUT_S = 5.0
STATUS_SUBJECT_PREFIX = "wadm.status"


class AppApiError(RuntimeError):
    """An app API call failed; `message` is the app manager's (or the client's) explanation."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AppNotFoundError(AppApiError):
    """The app (or the version asked for) does not exist."""


class AppNoManagerError(AppApiError):
    """No app manager answered (none runs on the lattice, or it is too slow)."""


@dataclass(frozen=True)
class ScalerStatus:
    """One scaler's row of an app status."""

    id: str
    kind: str
    name: str
    status: str
    message: str = ""


@dataclass(frozen=True)
class AppStatus:
    """An app's status: the overall type and message, the scalers, and the JSON as received."""

    status: str
    message: str = ""
    scalers: list[ScalerStatus] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Any) -> AppStatus:
        """Parse a wadm Status object (lenient about missing optional fields)."""
        if not isinstance(obj, dict):
            raise AppApiError(f"the app manager sent a status that is not an object: {obj!r}")
        kind, message = _info(obj.get("status"))
        scalers = []
        for s in obj.get("scalers") or []:
            if not isinstance(s, dict):
                continue
            s_kind, s_message = _info(s.get("status"))
            scalers.append(
                ScalerStatus(
                    id=str(s.get("id", "")),
                    kind=str(s.get("kind", "")),
                    name=str(s.get("name", "")),
                    status=s_kind,
                    message=s_message,
                )
            )
        return cls(kind, message, scalers, obj)


def _info(info: Any) -> tuple[str, str]:
    if not isinstance(info, dict):
        return "undeployed", ""
    kind = info.get("type")
    message = info.get("message")
    return (kind if isinstance(kind, str) else "undeployed", message if isinstance(message, str) else "")


@dataclass(frozen=True)
class ModelSummary:
    """One app of a list: latest and deployed versions, description and status."""

    name: str
    version: str
    description: str | None
    deployed_version: str | None
    detailed_status: AppStatus
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Any) -> ModelSummary:
        """Parse a wadm ModelSummary (falling back to the deprecated `status` for old servers)."""
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            raise AppApiError(f"the app manager sent an app summary without a name: {obj!r}")
        detailed = obj.get("detailed_status")
        if isinstance(detailed, dict):
            status = AppStatus.from_json(detailed)
        else:
            status = AppStatus(str(obj.get("status", "undeployed")), str(obj.get("status_message") or ""))
        return cls(
            name=obj["name"],
            version=str(obj.get("version", "")),
            description=obj.get("description") if isinstance(obj.get("description"), str) else None,
            deployed_version=obj.get("deployed_version")
            if isinstance(obj.get("deployed_version"), str)
            else None,
            detailed_status=status,
            raw=obj,
        )


@dataclass(frozen=True)
class PutResponse:
    """The answer to a put: `created` or `newversion`, the version stored and how many there are."""

    result: str
    name: str
    current_version: str
    total_versions: int
    message: str


@dataclass(frozen=True)
class VersionInfo:
    """One stored version of an app."""

    version: str
    deployed: bool


@dataclass(frozen=True)
class DeployResponse:
    """The answer to deploy/undeploy (`acknowledged` means accepted, not running yet)."""

    result: str
    name: str
    version: str | None
    message: str


@dataclass(frozen=True)
class DeleteResponse:
    """The answer to a delete: `deleted` or `noop`, and whether the app was undeployed by it."""

    result: str
    undeploy: bool
    message: str


class AppClient:
    """Typed access to the app API of one lattice over NATS connection `nc`."""

    def __init__(
        self, nc: Any, lattice: str, prefix: str = DEFAULT_API_PREFIX, timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.nc = nc
        self.lattice = lattice
        self.prefix = prefix
        self.timeout = timeout

    def subject(self, op: str, name: str | None = None) -> str:
        """The request subject of `op` (for app `name`)."""
        base = f"{self.prefix}.{self.lattice}.model.{op}"
        return base if name is None else f"{base}.{_check_name(name)}"

    def status_subject(self, name: str) -> str:
        """Where the app manager publishes app `name`'s status changes."""
        return f"{STATUS_SUBJECT_PREFIX}.{self.lattice}.{_check_name(name)}"

    async def request(
        self, op: str, name: str | None = None, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Any:
        """Send one request and return the decoded JSON reply (no result checking)."""
        subject = self.subject(op, name)
        try:
            msg = await self.nc.request(subject, body, timeout=self.timeout, headers=headers)
        except nats.errors.NoRespondersError:
            raise AppNoManagerError(
                f"no app manager answered on {self.prefix}.{self.lattice} (is one running? "
                "`wasmlattice up` runs one; `wasmlattice app-manager` runs one alone)"
            ) from None
        except (nats.errors.TimeoutError, TimeoutError):
            raise AppNoManagerError(
                f"the app manager did not answer {subject} within {self.timeout:g}s (is it overloaded or "
                "cut off from JetStream? try a longer --timeout)"
            ) from None
        except nats.errors.Error as e:
            raise AppApiError(f"request on {subject} failed: {type(e).__name__}: {e}") from e
        try:
            return json.loads(msg.data)
        except ValueError:
            raise AppApiError(
                f"the app manager sent a reply on {subject} that is not JSON: {msg.data[:200]!r}"
            ) from None

    async def _call(self, op: str, name: str | None = None, body: bytes = b"", **kw: Any) -> dict[str, Any]:
        reply = await self.request(op, name, body, **kw)
        if not isinstance(reply, dict):
            raise AppApiError(f"model.{op}: expected a JSON object reply, got {type(reply).__name__}")
        result = reply.get("result")
        if result == "error":
            raise AppApiError(str(reply.get("message") or f"model.{op} failed without a reason"))
        if result == "notfound":
            raise AppNotFoundError(str(reply.get("message") or f"app {name} not found"))
        return reply

    async def put(
        self, manifest: bytes | str | dict[str, Any], content_type: str | None = None
    ) -> PutResponse:
        """Store a manifest (YAML/JSON text or a dict, sent as JSON) as a new version."""
        if isinstance(manifest, dict):
            body, content_type = json.dumps(manifest).encode(), "application/json"
        else:
            body = manifest.encode() if isinstance(manifest, str) else manifest
        headers = {"Content-Type": content_type} if content_type else None
        r = await self._call("put", body=body, headers=headers)
        return PutResponse(
            result=str(r.get("result")),
            name=str(r.get("name", "")),
            current_version=str(r.get("current_version", "")),
            total_versions=int(r.get("total_versions", 0)),
            message=str(r.get("message", "")),
        )

    async def get(self, name: str, version: str | None = None) -> dict[str, Any] | None:
        """App `name`'s manifest JSON at `version` (latest if None), or None if not found."""
        try:
            r = await self._call("get", name, _version(version))
        except AppNotFoundError:
            return None
        manifest = r.get("manifest")
        if not isinstance(manifest, dict):
            raise AppApiError(f"model.get.{name}: the reply has no manifest")
        return manifest

    async def list(self) -> builtins.list[ModelSummary]:
        """Every app of the lattice (`model.get` without a name)."""
        r = await self._call("get")
        return [ModelSummary.from_json(m) for m in r.get("models") or []]

    async def list_deprecated(self) -> builtins.list[ModelSummary]:
        """Every app of the lattice through the deprecated `model.list` (a bare array)."""
        reply = await self.request("list")
        if isinstance(reply, dict) and reply.get("result") == "error":
            raise AppApiError(str(reply.get("message")))
        if not isinstance(reply, list):
            raise AppApiError(f"model.list: expected a JSON array, got {type(reply).__name__}")
        return [ModelSummary.from_json(m) for m in reply]

    async def versions(self, name: str) -> builtins.list[VersionInfo]:
        """App `name`'s versions in the order they were put."""
        r = await self._call("versions", name)
        return [
            VersionInfo(str(v.get("version")), bool(v.get("deployed")))
            for v in r.get("versions") or []
            if isinstance(v, dict)
        ]

    async def delete(self, name: str, version: str | None = None) -> DeleteResponse:
        """Delete one version (all if None); deleting the deployed or last version undeploys."""
        r = await self._call("del", name, _version(version, empty=b"{}"))
        return DeleteResponse(str(r.get("result")), bool(r.get("undeploy")), str(r.get("message", "")))

    async def deploy(self, name: str, version: str | None = None) -> DeployResponse:
        """Deploy `version` of app `name` (latest if None); accepted, not yet running, on return."""
        r = await self._call("deploy", name, _version(version, empty=b"{}"))
        return _deploy_response(r, name)

    async def undeploy(self, name: str) -> DeployResponse:
        """Undeploy app `name` (acknowledged also when it was not deployed)."""
        r = await self._call("undeploy", name, b"{}")
        return _deploy_response(r, name)

    async def status(self, name: str) -> AppStatus:
        """App `name`'s current status."""
        r = await self._call("status", name)
        return AppStatus.from_json(r.get("status"))

    async def history(self, name: str) -> Any:
        """`model.history` (wadm always refuses it; kept for completeness)."""
        return await self._call("history", name)


def _check_name(name: str) -> str:
    # A dot or wildcard would change the subject's meaning rather than name an app.
    if not name or any(ch in name for ch in ".*> \t"):
        raise AppApiError(
            f"invalid app name {name!r}: use letters, digits, '_' and '-' (no dots, spaces or wildcards)"
        )
    return name


def _version(version: str | None, empty: bytes = b"") -> bytes:
    return empty if version is None else json.dumps({"version": version}).encode()


def _deploy_response(r: dict[str, Any], name: str) -> DeployResponse:
    version = r.get("version")
    return DeployResponse(
        result=str(r.get("result")),
        name=str(r.get("name") or name),
        version=version if isinstance(version, str) else None,
        message=str(r.get("message", "")),
    )
