"""`wasmlattice replay`: re-run a recorded invocation locally and report where it diverges."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from wasmlattice.cli.app import app, setup_logging
from wasmlattice.cli.common import parse_kv

# Exit codes: 0 identical, 1 diverged, 2 the recording or component could not be used.
DIVERGED = 1
UNUSABLE = 2


@app.command()
def replay(
    recording: Annotated[
        Path, typer.Argument(help="A recording written by `run --record` or a host's --record-dir.")
    ],
    wasm: Annotated[
        Path | None,
        typer.Option(
            "--wasm", metavar="NEW.wasm", help="Replay against this component instead of the recorded one."
        ),
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config",
            metavar="KEY=VALUE",
            help="Answer redacted config (and environment) KEY with VALUE instead of <redacted>; repeatable.",
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Deadline of the replayed invocation, in seconds.")] = 30.0,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
) -> None:
    """Replay a recorded invocation with no lattice, network or backend; exit 1 where it diverges."""
    from wasmlattice.replay.recording import load
    from wasmlattice.replay.replayer import replay as run_replay
    from wasmlattice.replay.values import RecordingError
    from wasmlattice.runtime.component import ComponentError

    setup_logging(log_level)
    if log_level.lower() != "debug":
        # The ingress logs a replayed trap as it would a served one; the report says it instead.
        logging.getLogger("wasmlattice.http").setLevel(logging.CRITICAL)
    overrides = parse_kv(config or [], "--config")
    try:
        rec = load(recording)
        report = run_replay(rec, None if wasm is None else str(wasm), overrides, timeout)
    except (RecordingError, ComponentError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(UNUSABLE) from None
    d = report.divergence
    if output == "json":
        doc = {
            "identical": d is None,
            "calls_replayed": report.calls,
            "divergence": None if d is None else {"where": d.where, "expected": d.expected, "got": d.got},
            "outcome": report.outcome.to_json(),
            "notes": report.notes,
        }
        typer.echo(json.dumps(doc, indent=2))
    else:
        for note in report.notes:
            typer.echo(f"note: {note}", err=True)
        if d is None:
            typer.echo(f"identical: {report.calls} host calls and the response match the recording")
        else:
            typer.echo(d.text())
    raise typer.Exit(0 if d is None else DIVERGED)
