"""Lattice commands: talk to hosts over the control interface (like `wash get/link/config/label`)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from wasmlattice.cli.app import app, command_group
from wasmlattice.cli.common import (
    LatticeTarget,
    OutputFormat,
    ack,
    console,
    fail,
    option_group,
    parse_kv,
    print_json,
)

get_app = command_group("Show hosts, inventories, links, config and claims.")
link_app = command_group("Put and delete links between components and providers.")
config_app = command_group("Put, get and delete named config.")
label_app = command_group("Put and delete host labels.")
stop_app = command_group("Stop hosts.")
app.add_typer(get_app, name="get")
app.add_typer(link_app, name="link")
app.add_typer(config_app, name="config")
app.add_typer(label_app, name="label")
app.add_typer(stop_app, name="stop")


def _labels_text(labels: dict[str, str]) -> str:
    return "\n".join(f"{k}={v}" for k, v in sorted(labels.items()))


@get_app.command("hosts")
@option_group
def get_hosts(
    *,
    lat: LatticeTarget,
    wait: Annotated[float, typer.Option(min=0.05, help="How long to collect ping replies, seconds.")] = 1.0,
) -> None:
    """List the hosts of the lattice (every host answers a ping). Text output exits 1 if none answer."""
    from wasmlattice.client.ctl import UP_HINT, to_json

    hosts = lat.ctl(lambda c: c.ping_hosts(wait))
    if lat.output is OutputFormat.json:
        print_json(to_json(hosts))
        return
    if not hosts:
        fail(f"no host answered on lattice '{lat.lattice}' within {wait:g}s: {UP_HINT}")
    from rich.table import Table

    table = Table(title=f"Hosts of lattice '{lat.lattice}'")
    for col in ("Host ID", "Friendly name", "Uptime", "Version", "Labels"):
        table.add_column(col, overflow="fold")
    for h in hosts:
        table.add_row(
            h.id,
            h.friendly_name,
            h.uptime_human or f"{h.uptime_seconds}s",
            h.version or "",
            _labels_text(h.labels),
        )
    console().print(table)


@get_app.command("inventory")
@option_group
def get_inventory(
    host_id: Annotated[str | None, typer.Argument(help="Host ID; every host if omitted.")] = None,
    *,
    lat: LatticeTarget,
    wait: Annotated[float, typer.Option(min=0.05, help="How long to collect ping replies, seconds.")] = 1.0,
) -> None:
    """Show the components, providers and labels of one host or of every host."""
    from wasmlattice.client.ctl import UP_HINT, CtlError, to_json

    async def fetch(c: Any) -> list[Any]:
        if host_id is not None:
            return [await c.get_host_inventory(host_id)]
        hosts = await c.ping_hosts(wait)
        if not hosts:
            raise CtlError(f"no host answered on lattice '{lat.lattice}' within {wait:g}s: {UP_HINT}")
        return list(await asyncio.gather(*(c.get_host_inventory(h.id) for h in hosts)))

    inventories = lat.ctl(fetch)
    if lat.output is OutputFormat.json:
        print_json(to_json(inventories[0]) if host_id is not None else to_json(inventories))
        return
    from rich.table import Table

    out = console()
    for inv in inventories:
        out.print(f"[bold]Host {inv.host_id}[/bold] ({inv.friendly_name}), up {inv.uptime_human}")
        labels = Table(title="Labels")
        labels.add_column("Key")
        labels.add_column("Value", overflow="fold")
        for k, v in sorted(inv.labels.items()):
            labels.add_row(k, v)
        out.print(labels)
        comps = Table(title="Components")
        for col in ("Component ID", "Name", "Image", "Max instances"):
            comps.add_column(col, overflow="fold")
        for cd in inv.components:
            comps.add_row(cd.id, cd.name or "", cd.image_ref, str(cd.max_instances))
        out.print(comps if inv.components else "No components")
        provs = Table(title="Providers")
        for col in ("Provider ID", "Name", "Image"):
            provs.add_column(col, overflow="fold")
        for pd in inv.providers:
            provs.add_row(pd.id, pd.name or "", pd.image_ref or "")
        out.print(provs if inv.providers else "No providers")


def _print_links(links: list[Any], output: OutputFormat) -> None:
    from wasmlattice.client.ctl import to_json

    if output is OutputFormat.json:
        print_json(to_json(links))
        return
    if not links:
        typer.echo("No links found")
        return
    from rich.table import Table

    table = Table(title="Links")
    for col in ("Source", "Target", "Interface", "Name", "Source config", "Target config"):
        table.add_column(col, overflow="fold")
    for ln in links:
        iface = f"{ln.wit_namespace}:{ln.wit_package}/{{{','.join(ln.interfaces)}}}"
        table.add_row(
            ln.source_id, ln.target, iface, ln.name, ",".join(ln.source_config), ",".join(ln.target_config)
        )
    console().print(table)


@get_app.command("links")
@option_group
def get_links(
    *,
    lat: LatticeTarget,
) -> None:
    """List every link of the lattice."""
    _print_links(lat.ctl(lambda c: c.get_links()), lat.output)


def _show_config(name: str, lat: LatticeTarget) -> None:
    values = lat.ctl(lambda c: c.get_config(name))
    if values is None:
        if lat.output is OutputFormat.json:
            print_json(None)
        fail(f"config '{name}' not found on lattice '{lat.lattice}': create it with `wasmlattice config put`")
    if lat.output is OutputFormat.json:
        print_json(values)
        return
    from rich.table import Table

    table = Table(title=f"Config '{name}'")
    table.add_column("Key")
    table.add_column("Value", overflow="fold")
    for k, v in sorted(values.items()):
        table.add_row(k, v)
    console().print(table)


@get_app.command("config")
@option_group
def get_config(
    name: Annotated[str, typer.Argument(help="Config name.")],
    *,
    lat: LatticeTarget,
) -> None:
    """Show a named config (exit 1 if it does not exist)."""
    _show_config(name, lat)


@get_app.command("claims")
@option_group
def get_claims(
    *,
    lat: LatticeTarget,
) -> None:
    """List the claims of every signed component and provider known to the lattice."""
    claims = lat.ctl(lambda c: c.get_claims())
    if lat.output is OutputFormat.json:
        print_json(claims)
        return
    if not claims:
        typer.echo("No claims found")
        return
    from rich.table import Table

    table = Table(title="Claims")
    for col in ("Name", "Subject", "Issuer", "Version", "Revision"):
        table.add_column(col, overflow="fold")
    for cl in claims:
        table.add_row(
            cl.get("name", ""),
            cl.get("subject", cl.get("sub", "")),
            cl.get("issuer", cl.get("iss", "")),
            cl.get("version", ""),
            cl.get("revision", cl.get("rev", "")),
        )
    console().print(table)


@link_app.command("put")
@option_group
def link_put(
    source: Annotated[str, typer.Argument(help="Source component/provider ID (imports the interface).")],
    target: Annotated[str, typer.Argument(help="Target component/provider ID (exports the interface).")],
    namespace: Annotated[str, typer.Argument(help="WIT namespace, e.g. wasi.")],
    package: Annotated[str, typer.Argument(help="WIT package, e.g. keyvalue.")],
    interface: Annotated[
        list[str],
        typer.Option("--interface", "-i", metavar="NAME", help="WIT interface, e.g. store; repeatable."),
    ],
    name: Annotated[str, typer.Option("--name", "--link-name", "-n", help="Link name.")] = "default",
    source_config: Annotated[
        list[str] | None,
        typer.Option("--source-config", metavar="NAME", help="Named config for the source; repeatable."),
    ] = None,
    target_config: Annotated[
        list[str] | None,
        typer.Option("--target-config", metavar="NAME", help="Named config for the target; repeatable."),
    ] = None,
    *,
    lat: LatticeTarget,
) -> None:
    """Create or replace a link from SOURCE to TARGET for NAMESPACE:PACKAGE/INTERFACE."""
    from wasmlattice.protocol.models import Link

    link = Link(
        source_id=source,
        target=target,
        name=name,
        wit_namespace=namespace,
        wit_package=package,
        interfaces=list(interface),
        source_config=list(source_config or []),
        target_config=list(target_config or []),
    )
    msg = lat.ctl(lambda c: c.put_link(link))
    ack(lat.output, msg, f"Link {source} -> {target} ({namespace}:{package}) put")


@link_app.command("del")
@option_group
def link_del(
    source: Annotated[str, typer.Argument(help="Source component/provider ID.")],
    namespace: Annotated[str, typer.Argument(help="WIT namespace.")],
    package: Annotated[str, typer.Argument(help="WIT package.")],
    name: Annotated[str, typer.Option("--name", "--link-name", "-n", help="Link name.")] = "default",
    *,
    lat: LatticeTarget,
) -> None:
    """Delete SOURCE's link for NAMESPACE:PACKAGE (idempotent)."""
    msg = lat.ctl(lambda c: c.delete_link(source, namespace, package, name))
    ack(lat.output, msg, f"Link of {source} ({namespace}:{package}) deleted")


# `link get` and `config get` are the same commands as `get links` and `get config`.
link_app.command("get", help="List every link of the lattice (same as `get links`).")(get_links)


@config_app.command("put")
@option_group
def config_put(
    name: Annotated[str, typer.Argument(help="Config name.")],
    values: Annotated[list[str], typer.Argument(help="KEY=VALUE pairs.")],
    *,
    lat: LatticeTarget,
) -> None:
    """Store named config NAME (replaces all its keys)."""
    data = parse_kv(values, "config")
    msg = lat.ctl(lambda c: c.put_config(name, data))
    ack(lat.output, msg, f"Config '{name}' put")


config_app.command("get", help="Show named config NAME (same as `get config`).")(get_config)


@config_app.command("del")
@option_group
def config_del(
    name: Annotated[str, typer.Argument(help="Config name.")],
    *,
    lat: LatticeTarget,
) -> None:
    """Delete named config NAME (idempotent)."""
    msg = lat.ctl(lambda c: c.delete_config(name))
    ack(lat.output, msg, f"Config '{name}' deleted")


@label_app.command("put")
@option_group
def label_put(
    host_id: Annotated[str, typer.Argument(help="Host ID.")],
    labels: Annotated[list[str], typer.Argument(help="KEY=VALUE pairs.")],
    *,
    lat: LatticeTarget,
) -> None:
    """Set labels on a host."""
    pairs = parse_kv(labels, "label")

    async def put_all(c: Any) -> str:
        msg = ""
        for k, v in pairs.items():
            msg = await c.put_label(host_id, k, v)
        return str(msg)

    msg = lat.ctl(put_all)
    ack(lat.output, msg, "Labels put")


@label_app.command("del")
@option_group
def label_del(
    host_id: Annotated[str, typer.Argument(help="Host ID.")],
    keys: Annotated[list[str], typer.Argument(help="Label keys.")],
    *,
    lat: LatticeTarget,
) -> None:
    """Delete labels from a host."""

    async def del_all(c: Any) -> str:
        msg = ""
        for k in keys:
            msg = await c.delete_label(host_id, k)
        return str(msg)

    msg = lat.ctl(del_all)
    ack(lat.output, msg, "Labels deleted")


@stop_app.command("host")
@option_group
def stop_host(
    host_id: Annotated[str, typer.Argument(help="Host ID.")],
    host_timeout: Annotated[
        int | None, typer.Option("--host-timeout", min=0, help="Shutdown deadline for the host, ms.")
    ] = None,
    *,
    lat: LatticeTarget,
) -> None:
    """Ask a host to shut down."""
    msg = lat.ctl(lambda c: c.stop_host(host_id, host_timeout))
    ack(lat.output, msg, f"Host {host_id} stopping")
