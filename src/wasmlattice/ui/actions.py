"""What the dashboard's buttons do: every action goes through our client API, as the CLI does.

Each action takes the request's JSON object, checks it (an `ActionError` names the field), calls
`CtlClient` or `AppClient` and returns a JSON-able result. Manifests are validated here first with
the app manager's own checks (`apps/manifest`), so the page shows every error inline before anything
is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from wasmlattice.apps.client import AppApiError
from wasmlattice.apps.manifest.load import parse_manifest
from wasmlattice.apps.manifest.model import ManifestError
from wasmlattice.client.ctl import CtlError, parse_key_values
from wasmlattice.protocol import limits
from wasmlattice.protocol.models import DEFAULT_LINK_NAME, Link
from wasmlattice.protocol.wire import describe_validation_error
from wasmlattice.ui.view import LatticeView

# A manifest pasted or uploaded into the page; wadm's own API takes no more (apps/api.py).
MAX_MANIFEST_BYTES = 1 << 20
MAX_SCALE = 10_000


class ActionError(Exception):
    """An action refused or failed: `message` for the page, `errors` for a list shown inline."""

    def __init__(self, message: str, errors: list[str] | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []
        self.status = status


def _str(body: dict[str, Any], key: str, *, required: bool = True, default: str = "") -> str:
    value = body.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ActionError(f"field '{key}' is required")
        return default
    if not isinstance(value, str):
        raise ActionError(f"field '{key}' must be a string, got {type(value).__name__}")
    if len(value) > limits.MAX_REF_LEN:
        raise ActionError(f"field '{key}' is longer than {limits.MAX_REF_LEN} characters")
    return value.strip()


def _names(body: dict[str, Any], key: str) -> list[str]:
    """A list of names given as a JSON list or a comma-separated string."""
    value = body.get(key)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise ActionError(f"field '{key}' must be a list of names or a comma-separated string")


def validate_manifest(body: dict[str, Any]) -> dict[str, Any]:
    """Check a manifest's text with the app manager's validation; every error, with its field path."""
    text = body.get("manifest")
    if not isinstance(text, str) or not text.strip():
        raise ActionError("field 'manifest' is required: paste or upload a manifest (YAML or JSON)")
    if len(text.encode()) > MAX_MANIFEST_BYTES:
        raise ActionError(f"the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest, warnings = parse_manifest(text, None)
    except ManifestError as e:
        raise ActionError("the manifest is not valid", errors=e.errors or [str(e)]) from None
    return {"valid": True, "name": manifest.name, "version": manifest.version, "warnings": warnings}


async def _app_call(fn: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await fn()
    except AppApiError as e:
        raise ActionError(e.message, status=502) from None


async def deploy_manifest(view: LatticeView, body: dict[str, Any]) -> dict[str, Any]:
    """Validate, store (`model.put`) and deploy a manifest; the version stored and the manager's word."""
    checked = validate_manifest(body)
    put = await _app_call(lambda: view.apps.put(body["manifest"]))
    deployed = await _app_call(lambda: view.apps.deploy(put.name, put.current_version or None))
    view.mark("apps")
    return {
        "name": put.name,
        "version": put.current_version,
        "result": deployed.result,
        "message": deployed.message or put.message,
        "warnings": checked["warnings"],
    }


async def deploy_stored(view: LatticeView, body: dict[str, Any]) -> dict[str, Any]:
    """Deploy an app's latest stored version (or `version`)."""
    name = _str(body, "name")
    version = _str(body, "version", required=False) or None
    r = await _app_call(lambda: view.apps.deploy(name, version))
    view.mark("apps")
    return {"name": name, "version": r.version, "result": r.result, "message": r.message}


async def undeploy_app(view: LatticeView, body: dict[str, Any]) -> dict[str, Any]:
    """Undeploy an app (its stored versions stay)."""
    name = _str(body, "name")
    r = await _app_call(lambda: view.apps.undeploy(name))
    view.mark("apps")
    return {"name": name, "result": r.result, "message": r.message}


async def delete_app(view: LatticeView, body: dict[str, Any]) -> dict[str, Any]:
    """Delete every version of an app (undeploying it)."""
    name = _str(body, "name")
    r = await _app_call(lambda: view.apps.delete(name))
    view.mark("apps")
    return {"name": name, "result": r.result, "message": r.message}


async def _ctl_call(fn: Callable[[], Awaitable[str]]) -> str:
    try:
        return await fn()
    except CtlError as e:
        raise ActionError(e.message, status=502) from None
    except ValidationError as e:  # a request the host would refuse (protocol/limits.py)
        raise ActionError(describe_validation_error(e.title, e)) from None
    except ValueError as e:  # invalid subject tokens
        raise ActionError(str(e)) from None


async def scale_component(view: LatticeView, body: dict[str, Any]) -> dict[str, Any]:
    """Scale a component on one host to `count` (0 stops it); its image and annotations are kept."""
    host_id = _str(body, "host_id")
    component_id = _str(body, "component_id")
    count = body.get("count")
    if isinstance(count, str) and count.strip().isdigit():
        count = int(count)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_SCALE:
        raise ActionError(f"field 'count' must be a whole number from 0 to {MAX_SCALE}")
    row = view.hosts.get(host_id)
    current = None
    if row is not None and row.inventory is not None:
        current = next((c for c in row.inventory.components if c.id == component_id), None)
    image = _str(body, "image_ref", required=current is None, default=current.image_ref if current else "")
    annotations = dict(current.annotations or {}) if current is not None else None
    message = await _ctl_call(
        lambda: view.ctl.scale_component(host_id, image, component_id, count, annotations=annotations)
    )
    view.mark(f"host:{host_id}")
    return {"message": message or f"scaling {component_id} to {count} on {host_id}"}


async def put_link(view: LatticeView, body: dict[str, Any]) -> dict[str, Any]:
    """Create or replace a link."""
    interfaces = _names(body, "interfaces")
    if not interfaces:
        raise ActionError("field 'interfaces' is required: one or more interface names")
    try:
        link = Link(
            source_id=_str(body, "source_id"),
            target=_str(body, "target"),
            name=_str(body, "name", required=False, default=DEFAULT_LINK_NAME),
            wit_namespace=_str(body, "wit_namespace"),
            wit_package=_str(body, "wit_package"),
            interfaces=interfaces,
            source_config=_names(body, "source_config"),
            target_config=_names(body, "target_config"),
        )
    except ValidationError as e:
        raise ActionError(describe_validation_error("link", e)) from None
    message = await _ctl_call(lambda: view.ctl.put_link(link))
    view.mark("links")
    return {"message": message or "link put"}


async def delete_link(view: LatticeView, body: dict[str, Any]) -> dict[str, Any]:
    """Delete a link by source, interface package and name."""
    source_id = _str(body, "source_id")
    namespace, package = _str(body, "wit_namespace"), _str(body, "wit_package")
    name = _str(body, "name", required=False, default=DEFAULT_LINK_NAME)
    message = await _ctl_call(lambda: view.ctl.delete_link(source_id, namespace, package, name))
    view.mark("links")
    return {"message": message or "link deleted"}


async def put_config(view: LatticeView, body: dict[str, Any]) -> dict[str, Any]:
    """Store a named config from `values` (an object of strings, or `KEY=VALUE` lines)."""
    name = _str(body, "name")
    raw = body.get("values")
    if isinstance(raw, str):
        try:
            values = parse_key_values([ln for ln in raw.splitlines() if ln.strip()], "config values")
        except ValueError as e:
            raise ActionError(f"field 'values': {e}") from None
    elif isinstance(raw, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        values = dict(raw)
    else:
        raise ActionError("field 'values' must be KEY=VALUE lines or an object of strings")
    message = await _ctl_call(lambda: view.ctl.put_config(name, values))
    view.mark("configs")
    return {"message": message or f"config {name} put"}


async def delete_config(view: LatticeView, body: dict[str, Any]) -> dict[str, Any]:
    """Delete a named config."""
    name = _str(body, "name")
    message = await _ctl_call(lambda: view.ctl.delete_config(name))
    view.mark("configs")
    return {"message": message or f"config {name} deleted"}


ACTIONS: dict[str, Callable[[LatticeView, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "apps/deploy": deploy_manifest,
    "apps/deploy-stored": deploy_stored,
    "apps/undeploy": undeploy_app,
    "apps/delete": delete_app,
    "components/scale": scale_component,
    "links/put": put_link,
    "links/delete": delete_link,
    "configs/put": put_config,
    "configs/delete": delete_config,
}
