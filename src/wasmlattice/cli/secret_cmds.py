"""Secret commands: store encrypted secrets for components (`wasmlattice secret put/del/keygen`).

`put` encrypts the value with the secrets key (see `wasmlattice.capabilities.secrets`) and writes
it to the lattice's `SECRETS_<lattice>` KV bucket, and writes the reference `SECRET_<name>` to
`CONFIGDATA_<lattice>`; a component scaled with `SECRET_<name>` in its config list then reads it
through `wasmcloud:secrets`. The commands talk to JetStream directly: no host needs to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from wasmlattice.cli.app import app
from wasmlattice.cli.common import (
    LatticeTarget,
    OutputFormat,
    SlowLatticeTarget,
    fail,
    option_group,
    print_json,
)

T = TypeVar("T")

secret_app = typer.Typer(
    help="Store and delete encrypted secrets for components (wasmcloud:secrets).", no_args_is_help=True
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
            return await asyncio.wait_for(fn(jetstream(nc, opts)), timeout)
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
    key_file: KeyFileOpt = None,
    *,
    lat: SlowLatticeTarget,
) -> None:
    """Encrypt and store secret NAME, and its reference SECRET_NAME for scale commands."""
    from wasmlattice.capabilities.secrets import put_secret, reference_name

    _check_name(name)
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
    revision = _js_call(lat, lambda js: put_secret(js, lat.lattice, name, secret, key))
    ref = reference_name(name)
    if lat.output is OutputFormat.json:
        print_json({"success": True, "name": name, "reference": ref, "version": str(revision)})
    else:
        typer.echo(f"Secret '{name}' stored; scale components with config '{ref}' to give it to them")


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
