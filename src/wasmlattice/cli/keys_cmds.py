"""Signing keys: `wasmlattice keys gen account|component` (docs/claims.md).

An account key (`A…`, seed `SA…`) issues claims; a component key (`M…`, seed `SM…`) is a signed
component's identity (its `public_key` in events and `CLAIMS_<key>` in the lattice). Seeds are
written readable by their owner only, and never over an existing file unless `--force`.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wasmlattice.cli.app import app, command_group
from wasmlattice.cli.common import fail

if TYPE_CHECKING:
    from wasmlattice.artifacts.nkey import KeyKind, SigningKey

keys_app = command_group("Make the nkeys that sign components: accounts (issuers) and components (subjects).")
app.add_typer(keys_app, name="keys")

# A seed file holds one line; anything much longer is not a seed file.
MAX_SEED_FILE_BYTES = 4096


class KeyRole(StrEnum):
    """Which kind of key `keys gen` makes."""

    account = "account"
    component = "component"
    module = "module"


def key_kind(role: KeyRole) -> KeyKind:
    """The nkey kind of a role (`component` and `module` are the same `M…` key)."""
    from wasmlattice.artifacts.nkey import KeyKind

    return KeyKind.ACCOUNT if role is KeyRole.account else KeyKind.MODULE


def write_seed(path: Path, seed: str, *, force: bool, option: str) -> None:
    """Write `seed` to `path` with mode 0600; exit with an error if it exists (unless `force`)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        fail(f"{option}: {path} already exists; a seed is not replaced without --force")
    except OSError as e:
        fail(f"{option}: cannot write {path}: {e.strerror or e}")
    with os.fdopen(fd, "w") as f:
        f.write(seed + "\n")
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that existed (--force)


def read_key(value: str, kind: KeyKind, option: str) -> SigningKey:
    """The key pair of a seed given inline (`S…`) or as a file holding one; exit 2 if unusable."""
    from wasmlattice.artifacts.nkey import SEED_CHARS, NkeyError, from_seed

    text = value.strip()
    where = "the seed"
    if not (len(text) == SEED_CHARS and text.startswith("S") and text.isalnum()):
        path = Path(value)
        try:
            if path.stat().st_size > MAX_SEED_FILE_BYTES:
                fail(f"{option}: {path} is too large for a seed file ({MAX_SEED_FILE_BYTES} bytes)", code=2)
            text = path.read_text().strip()
        except FileNotFoundError:
            fail(f"{option}: {value!r} is neither a seed (S…) nor an existing file", code=2)
        except (OSError, UnicodeDecodeError) as e:
            fail(f"{option}: cannot read {path}: {getattr(e, 'strerror', None) or e}", code=2)
        where = str(path)
    try:
        return from_seed(text, kind)
    except NkeyError as e:
        fail(f"{option}: {where}: {e}", code=2)


@keys_app.command("gen")
def keys_gen(
    role: Annotated[KeyRole, typer.Argument(help="account (issuer, A…) or component (subject, M…).")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the seed to this file (mode 0600), not to stdout."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing seed file.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make a new signing key; print its public key (and its seed, unless written to a file)."""
    from wasmlattice.artifacts.nkey import generate

    key = generate(key_kind(role))
    if output is not None:
        write_seed(output, key.seed, force=force, option="--output")
    if as_json:
        out: dict[str, str] = {"public_key": key.public_key}
        out.update({"seed_file": str(output)} if output is not None else {"seed": key.seed})
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"Public key: {key.public_key}")
    if output is not None:
        typer.echo(f"Seed:       written to {output} (keep it secret)")
    else:
        typer.echo(f"Seed:       {key.seed}")
