"""`wasmlattice plugins`: the capability plugins installed where this command runs (docs/plugins.md)."""

from __future__ import annotations

import json
import logging
from typing import Annotated

import typer

from wasmlattice.cli.app import app


@app.command()
def plugins(
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
    wit: Annotated[
        str | None,
        typer.Option("--wit", metavar="NAME", help="Print the WIT of plugin NAME (to build guests against)."),
    ] = None,
) -> None:
    """List installed capability plugins: name, package, version, interfaces, status.

    A host started from the same Python environment loads the same plugins; broken ones are
    skipped there, with the reason shown here.
    """
    if output not in ("text", "json"):
        raise typer.BadParameter(f"expected text or json, got {output!r}", param_hint="--output")
    from wasmlattice.capabilities import catalog
    from wasmlattice.capabilities import plugins as plugin_loader

    # Each broken plugin's reason is in its row; the loader's log warnings would repeat it.
    logging.getLogger(plugin_loader.log.name).setLevel(logging.ERROR)
    found = catalog.plugins()
    if wit is not None:
        specs = {p.spec.name: p.spec for p in found if p.spec is not None}
        spec = specs.get(wit)
        if spec is None:
            known = ", ".join(sorted(specs)) or "none"
            typer.echo(f"error: no working plugin named {wit!r} (installed: {known})", err=True)
            raise typer.Exit(2)
        if not spec.wit:
            typer.echo(f"error: plugin {wit!r} ships no WIT", err=True)
            raise typer.Exit(2)
        typer.echo(spec.wit.rstrip("\n"))
        return
    if output == "json":
        typer.echo(json.dumps([p.to_json() for p in found], indent=2))
        return
    if not found:
        typer.echo(f"no capability plugins installed (entry point group `{plugin_loader.ENTRY_POINT_GROUP}`)")
        return
    rows = [
        (
            d["name"],
            f"{d['package']} {d['version']}",
            d["provider"] or "-",
            ", ".join(d["interfaces"]) or "-",
            d["status"],
        )
        for d in (p.to_json() for p in found)
    ]
    head = ("NAME", "PACKAGE", "PROVIDER", "INTERFACES", "STATUS")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    for r in [head, *rows]:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
