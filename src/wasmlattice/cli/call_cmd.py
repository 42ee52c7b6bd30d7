"""`wasmlattice call`: invoke an exported function of a running component over wRPC, typed as JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from wasmlattice.cli.app import app
from wasmlattice.cli.common import (
    LatticeTarget,
    OutputFormat,
    fail_as,
    option_group,
    print_json,
)


def split_target(target: str) -> tuple[str, str | None, str]:
    """`ns:pkg/iface[@version].function` -> (unversioned interface, version or None, function)."""
    head, dot, func = target.rpartition(".")
    if not dot or not func or "/" not in head or ":" not in head:
        raise ValueError(
            f"{target!r} is not ns:pkg/interface.function (e.g. test:chain/stage.process or "
            "test:chain/stage@0.1.0.process)"
        )
    iface, _, version = head.partition("@")
    return iface, version or None, func


CallTimeoutOpt = Annotated[
    float, typer.Option("--timeout", "-t", min=0.05, help="Invocation time-out, seconds.")
]


@dataclass(frozen=True)
class CallTarget(LatticeTarget):
    """`LatticeTarget` of `call`: its --timeout is the invocation's, with no environment variable."""

    timeout: CallTimeoutOpt = 10.0


@app.command("call")
@option_group
def call_cmd(
    component_id: Annotated[str, typer.Argument(help="ID of a running component.")],
    target: Annotated[str, typer.Argument(help="ns:pkg/interface[@version].function")],
    args: Annotated[list[str] | None, typer.Argument(help="Arguments, each one JSON value.")] = None,
    *,
    lat: CallTarget,
) -> None:
    """Call an exported function of a running component with JSON arguments; print the result as JSON.

    The function's types come from the component itself (found through the hosts' inventories), so
    arguments are checked before anything is sent.
    """
    try:
        iface, version, func = split_target(target)
    except ValueError as e:
        fail_as(lat.output, str(e))
    raw: list[Any] = []
    for i, text in enumerate(args or []):
        try:
            raw.append(json.loads(text))
        except ValueError as e:
            fail_as(lat.output, _not_json(i + 1, text, e))
    logging.getLogger("wasmlattice.protocol.connection").setLevel(logging.ERROR)
    try:
        result = asyncio.run(
            _call(component_id, iface, version, func, raw, lat.nats_options(), lat.lattice, lat.timeout)
        )
    except CallError as e:
        fail_as(lat.output, str(e))
    if lat.output is OutputFormat.json:
        print_json({"success": True, "result": result})
    else:
        typer.echo(json.dumps(result))


def _not_json(n: int, text: str, e: ValueError) -> str:
    """Why argument `n` is not JSON, with the hint a shell user needs most (strings need quotes)."""
    where = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
    hint = ""
    if text and not text.lstrip().startswith(('"', "{", "[")):
        hint = f"; a string needs JSON quotes: '{json.dumps(text, ensure_ascii=False)}'"
    return f"argument {n} is not JSON ({where}): {text}{hint}"


class CallError(Exception):
    """`wasmlattice call` cannot proceed; the message is the one line to print."""


async def _call(
    component_id: str,
    iface: str,
    version: str | None,
    func: str,
    raw: list[Any],
    nats_options: Any,
    lattice: str,
    timeout: float,
) -> Any:
    from wasmlattice.client.ctl import CtlClient, CtlError
    from wasmlattice.client.values import JsonValueError, from_json, to_json
    from wasmlattice.protocol.connection import NatsConnectionError, connect
    from wasmlattice.protocol.wrpc.client import invoke
    from wasmlattice.protocol.wrpc.transport import WrpcError, invocation_subject
    from wasmlattice.protocol.wrpc.tuples import params_codec, results_codec

    try:
        nc = await connect(nats_options)
    except NatsConnectionError as e:
        raise CallError(str(e)) from None
    try:
        ctl = CtlClient(nc, lattice, timeout=min(timeout, 5.0))
        try:
            image_ref = await _find_image(ctl, component_id)
        except CtlError as e:  # no answer to the inventory requests, or a refusal: one line, not a traceback
            raise CallError(f"cannot find component {component_id}: {e.message}") from None
        instance, sig = await asyncio.get_running_loop().run_in_executor(
            None, _signature, image_ref, iface, version, func
        )
        params = [t for _, t in sig.params]
        if len(raw) != len(params):
            expected = ", ".join(f"{n}: {t}" for n, t in sig.params) or "no arguments"
            raise CallError(
                f"{instance}.{func} takes {len(params)} argument(s) ({expected}); {len(raw)} given"
            )
        try:
            values = [
                from_json(t, v, f"argument {i + 1} ({n})")
                for i, ((n, t), v) in enumerate(zip(sig.params, raw, strict=True))
            ]
        except JsonValueError as e:
            raise CallError(str(e)) from None
        data = params_codec(sig).encode(values)
        subject = invocation_subject(f"{lattice}.{component_id}", instance, func)
        try:
            reply = await invoke(nc, subject, data, headers={"source-id": "wasmlattice-cli"}, timeout=timeout)
            decoded = results_codec(sig).decode(reply)
        except (WrpcError, ValueError) as e:
            raise CallError(f"calling {instance}.{func} on {component_id} failed: {e}") from None
        return to_json(sig.result, decoded[0]) if decoded else None
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def _find_image(ctl: Any, component_id: str) -> str:
    hosts = await ctl.ping_hosts(wait=0.5)
    for host in hosts:
        inv = await ctl.get_host_inventory(host.id)
        for c in inv.components:
            if c.id == component_id:
                return str(c.image_ref)
    raise CallError(
        f"no host of the lattice runs component {component_id!r} ({len(hosts)} host(s) answered); "
        "see `wasmlattice get inventory`"
    )


def _signature(image_ref: str, iface: str, version: str | None, func: str) -> tuple[str, Any]:
    """The versioned instance name and signature of an export, read from the component file."""
    from wasmlattice.capabilities.catalog import host_registry
    from wasmlattice.host.components import file_ref_path
    from wasmlattice.runtime.component import (
        CompileCache,
        ComponentError,
        InterfaceName,
        default_cache_dir,
        read_component_file,
    )
    from wasmlattice.runtime.engine import HostEngine
    from wasmlattice.runtime.linking import link

    engine = HostEngine()
    try:
        path = file_ref_path(image_ref)
        comp = CompileCache(default_cache_dir()).load(read_component_file(path), engine, path)
        linked = link(engine, comp, host_registry(), origin=path)
    except ComponentError as e:
        raise CallError(f"cannot read the types of {image_ref}: {e}") from None
    finally:
        engine.close()
    for name, funcs in linked.exports.items():
        parsed = InterfaceName.parse(name)
        if (
            parsed is None
            or parsed.unversioned != iface
            or (version is not None and parsed.version != version)
        ):
            continue
        if func not in funcs:
            raise CallError(f"{name} has no function {func!r}; it has {', '.join(sorted(funcs)) or 'none'}")
        return name, funcs[func]
    exported = ", ".join(sorted(linked.exports)) or "nothing"
    raise CallError(
        f"the component does not export {iface}{'@' + version if version else ''}; it exports {exported}"
    )
