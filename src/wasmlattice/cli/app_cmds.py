"""App commands: deploy and manage wadm-style applications (`wasmlattice app ...`, like `wash app`).

They talk to the app manager over the wadm API (`wadm.api.<lattice>.model.*`); `app validate` checks a
manifest locally without NATS. Unlike `wash app deploy`, `app deploy` waits until the app is actually
deployed (or has failed) and says which, so a broken deployment is not reported as a success.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from wasmlattice.cli.app import app, command_group
from wasmlattice.cli.common import (
    LatticeTarget,
    OutputFormat,
    OutputOpt,
    SlowLatticeTarget,
    console,
    fail,
    nats_call,
    option_group,
    print_json,
)

T = TypeVar("T")

app_app = command_group("Deploy and manage applications (wadm manifests) through the app manager.")
app.add_typer(app_app, name="app")

# A bare app name (what wadm allows as metadata.name); anything else is taken as a file.
_APP_NAME = re.compile(r"^[-\w]+$")
_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# How often `app deploy` asks for the status while waiting.
_POLL_INTERVAL_S = 0.25
# The per-request deadline of `app deploy` (its --timeout bounds the whole wait).
_DEPLOY_REQUEST_TIMEOUT_S = 5.0
_FINAL = frozenset({"deployed", "failed"})

VersionOpt = Annotated[str | None, typer.Option("--version", "-v", help="Version (default: the latest).")]

DeployTimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", "-t", min=0.1, help="How long to wait for the app to be deployed, seconds."),
]


@dataclass(frozen=True)
class DeployTarget(LatticeTarget):
    """`LatticeTarget` of `app deploy`: its --timeout bounds the whole wait for the deployment."""

    timeout: DeployTimeoutOpt = 120.0


def _app_call(lat: LatticeTarget, timeout: float, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Connect to NATS, run `fn(AppClient)`, disconnect; every failure becomes one error line."""
    from wasmlattice.apps.client import AppApiError, AppClient

    opts = lat.nats_options(timeout)
    try:
        return nats_call(
            lat.nats_url, timeout, lambda nc: fn(AppClient(nc, lat.lattice, timeout=timeout)), opts
        )
    except AppApiError as e:
        fail(e.message)


def _load(source: str) -> tuple[Any, list[str], Path]:
    """Parse and validate a manifest file (or stdin for '-'): (manifest, warnings, its directory)."""
    from wasmlattice.apps.manifest.load import load_manifest_file, parse_manifest
    from wasmlattice.apps.manifest.model import ManifestError

    try:
        if source == "-":
            manifest, warnings = parse_manifest(sys.stdin.read(), None)
            base = Path.cwd()
        else:
            path = Path(source)
            if not path.is_file():
                fail(f"manifest file {source} does not exist (or is not a file)")
            manifest, warnings = load_manifest_file(path)
            base = path.resolve().parent
    except ManifestError as e:
        for err in e.errors or [str(e)]:
            typer.echo(f"error: {source}: {err}", err=True)
        for w in e.warnings:
            typer.echo(f"warning: {source}: {w}", err=True)
        raise typer.Exit(1) from None
    except OSError as e:
        fail(f"cannot read manifest {source}: {e.strerror or e}")
    return manifest, warnings, base


def _absolute_file_refs(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """A copy of `raw` whose relative `file://` images point at files next to the manifest.

    The app manager and the hosts don't run in the manifest's directory, so a relative path would
    resolve somewhere else (or nowhere).
    """
    out = copy.deepcopy(raw)
    for comp in (out.get("spec") or {}).get("components") or []:
        props = comp.get("properties") if isinstance(comp, dict) else None
        image = props.get("image") if isinstance(props, dict) else None
        if not isinstance(props, dict) or not isinstance(image, str) or not image.startswith("file://"):
            continue
        rest = image[len("file://") :]
        if rest.startswith("/"):
            continue
        path = (base / rest).resolve()
        if not path.exists():
            fail(f"component {comp.get('name')!r}: image {image} refers to {path}, which does not exist")
        props["image"] = f"file://{path}"
    return out


def _is_file_source(source: str) -> bool:
    return source == "-" or Path(source).is_file() or source.endswith(_MANIFEST_SUFFIXES)


def _print_warnings(source: str, warnings: list[str]) -> None:
    for w in warnings:
        typer.echo(f"warning: {source}: {w}", err=True)


def _status_line(status: Any) -> str:
    return f"{status.status}: {status.message}" if status.message else status.status


async def wait_final(client: Any, name: str, deadline: float, show: Callable[[Any], None]) -> Any:
    """Poll app `name`'s status until it is deployed or failed, or the deadline passes (then None)."""
    from wasmlattice.apps.client import AppNoManagerError

    last = None
    while True:
        try:
            status = await client.status(name)
        except AppNoManagerError:
            # One slow answer is not a failure while there is time left.
            status = None
        if status is not None:
            if (status.status, status.message) != last:
                last = (status.status, status.message)
                show(status)
            if status.status in _FINAL:
                return status
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(_POLL_INTERVAL_S)


@app_app.command("deploy")
@option_group
def app_deploy(
    source: Annotated[
        str, typer.Argument(help="A manifest file (.yaml/.yml/.json, '-' for stdin) or an app name.")
    ],
    version: VersionOpt = None,
    *,
    lat: DeployTarget,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until the app is deployed or has failed.")
    ] = True,
) -> None:
    """Deploy an app: a file is stored as a new version, then deployed; a name deploys a stored version.

    Waits until the app's status is deployed (exit 0) or failed (exit 1, with the reason).
    """
    raw: dict[str, Any] | None = None
    name = source
    if _is_file_source(source):
        if version is not None:
            raise typer.BadParameter("--version applies to an app name; a file's version is in its manifest")
        manifest, warnings, base = _load(source)
        _print_warnings(source, warnings)
        raw = _absolute_file_refs(manifest.raw, base)
        name = manifest.name
    elif not _APP_NAME.match(source):
        raise typer.BadParameter(
            f"{source!r} is neither a manifest file (.yaml, .yml, .json) nor an app name (letters, digits, "
            "'_' and '-')",
            param_hint="SOURCE",
        )
    fancy = lat.output is OutputFormat.text and sys.stderr.isatty()
    notes: list[str] = []

    async def go(client: Any) -> dict[str, Any]:
        from wasmlattice.apps.client import AppApiError

        deadline = time.monotonic() + lat.timeout
        client.timeout = min(_DEPLOY_REQUEST_TIMEOUT_S, lat.timeout)
        deploy_version = version
        if raw is not None:
            deploy_version = await _put_for_deploy(client, raw, notes)
        ack = await client.deploy(name, deploy_version)
        result: dict[str, Any] = {"name": name, "version": ack.version, "message": ack.message}
        if not wait:
            result["result"] = "acknowledged"
            return result
        if fancy:
            with console_err().status(f"deploying {name} {ack.version or ''}...") as spinner:
                final = await wait_final(
                    client, name, deadline, lambda st: spinner.update(f"{name}: {_status_line(st)}")
                )
        else:

            def show(st: Any) -> None:
                if lat.output is OutputFormat.text:
                    typer.echo(f"{name}: {_status_line(st)}", err=True)

            final = await wait_final(client, name, deadline, show)
        if final is None:
            try:
                last = await client.status(name)
            except AppApiError:
                last = None
            result["result"] = "timeout"
            result["status"] = None if last is None else last.raw
            result["message"] = f"{name} was not deployed within {lat.timeout:g}s" + (
                "" if last is None else f" (status {_status_line(last)})"
            )
            return result
        result["result"] = final.status
        result["status"] = final.raw
        return result

    result = _app_call(lat, _DEPLOY_REQUEST_TIMEOUT_S, go)
    for note in notes:
        typer.echo(note, err=True)
    if lat.output is OutputFormat.json:
        print_json(result)
        if result["result"] not in ("deployed", "acknowledged"):
            raise typer.Exit(1)
        return
    what = f"{name} version {result['version']}"
    if result["result"] == "acknowledged":
        typer.echo(f"Deployment of {what} accepted (not waiting for it to run)")
    elif result["result"] == "deployed":
        typer.echo(f"Deployed {what}")
    elif result["result"] == "failed":
        _print_failed_scalers(result.get("status"))
        status = result.get("status") or {}
        message = (status.get("status") or {}).get("message") or "no reason given"
        fail(f"{what} failed to deploy: {message}")
    else:
        fail(result["message"] + "; check `wasmlattice app status " + name + "` and the hosts")


async def _put_for_deploy(client: Any, raw: dict[str, Any], notes: list[str]) -> str:
    """Store the manifest; an identical copy already stored under its version is reused instead."""
    from wasmlattice.apps.client import AppApiError

    version = (raw.get("metadata") or {}).get("annotations", {}).get("version")
    name = raw["metadata"]["name"]
    try:
        put = await client.put(raw)
    except AppApiError as e:
        if version is None or "already exists" not in e.message:
            raise
        stored = await client.get(name, version)
        if stored != raw:
            raise AppApiError(
                f"{e.message}; the stored copy differs from this file, so bump the version in the file "
                f"(or delete the old one: `wasmlattice app delete {name} --version {version}`)"
            ) from None
        notes.append(f"{name} version {version} is already stored with this content; deploying it")
        return str(version)
    if "missing shared components" in put.message or "warnings:" in put.message:
        notes.append(put.message)
    return str(put.current_version)


def console_err() -> Any:
    """A rich console on stderr (progress goes there, results to stdout)."""
    from rich.console import Console

    return Console(stderr=True)


def _print_failed_scalers(status: dict[str, Any] | None) -> None:
    from wasmlattice.apps.client import AppStatus

    if not status:
        return
    for s in AppStatus.from_json(status).scalers:
        if s.status != "deployed":
            typer.echo(f"  {s.kind} {s.name}: {s.status}{': ' + s.message if s.message else ''}", err=True)


@app_app.command("put")
@option_group
def app_put(
    source: Annotated[str, typer.Argument(help="A manifest file (.yaml/.yml/.json, '-' for stdin).")],
    *,
    lat: SlowLatticeTarget,
) -> None:
    """Store a manifest as a new version of its app, without deploying it."""
    manifest, warnings, base = _load(source)
    _print_warnings(source, warnings)
    raw = _absolute_file_refs(manifest.raw, base)
    put = _app_call(lat, lat.timeout, lambda c: c.put(raw))
    if lat.output is OutputFormat.json:
        print_json(
            {
                "result": put.result,
                "name": put.name,
                "current_version": put.current_version,
                "total_versions": put.total_versions,
                "message": put.message,
            }
        )
        return
    typer.echo(f"Stored {put.name} version {put.current_version} ({put.total_versions} versions)")


@app_app.command("list")
@option_group
def app_list(
    *,
    lat: SlowLatticeTarget,
) -> None:
    """List the apps of the lattice with their versions and status."""
    apps = _app_call(lat, lat.timeout, lambda c: c.list())
    if lat.output is OutputFormat.json:
        print_json([a.raw for a in apps])
        return
    if not apps:
        typer.echo(f"No apps in lattice '{lat.lattice}'")
        return
    from rich.table import Table

    table = Table(title=f"Apps of lattice '{lat.lattice}'")
    for col in ("Name", "Deployed version", "Latest version", "Status", "Description"):
        table.add_column(col, overflow="fold")
    for a in apps:
        table.add_row(
            a.name,
            a.deployed_version or "-",
            a.version,
            _status_line(a.detailed_status),
            a.description or "",
        )
    console().print(table)


@app_app.command("get")
@option_group
def app_get(
    name: Annotated[str, typer.Argument(help="App name.")],
    version: VersionOpt = None,
    *,
    lat: SlowLatticeTarget,
) -> None:
    """Print a stored manifest (YAML, or JSON with -o json)."""
    manifest = _app_call(lat, lat.timeout, lambda c: c.get(name, version))
    if manifest is None:
        what = f"version {version} of app {name}" if version else f"app {name}"
        fail(f"{what} not found in lattice '{lat.lattice}' (see `wasmlattice app list`)")
    if lat.output is OutputFormat.json:
        print_json(manifest)
        return
    import yaml

    typer.echo(yaml.safe_dump(manifest, sort_keys=False), nl=False)


@app_app.command("status")
@option_group
def app_status(
    name: Annotated[str, typer.Argument(help="App name.")],
    *,
    lat: SlowLatticeTarget,
) -> None:
    """Show an app's status and the status of each of its scalers."""
    status = _app_call(lat, lat.timeout, lambda c: c.status(name))
    if lat.output is OutputFormat.json:
        print_json(status.raw)
        return
    typer.echo(f"{name}: {_status_line(status)}")
    if not status.scalers:
        return
    from rich.table import Table

    table = Table()
    for col in ("Kind", "Name", "Status", "Message"):
        table.add_column(col, overflow="fold")
    for s in status.scalers:
        table.add_row(s.kind, s.name, s.status, s.message)
    console().print(table)


@app_app.command("undeploy")
@option_group
def app_undeploy(
    name: Annotated[str, typer.Argument(help="App name.")],
    *,
    lat: SlowLatticeTarget,
) -> None:
    """Undeploy an app: the app manager stops what it started for it (the manifests stay stored)."""
    r = _app_call(lat, lat.timeout, lambda c: c.undeploy(name))
    if lat.output is OutputFormat.json:
        print_json({"result": r.result, "name": r.name, "message": r.message})
        return
    typer.echo(r.message or f"Undeployed {name}")


@app_app.command("delete")
@option_group
def app_delete(
    name: Annotated[str, typer.Argument(help="App name.")],
    version: Annotated[
        str | None, typer.Option("--version", "-v", help="Delete only this version (default: all of them).")
    ] = None,
    *,
    lat: SlowLatticeTarget,
) -> None:
    """Delete an app's stored versions (or one); deleting the deployed or last version undeploys it."""
    r = _app_call(lat, lat.timeout, lambda c: c.delete(name, version))
    if lat.output is OutputFormat.json:
        print_json({"result": r.result, "undeploy": r.undeploy, "message": r.message})
        return
    typer.echo(r.message)


@app_app.command("history")
@option_group
def app_history(
    name: Annotated[str, typer.Argument(help="App name.")],
    *,
    lat: SlowLatticeTarget,
) -> None:
    """List an app's stored versions, oldest first, marking the deployed one."""
    versions = _app_call(lat, lat.timeout, lambda c: c.versions(name))
    if lat.output is OutputFormat.json:
        print_json([{"version": v.version, "deployed": v.deployed} for v in versions])
        return
    from rich.table import Table

    table = Table(title=f"Versions of {name}")
    table.add_column("Version", overflow="fold")
    table.add_column("Deployed")
    for v in versions:
        table.add_row(v.version, "yes" if v.deployed else "")
    console().print(table)


@app_app.command("validate")
def app_validate(
    source: Annotated[str, typer.Argument(help="A manifest file (.yaml/.yml/.json, '-' for stdin).")],
    output: OutputOpt = OutputFormat.text,
) -> None:
    """Check a manifest without deploying it (no NATS needed): errors exit 1; warnings are printed."""
    from wasmlattice.apps.manifest.load import load_manifest_file, parse_manifest
    from wasmlattice.apps.manifest.model import ManifestError

    errors: list[str] = []
    warnings: list[str] = []
    manifest: Any = None
    try:
        if source == "-":
            manifest, warnings = parse_manifest(sys.stdin.read(), None)
        else:
            path = Path(source)
            if not path.is_file():
                fail(f"manifest file {source} does not exist (or is not a file)")
            manifest, warnings = load_manifest_file(path)
    except ManifestError as e:
        errors, warnings = list(e.errors) or [str(e)], list(e.warnings)
    except OSError as e:
        fail(f"cannot read manifest {source}: {e.strerror or e}")
    if output is OutputFormat.json:
        doc: dict[str, Any] = {"valid": not errors, "errors": errors, "warnings": warnings}
        if manifest is not None:
            doc["name"] = manifest.name
            doc["version"] = manifest.version
        typer.echo(json.dumps(doc, indent=2))
    else:
        for err in errors:
            typer.echo(f"error: {source}: {err}", err=True)
        _print_warnings(source, warnings)
        if manifest is not None:
            version = manifest.version or "(none: one is generated when stored)"
            typer.echo(
                f"{source}: valid manifest for app {manifest.name}, version {version}, "
                f"{len(manifest.components)} components"
            )
    if errors:
        raise typer.Exit(1)
