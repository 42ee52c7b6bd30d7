"""Running hosts: `wasmlattice host`, `up` and `down`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import aio
from .app import app, setup_logging
from .common import (
    DEFAULT_CLI_NATS_URL,
    STATE_FILE,
    LabelOpt,
    LatticeOpt,
    NatsUrlOpt,
    OutputFormat,
    OutputOpt,
    ctl_call,
    fail,
    parse_kv,
    print_json,
)

# --- running hosts: `host`, `up`, `down` ---

NatsCredsOpt = Annotated[
    Path | None,
    typer.Option("--nats-creds", envvar="WASMLATTICE_NATS_CREDS", help="NATS credentials (.creds) file."),
]
NatsJwtOpt = Annotated[
    str | None,
    typer.Option("--nats-jwt", envvar="WASMLATTICE_NATS_JWT", help="NATS user JWT (needs --nats-seed)."),
]
NatsSeedOpt = Annotated[
    str | None,
    typer.Option("--nats-seed", envvar="WASMLATTICE_NATS_SEED", help="NATS user nkey seed (SU...)."),
]
NatsTlsOpt = Annotated[bool, typer.Option("--nats-tls", help="Require TLS to the NATS server.")]
NatsTlsCaOpt = Annotated[
    Path | None, typer.Option("--nats-tls-ca", help="CA file to trust for NATS TLS (implies --nats-tls).")
]
JsDomainOpt = Annotated[
    str | None, typer.Option("--js-domain", envvar="WASMLATTICE_JS_DOMAIN", help="JetStream domain.")
]
FriendlyNameOpt = Annotated[
    str | None,
    typer.Option("--friendly-name", help="Display name of the host (derived from its ID if unset)."),
]
HostSeedOpt = Annotated[
    str | None,
    typer.Option("--host-seed", envvar="WASMLATTICE_HOST_SEED", help="nkeys server seed (SN...)."),
]


def _nats_kwargs(
    creds: Path | None,
    jwt: str | None,
    seed: str | None,
    tls: bool,
    tls_ca: Path | None,
    js_domain: str | None,
) -> dict[str, Any]:
    """The NATS connection fields of `HostOptions` given on the command line (a CA implies TLS)."""
    if creds is not None and not creds.is_file():
        raise typer.BadParameter(f"{creds} is not a file", param_hint="--nats-creds")
    if tls_ca is not None and not tls_ca.is_file():
        raise typer.BadParameter(f"{tls_ca} is not a file", param_hint="--nats-tls-ca")
    return {
        "nats_creds": creds.resolve() if creds is not None else None,
        "nats_jwt": jwt,
        "nats_seed": seed,
        "nats_tls": tls or tls_ca is not None,
        "nats_tls_ca": tls_ca.resolve() if tls_ca is not None else None,
        "js_domain": js_domain,
    }


def _host_options(**kwargs: Any) -> Any:
    """Build `HostOptions`, passing only the fields it has (the host side owns that dataclass)."""
    import dataclasses

    from ..host.run import HostOptions

    names = {f.name for f in dataclasses.fields(HostOptions)}
    return HostOptions(**{k: v for k, v in kwargs.items() if k in names and v is not None})


@app.command("host")
def host_cmd(
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    label: LabelOpt = None,
    lattice: LatticeOpt = "default",
    host_seed: HostSeedOpt = None,
    friendly_name: FriendlyNameOpt = None,
    nats_creds: NatsCredsOpt = None,
    nats_jwt: NatsJwtOpt = None,
    nats_seed: NatsSeedOpt = None,
    nats_tls: NatsTlsOpt = False,
    nats_tls_ca: NatsTlsCaOpt = None,
    js_domain: JsDomainOpt = None,
    heartbeat_interval: Annotated[
        float | None, typer.Option("--heartbeat-interval", min=0.1, help="Heartbeat interval, seconds.")
    ] = None,
    invocation_timeout: Annotated[
        float | None,
        typer.Option(
            "--invocation-timeout",
            min=0.1,
            help="Seconds a call to a component on another host may take (10).",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run one lattice host connected to an existing NATS server until Ctrl-C."""
    from ..host.run import HostStartError, run_host
    from ..lattice.connection import NatsConnectionError

    setup_logging(log_level)
    labels = parse_kv(label or [], "--label")
    nats = _nats_kwargs(nats_creds, nats_jwt, nats_seed, nats_tls, nats_tls_ca, js_domain)
    try:
        opts = _host_options(
            nats_url=nats_url,
            lattice=lattice,
            labels=labels,
            host_seed=host_seed,
            friendly_name=friendly_name,
            heartbeat_interval=heartbeat_interval,
            invocation_timeout=invocation_timeout,
            **nats,
        )
        # run_host handles SIGINT/SIGTERM itself: it leaves the lattice gracefully.
        aio.run(run_host(opts))
    except (NatsConnectionError, HostStartError) as e:
        fail(str(e))


def _default_up_dir() -> Path:
    from ..nats_server import default_data_dir

    return default_data_dir().parent


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/status").read_text()
        if "\nState:\tZ" in status:
            return False
    return True


def _read_state(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _check_not_running(data_dir: Path) -> None:
    state = _read_state(data_dir)
    if state is None:
        return
    pid = state.get("pid")
    if isinstance(pid, int) and _pid_alive(pid):
        fail(
            f"wasmlattice is already running from {data_dir} (pid {pid}, NATS {state.get('nats_url')}): "
            f"stop it with `wasmlattice down --data-dir {data_dir}`"
        )
    (data_dir / STATE_FILE).unlink(missing_ok=True)  # stale: its process is gone


async def _up_main(
    data_dir: Path,
    nats_port: int,
    nats_url: str | None,
    lattice: str,
    labels: dict[str, str],
    output: str,
    host_kwargs: dict[str, Any],
    app_manager: bool = True,
) -> None:
    from ..host.identity import HostIdentity
    from ..host.run import run_host
    from ..nats_server import EmbeddedNats, port_in_use

    nats: EmbeddedNats | None = None
    url = nats_url
    if url is None:
        if port_in_use("127.0.0.1", nats_port):
            # Like `wash up`: a NATS server already listening on the port is used as is.
            url = f"nats://127.0.0.1:{nats_port}"
        else:
            nats = EmbeddedNats(host="127.0.0.1", port=nats_port, data_dir=data_dir / "nats")
            await nats.start()
            url = nats.url
    state_path = data_dir / STATE_FILE
    manager_task: asyncio.Future[None] | None = None
    manager_stop = asyncio.Event()
    try:
        host_seed = host_kwargs.get("host_seed")
        identity = HostIdentity.from_seed(host_seed) if host_seed else HostIdentity.generate()
        opts = _host_options(
            **{
                **host_kwargs,
                "nats_url": url,
                "lattice": lattice,
                "labels": labels,
                "host_seed": identity.seed,
            }
        )
        ready = asyncio.Event()
        host_task = asyncio.ensure_future(run_host(opts, ready))
        if app_manager:
            from ..apps.manager import run_app_manager

            manager_task = asyncio.ensure_future(run_app_manager(opts.nats_options(), lattice, manager_stop))
        ready_wait = asyncio.ensure_future(ready.wait())
        try:
            await asyncio.wait({host_task, ready_wait}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready_wait.cancel()
        if host_task.done():
            host_task.result()  # raises the host's start-up error
            raise RuntimeError("the host stopped right after starting")
        if not ready.is_set():
            host_task.cancel()
            raise RuntimeError("the host did not become ready within 60s")
        state = {
            "pid": os.getpid(),
            "nats_url": url,
            "nats_pid": nats.pid if nats is not None else None,
            "embedded_nats": nats is not None,
            "lattice": lattice,
            "host_id": identity.public_key,
            "data_dir": str(data_dir),
            "log": str(data_dir / "up.log"),
        }
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(state_path)
        if output == "json":
            print_json(state)
        else:
            typer.echo(f"NATS:    {url}" + (" (embedded, JetStream)" if nats is not None else " (existing)"))
            typer.echo(f"Lattice: {lattice}")
            typer.echo(f"Host:    {identity.public_key}")
            typer.echo("Stop with Ctrl-C, or `wasmlattice down` from another terminal.")
        sys.stdout.flush()
        # run_host stops on SIGINT/SIGTERM (Ctrl-C, `wasmlattice down`) or a `host.stop` request.
        await host_task
    finally:
        if manager_task is not None:
            manager_stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(manager_task, 5.0)
        # Only remove the state file if it is ours (a second `up` may not clobber a running one).
        state_now = _read_state(data_dir)
        if state_now is not None and state_now.get("pid") == os.getpid():
            state_path.unlink(missing_ok=True)
        if nats is not None:
            await nats.stop()


@app.command("up")
def up(
    nats_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the embedded NATS server.")
    ] = 4222,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where NATS data, logs and the state file go.")
    ] = None,
    nats_url: Annotated[
        str | None, typer.Option("--nats-url", help="Use this NATS server instead of starting one.")
    ] = None,
    label: LabelOpt = None,
    lattice: LatticeOpt = "default",
    host_seed: HostSeedOpt = None,
    friendly_name: FriendlyNameOpt = None,
    nats_creds: NatsCredsOpt = None,
    nats_jwt: NatsJwtOpt = None,
    nats_seed: NatsSeedOpt = None,
    nats_tls: NatsTlsOpt = False,
    nats_tls_ca: NatsTlsCaOpt = None,
    js_domain: JsDomainOpt = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
    app_manager: Annotated[
        bool, typer.Option("--app-manager/--no-app-manager", help="Run the app manager in-process too.")
    ] = True,
    output: OutputOpt = OutputFormat.text,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
) -> None:
    """Start NATS (with JetStream), one host and the app manager; with --detach, in the background."""
    from ..nats_server import EmbeddedNatsError

    ddir = (data_dir or _default_up_dir()).resolve()
    ddir.mkdir(parents=True, exist_ok=True)
    labels = parse_kv(label or [], "--label")
    host_kwargs = _nats_kwargs(nats_creds, nats_jwt, nats_seed, nats_tls, nats_tls_ca, js_domain)
    host_kwargs.update(host_seed=host_seed, friendly_name=friendly_name)
    if host_seed:
        from ..host.identity import HostIdentity, HostIdentityError

        try:
            HostIdentity.from_seed(host_seed)
        except HostIdentityError as e:
            raise typer.BadParameter(str(e), param_hint="--host-seed") from None
    _check_not_running(ddir)
    if detach:
        _up_detached(
            ddir, nats_port, nats_url, lattice, label or [], output, log_level, host_kwargs, app_manager
        )
        return
    setup_logging(log_level)
    try:
        aio.run(_up_main(ddir, nats_port, nats_url, lattice, labels, output.value, host_kwargs, app_manager))
    except EmbeddedNatsError as e:
        fail(f"cannot start NATS: {e}")
    except Exception as e:  # start-up failures: one line, not a traceback
        fail(f"{type(e).__name__}: {e}")


def _up_detached(
    ddir: Path,
    nats_port: int,
    nats_url: str | None,
    lattice: str,
    labels: list[str],
    output: OutputFormat,
    log_level: str,
    host_kwargs: dict[str, Any],
    app_manager: bool = True,
) -> None:
    """Start `up` in a new session with output in `<data-dir>/up.log`; return once its host answers."""
    import subprocess

    # Secrets (seeds, JWT) go to the child through its environment, not its (visible) command line.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMLATTICE_NATS_")}
    env.pop("WASMLATTICE_HOST_SEED", None)
    secret_env = {
        "nats_jwt": "WASMLATTICE_NATS_JWT",
        "nats_seed": "WASMLATTICE_NATS_SEED",
        "host_seed": "WASMLATTICE_HOST_SEED",
        "nats_creds": "WASMLATTICE_NATS_CREDS",
        "js_domain": "WASMLATTICE_JS_DOMAIN",
    }
    for key, var in secret_env.items():
        if host_kwargs.get(key) is not None:
            env[var] = str(host_kwargs[key])

    cmd = [sys.executable, "-m", "wasmlattice.cli.main", "up", "--data-dir", str(ddir)]
    cmd += ["--nats-port", str(nats_port), "--lattice", lattice, "--log-level", log_level]
    if not app_manager:
        cmd += ["--no-app-manager"]
    if nats_url is not None:
        cmd += ["--nats-url", nats_url]
    for lb in labels:
        cmd += ["--label", lb]
    if host_kwargs.get("friendly_name"):
        cmd += ["--friendly-name", str(host_kwargs["friendly_name"])]
    if host_kwargs.get("nats_tls"):
        cmd += ["--nats-tls"]
    if host_kwargs.get("nats_tls_ca") is not None:
        cmd += ["--nats-tls-ca", str(host_kwargs["nats_tls_ca"])]
    log_path = ddir / "up.log"
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    deadline = time.monotonic() + 60
    state: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            fail(f"`wasmlattice up` exited with {proc.returncode}; see {log_path}:\n" + "\n".join(tail))
        state = _read_state(ddir)
        if state is not None and state.get("pid") == proc.pid:
            break
        time.sleep(0.1)
    else:
        proc.terminate()
        fail(f"`wasmlattice up` did not become ready within 60s; see {log_path}")
    assert state is not None
    host_id = str(state["host_id"])
    secured = any(host_kwargs.get(k) for k in ("nats_creds", "nats_jwt", "nats_tls"))
    # The CLI's control client has no NATS credentials/TLS options: only ping an open server.
    if not secured:
        hosts = ctl_call(str(state["nats_url"]), lattice, 2.0, lambda c: c.ping_hosts(1.0))
        if not any(h.id == host_id for h in hosts):
            fail(f"the host {host_id} started but does not answer ping; see {log_path}")
    if output is OutputFormat.json:
        print_json(state)
        return
    typer.echo(f"wasmlattice is running in the background (pid {proc.pid})")
    typer.echo(f"NATS:    {state['nats_url']}")
    typer.echo(f"Lattice: {lattice}")
    typer.echo(f"Host:    {host_id}")
    typer.echo(f"Logs:    {log_path}")
    typer.echo(f"Stop with `wasmlattice down --data-dir {ddir}`")


@app.command("down")
def down(
    data_dir: Annotated[Path | None, typer.Option(help="The data dir `up` used.")] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait before killing.")] = 20.0,
) -> None:
    """Stop what `wasmlattice up` started (its host and embedded NATS)."""
    ddir = (data_dir or _default_up_dir()).resolve()
    state = _read_state(ddir)
    if state is None:
        typer.echo(f"Nothing to stop: no `wasmlattice up` is running from {ddir}")
        return
    pid = state.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        (ddir / STATE_FILE).unlink(missing_ok=True)
        typer.echo(f"Nothing to stop: the process recorded in {ddir / STATE_FILE} is gone (cleaned up)")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        nats_pid = state.get("nats_pid")
        if isinstance(nats_pid, int) and _pid_alive(nats_pid):
            os.kill(nats_pid, signal.SIGKILL)
        (ddir / STATE_FILE).unlink(missing_ok=True)
        typer.echo(f"Killed pid {pid} (it did not stop within {timeout:g}s)")
        return
    (ddir / STATE_FILE).unlink(missing_ok=True)
    typer.echo(f"Stopped wasmlattice (pid {pid}, host {state.get('host_id')}, NATS {state.get('nats_url')})")


@app.command("app-manager")
def app_manager_cmd(
    nats_url: NatsUrlOpt = DEFAULT_CLI_NATS_URL,
    lattice: LatticeOpt = "default",
    nats_creds: NatsCredsOpt = None,
    nats_jwt: NatsJwtOpt = None,
    nats_seed: NatsSeedOpt = None,
    nats_tls: NatsTlsOpt = False,
    nats_tls_ca: NatsTlsCaOpt = None,
    js_domain: JsDomainOpt = None,
    host_timeout: Annotated[
        float,
        typer.Option(
            "--host-timeout", min=1.0, help="Seconds without an answer before a host counts as gone (10)."
        ),
    ] = 10.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run an app manager alone (the wadm API and reconciler) until Ctrl-C; several may run at once."""
    from ..apps.manager import run_app_manager
    from ..lattice.connection import NatsConnectionError

    setup_logging(log_level)
    opts = _host_options(
        nats_url=nats_url,
        lattice=lattice,
        **_nats_kwargs(nats_creds, nats_jwt, nats_seed, nats_tls, nats_tls_ca, js_domain),
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        await run_app_manager(opts.nats_options(), lattice, stop, host_timeout=host_timeout)

    try:
        aio.run(main())
    except NatsConnectionError as e:
        fail(str(e))
