"""`wasmlattice up` and `down`: a local lattice (embedded NATS, one host, the app manager), in the
foreground or detached, recorded in a state file that `down` reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wasmlattice import aio
from wasmlattice.cli.app import setup_logging
from wasmlattice.cli.common import (
    NATS_CREDS_FILE,
    STATE_FILE,
    LabelOpt,
    LatticeOpt,
    OutputFormat,
    OutputOpt,
    ctl_call,
    default_up_dir,
    fail,
    option_group,
    print_json,
    read_up_state,
)
from wasmlattice.cli.host_options import (
    ALLOW_DIR_HELP,
    ALLOW_FILE_LOAD_ENV,
    ALLOWED_ISSUERS_ENV,
    LIMIT_FLAGS,
    AllowedIssuerOpt,
    FriendlyNameOpt,
    GuestLimitFlags,
    HeartbeatOpt,
    HostSeedOpt,
    LogLevelOpt,
    MaxComponentSizeOpt,
    NatsAuth,
    ObservabilityFlags,
    OciAccess,
    PolicyFlags,
    TieredCompileOpt,
    UpHealthListenOpt,
    allowed_dirs,
    allowed_issuers,
    health_listen,
    host_labels,
    host_options,
)

if TYPE_CHECKING:
    from wasmlattice.apps.manager import ManagerReadiness

# What `up --detach` has already resolved for its child (from flags or the variables `host_options`
# reads): the child gets it as flags or as our variables, so a stale wasmCloud-named one cannot
# override it.
_SHARED_SETTINGS: tuple[str, ...] = ("NATS_CREDS", "NATS_JWT", "NATS_SEED", "HOST_SEED", "JS_DOMAIN")
_SHARED_SETTINGS += ("LATTICE", "HEARTBEAT_INTERVAL", "LOG_LEVEL", "ALLOW_FILE_LOAD")
_RESOLVED_ENV = frozenset(
    {f"{prefix}_{name}" for prefix in ("WASMLATTICE", "WASMCLOUD") for name in _SHARED_SETTINGS}
    | {f"WASMLATTICE_NATS_{name}" for name in ("TLS", "TLS_CA", "TLS_CERT", "TLS_KEY")}
    | {"WASMLATTICE_ALLOW_DIRS", "WASMLATTICE_MAX_COMPONENT_SIZE", ALLOWED_ISSUERS_ENV}
    | {f"{p}_POLICY_{n}" for p in ("WASMLATTICE", "WASMCLOUD") for n in ("TOPIC", "CHANGES_TOPIC", "TIMEOUT")}
)
# The policy settings `up --detach` passes its child as flags (docs/policy.md).
_POLICY_FLAGS = (
    ("policy_topic", "--policy-topic"),
    ("policy_changes_topic", "--policy-changes-topic"),
    ("policy_timeout_ms", "--policy-timeout-ms"),
)
# Where blobstore-fs roots may go by default under `up` (inside its data dir).
UP_BLOBS_DIR = "blobs"


def default_up_allow_dirs(data_dir: Path) -> list[Path]:
    """`up`'s allowed directories without --allow-dir: the current directory, and `<data-dir>/blobs`.

    The current directory is left out when it is `/`, the home directory or above it: allowing it
    would let any lattice client write under `~/.ssh` through a blobstore-fs root.
    """
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    dirs = [] if cwd == home or cwd in home.parents or cwd == Path(cwd.anchor) else [cwd]
    blobs = data_dir / UP_BLOBS_DIR
    blobs.mkdir(parents=True, exist_ok=True)
    return [*dirs, blobs.resolve()]


def _files_line(host_kwargs: dict[str, Any]) -> str:
    dirs = ", ".join(str(d) for d in host_kwargs.get("allow_dirs") or []) or "none"
    loads = "file:// loading on" if host_kwargs.get("allow_file_load") else "file:// loading off"
    return f"Files:   {loads}; allowed dirs (file://, blobstore-fs roots): {dirs} (--allow-dir)"


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


def _check_not_running(data_dir: Path) -> None:
    state = read_up_state(data_dir)
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
    *,
    in_background: bool = False,
    ui_listen: tuple[str, int] | None = None,
) -> None:
    from wasmlattice.host.identity import HostIdentity
    from wasmlattice.lattice.run import run_host
    from wasmlattice.nats_server import (
        EmbeddedNats,
        EmbeddedNatsError,
        ensure_user_seed,
        port_in_use,
        speaks_nats,
    )

    nats: EmbeddedNats | None = None
    creds: Path | None = None
    url = nats_url
    if url is None:
        if port_in_use("127.0.0.1", nats_port):
            # Like `wash up`: a NATS server already listening on the port is used as is, but say so:
            # joining someone else's lattice silently surprises (and its credentials are not ours).
            if not speaks_nats("127.0.0.1", nats_port):
                raise EmbeddedNatsError(
                    f"port {nats_port} is in use by a program that is not a NATS server; "
                    "choose another with --nats-port"
                )
            url = f"nats://127.0.0.1:{nats_port}"
            typer.echo(
                f"note: joining the NATS server already listening on 127.0.0.1:{nats_port} "
                "(this command did not start it, and `down` will not stop it)",
                err=True,
            )
        else:
            # Our own server admits only the user whose seed is in the data dir (docs/security.md):
            # any local process could otherwise drive the lattice.
            creds = data_dir / NATS_CREDS_FILE
            seed = ensure_user_seed(creds)
            nats = EmbeddedNats(host="127.0.0.1", port=nats_port, data_dir=data_dir / "nats", user_seed=seed)
            await nats.start()
            url = nats.url
            if any(host_kwargs.get(k) for k in ("nats_creds", "nats_jwt", "nats_seed")):
                typer.echo(
                    f"note: NATS credentials given to `up` are for a NATS it joins; its own uses {creds}",
                    err=True,
                )
            host_kwargs = {**host_kwargs, "nats_creds": creds, "nats_jwt": None, "nats_seed": None}
    state_path = data_dir / STATE_FILE
    manager_task: asyncio.Future[None] | None = None
    manager_stop = asyncio.Event()
    dashboard: Any = None
    try:
        host_seed = host_kwargs.get("host_seed")
        identity = HostIdentity.from_seed(host_seed) if host_seed else HostIdentity.generate()
        opts = host_options(
            **{
                **host_kwargs,
                "nats_url": url,
                "lattice": lattice,
                "labels": labels,
                "host_seed": identity.seed,
            }
        )
        ready = asyncio.Event()
        # One process, one probe listener: the host's `/readyz` (--health-listen) also asks the
        # in-process app manager, its reasons prefixed `app manager:` (docs/apps.md#probes).
        readiness: ManagerReadiness | None = None
        if app_manager:
            from wasmlattice.apps.manager import ManagerReadiness

            readiness = ManagerReadiness(prefix="app manager: ")
        host_task = asyncio.ensure_future(run_host(opts, ready, [readiness.reasons] if readiness else []))
        if app_manager:
            from wasmlattice.apps.manager import run_app_manager

            manager_task = asyncio.ensure_future(
                run_app_manager(
                    opts.nats_options(),
                    lattice,
                    manager_stop,
                    observability=opts.observability,
                    readiness=readiness,
                )
            )
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
        ui_note = ""
        if ui_listen is not None:
            dashboard, ui_note = await _start_dashboard(opts.nats_options(), lattice, ui_listen)
        state = {
            "pid": os.getpid(),
            "nats_url": url,
            "nats_pid": nats.pid if nats is not None else None,
            "embedded_nats": nats is not None,
            "nats_creds": str(creds) if creds is not None else None,
            "lattice": lattice,
            "host_id": identity.public_key,
            "data_dir": str(data_dir),
            "log": str(data_dir / "up.log"),
            # What control messages may reach on this machine (docs/lattice.md#host-files).
            "allow_file_load": bool(host_kwargs.get("allow_file_load")),
            "allow_dirs": [str(d) for d in host_kwargs.get("allow_dirs") or []],
            "ui_url": dashboard.url if dashboard is not None else None,
        }
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(state_path)
        if output == "json":
            print_json(state)
        else:
            typer.echo(f"NATS:    {url}" + (" (embedded, JetStream)" if nats is not None else " (existing)"))
            if creds is not None:
                typer.echo(f"Creds:   {creds} (only clients with this key may connect)")
            typer.echo(f"Lattice: {lattice}")
            typer.echo(f"Host:    {identity.public_key}")
            typer.echo(_files_line(host_kwargs))
            typer.echo(f"UI:      {dashboard.url}" if dashboard is not None else f"UI:      {ui_note}")
            if in_background:  # no terminal to press Ctrl-C in: this goes to up.log
                typer.echo(f"Stop with `wasmlattice down --data-dir {data_dir}`.")
            else:
                typer.echo("Stop with Ctrl-C, or `wasmlattice down` from another terminal.")
        sys.stdout.flush()
        # run_host stops on SIGINT/SIGTERM (Ctrl-C, `wasmlattice down`) or a `host.stop` request.
        await host_task
    finally:
        if dashboard is not None:
            with contextlib.suppress(Exception):
                await dashboard.stop()
        if manager_task is not None:
            manager_stop.set()
            with contextlib.suppress(Exception):
                await aio.wait_for(manager_task, 5.0)
        # Only remove the state file if it is ours (a second `up` may not clobber a running one).
        state_now = read_up_state(data_dir)
        if state_now is not None and state_now.get("pid") == os.getpid():
            state_path.unlink(missing_ok=True)
        if nats is not None:
            await nats.stop()


async def _start_dashboard(nats: Any, lattice: str, listen: tuple[str, int]) -> tuple[Any, str]:
    """Start the dashboard beside `up`'s host: (dashboard, "") or (None, why not).

    A dashboard that cannot start (its port taken) does not stop the lattice: `up` says so instead.
    """
    from wasmlattice.ui.run import start_dashboard

    try:
        return await start_dashboard(nats, lattice, listen[0], listen[1]), ""
    except Exception as e:
        reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        typer.echo(f"note: the dashboard did not start on {listen[0]}:{listen[1]}: {reason}", err=True)
        return None, f"not started ({reason}; choose another address with --ui-listen)"


@option_group
def up(
    nats_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the embedded NATS server.")
    ] = 4222,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="WASMLATTICE_DATA_DIR",
            help="Where NATS data and credentials, logs and the state file go.",
        ),
    ] = None,
    nats_url: Annotated[
        str | None, typer.Option("--nats-url", help="Use this NATS server instead of starting one.")
    ] = None,
    label: LabelOpt = None,
    lattice: LatticeOpt = "default",
    host_seed: HostSeedOpt = None,
    friendly_name: FriendlyNameOpt = None,
    *,
    auth: NatsAuth,
    oci: OciAccess,
    heartbeat_interval: HeartbeatOpt = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
    app_manager: Annotated[
        bool, typer.Option("--app-manager/--no-app-manager", help="Run the app manager in-process too.")
    ] = True,
    tiered_compile: TieredCompileOpt = None,
    allow_file_load: Annotated[
        bool,
        typer.Option(
            "--allow-file-load/--no-allow-file-load",
            envvar=ALLOW_FILE_LOAD_ENV,
            help="Load file:// components (only regular files under --allow-dir). On for `up`.",
        ),
    ] = True,
    allow_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--allow-dir",
            envvar="WASMLATTICE_ALLOW_DIRS",
            file_okay=False,
            metavar="DIR",
            help=ALLOW_DIR_HELP
            + " Default for `up`: the current directory (unless it is / or your home directory or above)"
            + " and <data-dir>/blobs.",
        ),
    ] = None,
    max_component_size: MaxComponentSizeOpt = None,
    policy: PolicyFlags,
    allowed_issuer: AllowedIssuerOpt = None,
    limits: GuestLimitFlags,
    health: UpHealthListenOpt = None,
    obs: ObservabilityFlags,
    output: OutputOpt = OutputFormat.text,
    # Info, as `host` and `app-manager` log: what was deployed, started and bound shows in the log
    # (`<data-dir>/up.log` with --detach).
    log_level: LogLevelOpt = "info",
    in_background: Annotated[
        bool, typer.Option("--in-background", hidden=True, help="Set by `up --detach` for its child.")
    ] = False,
    ui: Annotated[
        bool, typer.Option("--ui/--no-ui", help="Serve the web dashboard too (docs/ui.md).")
    ] = True,
    ui_listen: Annotated[
        str,
        typer.Option(
            "--ui-listen", envvar="WASMLATTICE_UI_LISTEN", help="Where the dashboard listens (loopback only)."
        ),
    ] = "127.0.0.1:3030",
) -> None:
    """Start NATS (with JetStream), one host and the app manager; with --detach, in the background."""
    from wasmlattice.nats_server import EmbeddedNatsError
    from wasmlattice.ui.server import ListenError, parse_listen

    try:
        ui_address = parse_listen(ui_listen, allow_remote=False) if ui else None
    except ListenError as e:
        raise typer.BadParameter(str(e).removeprefix("--listen "), param_hint="--ui-listen") from None
    labels = host_labels(label or [])
    host_kwargs = auth.host_kwargs()
    host_kwargs.update(
        host_seed=host_seed, friendly_name=friendly_name, heartbeat_interval=heartbeat_interval
    )
    if host_seed:
        from wasmlattice.host.identity import HostIdentity, HostIdentityError

        try:
            HostIdentity.from_seed(host_seed)
        except HostIdentityError as e:
            raise typer.BadParameter(str(e), param_hint="--host-seed") from None
    ddir = (data_dir or default_up_dir()).resolve()
    ddir.mkdir(parents=True, exist_ok=True)
    _check_not_running(ddir)
    host_kwargs.update(
        allow_file_load=allow_file_load,
        allow_dirs=allowed_dirs(allow_dir) if allow_dir else default_up_allow_dirs(ddir),
        max_component_size=max_component_size,
        **oci.host_kwargs(),
        allowed_issuers=allowed_issuers(allowed_issuer),
        health_listen=health_listen(health),
        tiered_compile=tiered_compile,
    )
    host_kwargs.update(policy.host_kwargs())
    host_kwargs.update(limits.host_kwargs())
    host_kwargs["observability"] = obs.settings()
    if detach:
        _up_detached(
            ddir,
            nats_port,
            nats_url,
            lattice,
            label or [],
            output,
            log_level,
            host_kwargs,
            app_manager,
            obs_args=obs.args(),
            ui_listen=ui_listen if ui else None,
        )
        return
    setup_logging(log_level)
    try:
        aio.run(
            _up_main(
                ddir,
                nats_port,
                nats_url,
                lattice,
                labels,
                output.value,
                host_kwargs,
                app_manager,
                in_background=in_background,
                ui_listen=ui_address,
            )
        )
    except EmbeddedNatsError as e:
        fail(f"cannot start NATS: {e}")
    except Exception as e:  # start-up failures: one line, not a traceback
        # Some errors (a bare TimeoutError) carry no text: the type alone would print "TimeoutError: ".
        fail(f"{type(e).__name__}: {e}" if str(e) else f"start-up failed: {type(e).__name__} (no details)")


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
    *,
    obs_args: list[str] | None = None,
    ui_listen: str | None = None,
) -> None:
    """Start `up` in a new session with output in `<data-dir>/up.log`; return once its host answers."""
    import dataclasses
    import subprocess

    # Secrets (seeds, JWT) go to the child through its environment, not its (visible) command line.
    env = {k: v for k, v in os.environ.items() if k not in _RESOLVED_ENV}
    secret_env = {
        "nats_jwt": "WASMLATTICE_NATS_JWT",
        "nats_seed": "WASMLATTICE_NATS_SEED",
        "host_seed": "WASMLATTICE_HOST_SEED",
        "nats_creds": "WASMLATTICE_NATS_CREDS",
        "js_domain": "WASMLATTICE_JS_DOMAIN",
        "js_replicas": "WASMLATTICE_JS_REPLICAS",
    }
    for key, var in secret_env.items():
        if host_kwargs.get(key) is not None:
            env[var] = str(host_kwargs[key])
    # The registry settings as resolved here (the child reads the wasmCloud variables).
    env["WASMCLOUD_OCI_ALLOW_LATEST"] = "true" if host_kwargs.get("allow_latest") else "false"
    env["WASMCLOUD_OCI_ALLOWED_INSECURE"] = ",".join(host_kwargs.get("allowed_insecure") or [])
    env["WASMCLOUD_TLS_CA_PATH"] = " ".join(str(p) for p in host_kwargs.get("tls_ca_paths") or [])
    for key, var in (
        ("oci_registry", "WASMCLOUD_OCI_REGISTRY"),
        ("oci_user", "WASMCLOUD_OCI_REGISTRY_USER"),
        ("oci_password", "WASMCLOUD_OCI_REGISTRY_PASSWORD"),
    ):
        if host_kwargs.get(key):
            env[var] = str(host_kwargs[key])

    cmd = [sys.executable, "-m", "wasmlattice.cli.main", "up", "--in-background", "--data-dir", str(ddir)]
    cmd += ["--nats-port", str(nats_port), "--lattice", lattice, "--log-level", log_level]
    if not app_manager:
        cmd += ["--no-app-manager"]
    cmd += ["--no-ui"] if ui_listen is None else ["--ui-listen", ui_listen]
    if nats_url is not None:
        cmd += ["--nats-url", nats_url]
    for lb in labels:
        cmd += ["--label", lb]
    if host_kwargs.get("friendly_name"):
        cmd += ["--friendly-name", str(host_kwargs["friendly_name"])]
    if host_kwargs.get("heartbeat_interval") is not None:
        cmd += ["--heartbeat-interval", repr(host_kwargs["heartbeat_interval"])]
    if host_kwargs.get("nats_tls"):
        cmd += ["--nats-tls"]
    cmd += ["--allow-file-load" if host_kwargs.get("allow_file_load") else "--no-allow-file-load"]
    if host_kwargs.get("tiered_compile") is not None:
        cmd += ["--tiered-compile" if host_kwargs["tiered_compile"] else "--no-tiered-compile"]
    for d in host_kwargs.get("allow_dirs") or []:
        cmd += ["--allow-dir", str(d)]
    if host_kwargs.get("max_component_size") is not None:
        cmd += ["--max-component-size", str(host_kwargs["max_component_size"])]
    if host_kwargs.get("health_listen"):
        cmd += ["--health-listen", str(host_kwargs["health_listen"])]
    for key, flag in _POLICY_FLAGS + LIMIT_FLAGS:
        if host_kwargs.get(key) is not None:
            cmd += [flag, str(host_kwargs[key])]
    for issuer in host_kwargs.get("allowed_issuers") or []:
        cmd += ["--allowed-issuer", issuer]
    cmd += obs_args or []
    for key, flag in (
        ("nats_tls_ca", "--nats-tls-ca"),
        ("nats_tls_cert", "--nats-tls-cert"),
        ("nats_tls_key", "--nats-tls-key"),
    ):
        if host_kwargs.get(key) is not None:
            cmd += [flag, str(host_kwargs[key])]
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
        state = read_up_state(ddir)
        if state is not None and state.get("pid") == proc.pid:
            break
        time.sleep(0.1)
    else:
        proc.terminate()
        fail(f"`wasmlattice up` did not become ready within 60s; see {log_path}")
    assert state is not None
    host_id = str(state["host_id"])
    # Ping with the host's own credentials and TLS settings, so a secured NATS is checked too.
    url = str(state["nats_url"])
    ping_kwargs = {**host_kwargs, "nats_url": url, "lattice": lattice}
    if state.get("nats_creds"):
        # `up` started its own NATS: the host and this ping use the credentials it wrote.
        ping_kwargs.update(nats_creds=Path(state["nats_creds"]), nats_jwt=None, nats_seed=None)
    opts = dataclasses.replace(host_options(**ping_kwargs).nats_options(), name="wasmlattice-cli")
    hosts = ctl_call(url, lattice, 2.0, lambda c: c.ping_hosts(1.0), options=opts)
    if not any(h.id == host_id for h in hosts):
        fail(f"the host {host_id} started but does not answer ping; see {log_path}")
    if nats_url is None and not state.get("embedded_nats"):
        typer.echo(
            f"note: joined the NATS server already listening on {url} "
            "(this command did not start it, and `down` will not stop it)",
            err=True,
        )
    if output is OutputFormat.json:
        print_json(state)
        return
    typer.echo(f"wasmlattice is running in the background (pid {proc.pid})")
    typer.echo(f"NATS:    {state['nats_url']}")
    if state.get("nats_creds"):
        typer.echo(f"Creds:   {state['nats_creds']} (only clients with this key may connect)")
    typer.echo(f"Lattice: {lattice}")
    typer.echo(f"Host:    {host_id}")
    typer.echo(_files_line(host_kwargs))
    if ui_listen is not None:
        ui_url = state.get("ui_url")
        typer.echo(f"UI:      {ui_url}" if ui_url else f"UI:      not started on {ui_listen}; see {log_path}")
    typer.echo(f"Logs:    {log_path}")
    typer.echo(f"Stop with `wasmlattice down --data-dir {ddir}`")


def _is_embedded_nats(pid: int, ddir: Path) -> bool:
    """Whether `pid` is still the nats-server `up` started from `ddir` (not a recycled PID)."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the recorded PID
    return any(b"nats-server" in part for part in cmdline) and any(
        str(ddir).encode() in part for part in cmdline
    )


def _stop_pid(pid: int, timeout: float) -> bool:
    """SIGTERM, wait up to `timeout`, then SIGKILL; whether it had to be killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not _pid_alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def down(
    data_dir: Annotated[
        Path | None, typer.Option(envvar="WASMLATTICE_DATA_DIR", help="The data dir `up` used.")
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait before killing.")] = 20.0,
    output: OutputOpt = OutputFormat.text,
) -> None:
    """Stop what `wasmlattice up` started (its host and embedded NATS; never a NATS it only joined)."""
    ddir = (data_dir or default_up_dir()).resolve()

    def report(stopped: bool, message: str, **details: Any) -> None:
        if output is OutputFormat.json:
            print_json(
                {"success": True, "stopped": stopped, "message": message, "data_dir": str(ddir), **details}
            )
        else:
            typer.echo(message)

    state = read_up_state(ddir)
    if state is None:
        report(False, f"Nothing to stop: no `wasmlattice up` is running from {ddir}")
        return
    pid = state.get("pid")
    up_alive = isinstance(pid, int) and _pid_alive(pid)
    # `up` leaves the lattice and stops its embedded NATS itself on SIGTERM.
    killed = _stop_pid(pid, timeout) if isinstance(pid, int) and up_alive else False
    # If `up` had to be killed, or died without cleaning up (kill -9), its nats-server outlives it:
    # stop that too. A NATS that `up` only joined (`nats_pid` null) is never touched.
    nats_pid = state.get("nats_pid")
    orphan = (
        bool(state.get("embedded_nats")) and isinstance(nats_pid, int) and _is_embedded_nats(nats_pid, ddir)
    )
    if orphan and isinstance(nats_pid, int):
        _stop_pid(nats_pid, 5.0)
    (ddir / STATE_FILE).unlink(missing_ok=True)
    details = {
        "killed": killed,
        "pid": pid,
        "host_id": state.get("host_id"),
        "lattice": state.get("lattice"),
        "nats_url": state.get("nats_url"),
        "embedded_nats": bool(state.get("embedded_nats")),
        "nats_pid": nats_pid,
    }
    if not up_alive:
        if orphan:
            msg = f"wasmlattice (pid {pid}) had exited; stopped the nats-server it left (pid {nats_pid})"
            report(True, msg, **details)
        else:
            msg = f"Nothing to stop: the process recorded in {ddir / STATE_FILE} is gone (cleaned up)"
            report(False, msg)
        return
    if killed:
        report(True, f"Killed pid {pid} (it did not stop within {timeout:g}s)", **details)
        return
    nats_note = "" if state.get("embedded_nats") else " left running: `up` did not start it"
    where = f"host {state.get('host_id')}, NATS {state.get('nats_url')}{nats_note}"
    report(True, f"Stopped wasmlattice (pid {pid}, {where})", **details)
