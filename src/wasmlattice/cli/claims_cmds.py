"""Signing components: `wasmlattice claims sign` and `claims inspect` (docs/claims.md).

`sign` embeds wasmCloud claims (a JWT signed by an account key) in a component's `wasmcloud_jwt`
section; `inspect` shows them and whether the signature and the module hash hold.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from wasmlattice.cli.app import app, command_group
from wasmlattice.cli.common import fail
from wasmlattice.cli.keys_cmds import read_key, write_seed

claims_app = command_group("Sign components with wasmCloud claims, and inspect the claims of a component.")
app.add_typer(claims_app, name="claims")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = re.compile(r"^(\d{1,9})([smhdwy])$")
# The largest component `claims` reads (the host's own limit is `--max-component-size`).
MAX_COMPONENT_BYTES = 1 << 30


def parse_when(text: str, now: float, option: str) -> int:
    """An epoch time from a duration from now (`30d`, `12h`, `90m`, `2w`, `1y`) or a date
    (`2026-01-31`, `2026-01-31T12:00:00Z`); exit 2 naming the option if it is neither."""
    text = text.strip()
    match = _DURATION.match(text)
    if match:
        return int(now) + int(match.group(1)) * _UNITS[match.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a duration (30d, 12h, 90m, 2w, 1y) nor a date (2026-01-31, "
            "2026-01-31T12:00:00Z)",
            param_hint=option,
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = int(when.timestamp())
    if seconds < 0:
        raise typer.BadParameter(f"{text!r} is before 1970", param_hint=option)
    return seconds


def _read_wasm(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_COMPONENT_BYTES:
            fail(f"{what}: {path} has {size} bytes; at most {MAX_COMPONENT_BYTES} are read", code=2)
        return path.read_bytes()
    except FileNotFoundError:
        fail(f"{what}: {path} does not exist", code=2)
    except OSError as e:
        fail(f"{what}: cannot read {path}: {e.strerror or e}", code=2)


def _module_seed_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.module.nk")


@claims_app.command("sign")
def claims_sign(
    file: Annotated[Path, typer.Argument(help="The component (.wasm) to sign.")],
    issuer: Annotated[
        str,
        typer.Option(
            "--issuer", "-i", help="Account seed (SA…), or a file holding it: who vouches for the component."
        ),
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Component name (inventory `name`).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the signed component.")],
    subject: Annotated[
        str | None,
        typer.Option(
            "--subject",
            "-s",
            help="Component seed (SM…) or a file holding it: the component's identity. Omitted, a new "
            "one is made and its seed written next to the output (OUT-STEM.module.nk).",
        ),
    ] = None,
    ver: Annotated[str | None, typer.Option("--ver", help="Human version, e.g. 1.2.0.")] = None,
    rev: Annotated[int | None, typer.Option("--rev", help="Revision number (inventory `revision`).")] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", metavar="TAG", help="A tag (repeatable).")
    ] = None,
    call_alias: Annotated[str | None, typer.Option("--call-alias", help="A call alias.")] = None,
    expires: Annotated[
        str | None,
        typer.Option("--expires", "-x", help="When the claims expire: a duration (30d, 12h) or a date."),
    ] = None,
    not_before: Annotated[
        str | None,
        typer.Option("--not-before", "-b", help="When the claims become valid: a duration or a date."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing component seed file (without --subject).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Embed signed claims in a component; an existing signature is replaced."""
    from wasmlattice.artifacts.claims import ClaimsError, new_claims, sign_component
    from wasmlattice.artifacts.nkey import KeyKind, generate

    now = time.time()
    exp = parse_when(expires, now, "--expires") if expires is not None else None
    nbf = parse_when(not_before, now, "--not-before") if not_before is not None else None
    account = read_key(issuer, KeyKind.ACCOUNT, "--issuer")
    module = generate(KeyKind.MODULE) if subject is None else read_key(subject, KeyKind.MODULE, "--subject")
    wasm = _read_wasm(file, "FILE")
    try:
        claims = new_claims(
            issuer=account.public_key,
            subject=module.public_key,
            name=name,
            module_hash="",
            version=ver,
            revision=rev,
            tags=tag or [],
            call_alias=call_alias,
            expires=exp,
            not_before=nbf,
            issued_at=int(now),
        )
        signed = sign_component(wasm, claims, account)
    except ClaimsError as e:
        fail(str(e))
    seed_file = None
    if subject is None:
        seed_file = _module_seed_path(output)
        write_seed(seed_file, module.seed, force=force, option="component seed")
    try:
        output.write_bytes(signed)
    except OSError as e:
        fail(f"--output: cannot write {output}: {e.strerror or e}")
    if as_json:
        out: dict[str, Any] = {
            "output": str(output),
            "issuer": account.public_key,
            "subject": module.public_key,
            "subject_seed_file": str(seed_file) if seed_file is not None else None,
        }
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"Signed {file} -> {output}")
    typer.echo(f"Issuer:  {account.public_key}")
    typer.echo(f"Subject: {module.public_key}")
    if seed_file is not None:
        typer.echo(f"Component seed written to {seed_file}: sign new versions with --subject {seed_file}")


def _human(seconds: int | None, never: str) -> str:
    from wasmlattice.artifacts.claims import epoch_text

    return never if seconds is None else epoch_text(seconds)


@claims_app.command("inspect")
def claims_inspect(
    file: Annotated[Path, typer.Argument(help="The component (.wasm).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a component's claims and whether its signature and module hash are valid.

    Exits 0 when the claims are valid, 1 when they are not or the component is unsigned.
    """
    from wasmlattice.artifacts.claims import ClaimsError, inspect

    wasm = _read_wasm(file, "FILE")
    try:
        found = inspect(wasm)
    except ClaimsError as e:
        fail(f"{file}: {e}")
    if found is None:
        if as_json:
            typer.echo(json.dumps({"signed": False}, indent=2))
        else:
            typer.echo(f"{file} is not signed (no wasmcloud_jwt section)")
        raise typer.Exit(1)
    c, meta = found.claims, found.claims.wascap
    problems = found.problems()
    if as_json:
        obj: dict[str, Any] = {
            "signed": True,
            "valid": not problems,
            "problems": problems,
            "section": found.section,
            "issuer": c.iss,
            "subject": c.sub,
            "name": meta.name if meta else None,
            "version": meta.ver if meta else None,
            "revision": meta.rev if meta else None,
            "tags": meta.tags if meta else None,
            "call_alias": meta.call_alias if meta else None,
            "issued_at": c.iat,
            "expires": c.exp,
            "not_before": c.nbf,
            "expired": found.expired,
            "not_yet_valid": found.not_yet_valid,
            "hash": meta.hash if meta else None,
            "computed_hash": found.computed_hash,
            "hash_valid": found.hash_valid,
            "signature_valid": found.signature_valid,
            "wascap_revision": c.wascap_revision,
            "claims": c.to_json_obj(),
        }
        typer.echo(json.dumps(obj, indent=2))
    else:
        rows = [
            ("Issuer", c.iss),
            ("Subject", c.sub),
            ("Name", (meta.name if meta else None) or "-"),
            ("Version", (meta.ver if meta else None) or "-"),
            ("Revision", str(meta.rev) if meta and meta.rev is not None else "-"),
            ("Tags", ", ".join(meta.tags) if meta and meta.tags else "-"),
            ("Call alias", (meta.call_alias if meta else None) or "-"),
            ("Issued", _human(c.iat, "-")),
            ("Expires", _human(c.exp, "never") + (" (EXPIRED)" if found.expired else "")),
            ("Not before", _human(c.nbf, "immediately") + (" (NOT YET)" if found.not_yet_valid else "")),
            ("Hash", f"{'valid' if found.hash_valid else 'INVALID'} ({found.computed_hash})"),
            ("Signature", "valid" if found.signature_valid else "INVALID"),
        ]
        for label, value in rows:
            typer.echo(f"{label + ':':<12} {value}")
        for problem in problems:
            typer.echo(f"problem: {problem}")
    if problems:
        raise typer.Exit(1)
