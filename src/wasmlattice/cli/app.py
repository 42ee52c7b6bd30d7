"""The Typer application that every `wasmlattice` command registers on."""

from __future__ import annotations

import logging
import sys

import typer

app = typer.Typer(
    name="wasmlattice",
    help="A distributed WebAssembly component host (WASI 0.2, wasmCloud-compatible).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
