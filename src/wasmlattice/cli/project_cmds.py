"""`wasmlattice new` and `wasmlattice build`: start a component project and build it (docs/dev.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wasmlattice.cli.app import app
from wasmlattice.project.build import BuildError, build_project, project_roots
from wasmlattice.project.scaffold import new_project, templates
from wasmlattice.runtime.component import ComponentError


@app.command()
def new(
    name: Annotated[str, typer.Argument(help="The project's name; also its folder unless --path.")],
    template: Annotated[
        str, typer.Option("--template", "-t", help="python-http, python-kv, ... (--list shows them).")
    ] = "python-http",
    path: Annotated[
        Path | None, typer.Option(help="The folder to write (absent or empty); default ./NAME.")
    ] = None,
    list_templates: Annotated[bool, typer.Option("--list", help="List the templates and exit.")] = False,
) -> None:
    """Write a new component project from a template: sources, wasmlattice.toml and wadm.yaml."""
    if list_templates:
        for t, desc in templates().items():
            typer.echo(f"{t:18} {desc}")
        return
    dest = path if path is not None else Path(name)
    try:
        written = new_project(name, template, dest)
    except BuildError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"created {dest} from template {template}:")
    for f in written:
        typer.echo(f"  {f.relative_to(dest)}")
    typer.echo(f"next: cd {dest} && wasmlattice build")


@app.command()
def build(
    path: Annotated[Path, typer.Option(help="The project folder (with wasmlattice.toml).")] = Path("."),
) -> None:
    """Build the project's component(s) (componentize-py, or jco for JavaScript); list imports and exports.

    A folder without wasmlattice.toml builds each direct subfolder that has one.
    """
    from wasmlattice.runtime.component import (
        CompileCache,
        default_cache_dir,
        inspect_component,
        read_component_file,
    )
    from wasmlattice.runtime.engine import HostEngine

    for root in project_roots(path):
        try:
            result = build_project(root, note=lambda m: typer.echo(m, err=True))
        except BuildError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        try:
            data = read_component_file(result.output)
            engine = HostEngine()
            comp = CompileCache(default_cache_dir()).load(data, engine, str(result.output))
        except ComponentError as e:
            typer.echo(f"error: the build wrote {result.output} but it does not load: {e}", err=True)
            raise typer.Exit(1) from None
        info = inspect_component(comp, engine)
        cwd = Path.cwd().resolve()
        out = result.output.relative_to(cwd) if result.output.is_relative_to(cwd) else result.output
        typer.echo(f"built {out} ({len(data) / 1e6:.1f} MB, {result.tool} {result.seconds:.1f} s)")
        for title, items in (("imports", info.imports), ("exports", info.exports)):
            typer.echo(f"{title}:")
            for it in items:
                typer.echo(f"  {it.name}")
