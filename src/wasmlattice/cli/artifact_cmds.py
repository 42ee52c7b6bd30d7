"""`wasmlattice push` and `pull`: components to and from registries (docs/artifacts.md);
`wasmlattice artifacts list/delete`: what the lattice's own store holds.

Each transfer command dispatches on the reference's scheme (`PUSHERS`, `PULLERS`), so another
source (the lattice's own store) adds one function per direction.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from wasmlattice import aio
from wasmlattice.cli.app import app, command_group
from wasmlattice.cli.common import (
    DEFAULT_CLI_NATS_URL,
    DataDirOpt,
    LatticeOpt,
    NatsCredsOpt,
    NatsUrlOpt,
    OutputFormat,
    OutputOpt,
    cli_nats_options,
    console,
    fail,
    fail_as,
    option_group,
    print_json,
)
from wasmlattice.cli.host_options import TlsCaPathOpt, tls_ca_paths

if TYPE_CHECKING:
    from wasmlattice.artifacts.auth import Credentials, CredentialSource

UserOpt = Annotated[
    str | None,
    typer.Option(
        "--user",
        "-u",
        envvar=["WASMLATTICE_REGISTRY_USER", "WASMCLOUD_OCI_REGISTRY_USER"],
        help="Registry user (else the Docker config.json credentials, else anonymous).",
    ),
]
PasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--password",
        "-p",
        envvar=["WASMLATTICE_REGISTRY_PASSWORD", "WASMCLOUD_OCI_REGISTRY_PASSWORD"],
        help="Registry password or token (with --user).",
    ),
]
InsecureOpt = Annotated[
    bool,
    typer.Option("--insecure", help="Speak plain HTTP to the registry (a local registry); HTTPS otherwise."),
]
T = TypeVar("T")
# A progress bar only for layers at least this big, and only on a terminal.
PROGRESS_MIN_BYTES = 1 << 20


@dataclass(frozen=True)
class LatticeStoreTarget:
    """Where a `lattice://` reference goes: the lattice's NATS (the options of the lattice commands)."""

    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL
    lattice: LatticeOpt = "default"
    timeout: Annotated[
        float,
        typer.Option("--timeout", "-t", min=0.05, help="Seconds a lattice:// push or pull may take."),
    ] = 60.0
    nats_creds: NatsCredsOpt = None
    data_dir: DataDirOpt = None


@dataclass(frozen=True)
class RegistryAccess:
    """How the CLI reaches a registry: explicit credentials and plain HTTP or not (or the lattice)."""

    user: str | None
    password: str | None
    insecure: bool
    store: LatticeStoreTarget = LatticeStoreTarget()
    tls_ca_paths: tuple[Path, ...] = ()

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for the registry: the system's CAs plus the `--tls-ca-path` files."""
        from wasmlattice.artifacts.oci import registry_ssl_context

        return registry_ssl_context(self.tls_ca_paths)


@contextmanager
def progress_bar(what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A Rich progress callback on a terminal (None elsewhere, so scripts get clean output)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            if total >= PROGRESS_MIN_BYTES:
                bar.update(task, completed=done, total=total)

        yield update


def _credentials(ref_registry: str, access: RegistryAccess) -> Credentials:
    from wasmlattice.artifacts.auth import (
        Credential,
        Credentials,
        docker_config_source,
        static_source,
    )

    if (access.user is None) != (access.password is None):
        fail("--user and --password go together", code=2)
    sources: list[CredentialSource] = []
    if access.user is not None:
        sources.append(
            static_source({ref_registry: Credential(access.user, access.password, origin="--user")})
        )
    sources.append(docker_config_source())
    return Credentials(sources)


async def _push_oci(ref: str, data: bytes, annotations: dict[str, str], access: RegistryAccess) -> str:
    from wasmlattice.artifacts.oci import OciClient
    from wasmlattice.artifacts.push import push_component, wasm_config
    from wasmlattice.artifacts.reference import parse_oci_ref

    parsed = parse_oci_ref(ref)
    imports, exports = _component_names(data)
    creds = _credentials(parsed.registry, access)
    insecure = [parsed.registry] if access.insecure else []
    async with OciClient(creds, insecure=insecure, ssl_context=access.ssl_context()) as client:
        with progress_bar(f"push {parsed.repository}") as progress:
            pushed = await push_component(
                client, parsed, data, wasm_config(data, imports, exports), annotations, progress
            )
    return f"{parsed.registry}/{parsed.repository}@{pushed.manifest_digest}"


async def _pull_oci(
    ref: str, access: RegistryAccess, allow_latest: bool, max_size: int
) -> tuple[str, bytes | bytearray]:
    from wasmlattice.artifacts.fetch import ArtifactFetcher, FetchPolicy
    from wasmlattice.artifacts.reference import parse_oci_ref

    parsed = parse_oci_ref(ref)
    policy = FetchPolicy.of(allow_latest, [parsed.registry] if access.insecure else [], max_size)
    policy = FetchPolicy(
        policy.allow_latest, policy.allowed_insecure, policy.max_size, allow_latest_hint="pass --allow-latest"
    )
    with progress_bar(f"pull {parsed.repository}") as progress:
        fetcher = ArtifactFetcher(
            policy, _credentials(parsed.registry, access), progress=progress, ssl_context=access.ssl_context()
        )
        try:
            artifact = await fetcher.fetch(ref)
        finally:
            await fetcher.close()
    return artifact.digest, artifact.data


async def _with_lattice_store(target: LatticeStoreTarget, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Connect to the lattice's NATS, run `fn(LatticeStore)`, disconnect; failures as `ArtifactError`."""
    from wasmlattice.artifacts.lattice_store import LatticeStore
    from wasmlattice.artifacts.source import ArtifactError
    from wasmlattice.protocol.connection import NatsConnectionError, connect, jetstream

    opts = cli_nats_options(target.nats_url, target.timeout, target.nats_creds, target.data_dir)
    try:
        nc = await connect(opts)
    except NatsConnectionError as e:
        raise ArtifactError(str(e)) from None
    try:
        return await aio.wait_for(fn(LatticeStore(jetstream(nc, opts), target.lattice)), target.timeout)
    except TimeoutError:
        raise ArtifactError(
            f"the lattice store did not answer within {target.timeout:g}s "
            f"(is JetStream enabled on {target.nats_url}? a bigger --timeout?)"
        ) from None
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def _push_lattice(ref: str, data: bytes, annotations: dict[str, str], access: RegistryAccess) -> str:
    from wasmlattice.artifacts.lattice_store import parse_lattice_ref

    parsed = parse_lattice_ref(ref)
    digest = await _with_lattice_store(access.store, lambda store: store.push(ref, data, annotations))
    return f"lattice://{parsed.name}@{digest}"


async def _pull_lattice(
    ref: str, access: RegistryAccess, allow_latest: bool, max_size: int
) -> tuple[str, bytes | bytearray]:
    from wasmlattice.artifacts.fetch import ArtifactFetcher, FetchPolicy

    policy = FetchPolicy(allow_latest, max_size=max_size, allow_latest_hint="pass --allow-latest")

    async def pull(store: Any) -> tuple[str, bytes | bytearray]:
        # Through a fetcher: the same `latest` rule, digest check and cache as a host.
        store.max_size = max_size
        fetcher = ArtifactFetcher(policy)
        fetcher.use_lattice_store(store)
        try:
            artifact = await fetcher.fetch(ref)
        finally:
            await fetcher.close()
        return artifact.digest, artifact.data

    return await _with_lattice_store(access.store, pull)


Pusher = Callable[[str, bytes, dict[str, str], RegistryAccess], Coroutine[Any, Any, str]]
Puller = Callable[[str, RegistryAccess, bool, int], Coroutine[Any, Any, tuple[str, bytes | bytearray]]]
PUSHERS: dict[str, Pusher] = {"oci": _push_oci, "lattice": _push_lattice}
PULLERS: dict[str, Puller] = {"oci": _pull_oci, "lattice": _pull_lattice}


def _component_names(data: bytes) -> tuple[list[str], list[str]]:
    """The import and export names of a component for the artifact's config (through the compile
    cache the host uses too, so pushing warms it); empty for a core module."""
    from wasmlattice.runtime.component import (
        CompileCache,
        ComponentError,
        check_format,
        default_cache_dir,
        inspect_component,
    )
    from wasmlattice.runtime.engine import HostEngine

    if data[4:8] == b"\x01\x00\x00\x00":
        return [], []
    try:
        check_format(data, "FILE")
        engine = HostEngine()
        comp = CompileCache(default_cache_dir()).load(data, engine, "FILE")
        info = inspect_component(comp, engine)
    except ComponentError as e:
        fail(str(e), code=2)
    return [i.name for i in info.imports], [e.name for e in info.exports]


def _parse_annotations(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            fail(f"--annotation: expected KEY=VALUE, got {item!r}", code=2)
        out[k] = v
    return out


def _scheme(ref: str, table: Mapping[str, object], verb: str) -> str:
    from wasmlattice.artifacts.reference import scheme_of

    scheme = scheme_of(ref)
    if scheme not in table:
        fail(
            f"cannot {verb} {ref!r}: {scheme}:// references are not supported here (use an OCI reference or lattice://)",
            2,
        )
    return scheme


@app.command()
@option_group
def push(
    ref: Annotated[
        str,
        typer.Argument(
            help="Where to push: registry/repo:tag (oci:// prefix optional), or lattice://NAME:TAG "
            "for the lattice's own store."
        ),
    ],
    file: Annotated[Path, typer.Argument(help="The component (.wasm).", exists=True, dir_okay=False)],
    annotation: Annotated[
        list[str] | None,
        typer.Option("--annotation", "-a", metavar="KEY=VALUE", help="Manifest annotation; repeatable."),
    ] = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
    insecure: InsecureOpt = False,
    tls_ca_path: TlsCaPathOpt = None,
    *,
    store: LatticeStoreTarget,
) -> None:
    """Push a component to an OCI registry as a wasm artifact (the layout `wash push` writes), or
    into the lattice's own artifact store (`lattice://`), from where every host of the lattice pulls it."""
    from wasmlattice.artifacts.source import ArtifactError

    scheme = _scheme(ref, PUSHERS, "push")
    data = file.read_bytes()
    if data[:4] != b"\0asm":
        fail(f"{file} is not a WebAssembly file", code=2)
    access = RegistryAccess(user, password, insecure, store, tuple(tls_ca_paths(tls_ca_path)))
    try:
        pinned = aio.run(PUSHERS[scheme](ref, data, _parse_annotations(annotation or []), access))
    except ArtifactError as e:
        fail(str(e))
    typer.echo(pinned)


@app.command()
@option_group
def pull(
    ref: Annotated[
        str,
        typer.Argument(
            help="What to pull: registry/repo:tag, registry/repo@sha256:..., or lattice://NAME:TAG."
        ),
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: <repo name>.wasm).")
    ] = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
    insecure: InsecureOpt = False,
    tls_ca_path: TlsCaPathOpt = None,
    allow_latest: Annotated[
        bool, typer.Option("--allow-latest", help="Allow `latest` (or no tag), which may change under you.")
    ] = False,
    max_size: Annotated[int, typer.Option("--max-size", min=1, help="Most bytes accepted (256 MiB).")] = 256
    << 20,
    *,
    store: LatticeStoreTarget,
) -> None:
    """Pull a component from an OCI registry or the lattice's store (checked against its digest,
    kept in the artifact cache)."""
    from wasmlattice.artifacts.source import ArtifactError

    scheme = _scheme(ref, PULLERS, "pull")
    access = RegistryAccess(user, password, insecure, store, tuple(tls_ca_paths(tls_ca_path)))
    try:
        digest, data = aio.run(PULLERS[scheme](ref, access, allow_latest, max_size))
    except ArtifactError as e:
        fail(str(e))
    if output is None:
        name = ref.split("@")[0].rsplit("/", 1)[-1].split(":")[0] or "component"
        output = Path(f"{name}.wasm")
    tmp = output.with_name(f".{output.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(output)
    typer.echo(f"{output} {digest} ({len(data)} bytes)")


artifacts_app = command_group(
    "What the lattice's own artifact store (lattice://) holds: list its tags, delete tags and, "
    "once nothing points to them, their bytes."
)
app.add_typer(artifacts_app, name="artifacts")


def _human_size(n: int) -> str:
    """Bytes as `123 B`, `4.5 KiB`, `17.6 MiB`."""
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


@artifacts_app.command("list")
@option_group
def artifacts_list(
    name: Annotated[
        str | None,
        typer.Argument(help="Only the tags of this artifact name (e.g. hello, team/http-echo)."),
    ] = None,
    output: OutputOpt = OutputFormat.text,
    *,
    store: LatticeStoreTarget,
) -> None:
    """List the tags in the lattice's artifact store, with digest, size and push time."""
    from wasmlattice.artifacts.source import ArtifactError

    try:
        records = aio.run(
            _with_lattice_store(store, lambda s: s.tags(name) if name is not None else s.list())
        )
    except ArtifactError as e:
        fail_as(output, str(e))
    if output is OutputFormat.json:
        print_json([r.as_dict() for r in records])
        return
    if not records:
        what = f"no tags of {name}" if name is not None else "nothing"
        typer.echo(f"The artifact store of lattice '{store.lattice}' holds {what}")
        return
    from rich.table import Table

    table = Table(title=f"Artifacts of lattice '{store.lattice}'")
    for col in ("Reference", "Digest", "Size", "Pushed", "Annotations"):
        table.add_column(col, overflow="fold")
    for r in records:
        notes = ", ".join(f"{k}={v}" for k, v in sorted(r.annotations.items()))
        table.add_row(r.ref, r.digest, _human_size(r.size), r.created, notes)
    console().print(table)


@artifacts_app.command("delete")
@option_group
def artifacts_delete(
    ref: Annotated[
        str,
        typer.Argument(
            help="lattice://NAME:TAG removes a tag; lattice://NAME@sha256:... every tag of NAME on "
            "that digest. The bytes go once no tag points to them."
        ),
    ],
    output: OutputOpt = OutputFormat.text,
    *,
    store: LatticeStoreTarget,
) -> None:
    """Delete a tag from the lattice's artifact store (and the bytes, once no tag points to them)."""
    from wasmlattice.artifacts.lattice_store import is_lattice_ref
    from wasmlattice.artifacts.source import ArtifactError

    if not is_lattice_ref(ref):
        fail_as(output, f"{ref!r} is not a lattice:// reference (lattice://NAME:TAG or NAME@sha256:...)", 2)
    try:
        result = aio.run(_with_lattice_store(store, lambda s: s.delete(ref)))
    except ArtifactError as e:
        fail_as(output, str(e))
    if output is OutputFormat.json:
        print_json(
            {
                "success": True,
                "digest": result.digest,
                "untagged": result.untagged,
                "blob_removed": result.blob_removed,
            }
        )
        return
    bytes_note = (
        f"removed its bytes {result.digest} (no tag points to them any more)"
        if result.blob_removed
        else f"the bytes {result.digest} were not removed (another tag points to them, or they were gone)"
    )
    typer.echo(f"Deleted {', '.join('lattice://' + t for t in result.untagged)}; {bytes_note}")
