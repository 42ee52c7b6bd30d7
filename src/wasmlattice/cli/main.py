"""The `wasmlattice` command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from .. import __version__
from ..runtime.component import ComponentError

app = typer.Typer(
    name="wasmlattice",
    help="A distributed WebAssembly component host (WASI 0.2, wasmCloud-compatible).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _parse_env(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--env")
        out.append((k, v))
    return out


def _parse_dirs(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        host, sep, guest = item.partition("::")
        guest = guest if sep else host
        p = Path(host)
        if not p.is_dir():
            raise typer.BadParameter(f"{host} is not a directory", param_hint="--dir")
        out[guest] = p.resolve()
    return out


def _parse_size(text: str | None) -> int | None:
    if text is None:
        return None
    units = {"k": 1 << 10, "ki": 1 << 10, "m": 1 << 20, "mi": 1 << 20, "g": 1 << 30, "gi": 1 << 30}
    t = text.strip().lower().removesuffix("b")
    for suffix in sorted(units, key=len, reverse=True):
        if t.endswith(suffix) and t[: -len(suffix)].strip().isdigit():
            return int(t[: -len(suffix)]) * units[suffix]
    if t.isdigit():
        return int(t)
    raise typer.BadParameter(f"expected a size in bytes such as 67108864 or 64MiB, got {text!r}")


@app.command()
def run(
    component: Annotated[Path, typer.Argument(help="The wasi:http/proxy component (.wasm) to serve.")],
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = "127.0.0.1:8000",
    workers: Annotated[int, typer.Option(min=1, help="Processes sharing the port (SO_REUSEPORT).")] = 1,
    reuse: Annotated[
        int, typer.Option(min=1, help="Requests one instance may serve (1 = a fresh instance per request).")
    ] = 1,
    allow_outgoing: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-outgoing", help="Allow outgoing HTTP to HOST[:PORT]; repeatable; '*' allows all."
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Per-request deadline in seconds.")] = 30.0,
    max_memory: Annotated[
        str | None, typer.Option(help="Most linear memory one instance may use, e.g. 64MiB.")
    ] = None,
    max_body: Annotated[str, typer.Option(help="Largest request body accepted.")] = "64MiB",
    max_header_size: Annotated[
        int, typer.Option(min=256, help="Longest request line or header field, in bytes.")
    ] = 8190,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for the guest; repeatable.")
    ] = None,
    dir: Annotated[
        list[str] | None,
        typer.Option("--dir", help="Grant read-only access: HOST_DIR[::GUEST_DIR]; repeatable."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve a wasi:http component over HTTP, the way `wasmtime serve` does."""
    from ..http.server import ServeOptions
    from ..http.workers import run_server

    _setup_logging(log_level)
    opts = ServeOptions(
        listen=listen,
        workers=workers,
        reuse=reuse,
        timeout=timeout,
        max_memory=_parse_size(max_memory),
        allowed_outgoing=tuple(allow_outgoing or ()),
        max_body=_parse_size(max_body) or 0,
        max_header_size=max_header_size,
        env=_parse_env(env or []),
        read_only_dirs=_parse_dirs(dir or []),
    )
    try:
        opts.host_port()
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--listen") from None
    try:
        code = run_server(str(component), opts)
    except ComponentError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@app.command()
def inspect(
    component: Annotated[Path, typer.Argument(help="A component (.wasm).")],
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Show a component's imports and exports, with their versions."""
    from ..runtime.component import CompileCache, default_cache_dir, inspect_component, read_component_file
    from ..runtime.engine import HostEngine

    try:
        data = read_component_file(component)
        engine = HostEngine()
        comp = CompileCache(default_cache_dir()).load(data, engine, str(component))
    except ComponentError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    info = inspect_component(comp, engine)
    if output == "json":
        doc = {
            "imports": [{"name": i.name, "kind": i.kind, "functions": i.functions} for i in info.imports],
            "exports": [{"name": e.name, "kind": e.kind, "functions": e.functions} for e in info.exports],
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    for title, items in (("imports", info.imports), ("exports", info.exports)):
        typer.echo(f"{title}:")
        for it in items:
            fn = f" ({len(it.functions)} functions)" if it.kind == "instance" else ""
            typer.echo(f"  {it.name}{fn}")


@app.command()
def version() -> None:
    """Print the wasmlattice version."""
    typer.echo(__version__)


# ---------------------------------------------------------------------------------------------
# Lattice commands: talk to hosts over the control interface (like `wash get/link/config/label`).
# ---------------------------------------------------------------------------------------------

T = TypeVar("T")

DEFAULT_CLI_NATS_URL = "nats://127.0.0.1:4222"
STATE_FILE = "up.json"


class OutputFormat(StrEnum):
    """How lattice commands print their results."""

    text = "text"
    json = "json"


NatsUrlOpt = Annotated[
    str, typer.Option("--nats-url", envvar="WASMLATTICE_NATS_URL", help="NATS server URL of the lattice.")
]
LatticeOpt = Annotated[
    str, typer.Option("--lattice", "-x", envvar="WASMLATTICE_LATTICE", help="Lattice name.")
]
OutputOpt = Annotated[OutputFormat, typer.Option("--output", "-o", help="text or json.")]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", "-t", min=0.05, envvar="WASMLATTICE_TIMEOUT", help="Request timeout, seconds."),
]
LabelOpt = Annotated[
    list[str] | None, typer.Option("--label", "-l", help="Host label KEY=VALUE; repeatable.")
]


def _fail(message: str, code: int = 1) -> NoReturn:
    """Print one `error: ...` line on stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


def _console() -> Any:
    from rich.console import Console

    # Wide enough that IDs (56-char host keys) are not wrapped when stdout is not a terminal.
    return Console(width=None if sys.stdout.isatty() else 200)


def _ctl_call(nats_url: str, lattice: str, timeout: float, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Connect to NATS, run `fn(CtlClient)`, disconnect; every failure becomes one error line."""
    from ..client.ctl import CtlClient, CtlError
    from ..lattice.connection import NatsConnectionError, NatsOptions, connect

    # The client's own close looks like a disconnect to the connection logger; not worth a warning.
    logging.getLogger("wasmlattice.lattice.connection").setLevel(logging.ERROR)

    async def go() -> T:
        nc = await connect(
            NatsOptions(url=nats_url, name="wasmlattice-cli", connect_timeout=min(timeout, 2.0))
        )
        try:
            return await fn(CtlClient(nc, lattice, timeout=timeout))
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    try:
        return asyncio.run(go())
    except NatsConnectionError as e:
        _fail(str(e))
    except CtlError as e:
        _fail(e.message)
    except ValueError as e:  # invalid subject tokens (host IDs, config names) and payload errors
        _fail(str(e))


def _ack(output: OutputFormat, message: str, fallback: str) -> None:
    """Report a successful mutation: the host's message (or `fallback`), as text or JSON."""
    if output is OutputFormat.json:
        _print_json({"success": True, "message": message})
    else:
        typer.echo(message or fallback)


def _kv(items: list[str], what: str) -> dict[str, str]:
    from ..client.ctl import parse_key_values

    try:
        return parse_key_values(items, what)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


get_app = typer.Typer(help="Show hosts, inventories, links, config and claims.", no_args_is_help=True)
link_app = typer.Typer(help="Put and delete links between components and providers.", no_args_is_help=True)
config_app = typer.Typer(help="Put, get and delete named config.", no_args_is_help=True)
label_app = typer.Typer(help="Put and delete host labels.", no_args_is_help=True)
stop_app = typer.Typer(help="Stop hosts.", no_args_is_help=True)
app.add_typer(get_app, name="get")
app.add_typer(link_app, name="link")
app.add_typer(config_app, name="config")
app.add_typer(label_app, name="label")
app.add_typer(stop_app, name="stop")


def _labels_text(labels: dict[str, str]) -> str:
    return "\n".join(f"{k}={v}" for k, v in sorted(labels.items()))


@get_app.command("hosts")
def get_hosts(
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    output: OutputOpt = OutputFormat.text,
    timeout: TimeoutOpt = 2.0,
    wait: Annotated[float, typer.Option(min=0.05, help="How long to collect ping replies, seconds.")] = 1.0,
) -> None:
    """List the hosts of the lattice (every host answers a ping). Text output exits 1 if none answer."""
    from ..client.ctl import UP_HINT, to_json

    hosts = _ctl_call(nats_url, lattice, timeout, lambda c: c.ping_hosts(wait))
    if output is OutputFormat.json:
        _print_json(to_json(hosts))
        return
    if not hosts:
        _fail(f"no host answered on lattice '{lattice}' within {wait:g}s: {UP_HINT}")
    from rich.table import Table

    table = Table(title=f"Hosts of lattice '{lattice}'")
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
    _console().print(table)


@get_app.command("inventory")
def get_inventory(
    host_id: Annotated[str | None, typer.Argument(help="Host ID; every host if omitted.")] = None,
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    output: OutputOpt = OutputFormat.text,
    timeout: TimeoutOpt = 2.0,
    wait: Annotated[float, typer.Option(min=0.05, help="How long to collect ping replies, seconds.")] = 1.0,
) -> None:
    """Show the components, providers and labels of one host or of every host."""
    from ..client.ctl import UP_HINT, CtlError, to_json

    async def fetch(c: Any) -> list[Any]:
        if host_id is not None:
            return [await c.get_host_inventory(host_id)]
        hosts = await c.ping_hosts(wait)
        if not hosts:
            raise CtlError(f"no host answered on lattice '{lattice}' within {wait:g}s: {UP_HINT}")
        return list(await asyncio.gather(*(c.get_host_inventory(h.id) for h in hosts)))

    inventories = _ctl_call(nats_url, lattice, timeout, fetch)
    if output is OutputFormat.json:
        _print_json(to_json(inventories[0]) if host_id is not None else to_json(inventories))
        return
    from rich.table import Table

    console = _console()
    for inv in inventories:
        console.print(f"[bold]Host {inv.host_id}[/bold] ({inv.friendly_name}), up {inv.uptime_human}")
        labels = Table(title="Labels")
        labels.add_column("Key")
        labels.add_column("Value", overflow="fold")
        for k, v in sorted(inv.labels.items()):
            labels.add_row(k, v)
        console.print(labels)
        comps = Table(title="Components")
        for col in ("Component ID", "Name", "Image", "Max instances"):
            comps.add_column(col, overflow="fold")
        for cd in inv.components:
            comps.add_row(cd.id, cd.name or "", cd.image_ref, str(cd.max_instances))
        console.print(comps if inv.components else "No components")
        provs = Table(title="Providers")
        for col in ("Provider ID", "Name", "Image"):
            provs.add_column(col, overflow="fold")
        for pd in inv.providers:
            provs.add_row(pd.id, pd.name or "", pd.image_ref or "")
        console.print(provs if inv.providers else "No providers")


def _print_links(links: list[Any], output: OutputFormat) -> None:
    from ..client.ctl import to_json

    if output is OutputFormat.json:
        _print_json(to_json(links))
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
    _console().print(table)


@get_app.command("links")
def get_links(
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    output: OutputOpt = OutputFormat.text,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """List every link of the lattice."""
    _print_links(_ctl_call(nats_url, lattice, timeout, lambda c: c.get_links()), output)


def _show_config(name: str, nats_url: str, lattice: str, output: OutputFormat, timeout: float) -> None:
    values = _ctl_call(nats_url, lattice, timeout, lambda c: c.get_config(name))
    if values is None:
        if output is OutputFormat.json:
            _print_json(None)
        _fail(f"config '{name}' not found on lattice '{lattice}': create it with `wasmlattice config put`")
    if output is OutputFormat.json:
        _print_json(values)
        return
    from rich.table import Table

    table = Table(title=f"Config '{name}'")
    table.add_column("Key")
    table.add_column("Value", overflow="fold")
    for k, v in sorted(values.items()):
        table.add_row(k, v)
    _console().print(table)


@get_app.command("config")
def get_config(
    name: Annotated[str, typer.Argument(help="Config name.")],
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    output: OutputOpt = OutputFormat.text,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Show a named config (exit 1 if it does not exist)."""
    _show_config(name, nats_url, lattice, output, timeout)


@get_app.command("claims")
def get_claims(
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    output: OutputOpt = OutputFormat.text,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """List the claims of every signed component and provider known to the lattice."""
    claims = _ctl_call(nats_url, lattice, timeout, lambda c: c.get_claims())
    if output is OutputFormat.json:
        _print_json(claims)
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
    _console().print(table)


@link_app.command("put")
def link_put(
    source: Annotated[str, typer.Argument(help="Source component/provider ID (imports the interface).")],
    target: Annotated[str, typer.Argument(help="Target component/provider ID (exports the interface).")],
    namespace: Annotated[str, typer.Argument(help="WIT namespace, e.g. wasi.")],
    package: Annotated[str, typer.Argument(help="WIT package, e.g. keyvalue.")],
    interface: Annotated[
        list[str], typer.Option("--interface", "-i", help="WIT interface, e.g. store; repeatable.")
    ],
    name: Annotated[str, typer.Option("--name", "--link-name", "-n", help="Link name.")] = "default",
    source_config: Annotated[
        list[str] | None, typer.Option("--source-config", help="Named config for the source; repeatable.")
    ] = None,
    target_config: Annotated[
        list[str] | None, typer.Option("--target-config", help="Named config for the target; repeatable.")
    ] = None,
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    output: OutputOpt = OutputFormat.text,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Create or replace a link from SOURCE to TARGET for NAMESPACE:PACKAGE/INTERFACE."""
    from ..lattice.models import Link

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
    msg = _ctl_call(nats_url, lattice, timeout, lambda c: c.put_link(link))
    _ack(output, msg, f"Link {source} -> {target} ({namespace}:{package}) put")


@link_app.command("del")
def link_del(
    source: Annotated[str, typer.Argument(help="Source component/provider ID.")],
    namespace: Annotated[str, typer.Argument(help="WIT namespace.")],
    package: Annotated[str, typer.Argument(help="WIT package.")],
    name: Annotated[str, typer.Option("--name", "--link-name", "-n", help="Link name.")] = "default",
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    output: OutputOpt = OutputFormat.text,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Delete SOURCE's link for NAMESPACE:PACKAGE (idempotent)."""
    msg = _ctl_call(nats_url, lattice, timeout, lambda c: c.delete_link(source, namespace, package, name))
    _ack(output, msg, f"Link of {source} ({namespace}:{package}) deleted")


@link_app.command("get")
def link_get(
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    output: OutputOpt = OutputFormat.text,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """List every link of the lattice (same as `get links`)."""
    _print_links(_ctl_call(nats_url, lattice, timeout, lambda c: c.get_links()), output)


@config_app.command("put")
def config_put(
    name: Annotated[str, typer.Argument(help="Config name.")],
    values: Annotated[list[str], typer.Argument(help="KEY=VALUE pairs.")],
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    output: OutputOpt = OutputFormat.text,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Store named config NAME (replaces all its keys)."""
    data = _kv(values, "config")
    msg = _ctl_call(nats_url, lattice, timeout, lambda c: c.put_config(name, data))
    _ack(output, msg, f"Config '{name}' put")


@config_app.command("get")
def config_get(
    name: Annotated[str, typer.Argument(help="Config name.")],
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    output: OutputOpt = OutputFormat.text,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Show named config NAME (exit 1 if it does not exist)."""
    _show_config(name, nats_url, lattice, output, timeout)


@config_app.command("del")
def config_del(
    name: Annotated[str, typer.Argument(help="Config name.")],
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    output: OutputOpt = OutputFormat.text,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Delete named config NAME (idempotent)."""
    msg = _ctl_call(nats_url, lattice, timeout, lambda c: c.delete_config(name))
    _ack(output, msg, f"Config '{name}' deleted")


@label_app.command("put")
def label_put(
    host_id: Annotated[str, typer.Argument(help="Host ID.")],
    labels: Annotated[list[str], typer.Argument(help="KEY=VALUE pairs.")],
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    output: OutputOpt = OutputFormat.text,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Set labels on a host."""
    pairs = _kv(labels, "label")

    async def put_all(c: Any) -> str:
        msg = ""
        for k, v in pairs.items():
            msg = await c.put_label(host_id, k, v)
        return str(msg)

    msg = _ctl_call(nats_url, lattice, timeout, put_all)
    _ack(output, msg, "Labels put")


@label_app.command("del")
def label_del(
    host_id: Annotated[str, typer.Argument(help="Host ID.")],
    keys: Annotated[list[str], typer.Argument(help="Label keys.")],
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    output: OutputOpt = OutputFormat.text,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Delete labels from a host."""

    async def del_all(c: Any) -> str:
        msg = ""
        for k in keys:
            msg = await c.delete_label(host_id, k)
        return str(msg)

    msg = _ctl_call(nats_url, lattice, timeout, del_all)
    _ack(output, msg, "Labels deleted")


@stop_app.command("host")
def stop_host(
    host_id: Annotated[str, typer.Argument(help="Host ID.")],
    host_timeout: Annotated[
        int | None, typer.Option("--host-timeout", min=0, help="Shutdown deadline for the host, ms.")
    ] = None,
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    output: OutputOpt = OutputFormat.text,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Ask a host to shut down."""
    msg = _ctl_call(nats_url, lattice, timeout, lambda c: c.stop_host(host_id, host_timeout))
    _ack(output, msg, f"Host {host_id} stopping")


# --- running hosts: `host`, `up`, `down` ---


def _run_loop(main_coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main_coro)


def _host_options(**kwargs: Any) -> Any:
    """Build `HostOptions`, passing only the fields it has (the host side owns that dataclass)."""
    import dataclasses

    from ..host.run import HostOptions

    names = {f.name for f in dataclasses.fields(HostOptions)}
    return HostOptions(**{k: v for k, v in kwargs.items() if k in names and v is not None})


@app.command("host")
def host_cmd(
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    label: LabelOpt = None,
    lattice: LatticeOpt = "default",
    host_seed: Annotated[
        str | None,
        typer.Option("--host-seed", envvar="WASMLATTICE_HOST_SEED", help="nkeys server seed (SN...)."),
    ] = None,
    heartbeat_interval: Annotated[
        float | None, typer.Option("--heartbeat-interval", min=0.1, help="Heartbeat interval, seconds.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run one lattice host connected to an existing NATS server until Ctrl-C."""
    from ..host.run import HostStartError, run_host
    from ..lattice.connection import NatsConnectionError

    _setup_logging(log_level)
    labels = _kv(label or [], "--label")
    try:
        opts = _host_options(
            nats_url=nats_url,
            lattice=lattice,
            labels=labels,
            host_seed=host_seed,
            heartbeat_interval=heartbeat_interval,
        )
        # run_host handles SIGINT/SIGTERM itself: it leaves the lattice gracefully.
        _run_loop(run_host(opts))
    except (NatsConnectionError, HostStartError) as e:
        _fail(str(e))


def _default_up_dir() -> Path:
    from ..nats_server import default_data_dir

    return default_data_dir().parent


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/status").read_text()
        if "\nState:\tZ" in status:
            return False
    return True


def _read_state(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _check_not_running(data_dir: Path) -> None:
    state = _read_state(data_dir)
    if state is None:
        return
    pid = state.get("pid")
    if isinstance(pid, int) and _pid_alive(pid):
        _fail(
            f"wasmlattice is already running from {data_dir} (pid {pid}, NATS {state.get('nats_url')}): "
            f"stop it with `wasmlattice down --data-dir {data_dir}`"
        )
    (data_dir / STATE_FILE).unlink(missing_ok=True)  # stale: its process is gone


async def _up_main(
    data_dir: Path, nats_port: int, nats_url: str | None, lattice: str, labels: dict[str, str], output: str
) -> None:
    from ..host.identity import HostIdentity
    from ..host.run import run_host
    from ..nats_server import EmbeddedNats, port_in_use

    nats: EmbeddedNats | None = None
    url = nats_url
    if url is None:
        if port_in_use("127.0.0.1", nats_port):
            # Like `wash up`: a NATS server already listening on the port is used as is.
            url = f"nats://127.0.0.1:{nats_port}"
        else:
            nats = EmbeddedNats(host="127.0.0.1", port=nats_port, data_dir=data_dir / "nats")
            await nats.start()
            url = nats.url
    state_path = data_dir / STATE_FILE
    try:
        identity = HostIdentity.generate()
        opts = _host_options(nats_url=url, lattice=lattice, labels=labels, host_seed=identity.seed)
        ready = asyncio.Event()
        host_task = asyncio.ensure_future(run_host(opts, ready))
        ready_wait = asyncio.ensure_future(ready.wait())
        try:
            await asyncio.wait({host_task, ready_wait}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready_wait.cancel()
        if host_task.done():
            host_task.result()  # raises the host's start-up error
            raise RuntimeError("the host stopped right after starting")
        if not ready.is_set():
            host_task.cancel()
            raise RuntimeError("the host did not become ready within 60s")
        state = {
            "pid": os.getpid(),
            "nats_url": url,
            "nats_pid": nats.pid if nats is not None else None,
            "embedded_nats": nats is not None,
            "lattice": lattice,
            "host_id": identity.public_key,
            "data_dir": str(data_dir),
            "log": str(data_dir / "up.log"),
        }
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(state_path)
        if output == "json":
            _print_json(state)
        else:
            typer.echo(f"NATS:    {url}" + (" (embedded, JetStream)" if nats is not None else " (existing)"))
            typer.echo(f"Lattice: {lattice}")
            typer.echo(f"Host:    {identity.public_key}")
            typer.echo("Stop with Ctrl-C, or `wasmlattice down` from another terminal.")
        sys.stdout.flush()
        # run_host stops on SIGINT/SIGTERM (Ctrl-C, `wasmlattice down`) or a `host.stop` request.
        await host_task
    finally:
        # Only remove the state file if it is ours (a second `up` may not clobber a running one).
        state_now = _read_state(data_dir)
        if state_now is not None and state_now.get("pid") == os.getpid():
            state_path.unlink(missing_ok=True)
        if nats is not None:
            await nats.stop()


@app.command("up")
def up(
    nats_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the embedded NATS server.")
    ] = 4222,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where NATS data, logs and the state file go.")
    ] = None,
    nats_url: Annotated[
        str | None, typer.Option("--nats-url", help="Use this NATS server instead of starting one.")
    ] = None,
    label: LabelOpt = None,
    lattice: LatticeOpt = "default",
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
    output: OutputOpt = OutputFormat.text,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
) -> None:
    """Start NATS (with JetStream) and one host; with --detach, in the background."""
    from ..nats_server import EmbeddedNatsError

    ddir = (data_dir or _default_up_dir()).resolve()
    ddir.mkdir(parents=True, exist_ok=True)
    labels = _kv(label or [], "--label")
    _check_not_running(ddir)
    if detach:
        _up_detached(ddir, nats_port, nats_url, lattice, label or [], output, log_level)
        return
    _setup_logging(log_level)
    try:
        _run_loop(_up_main(ddir, nats_port, nats_url, lattice, labels, output.value))
    except EmbeddedNatsError as e:
        _fail(f"cannot start NATS: {e}")
    except Exception as e:  # start-up failures: one line, not a traceback
        _fail(f"{type(e).__name__}: {e}")


def _up_detached(
    ddir: Path,
    nats_port: int,
    nats_url: str | None,
    lattice: str,
    labels: list[str],
    output: OutputFormat,
    log_level: str,
) -> None:
    """Start `up` in a new session with output in `<data-dir>/up.log`; return once its host answers."""
    import subprocess

    cmd = [sys.executable, "-m", "wasmlattice.cli.main", "up", "--data-dir", str(ddir)]
    cmd += ["--nats-port", str(nats_port), "--lattice", lattice, "--log-level", log_level]
    if nats_url is not None:
        cmd += ["--nats-url", nats_url]
    for lb in labels:
        cmd += ["--label", lb]
    log_path = ddir / "up.log"
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 60
    state: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            _fail(f"`wasmlattice up` exited with {proc.returncode}; see {log_path}:\n" + "\n".join(tail))
        state = _read_state(ddir)
        if state is not None and state.get("pid") == proc.pid:
            break
        time.sleep(0.1)
    else:
        proc.terminate()
        _fail(f"`wasmlattice up` did not become ready within 60s; see {log_path}")
    assert state is not None
    host_id = str(state["host_id"])
    hosts = _ctl_call(str(state["nats_url"]), lattice, 2.0, lambda c: c.ping_hosts(1.0))
    if not any(h.id == host_id for h in hosts):
        _fail(f"the host {host_id} started but does not answer ping; see {log_path}")
    if output is OutputFormat.json:
        _print_json(state)
        return
    typer.echo(f"wasmlattice is running in the background (pid {proc.pid})")
    typer.echo(f"NATS:    {state['nats_url']}")
    typer.echo(f"Lattice: {lattice}")
    typer.echo(f"Host:    {host_id}")
    typer.echo(f"Logs:    {log_path}")
    typer.echo(f"Stop with `wasmlattice down --data-dir {ddir}`")


@app.command("down")
def down(
    data_dir: Annotated[Path | None, typer.Option(help="The data dir `up` used.")] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait before killing.")] = 20.0,
) -> None:
    """Stop what `wasmlattice up` started (its host and embedded NATS)."""
    ddir = (data_dir or _default_up_dir()).resolve()
    state = _read_state(ddir)
    if state is None:
        typer.echo(f"Nothing to stop: no `wasmlattice up` is running from {ddir}")
        return
    pid = state.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        (ddir / STATE_FILE).unlink(missing_ok=True)
        typer.echo(f"Nothing to stop: the process recorded in {ddir / STATE_FILE} is gone (cleaned up)")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        nats_pid = state.get("nats_pid")
        if isinstance(nats_pid, int) and _pid_alive(nats_pid):
            os.kill(nats_pid, signal.SIGKILL)
        (ddir / STATE_FILE).unlink(missing_ok=True)
        typer.echo(f"Killed pid {pid} (it did not stop within {timeout:g}s)")
        return
    (ddir / STATE_FILE).unlink(missing_ok=True)
    typer.echo(f"Stopped wasmlattice (pid {pid}, host {state.get('host_id')}, NATS {state.get('nats_url')})")


def main() -> None:
    """Entry point of the console script."""
    app()


if __name__ == "__main__":
    main()
