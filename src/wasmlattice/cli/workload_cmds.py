"""Workload commands: scale/update components, start/stop providers (like `wash scale/update/start/stop`).

Without `--host`, `placement` picks the hosts (hosts already running the ID, else an auction's least
loaded bidder). By default the command then waits for the outcome event on
`wasmbus.evt.<lattice>.>` (`component_scaled` / `component_scale_failed`, `provider_started` /
`provider_start_failed`) and exits 1 when the host reports a failure or nothing arrives in time, so a
deploy that failed is never reported as done. `--no-wait` returns after the host's acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from wasmlattice.aio import wait_for
from wasmlattice.cli.app import app, command_group
from wasmlattice.cli.common import (
    LatticeTarget,
    OutputFormat,
    fail,
    option_group,
    parse_kv,
    print_json,
)
from wasmlattice.cli.lattice_cmds import stop_app
from wasmlattice.cli.placement import component_scale_targets, hosts_running, pick_provider_host

scale_app = command_group("Scale components.")
update_app = command_group("Update components to a new image reference.")
start_app = command_group("Start providers.")
app.add_typer(scale_app, name="scale")
app.add_typer(update_app, name="update")
app.add_typer(start_app, name="start")

EVENT_TYPE_PREFIX = "com.wasmcloud.lattice."

HostOpt = Annotated[
    str | None, typer.Option("--host", "--host-id", help="Host ID to use (skips the auction).")
]
ConstraintOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--constraint", "-c", metavar="KEY=VALUE", help="Host label KEY=VALUE the host must have; repeatable."
    ),
]
ConfigOpt = Annotated[
    list[str] | None, typer.Option("--config", metavar="NAME", help="Named config to attach; repeatable.")
]
AnnotationOpt = Annotated[
    list[str] | None,
    typer.Option("--annotation", "-a", metavar="KEY=VALUE", help="Annotation KEY=VALUE; repeatable."),
]
NoWaitOpt = Annotated[
    bool, typer.Option("--no-wait", help="Return after the host's acknowledgement, without the event.")
]
WaitTimeoutOpt = Annotated[
    float, typer.Option("--wait-timeout", min=0.1, help="How long to wait for the outcome event, seconds.")
]
AuctionTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--auction-timeout",
        min=0.05,
        help="How long to collect auction bids (and host pings for scale), seconds.",
    ),
]


def normalize_ref(ref: str) -> str:
    """Turn a bare local path (existing, or ending in .wasm, or starting with . or /) into file://ABS."""
    if "://" in ref:
        return ref
    path = Path(ref).expanduser()
    if path.exists() or ref.endswith(".wasm") or ref.startswith((".", "/", "~")):
        return "file://" + str(path.resolve())
    return ref  # an OCI reference such as ghcr.io/org/component:1.0


class EventWatch:
    """Lattice events received on `wasmbus.evt.<lattice>.>` since `start()`."""

    def __init__(self, ctl: Any) -> None:
        self.ctl = ctl
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sub: Any = None

    async def start(self) -> None:
        """Subscribe (before the command is sent, so its outcome cannot be missed)."""
        from wasmlattice.protocol.subjects import events_wildcard

        async def on_msg(msg: Any) -> None:
            with contextlib.suppress(ValueError):
                event = json.loads(msg.data)
                if isinstance(event, dict) and isinstance(event.get("data"), dict):
                    self.queue.put_nowait(event)

        self.sub = await self.ctl.nc.subscribe(events_wildcard(self.ctl.lattice), cb=on_msg)
        await self.ctl.nc.flush(timeout=max(self.ctl.timeout, 1.0))

    async def close(self) -> None:
        """Unsubscribe."""
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()

    async def outcomes(
        self,
        hosts: list[str],
        kinds: tuple[str, str],
        match: Callable[[dict[str, Any]], bool],
        timeout: float,
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        """For each host, the first event of one of `kinds` whose data passes `match` (until timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        while len(found) < len(hosts) and (left := deadline - loop.time()) > 0:
            try:
                event = await wait_for(self.queue.get(), left)
            except TimeoutError:
                break
            kind = str(event.get("type", "")).removeprefix(EVENT_TYPE_PREFIX)
            data: dict[str, Any] = event["data"]
            host = str(data.get("host_id") or event.get("source", ""))
            if kind in kinds and host in hosts and host not in found and match(data):
                found[host] = (kind, data)
        return found


def report(result: dict[str, Any], output: OutputFormat, ok_text: Callable[[dict[str, Any]], str]) -> None:
    """Print a workload result; exit 1 (one error line per failed host) unless every host succeeded."""
    if output is OutputFormat.json:
        print_json(result)
    failures = [r for r in result["results"] if not r["success"]]
    if output is OutputFormat.text:
        for r in result["results"]:
            if r["success"]:
                typer.echo(ok_text(r))
    if failures:
        for r in failures[:-1]:
            typer.echo(f"error: {r['error']}", err=True)
        fail(str(failures[-1]["error"]))


def outcome_entry(
    host: str,
    ack: str,
    got: tuple[str, dict[str, Any]] | None,
    ok_kind: str,
    what: str,
    wait_timeout: float,
) -> dict[str, Any]:
    """One host's result from its acknowledgement and outcome event (None: timed out)."""
    entry: dict[str, Any] = {"host_id": host, "message": ack}
    if got is None:
        entry.update(
            success=False,
            event=None,
            error=(
                f"{what} on host {host}: no outcome event within {wait_timeout:g}s; it may still be in "
                f"progress: check `wasmlattice get inventory {host}` or raise --wait-timeout"
            ),
        )
        return entry
    kind, data = got
    entry.update(event=kind, success=kind == ok_kind)
    if kind != ok_kind:
        entry["error"] = f"{what} on host {host} failed: {data.get('error') or 'the host gave no reason'}"
    return entry


def refused_entry(host: str, what: str, error: Exception) -> dict[str, Any]:
    """One host's result when it refused the request in its reply (a `file://` reference outside
    what the host allows, for one): no outcome event follows."""
    reason = str(error)
    for prefix in ("component.scale failed: ", "component.update failed: "):
        reason = reason.removeprefix(prefix)
    error_text = f"{what} on host {host} failed: {reason}"
    return {"host_id": host, "message": "", "success": False, "event": None, "error": error_text}


def _placement(
    host: str | None, constraint: list[str] | None, annotation: list[str] | None
) -> tuple[dict[str, str], dict[str, str] | None]:
    """The auction constraints and annotations of a scale or start (a host, or constraints, not both)."""
    if host is not None and constraint:
        raise typer.BadParameter("give --host or --constraint, not both")
    constraints = parse_kv(constraint or [], "--constraint")
    annotations = parse_kv(annotation or [], "--annotation") if annotation else None
    return constraints, annotations


@scale_app.command("component")
@option_group
def scale_component(
    ref: Annotated[
        str,
        typer.Argument(
            help=(
                "Component reference: file:///abs.wasm or a local path (the host needs --allow-file-load), "
                "or an OCI reference the host pulls (registry/repo:tag, @sha256:..., oci://...; "
                "docs/artifacts.md)."
            )
        ),
    ],
    component_id: Annotated[str, typer.Argument(help="Component ID.")],
    count: Annotated[
        int | None,
        typer.Option(
            "--count",
            "--max-instances",
            min=0,
            help=(
                "Max concurrent instances; 0 stops it. Default: the count it runs with on each host "
                "(so adding --config keeps it), or 1 where it is new."
            ),
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            "--host-id",
            help=(
                "Host ID to use. Without it: every host already running ID (and matching the "
                "--constraints) gets the new count, or 0 stops it on each; if none runs it, an "
                "auction picks the least loaded host matching the --constraints."
            ),
        ),
    ] = None,
    constraint: ConstraintOpt = None,
    annotation: AnnotationOpt = None,
    config: ConfigOpt = None,
    allow_update: Annotated[
        bool, typer.Option("--allow-update", help="Update a running component to REF if it differs.")
    ] = False,
    no_wait: NoWaitOpt = False,
    wait_timeout: WaitTimeoutOpt = 60.0,
    auction_timeout: AuctionTimeoutOpt = 1.0,
    *,
    lat: LatticeTarget,
) -> None:
    """Scale component ID (image REF) to --count instances, then wait for the host's outcome event."""
    from wasmlattice.client.ctl import CtlError, CtlNoHostError, CtlTimeoutError

    image_ref = normalize_ref(ref)
    constraints, annotations = _placement(host, constraint, annotation)

    async def go(c: Any) -> dict[str, Any]:
        if host is not None:
            targets = [host]
        else:
            targets = await component_scale_targets(
                c, image_ref, component_id, 1 if count is None else count, constraints, auction_timeout
            )
        # Without --count each host keeps the count it runs the component with: a scale that only
        # adds config (`--config SECRET_x`) must not reset it to a default.
        if count is None:
            counts = await current_counts(c, targets, component_id)
        else:
            counts = dict.fromkeys(targets, count)
        watch = EventWatch(c)
        await watch.start()
        try:
            acks: dict[str, str] = {}
            refused: dict[str, dict[str, Any]] = {}
            results: list[dict[str, Any]]
            for h in targets:
                what = f"scaling component {component_id} to {counts[h]}"
                try:
                    acks[h] = await c.scale_component(
                        h,
                        image_ref,
                        component_id,
                        counts[h],
                        annotations=annotations,
                        config=list(config or []),
                        allow_update=allow_update,
                    )
                except (CtlNoHostError, CtlTimeoutError):
                    raise
                except CtlError as e:
                    refused[h] = refused_entry(h, what, e)
            if no_wait:
                results = [
                    {"host_id": h, "message": m, "success": True, "event": None} for h, m in acks.items()
                ]
            else:
                got = await watch.outcomes(
                    list(acks),
                    ("component_scaled", "component_scale_failed"),
                    lambda d: d.get("component_id") == component_id,
                    wait_timeout,
                )
                results = [
                    outcome_entry(
                        h,
                        acks[h],
                        got.get(h),
                        "component_scaled",
                        f"scaling component {component_id} to {counts[h]}",
                        wait_timeout,
                    )
                    for h in acks
                ]
            results += list(refused.values())
        finally:
            await watch.close()
        for entry in results:
            entry["count"] = counts[str(entry["host_id"])]
        # One count for the whole command when every host got the same (always, with --count).
        same = {counts[h] for h in targets}
        overall = same.pop() if len(same) == 1 else None
        return {"component_id": component_id, "image_ref": image_ref, "count": overall, "results": results}

    result = lat.ctl(go)
    result["success"] = all(r["success"] for r in result["results"])
    verb = "scale to" if no_wait else "scaled to"
    report(
        result,
        lat.output,
        lambda r: (
            f"Component {component_id} {verb} {r['count']} on host {r['host_id']}"
            + (" (acknowledged; not waiting for the outcome)" if no_wait else "")
        ),
    )


async def current_counts(ctl: Any, hosts: list[str], component_id: str) -> dict[str, int]:
    """The count each host runs `component_id` with (from its inventory), 1 where it does not run it."""
    invs = await asyncio.gather(*(ctl.get_host_inventory(h) for h in hosts))
    return {
        h: next((max(1, int(cd.max_instances)) for cd in inv.components if cd.id == component_id), 1)
        for h, inv in zip(hosts, invs, strict=True)
    }


@update_app.command("component")
@option_group
def update_component(
    component_id: Annotated[str, typer.Argument(help="ID of the running component.")],
    new_ref: Annotated[
        str,
        typer.Argument(
            help="New reference: file:///abs.wasm, a local path, or an OCI reference the host pulls."
        ),
    ],
    host: HostOpt = None,
    no_wait: NoWaitOpt = False,
    wait_timeout: WaitTimeoutOpt = 60.0,
    *,
    lat: LatticeTarget,
) -> None:
    """Replace the image of running component ID with NEW_REF (on every host running it by default)."""
    from wasmlattice.client.ctl import CtlError, CtlNoHostError, CtlTimeoutError

    image_ref = normalize_ref(new_ref)

    async def go(c: Any) -> dict[str, Any]:
        if host is not None:
            inv = await c.get_host_inventory(host)
            if not any(cd.id == component_id for cd in inv.components):
                raise CtlError(
                    f"component {component_id} is not running on host {host}: "
                    f"see `wasmlattice get inventory {host}`"
                )
            invs = [inv]
        else:
            invs = await hosts_running(c, "component", component_id, 1.0)
        current = {
            str(i.host_id): next(cd.image_ref for cd in i.components if cd.id == component_id) for i in invs
        }
        results: list[dict[str, Any]] = []
        targets = [h for h, r in current.items() if r != image_ref]
        for h in current:
            if h not in targets:
                results.append(
                    {"host_id": h, "message": "already up to date", "success": True, "event": None}
                )
        watch = EventWatch(c)
        await watch.start()
        try:
            what = f"updating component {component_id} to {image_ref}"
            acks: dict[str, str] = {}
            for h in list(targets):
                try:
                    acks[h] = await c.update_component(h, component_id, image_ref)
                except (CtlNoHostError, CtlTimeoutError):
                    raise
                except CtlError as e:
                    targets.remove(h)
                    results.append(refused_entry(h, what, e))
            got = {}
            if not no_wait and targets:
                got = await watch.outcomes(
                    targets,
                    ("component_scaled", "component_scale_failed"),
                    lambda d: d.get("component_id") == component_id and d.get("image_ref") == image_ref,
                    wait_timeout,
                )
            for h in targets:
                if no_wait:
                    results.append({"host_id": h, "message": acks[h], "success": True, "event": None})
                else:
                    results.append(
                        outcome_entry(h, acks[h], got.get(h), "component_scaled", what, wait_timeout)
                    )
        finally:
            await watch.close()
        return {"component_id": component_id, "image_ref": image_ref, "previous": current, "results": results}

    result = lat.ctl(go)
    result["success"] = all(r["success"] for r in result["results"])
    report(
        result,
        lat.output,
        lambda r: (
            f"Component {component_id} on host {r['host_id']}: "
            + (r["message"] if r["event"] is None else f"updated to {image_ref}")
        ),
    )


@start_app.command("provider")
@option_group
def start_provider(
    ref: Annotated[str, typer.Argument(help="Provider reference, e.g. builtin://http-server.")],
    provider_id: Annotated[str, typer.Argument(help="Provider ID.")],
    host: HostOpt = None,
    constraint: ConstraintOpt = None,
    annotation: AnnotationOpt = None,
    config: ConfigOpt = None,
    no_wait: NoWaitOpt = False,
    wait_timeout: WaitTimeoutOpt = 60.0,
    auction_timeout: AuctionTimeoutOpt = 1.0,
    *,
    lat: LatticeTarget,
) -> None:
    """Start provider ID (image REF) on a host, then wait for provider_started or provider_start_failed."""
    provider_ref = normalize_ref(ref)
    constraints, annotations = _placement(host, constraint, annotation)

    async def go(c: Any) -> dict[str, Any]:
        target = host or await pick_provider_host(c, provider_ref, provider_id, constraints, auction_timeout)
        watch = EventWatch(c)
        await watch.start()
        try:
            ack = await c.start_provider(
                target, provider_ref, provider_id, config=list(config or []), annotations=annotations
            )
            if no_wait:
                entry = {"host_id": target, "message": ack, "success": True, "event": None}
            else:
                got = await watch.outcomes(
                    [target],
                    ("provider_started", "provider_start_failed"),
                    lambda d: d.get("provider_id") == provider_id,
                    wait_timeout,
                )
                what = f"starting provider {provider_id}"
                entry = outcome_entry(target, ack, got.get(target), "provider_started", what, wait_timeout)
        finally:
            await watch.close()
        return {"provider_id": provider_id, "provider_ref": provider_ref, "results": [entry]}

    result = lat.ctl(go)
    result["success"] = all(r["success"] for r in result["results"])
    verb = "starting" if no_wait else "started"
    report(result, lat.output, lambda r: f"Provider {provider_id} {verb} on host {r['host_id']}")


@stop_app.command("provider")
@option_group
def stop_provider(
    provider_id: Annotated[str, typer.Argument(help="Provider ID.")],
    host: HostOpt = None,
    *,
    lat: LatticeTarget,
) -> None:
    """Stop provider ID (on every host running it unless --host is given)."""
    from wasmlattice.client.ctl import CtlError

    async def go(c: Any) -> dict[str, Any]:
        if host is not None:
            targets = [host]
        else:
            targets = [str(i.host_id) for i in await hosts_running(c, "provider", provider_id, 1.0)]
        results = []
        for h in targets:
            try:
                msg = await c.stop_provider(h, provider_id)
            except CtlError as e:
                raise CtlError(f"{e.message}: see `wasmlattice get inventory {h}`") from None
            results.append({"host_id": h, "message": msg, "success": True, "event": "provider_stopped"})
        return {"provider_id": provider_id, "results": results}

    result = lat.ctl(go)
    result["success"] = True
    report(result, lat.output, lambda r: f"Provider {provider_id} stopped on host {r['host_id']}")
