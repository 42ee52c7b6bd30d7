"""`wasmlattice logs`: the guest and host log lines of the whole lattice, from every host, over NATS.

Hosts publish each record on `wasmlattice.logs.<lattice>.<host>.<component>` and keep their last
records to answer `wasmlattice.logs_recent.<lattice>` (`lattice/logs.py`). Without `--follow` the
command asks every host for its recent lines and prints them, merged by time; with `--follow` it
prints those and then every new line until Ctrl-C. See docs/observability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Annotated, Any

import typer

from wasmlattice.aio import wait_for
from wasmlattice.cli.app import app
from wasmlattice.cli.common import LatticeTarget, OutputFormat, fail, nats_call, option_group

# How long to collect the hosts' `recent` replies at most (less with a shorter --timeout).
RECENT_WAIT_S = 1.0


def format_line(record: dict[str, Any]) -> str:
    """One record as a text line: time, level, host, component, stream, trace ID, message."""
    host = str(record.get("host_id") or "?")
    trace_id = record.get("trace_id") or "-"
    return (
        f"{record.get('time', '?')} {str(record.get('level', '?')).upper():<5} "
        f"{host[:12]} {record.get('component_id', '?')} [{record.get('stream', '?')}] "
        f"trace={trace_id} {record.get('message', '')}"
    )


def _emit(record: dict[str, Any], output: OutputFormat) -> None:
    line = json.dumps(record, separators=(",", ":")) if output is OutputFormat.json else format_line(record)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _key(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


async def _recent(
    nc: Any, lattice: str, component: str | None, host: str | None, tail: int, wait: float
) -> list[dict[str, Any]]:
    """Every host's recent records (those answering within `wait` s), merged by time, the last `tail`."""
    from wasmlattice.protocol import subjects as sj

    if tail <= 0:
        return []
    inbox = nc.new_inbox()
    replies: asyncio.Queue[Any] = asyncio.Queue()

    async def on_reply(msg: Any) -> None:
        await replies.put(msg)

    sub = await nc.subscribe(inbox, cb=on_reply)
    body = json.dumps({"component_id": component, "host_id": host, "limit": min(tail, 1000)}).encode()
    records: list[dict[str, Any]] = []
    try:
        await nc.publish(sj.logs_recent_subject(lattice), body, reply=inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (left := deadline - loop.time()) > 0:
            try:
                msg = await wait_for(replies.get(), left)
            except TimeoutError:
                break
            if (msg.headers or {}).get("Status") == "503":
                break  # no host is listening
            try:
                reply = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(reply, dict) and isinstance(reply.get("records"), list):
                records.extend(r for r in reply["records"] if isinstance(r, dict))
            elif isinstance(reply, dict) and reply.get("error"):
                typer.echo(f"warning: host {reply.get('host_id', '?')}: {reply['error']}", err=True)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    records.sort(key=lambda r: str(r.get("time", "")))
    return records[-tail:]


@app.command()
@option_group
def logs(
    component: Annotated[
        str | None, typer.Argument(help="Only this component's lines (default: every component and host).")
    ] = None,
    *,
    lat: LatticeTarget,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")
    ] = False,
    host: Annotated[str | None, typer.Option("--host", help="Only the lines of this host ID.")] = None,
    tail: Annotated[
        int, typer.Option("--tail", min=0, max=1000, help="Recent lines to print first, from every host.")
    ] = 50,
) -> None:
    """Print the log lines of the lattice's components and hosts (guest stdout, stderr, wasi:logging).

    Text lines show time, level, host, component, stream and trace ID; `-o json` prints one JSON
    record per line.
    """
    from wasmlattice.protocol import subjects as sj
    from wasmlattice.protocol.limits import LimitError

    try:
        subject = sj.logs_filter(lat.lattice, host, component)
    except LimitError as e:
        fail(str(e))
    wait = min(RECENT_WAIT_S, lat.timeout)

    async def run(nc: Any) -> None:
        if not follow:
            for record in await _recent(nc, lat.lattice, component, host, tail, wait):
                _emit(record, lat.output)
            return
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def on_msg(msg: Any) -> None:
            await queue.put(msg)

        # Subscribe before asking for the recent lines, so nothing falls between the two; the
        # lines both bring are printed once.
        await nc.subscribe(subject, cb=on_msg)
        await nc.flush()
        shown = set()
        for record in await _recent(nc, lat.lattice, component, host, tail, wait):
            shown.add(_key(record))
            _emit(record, lat.output)
        typer.echo(f"following the logs of lattice '{lat.lattice}' (Ctrl-C to stop)", err=True)
        while True:
            msg = await queue.get()
            try:
                record = json.loads(msg.data)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            if shown:
                key = _key(record)
                if key in shown:
                    shown.discard(key)
                    continue
            _emit(record, lat.output)

    try:
        nats_call(lat.nats_url, lat.timeout, run, options=lat.nats_options())
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
