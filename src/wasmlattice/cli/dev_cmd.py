"""`wasmlattice dev`: build, deploy, watch and hot-swap a project's component(s) (docs/dev.md).

One loop: build the project, start a lattice (`up --detach` with its data dir in the project's
`.wasmlattice/`, unless `--nats-url` joins one), deploy `wadm.yaml` with each `file://` image of a
build output replaced by a content-addressed copy under `.wasmlattice/builds/`, print the HTTP
address, stream the components' log lines, and on every saved change rebuild and swap the running
component with `component.update` (the host finishes accepted requests on the old image and starts
new ones on the new, `host/components.py`), so a reload fails no request. A failed build shows the
toolchain's message and leaves the old version serving. Ctrl-C undeploys the app and stops the
lattice `dev` started (never one it joined).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from wasmlattice.aio import wait_for
from wasmlattice.cli.app import app
from wasmlattice.cli.common import cli_nats_options, fail, read_up_state
from wasmlattice.cli.logs_cmd import format_line
from wasmlattice.project.build import BuildError, BuildResult, build_project, project_roots

DEV_DIR = ".wasmlattice"
BUILDS_DIR = "builds"
MANIFEST_FILE = "wadm.yaml"
# Changes closer together than this are one reload (an editor writes a file in several steps).
DEBOUNCE_MS = 300
# How long the deployment may take to be reported deployed (a cold compile of a Python component).
DEPLOY_TIMEOUT_S = 180.0
# How long a host may take to load and compile a new build before the swap counts as failed.
SWAP_TIMEOUT_S = 300.0


@dataclass
class _Lattice:
    """Where the lattice is, and the data dir of the `up` that `dev` started (None: joined)."""

    nats_url: str
    lattice: str
    nats_options: Any
    started_dir: Path | None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stage_build(output: Path, builds: Path) -> Path:
    """Copy a build to `builds/<name>-<sha256 prefix>.wasm` (content-addressed); the copy's path.

    A new path per content is what lets `component.update` swap images: the old file stays for
    the instances still running on it.
    """
    data = output.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    builds.mkdir(parents=True, exist_ok=True)
    dest = builds / f"{output.stem}-{digest}.wasm"
    if not dest.exists():
        tmp = dest.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(dest)
    return dest


def dev_manifest(
    raw: dict[str, Any], base: Path, staged: dict[Path, Path]
) -> tuple[dict[str, Any], list[str]]:
    """`raw` with each `file://` image of a build output pointing at its staged copy.

    Returns the manifest and the names of the components so replaced. Its version is `dev-<hash of
    the images>`, so a restarted `dev` with the same builds reuses the stored version.
    """
    out = copy.deepcopy(raw)
    replaced: list[str] = []
    for comp in (out.get("spec") or {}).get("components") or []:
        props = comp.get("properties") if isinstance(comp, dict) else None
        image = props.get("image") if isinstance(props, dict) else None
        if not isinstance(props, dict) or not isinstance(image, str) or not image.startswith("file://"):
            continue
        path = (base / image[len("file://") :]).resolve()
        if path in staged:
            props["image"] = f"file://{staged[path]}"
            replaced.append(str(comp.get("name")))
    images = json.dumps(sorted(f"{p}" for p in staged.values())).encode()
    meta = out.setdefault("metadata", {})
    meta.setdefault("annotations", {})["version"] = "dev-" + hashlib.sha256(images).hexdigest()[:12]
    return out, replaced


def http_addresses(raw: dict[str, Any]) -> list[str]:
    """The `address` properties of the manifest's `wasi:http` link configs (where it serves HTTP)."""
    found: list[str] = []
    for comp in (raw.get("spec") or {}).get("components") or []:
        for trait in (comp.get("traits") or []) if isinstance(comp, dict) else []:
            props = trait.get("properties") if isinstance(trait, dict) else None
            if not isinstance(props, dict) or trait.get("type") != "link":
                continue
            if (props.get("namespace"), props.get("package")) != ("wasi", "http"):
                continue
            for side in ("source", "target"):
                for cfg in (props.get(side) or {}).get("config") or []:
                    addr = ((cfg or {}).get("properties") or {}).get("address")
                    if isinstance(addr, str) and addr not in found:
                        found.append(addr)
    return found


def _build_all(roots: list[Path]) -> list[BuildResult]:
    return [build_project(r) for r in roots]


def _start_lattice(root: Path, log_level: str) -> _Lattice:
    """`wasmlattice up --detach` with its data dir in `root/.wasmlattice` on a free NATS port."""
    ddir = (root / DEV_DIR).resolve()
    ddir.mkdir(parents=True, exist_ok=True)
    builds = ddir / BUILDS_DIR
    builds.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "wasmlattice.cli.main", "up", "--detach", "-o", "json"]
    cmd += ["--data-dir", str(ddir), "--nats-port", str(_free_port()), "--no-ui", "--lattice", "dev"]
    cmd += ["--allow-file-load", "--allow-dir", str(builds), "--log-level", log_level]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        fail(f"could not start a lattice: {(proc.stderr or proc.stdout).strip()}")
    state = read_up_state(ddir)
    if state is None:
        fail(f"`wasmlattice up` reported success but left no state in {ddir}")
    url = str(state["nats_url"])
    opts = cli_nats_options(url, 5.0, Path(state["nats_creds"]) if state.get("nats_creds") else None)
    return _Lattice(url, "dev", opts, ddir)


def _stop_lattice(ddir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "wasmlattice.cli.main", "down", "--data-dir", str(ddir)],
        capture_output=True,
        timeout=60,
        check=False,
    )


class _Dev:
    """The running session: its NATS connection, the app and the component IDs it swaps."""

    def __init__(self, root: Path, roots: list[Path], lat: _Lattice, raw: dict[str, Any], base: Path) -> None:
        self.root, self.roots, self.lat, self.raw, self.base = root, roots, lat, raw, base
        self.builds = root / DEV_DIR / BUILDS_DIR
        self.name = str(raw["metadata"]["name"])
        self.nc: Any = None
        # Build output -> (component ID) of the manifest components built from it.
        self.ids: dict[Path, list[str]] = {}

    async def deploy(self, results: list[BuildResult]) -> None:
        """Store and deploy the manifest pointing at the staged builds; wait until deployed."""
        from wasmlattice.apps.client import AppApiError, AppClient
        from wasmlattice.apps.manifest.load import parse_manifest_dict
        from wasmlattice.cli.app_cmds import wait_final

        staged = {r.output.resolve(): stage_build(r.output, self.builds) for r in results}
        raw, replaced = dev_manifest(self.raw, self.base, staged)
        if not replaced:
            fail(
                f"{MANIFEST_FILE}: no component's file:// image is a build output of this project "
                f"({', '.join(str(p) for p in staged)})"
            )
        manifest, _ = parse_manifest_dict(raw)
        for comp in manifest.components:
            image = comp.image or ""
            for out, copy_path in staged.items():
                if image == f"file://{copy_path}":
                    self.ids.setdefault(out, []).append(manifest.component_id(comp))
        client = AppClient(self.nc, self.lat.lattice, timeout=10.0)
        version = str(raw["metadata"]["annotations"]["version"])
        try:
            await client.put(raw)
        except AppApiError as e:
            if "already exists" not in e.message:
                raise
        await client.deploy(self.name, version)
        # The same wait as `wasmlattice app deploy`: until deployed or failed, or the deadline.
        st = await wait_final(client, self.name, time.monotonic() + DEPLOY_TIMEOUT_S, lambda _st: None)
        if st is None:
            raise BuildError(f"{self.name} was not deployed within {DEPLOY_TIMEOUT_S:g}s")
        if st.status == "failed":
            raise BuildError(f"{self.name} failed to deploy: {st.message or 'no reason given'}")

    async def swap(self, results: list[BuildResult]) -> int:
        """Update every host running a rebuilt component to its new staged copy; hosts updated.

        A host acknowledges `component.update` at once and swaps when the new image is loaded
        (`lattice/workloads.py`), so this waits for its `component_scaled` event with the new
        image (or raises on `component_scale_failed`): only then does the new version answer.
        """
        from wasmlattice.client.ctl import CtlClient
        from wasmlattice.protocol import subjects as sj

        ctl = CtlClient(self.nc, self.lat.lattice, timeout=30.0)
        pending: dict[tuple[str, str, str], asyncio.Future[None]] = {}
        loop = asyncio.get_running_loop()

        async def on_event(msg: Any) -> None:
            with contextlib.suppress(ValueError):
                ev = json.loads(msg.data)
                data = ev.get("data") or {}
                key = (str(data.get("host_id")), str(data.get("component_id")), str(data.get("image_ref")))
                fut = pending.get(key)
                if fut is None or fut.done():
                    return
                kind = str(ev.get("type", ""))
                if kind.endswith(".component_scale_failed"):
                    fut.set_exception(
                        BuildError(f"host {key[0][:12]} refused the new build: {data.get('error')}")
                    )
                elif kind.endswith(".component_scaled") and int(data.get("max_instances") or 0) > 0:
                    fut.set_result(None)

        sub = await self.nc.subscribe(sj.events_wildcard(self.lat.lattice), cb=on_event)
        try:
            hosts = await ctl.ping_hosts(1.0)
            for r in results:
                ref = f"file://{stage_build(r.output, self.builds)}"
                for cid in self.ids.get(r.output.resolve(), []):
                    for h in hosts:
                        inv = await ctl.get_host_inventory(h.id)
                        mine = [c for c in inv.components if c.id == cid]
                        if mine and mine[0].image_ref != ref:
                            pending[(h.id, cid, ref)] = loop.create_future()
                            await ctl.update_component(h.id, cid, ref)
            if pending:
                await wait_for(asyncio.gather(*pending.values()), SWAP_TIMEOUT_S)
        except TimeoutError:
            raise BuildError(f"the hosts did not swap in the new build within {SWAP_TIMEOUT_S:g}s") from None
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return len(pending)

    async def undeploy(self) -> None:
        """Undeploy the app, then wait (briefly) until no host runs its components."""
        from wasmlattice.apps.client import AppClient
        from wasmlattice.client.ctl import CtlClient

        await AppClient(self.nc, self.lat.lattice, timeout=10.0).undeploy(self.name)
        ctl = CtlClient(self.nc, self.lat.lattice, timeout=5.0)
        ids = {c for cs in self.ids.values() for c in cs}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            running = False
            for h in await ctl.ping_hosts(0.5):
                inv = await ctl.get_host_inventory(h.id)
                running |= any(c.id in ids for c in inv.components)
            if not running:
                return
            await asyncio.sleep(0.3)


def _echo(msg: str, err: bool = False) -> None:
    typer.echo(msg, err=err)
    (sys.stderr if err else sys.stdout).flush()


def _skip(change: Any, path: str) -> bool:
    """Whether a changed path is ours or the build's, not a source (watchfiles' filter)."""
    parts = Path(path).parts
    ignored = (DEV_DIR, "build", "__pycache__", ".git", "node_modules")
    return any(p in ignored for p in parts) or path.endswith((".pyc", "~"))


def _saved_at(changes: set[tuple[Any, str]], now: float) -> float:
    """When the newest changed file was written (its mtime), so a reload is timed from the save."""
    times = []
    for _, p in changes:
        with contextlib.suppress(OSError):
            times.append(os.stat(p).st_mtime)
    return min(max(times), now) if times else now


async def _session(
    root: Path, roots: list[Path], lat: _Lattice, raw: dict[str, Any], base: Path, results: list[BuildResult]
) -> None:
    from watchfiles import awatch

    from wasmlattice.protocol import subjects as sj
    from wasmlattice.protocol.connection import connect

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    dev = _Dev(root, roots, lat, raw, base)
    dev.nc = await connect(lat.nats_options)
    try:
        _echo(f"deploying {dev.name} on lattice '{lat.lattice}' ({lat.nats_url})...")
        deploy = asyncio.ensure_future(dev.deploy(results))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({deploy, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not deploy.done():
            deploy.cancel()
            return
        stopped.cancel()
        deploy.result()

        async def on_log(msg: Any) -> None:
            with contextlib.suppress(ValueError):
                record = json.loads(msg.data)
                if isinstance(record, dict):
                    _echo(format_line(record))

        ids = sorted({c for cs in dev.ids.values() for c in cs})
        for cid in ids:
            await dev.nc.subscribe(sj.logs_filter(lat.lattice, None, cid), cb=on_log)
        for addr in http_addresses(raw) or []:
            _echo(f"serving: http://{addr}/")
        _echo(f"watching {root} for changes (Ctrl-C to stop)")
        async for changes in awatch(
            *roots, watch_filter=lambda c, p: not _skip(c, p), stop_event=stop, debounce=DEBOUNCE_MS
        ):
            seen = time.time()
            saved = _saved_at(changes, seen)
            _echo(f"change detected {seen - saved:.1f} s after the save: rebuilding...")
            try:
                new = await asyncio.to_thread(_build_all, roots)
                built = time.time()
            except BuildError as e:
                _echo(f"build failed; the previous version keeps serving:\n{e}", err=True)
                continue
            try:
                n = await dev.swap(new)
            except Exception as e:  # a refused image or a lost host: say so and keep watching
                _echo(f"reload failed; the previous version keeps serving: {type(e).__name__}: {e}", err=True)
                continue
            what = "reloaded" if n else "rebuilt (unchanged component, nothing to swap)"
            now = time.time()
            parts = f"build {built - seen:.1f} s, swap {now - built:.1f} s"
            _echo(f"{what} in {now - saved:.1f} s (from the save; {parts})")
    finally:
        if dev.name and dev.ids:
            _echo(f"stopping: undeploying {dev.name}...")
            with contextlib.suppress(Exception):
                await dev.undeploy()
        with contextlib.suppress(Exception):
            await dev.nc.close()


@app.command()
def dev(
    path: Annotated[
        Path, typer.Option(help="The project folder (with wasmlattice.toml and wadm.yaml).")
    ] = Path("."),
    nats_url: Annotated[
        str | None, typer.Option("--nats-url", help="Join this lattice's NATS instead of starting one.")
    ] = None,
    lattice: Annotated[str, typer.Option(help="The lattice to join with --nats-url.")] = "default",
    log_level: Annotated[str, typer.Option(help="Log level of the lattice `dev` starts.")] = "info",
) -> None:
    """Build, deploy and serve the project; rebuild and hot-swap its component on every saved change.

    Without --nats-url it starts a lattice (data in PATH/.wasmlattice) and stops it on Ctrl-C.
    """
    from wasmlattice.apps.manifest.load import load_manifest_file
    from wasmlattice.apps.manifest.model import ManifestError

    root = path.resolve()
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        fail(f"{manifest_path} does not exist: `wasmlattice dev` deploys the project's {MANIFEST_FILE}")
    try:
        manifest, _ = load_manifest_file(manifest_path)
    except ManifestError as e:
        fail(f"{manifest_path}: " + "; ".join(e.errors or [str(e)]))
    roots = project_roots(root)
    t0 = time.monotonic()
    try:
        results = _build_all(roots)
    except BuildError as e:
        fail(str(e))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    built = ", ".join(str(r.output.relative_to(root)) for r in results)
    _echo(f"built {built} in {time.monotonic() - t0:.1f} s")
    if nats_url is None:
        try:
            lat = _start_lattice(root, log_level)
        except KeyboardInterrupt:  # `up --detach` may have started before the interrupt: stop it
            _stop_lattice((root / DEV_DIR).resolve())
            raise typer.Exit(130) from None
        _echo(f"started a lattice: NATS {lat.nats_url}, data in {lat.started_dir}")
    else:
        lat = _Lattice(nats_url, lattice, cli_nats_options(nats_url, 5.0), None)
    code = 0
    try:
        asyncio.run(_session(root, roots, lat, manifest.raw, root, results))
    except BuildError as e:
        _echo(f"error: {e}", err=True)
        code = 1
    except Exception as e:
        _echo(f"error: {type(e).__name__}: {e}", err=True)
        code = 1
    finally:
        if lat.started_dir is not None:
            _echo("stopping the lattice dev started...")
            _stop_lattice(lat.started_dir)
            shutil.rmtree(lat.started_dir / BUILDS_DIR, ignore_errors=True)
    _echo("stopped")
    raise typer.Exit(code)
