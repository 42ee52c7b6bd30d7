"""Secret commands: store encrypted secrets for components and say who may read them
(`wasmlattice secret put/allow/deny/list/del/keygen`).

`put` encrypts the value and its grants (the component IDs, or component signing keys `M…`, given
with `--allow`; docs/claims.md) with the secrets
key (see `wasmlattice.capabilities.secrets`) and writes it to the lattice's `SECRETS_<lattice>` KV
bucket, and writes the reference `SECRET_<name>` to `CONFIGDATA_<lattice>`; a granted component
scaled with `SECRET_<name>` in its config list then reads it through `wasmcloud:secrets`. Any
other component gets an error naming the secret. `allow` and `deny` change the grants (they need
the key too). The commands talk to JetStream directly: no host needs to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from wasmlattice.aio import wait_for
from wasmlattice.cli.app import app, command_group
from wasmlattice.cli.common import (
    LatticeTarget,
    OutputFormat,
    SlowLatticeTarget,
    fail,
    option_group,
    print_json,
)

T = TypeVar("T")

secret_app = command_group(
    "Store encrypted secrets for components (wasmcloud:secrets) and grant them to the components "
    "that may read them. A component reads a secret only if it is granted (--allow, `secret allow`); "
    "naming SECRET_<name> in its config grants nothing."
)
app.add_typer(secret_app, name="secret")

KeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="File holding the secrets key (base64). Default: $WASMLATTICE_SECRETS_KEY, else the file "
        "$WASMLATTICE_SECRETS_KEY_FILE, else $XDG_DATA_HOME/wasmlattice/secrets.key.",
        show_default=False,
    ),
]


def _js_call(lat: LatticeTarget, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Connect to NATS, run `fn(jetstream)`, disconnect; every failure becomes one error line."""
    from wasmlattice.protocol.connection import NatsConnectionError, connect, jetstream
    from wasmlattice.protocol.kv import KvError

    logging.getLogger("wasmlattice.protocol.connection").setLevel(logging.ERROR)
    timeout = lat.timeout
    opts = lat.nats_options()

    async def go() -> T:
        nc = await connect(opts)
        try:
            return await wait_for(fn(jetstream(nc, opts)), timeout)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    try:
        return asyncio.run(go())
    except NatsConnectionError as e:
        fail(str(e))
    except KvError as e:
        fail(str(e))
    except TimeoutError:
        fail(f"JetStream did not answer within {timeout:g}s (is JetStream enabled on {lat.nats_url}?)")


def _load_key(key_file: Path | None) -> bytes:
    from wasmlattice.capabilities.secrets import SecretsKeyError, load_key

    try:
        return load_key(key_file)
    except SecretsKeyError as e:
        fail(str(e))


def _check_grants(ids: list[str], hint: str) -> list[str]:
    from wasmlattice.capabilities.secrets import SecretGrants

    try:
        SecretGrants.of(ids)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=hint) from None
    return ids


def _grants_text(grants: frozenset[str]) -> str:
    return ", ".join(sorted(grants)) if grants else "no component"


def _check_name(name: str) -> str:
    from wasmlattice.capabilities.secrets import check_name

    try:
        return check_name(name)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="NAME") from None


@secret_app.command("put")
@option_group
def secret_put(
    name: Annotated[str, typer.Argument(help="Secret name (what the component passes to store.get).")],
    value: Annotated[
        str | None,
        typer.Argument(help="The value, as text. Prefer --file: a command line is visible to other users."),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the value from this file (stored as bytes).")
    ] = None,
    text: Annotated[
        bool, typer.Option("--text", help="With --file: store the file's content as text (UTF-8).")
    ] = False,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            "-a",
            metavar="COMPONENT_ID|KEY",
            help="A component ID, or a component signing key (M..., the subject of its claims), that may "
            "read the secret (repeatable). Given, it replaces the grants; omitted, a secret stored before "
            "keeps its grants and a new one is granted to no component.",
            show_default=False,
        ),
    ] = None,
    key_file: KeyFileOpt = None,
    *,
    lat: SlowLatticeTarget,
) -> None:
    """Encrypt and store secret NAME with its grants, and its reference SECRET_NAME for scale commands."""
    from wasmlattice.capabilities.secrets import put_secret, reference_name

    _check_name(name)
    if allow is not None:
        _check_grants(allow, "--allow")
    if (value is None) == (file is None):
        raise typer.BadParameter("give the value either as an argument or with --file, not both")
    secret: str | bytes
    if file is not None:
        try:
            data = file.read_bytes()
        except OSError as e:
            raise typer.BadParameter(f"cannot read {file}: {e.strerror or e}", param_hint="--file") from None
        if text:
            try:
                secret = data.decode()
            except UnicodeDecodeError:
                raise typer.BadParameter(f"{file} is not UTF-8 text", param_hint="--text") from None
        else:
            secret = data
    else:
        assert value is not None
        secret = value
    key = _load_key(key_file)
    revision, grants = _js_call(lat, lambda js: put_secret(js, lat.lattice, name, secret, key, allow))
    ref = reference_name(name)
    allowed = sorted(grants.all)
    if lat.output is OutputFormat.json:
        print_json(
            {"success": True, "name": name, "reference": ref, "version": str(revision), "allowed": allowed}
        )
    elif allowed:
        typer.echo(
            f"Secret '{name}' stored for {_grants_text(grants.all)}; scale them with config "
            f"'{ref}' to give it to them"
        )
    else:
        typer.echo(
            f"Secret '{name}' stored, granted to no component yet: grant it with "
            f"`wasmlattice secret allow {name} COMPONENT_ID`, then scale with config '{ref}'"
        )


def _change(name: str, allow: list[str], deny: list[str], key_file: Path | None, lat: Any) -> None:
    from wasmlattice.capabilities.secrets import SecretResolveError, change_grants

    _check_name(name)
    key = _load_key(key_file)

    async def go(js: Any) -> Any:
        try:
            return await change_grants(js, lat.lattice, name, key, allow=allow, deny=deny)
        except SecretResolveError as e:
            return e

    result = _js_call(lat, go)
    if isinstance(result, SecretResolveError):
        fail(str(result))
    if lat.output is OutputFormat.json:
        print_json({"success": True, "name": name, "allowed": sorted(result.all)})
    else:
        typer.echo(f"Secret '{name}' is granted to {_grants_text(result.all)}")
        typer.echo("Components already running keep what they were given until they are scaled again.")


ComponentsArg = Annotated[
    list[str],
    typer.Argument(
        metavar="COMPONENT_ID|KEY...",
        help="Component IDs, or component signing keys (M..., the subject of their claims).",
        show_default=False,
    ),
]


@secret_app.command("allow")
@option_group
def secret_allow(
    name: Annotated[str, typer.Argument(help="Secret name.")],
    components: ComponentsArg,
    key_file: KeyFileOpt = None,
    *,
    lat: SlowLatticeTarget,
) -> None:
    """Grant secret NAME to these component IDs or signing keys (needs the secrets key)."""
    _change(name, _check_grants(components, "COMPONENT_ID"), [], key_file, lat)


@secret_app.command("deny")
@option_group
def secret_deny(
    name: Annotated[str, typer.Argument(help="Secret name.")],
    components: ComponentsArg,
    key_file: KeyFileOpt = None,
    *,
    lat: SlowLatticeTarget,
) -> None:
    """Take secret NAME from these components; ones running keep their copy until scaled again."""
    _change(name, [], _check_grants(components, "COMPONENT_ID"), key_file, lat)


@secret_app.command("list")
@option_group
def secret_list(
    key_file: KeyFileOpt = None,
    *,
    lat: SlowLatticeTarget,
) -> None:
    """List the lattice's secrets and who may read them (never their values)."""
    from wasmlattice.capabilities.secrets import list_secrets

    key = _load_key(key_file)
    found = _js_call(lat, lambda js: list_secrets(js, lat.lattice, key))
    if lat.output is OutputFormat.json:
        print_json(
            {
                "success": True,
                "secrets": [
                    {
                        "name": s.name,
                        "version": str(s.version),
                        "allowed": None if s.grants is None else sorted(s.grants.all),
                        "problem": s.problem,
                    }
                    for s in found
                ],
            }
        )
        return
    if not found:
        typer.echo("No secrets")
    for s in found:
        if s.grants is None:
            typer.echo(f"{s.name}  (version {s.version}): {s.problem}")
        else:
            note = f" ({s.problem})" if s.problem else ""
            typer.echo(f"{s.name}  (version {s.version}): {_grants_text(s.grants.all)}{note}")


@secret_app.command("del")
@option_group
def secret_del(
    name: Annotated[str, typer.Argument(help="Secret name.")],
    *,
    lat: SlowLatticeTarget,
) -> None:
    """Delete secret NAME and its reference (idempotent); running components keep what they have."""
    from wasmlattice.capabilities.secrets import delete_secret

    _check_name(name)
    _js_call(lat, lambda js: delete_secret(js, lat.lattice, name))
    if lat.output is OutputFormat.json:
        print_json({"success": True, "name": name})
    else:
        typer.echo(f"Secret '{name}' deleted")


@secret_app.command("keygen")
def secret_keygen(
    key_file: KeyFileOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key file.")] = False,
) -> None:
    """Create a new random secrets key file (mode 0600); copy it to every host of the lattice."""
    from wasmlattice.capabilities.secrets import SecretsKeyError, generate_key_file, key_file_path

    path = key_file or key_file_path()
    try:
        generate_key_file(path, force=force)
    except SecretsKeyError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write {path}: {e.strerror or e}")
    typer.echo(f"Secrets key written to {path}")
