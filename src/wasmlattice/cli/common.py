"""Helpers shared by the lattice commands: options, output, and one-shot control-interface calls."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import os
import sys
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import typer

T = TypeVar("T")

DEFAULT_CLI_NATS_URL = "nats://127.0.0.1:4222"
STATE_FILE = "up.json"
# The NATS user nkey seed of the embedded server `up` starts, in its data dir (mode 0600).
NATS_CREDS_FILE = "nats-user.nk"


class OutputFormat(StrEnum):
    """How lattice commands print their results."""

    text = "text"
    json = "json"


NatsUrlOpt = Annotated[
    str, typer.Option("--nats-url", envvar="WASMLATTICE_NATS_URL", help="NATS server URL of the lattice.")
]
# Our variable first, then the wasmCloud host's name for the same setting
# (docs/protocol.md#host-settings), so an environment written for `wasmcloud`/`wash` works unchanged.
LatticeOpt = Annotated[
    str,
    typer.Option(
        "--lattice", "-x", envvar=["WASMLATTICE_LATTICE", "WASMCLOUD_LATTICE"], help="Lattice name."
    ),
]
OutputOpt = Annotated[OutputFormat, typer.Option("--output", "-o", help="text or json.")]
# Our variable first, then the wasmCloud host's name (docs/protocol.md#host-settings).
NatsCredsOpt = Annotated[
    Path | None,
    typer.Option(
        "--nats-creds",
        envvar=["WASMLATTICE_NATS_CREDS", "WASMCLOUD_NATS_CREDS"],
        help="NATS credentials: a .creds file, or a user nkey seed file like the one `up` writes.",
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="WASMLATTICE_DATA_DIR",
        help="Data dir of the `wasmlattice up` whose NATS credentials to use (default: `up`'s).",
        show_default=False,
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", "-t", min=0.05, envvar="WASMLATTICE_TIMEOUT", help="Request timeout, seconds."),
]
LabelOpt = Annotated[
    list[str] | None,
    typer.Option("--label", "-l", metavar="KEY=VALUE", help="Host label KEY=VALUE; repeatable."),
]


def option_group(fn: Callable[..., T]) -> Callable[..., T]:
    """Give Typer each field of `fn`'s dataclass parameters as an option, and `fn` the dataclass.

    A dataclass whose fields are annotated options (`LatticeTarget`) declares a block of options
    once; a command takes it as one parameter, and its fields appear where that parameter stands,
    with the same names, flags, defaults and help as if they were written out. Commands take it
    keyword-only (`*, lat: LatticeTarget`) so that it needs no default of its own.
    """
    sig = inspect.signature(fn, eval_str=True)
    groups: dict[str, Any] = {}
    params: list[inspect.Parameter] = []
    for param in sig.parameters.values():
        cls = param.annotation
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            params.append(param)
            continue
        groups[param.name] = cls
        hints = typing.get_type_hints(cls, include_extras=True)
        params += [
            inspect.Parameter(f.name, param.kind, annotation=hints[f.name], default=f.default)
            for f in dataclasses.fields(cls)
        ]

    @functools.wraps(fn)
    def command(**kwargs: Any) -> T:
        for name, cls in groups.items():
            kwargs[name] = cls(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls)})
        return fn(**kwargs)

    # Typer reads the signature and the annotations; both must show the expanded options.
    command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": sig.return_annotation}
    return command


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one `error: ...` line on stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def fail_as(output: OutputFormat, message: str, code: int = 1) -> NoReturn:
    """`fail`, and with `-o json` first `{"success": false, "error": ...}` on stdout for scripts."""
    if output is OutputFormat.json:
        print_json({"success": False, "error": message})
    fail(message, code)


def print_json(data: Any) -> None:
    """Print `data` as indented JSON on stdout."""
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


def console() -> Any:
    from rich.console import Console

    # Wide enough that IDs (56-char host keys) are not wrapped when stdout is not a terminal.
    return Console(width=None if sys.stdout.isatty() else 200)


def default_up_dir() -> Path:
    """Where `wasmlattice up` keeps its state, NATS data and credentials unless given --data-dir."""
    from wasmlattice.nats_server import default_data_dir

    return default_data_dir().parent


def read_up_state(data_dir: Path) -> dict[str, Any] | None:
    """The state file of `up` in `data_dir` (what it started, where), or None if there is none."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _server_key(url: str) -> tuple[str, int]:
    """(host, port) of a NATS URL, with every loopback name as one host."""
    parts = urlsplit(url.strip() if "://" in url else f"nats://{url.strip()}")
    host = (parts.hostname or "127.0.0.1").lower()
    if host in ("localhost", "::1") or host.startswith("127."):
        host = "loopback"
    try:
        port = parts.port or 4222
    except ValueError:
        port = -1
    return host, port


def up_credentials(nats_url: str, data_dir: Path | None) -> Path | None:
    """The credentials file of the `up` in `data_dir` (default: `up`'s), if its NATS is at `nats_url`.

    Only the server that `up` started gets them: the state file names its URL and the file.
    """
    ddir = (data_dir or default_up_dir()).resolve()
    state = read_up_state(ddir)
    if state is None or not isinstance(state.get("nats_creds"), str) or not state.get("nats_url"):
        return None
    theirs = {_server_key(u) for u in str(state["nats_url"]).split(",") if u.strip()}
    if not any(_server_key(u) in theirs for u in nats_url.split(",") if u.strip()):
        return None
    creds = Path(state["nats_creds"])
    return creds if creds.is_file() else None


def cli_nats_options(
    nats_url: str, timeout: float, creds: Path | None = None, data_dir: Path | None = None
) -> Any:
    """NATS options of the lattice commands.

    Credentials: `creds` (--nats-creds / WASMLATTICE_NATS_CREDS / WASMCLOUD_NATS_CREDS), else
    WASMLATTICE_NATS_JWT + _SEED, else those of the `up` in `data_dir` when `nats_url` is its NATS.
    TLS comes from the WASMLATTICE_NATS_TLS* variables (set them once for a secured NATS).
    """
    from wasmlattice.protocol.connection import NatsOptions

    env = os.environ

    def path(name: str) -> Path | None:
        value = env.get(name)
        return Path(value) if value else None

    creds = creds or path("WASMLATTICE_NATS_CREDS") or path("WASMCLOUD_NATS_CREDS")
    jwt = env.get("WASMLATTICE_NATS_JWT") or None
    seed = env.get("WASMLATTICE_NATS_SEED") or None
    if creds is None and jwt is None and seed is None:
        creds = up_credentials(nats_url, data_dir)
    return NatsOptions(
        url=nats_url,
        name="wasmlattice-cli",
        connect_timeout=min(timeout, 2.0),
        creds_file=creds,
        jwt=jwt,
        seed=seed,
        tls_required=env.get("WASMLATTICE_NATS_TLS", "").lower() in ("1", "true", "yes"),
        tls_ca=path("WASMLATTICE_NATS_TLS_CA"),
        tls_cert=path("WASMLATTICE_NATS_TLS_CERT"),
        tls_key=path("WASMLATTICE_NATS_TLS_KEY"),
    )


def nats_call(nats_url: str, timeout: float, fn: Callable[[Any], Awaitable[T]], options: Any = None) -> T:
    """Connect to NATS, run `fn(connection)`, disconnect; a connection failure becomes one error line.

    `options` (a `NatsOptions`) replaces the WASMLATTICE_NATS_* ones, e.g. those a host was started with.
    """
    from wasmlattice.protocol.connection import NatsConnectionError, connect

    # The client's own close looks like a disconnect to the connection logger; not worth a warning.
    logging.getLogger("wasmlattice.protocol.connection").setLevel(logging.ERROR)

    async def go() -> T:
        nc = await connect(options if options is not None else cli_nats_options(nats_url, timeout))
        try:
            return await fn(nc)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    try:
        return asyncio.run(go())
    except NatsConnectionError as e:
        fail(str(e))


def ctl_call(
    nats_url: str, lattice: str, timeout: float, fn: Callable[[Any], Awaitable[T]], options: Any = None
) -> T:
    """Connect to NATS, run `fn(CtlClient)`, disconnect; every failure becomes one error line."""
    from pydantic import ValidationError

    from wasmlattice.client.ctl import CtlClient, CtlError
    from wasmlattice.protocol.wire import describe_validation_error

    try:
        return nats_call(nats_url, timeout, lambda nc: fn(CtlClient(nc, lattice, timeout=timeout)), options)
    except CtlError as e:
        fail(e.message)
    except ValidationError as e:  # a request the host would refuse (protocol/limits.py): say why, once
        fail(describe_validation_error(e.title, e))
    except ValueError as e:  # invalid subject tokens (host IDs, config names) and payload errors
        fail(str(e))


@dataclass(frozen=True)
class LatticeTarget:
    """The options of every lattice command: where the lattice is, how to print, how long to wait."""

    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL
    lattice: LatticeOpt = "default"
    output: OutputOpt = OutputFormat.text
    timeout: TimeoutOpt = 2.0
    nats_creds: NatsCredsOpt = None
    data_dir: DataDirOpt = None

    def nats_options(self, timeout: float | None = None) -> Any:
        """`cli_nats_options` for this target (its credentials, or those of its `up`)."""
        t = self.timeout if timeout is None else timeout
        return cli_nats_options(self.nats_url, t, self.nats_creds, self.data_dir)

    def ctl(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """`ctl_call` on this lattice."""
        return ctl_call(self.nats_url, self.lattice, self.timeout, fn, options=self.nats_options())


@dataclass(frozen=True)
class SlowLatticeTarget(LatticeTarget):
    """`LatticeTarget` of the app and secret commands: the app manager and JetStream get 5 s."""

    timeout: TimeoutOpt = 5.0


def ack(output: OutputFormat, message: str, fallback: str) -> None:
    """Report a successful mutation: the host's message (or `fallback`), as text or JSON."""
    if output is OutputFormat.json:
        print_json({"success": True, "message": message})
    else:
        typer.echo(message or fallback)


def parse_kv(items: list[str], what: str) -> dict[str, str]:
    from wasmlattice.client.ctl import parse_key_values

    try:
        return parse_key_values(items, what)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
