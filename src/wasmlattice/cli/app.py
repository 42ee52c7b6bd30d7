"""The Typer application that every `wasmlattice` command registers on."""

from __future__ import annotations

import logging
import sys

import typer

# Plain (Click-style) help and usage errors rather than Rich panels: at 80 columns Rich's option
# table squeezed the help text into a narrow column and showed every flag with a `<bool>` type.
app = typer.Typer(
    name="wasmlattice",
    help="A distributed WebAssembly component host (WASI 0.2, wasmCloud-compatible).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def command_group(help: str) -> typer.Typer:
    """A group of `wasmlattice` subcommands (`get`, `scale`, ...), with the root's help style."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
