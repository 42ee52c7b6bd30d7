"""The `wasmlattice` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from wasmlattice import __version__
from wasmlattice.cli import (  # noqa: F401 - register commands
    app_cmds,
    artifact_cmds,
    call_cmd,
    claims_cmds,
    dev_cmd,
    host_cmds,
    keys_cmds,
    lattice_cmds,
    logs_cmd,
    plugins_cmd,
    project_cmds,
    replay_cmd,
    secret_cmds,
    ui_cmd,
    workload_cmds,
)
from wasmlattice.cli.app import app, setup_logging
from wasmlattice.cli.common import option_group
from wasmlattice.cli.host_options import ObservabilityFlags, TlsCaPathOpt, tls_ca_paths
from wasmlattice.runtime.component import ComponentError


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
@option_group
def run(
    component: Annotated[
        str,
        typer.Argument(
            help="The wasi:http/proxy component to serve: a .wasm file or an OCI reference (reg/repo:tag)."
        ),
    ],
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = "127.0.0.1:8000",
    workers: Annotated[int, typer.Option(min=1, help="Processes sharing the port (SO_REUSEPORT).")] = 1,
    reuse: Annotated[
        int, typer.Option(min=1, help="Requests one instance may serve (1 = a fresh instance per request).")
    ] = 1,
    allow_outgoing: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-outgoing",
            metavar="HOST[:PORT]",
            help="Allow outgoing HTTP to HOST[:PORT]; repeatable; '*' allows all.",
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Per-request deadline in seconds.")] = 30.0,
    max_memory: Annotated[
        str,
        typer.Option(
            "--max-instance-memory",
            "--max-memory",
            help="Most linear memory one instance may use, e.g. 64MiB (256MiB).",
        ),
    ] = "256MiB",
    guest_output_lines: Annotated[
        float, typer.Option(min=0.001, help="Lines per second the guest may log (stdout, stderr).")
    ] = 200.0,
    guest_output_bytes: Annotated[str, typer.Option(help="Bytes per second the guest may log.")] = "256KiB",
    guest_output_max_line: Annotated[
        str, typer.Option(help="Longest guest log line; longer ones are cut.")
    ] = "16KiB",
    max_body: Annotated[str, typer.Option(help="Largest request body accepted.")] = "64MiB",
    max_header_size: Annotated[
        int, typer.Option(min=256, help="Longest request line or header field, in bytes.")
    ] = 8190,
    header_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a new connection has to send its request head.")
    ] = 10.0,
    idle_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a kept-alive connection may wait for its next request.")
    ] = 60.0,
    body_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a request body may stall before the request fails.")
    ] = 30.0,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Open connections per worker; past it new ones get 503.")
    ] = 1000,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", metavar="KEY=VALUE", help="KEY=VALUE for the guest; repeatable."),
    ] = None,
    dir: Annotated[
        list[str] | None,
        typer.Option(
            "--dir",
            metavar="HOST_DIR[::GUEST_DIR]",
            help="Grant read-only access: HOST_DIR[::GUEST_DIR]; repeatable.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    allow_latest: Annotated[
        bool, typer.Option("--allow-latest", help="Allow an OCI reference tagged latest (or untagged).")
    ] = False,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Speak plain HTTP to the OCI reference's registry.")
    ] = False,
    tls_ca_path: TlsCaPathOpt = None,
    compiler: Annotated[
        str,
        typer.Option(
            "--compiler",
            help="cranelift (optimised) or winch (compiles several times faster, runs slower).",
        ),
    ] = "cranelift",
    record: Annotated[
        Path | None,
        typer.Option(
            "--record",
            metavar="DIR",
            help="Record each request (host calls, response) as JSON in DIR, for `wasmlattice replay`.",
        ),
    ] = None,
    *,
    obs: ObservabilityFlags,
) -> None:
    """Serve a wasi:http component over HTTP, the way `wasmtime serve` does."""
    from wasmlattice.capabilities.http_ingress import IngressLimits
    from wasmlattice.host.standalone import ServeOptions, run_server
    from wasmlattice.wasi.output_limit import OutputLimits

    observability = obs.settings()
    setup_logging(log_level)
    if compiler not in ("cranelift", "winch"):
        raise typer.BadParameter(f"expected cranelift or winch, got {compiler!r}", param_hint="--compiler")
    opts = ServeOptions(
        compiler=compiler,
        listen=listen,
        workers=workers,
        reuse=reuse,
        timeout=timeout,
        max_memory=_parse_size(max_memory),
        output=OutputLimits(
            lines_per_s=guest_output_lines,
            bytes_per_s=_parse_size(guest_output_bytes) or 1,
            max_line=max(64, _parse_size(guest_output_max_line) or 64),
        ),
        allowed_outgoing=tuple(allow_outgoing or ()),
        max_body=_parse_size(max_body) or 0,
        max_header_size=max_header_size,
        limits=IngressLimits(header_timeout, idle_timeout, body_timeout, max_connections),
        env=_parse_env(env or []),
        read_only_dirs=_parse_dirs(dir or []),
        record_dir=record,
        observability=observability,
    )
    try:
        opts.host_port()
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--listen") from None
    path = component.removeprefix("file://")
    if not _looks_like_a_file(component):
        path = _pull_for_run(component, allow_latest, insecure, tls_ca_paths(tls_ca_path))
    try:
        code = run_server(path, opts)
    except ComponentError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def _looks_like_a_file(component: str) -> bool:
    """Whether `run`'s argument names a local file (even a missing one) rather than an OCI reference.

    An OCI reference never starts with `/`, `.` or `~` and has no uppercase; a path that does not
    exist should say so, not be taken for a registry.
    """
    return (
        Path(component).exists()
        or component.startswith(("/", ".", "~", "file://"))
        or ("/" not in component and "://" not in component)
    )


def _pull_for_run(ref: str, allow_latest: bool, insecure: bool, ca_paths: list[Path] | None = None) -> str:
    """Pull an OCI reference into the artifact cache; the cached file's path (exit 2 on failure)."""
    from wasmlattice import aio
    from wasmlattice.artifacts.auth import Credentials, docker_config_source
    from wasmlattice.artifacts.fetch import ArtifactFetcher, FetchPolicy
    from wasmlattice.artifacts.oci import registry_ssl_context
    from wasmlattice.artifacts.reference import parse_oci_ref, scheme_of
    from wasmlattice.artifacts.source import ArtifactError

    async def pull() -> str:
        insecure_hosts = [parse_oci_ref(ref).registry] if insecure else []
        policy = FetchPolicy(allow_latest, frozenset(insecure_hosts), allow_latest_hint="pass --allow-latest")
        fetcher = ArtifactFetcher(
            policy, Credentials([docker_config_source()]), ssl_context=registry_ssl_context(ca_paths or [])
        )
        try:
            artifact = await fetcher.fetch(ref)
        finally:
            await fetcher.close()
        return str(fetcher.cache.path(artifact.digest))

    if scheme_of(ref) != "oci":
        typer.echo(f"error: {ref}: no such file, and not an OCI reference", err=True)
        raise typer.Exit(2)
    try:
        return aio.run(pull())
    except ArtifactError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@app.command()
def inspect(
    component: Annotated[Path, typer.Argument(help="A component (.wasm).")],
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Show a component's imports and exports, with their versions."""
    from wasmlattice.runtime.component import (
        CompileCache,
        default_cache_dir,
        inspect_component,
        read_component_file,
    )
    from wasmlattice.runtime.engine import HostEngine

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


def main() -> None:
    """Entry point of the console script."""
    app()


if __name__ == "__main__":
    main()
