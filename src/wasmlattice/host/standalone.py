"""`wasmlattice run`: one component served over HTTP on its own, the way `wasmtime serve` does.

One process, or several worker processes sharing the port with SO_REUSEPORT. Threads cannot
scale guests past the GIL (every host call takes it back), so throughput comes from processes.
The parent compiles the component once (filling the compile cache), then supervises workers that
load the compiled artifact, restarting any that die.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from wasmlattice import aio
from wasmlattice.capabilities.catalog import host_registry
from wasmlattice.capabilities.http_ingress import (
    INCOMING_HANDLER,
    HttpHandler,
    HttpTarget,
    IngressLimits,
    IngressServer,
    bind_socket,
)
from wasmlattice.nats_server import port_in_use
from wasmlattice.observability import process as observability
from wasmlattice.observability.settings import ObservabilitySettings
from wasmlattice.replay.recording import Recorder
from wasmlattice.runtime.budget import DEFAULT_INSTANCE_MEMORY
from wasmlattice.runtime.component import CompileCache, ComponentError, default_cache_dir, read_component_file
from wasmlattice.runtime.engine import CRANELIFT, EngineSettings, HostEngine
from wasmlattice.runtime.linking import LinkedComponent, WrapFunc, link
from wasmlattice.runtime.pool import InstancePool
from wasmlattice.wasi.ctx import WasiConfig
from wasmlattice.wasi.output_limit import OutputLimiter, OutputLimits

if TYPE_CHECKING:  # the OpenTelemetry SDK is imported only when metrics are on
    from wasmlattice.observability.metrics import HostMetrics


@dataclass
class ServeOptions:
    """How `wasmlattice run` serves a component."""

    listen: str = "127.0.0.1:8000"
    workers: int = 1
    reuse: int = 1
    timeout: float = 30.0
    # Linear memory one instance may use (`--max-instance-memory`, docs/limits.md).
    max_memory: int | None = DEFAULT_INSTANCE_MEMORY
    # The component's allowance of log output (`--guest-output-*`).
    output: OutputLimits = field(default_factory=OutputLimits)
    allowed_outgoing: tuple[str, ...] = ()
    max_body: int = 64 * 1024 * 1024
    max_header_size: int = 8190
    # Client timeouts and connection cap of the listener (IngressLimits has the defaults).
    limits: IngressLimits = field(default_factory=IngressLimits)
    threads: int = 2
    env: list[tuple[str, str]] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    read_only_dirs: dict[str, Path] = field(default_factory=dict)
    cache_dir: Path | None = None
    # The compiler of the build served (`--compiler`): `run` compiles once (cached), so it does
    # not tier; Winch is there to compare its build with Cranelift's.
    compiler: str = CRANELIFT
    # Record every request into this directory (`--record`, docs/record-replay.md).
    record_dir: Path | None = None
    # Traces, metrics and logs (the host's flags, docs/observability.md); None: the environment's.
    observability: ObservabilitySettings | None = None

    def observability_settings(self) -> ObservabilitySettings:
        """`observability`, or the settings the environment gives (`ComponentError` if invalid)."""
        if self.observability is not None:
            return self.observability
        try:
            return ObservabilitySettings.from_env()
        except ValueError as e:
            raise ComponentError(str(e)) from None

    def host_port(self) -> tuple[str, int]:
        """The listen address split into host and port; `ValueError` naming it if it is not one."""
        return parse_host_port(self.listen)


def parse_host_port(address: str) -> tuple[str, int]:
    """`HOST:PORT` (`[v6]:PORT` too) as (host, port); a `ValueError` naming the value and the range.

    Checked here, not by the socket call: an out-of-range port would reach `bind` as an
    OverflowError and a traceback.
    """
    host, _, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not host or not port.isascii() or not port.isdigit():
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8000), got {address!r}")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port {int(port)} of {address!r} is out of range: a port is 1-65535")
    return host, int(port)


def load_http_component(
    engine: HostEngine, path: str, cache: CompileCache, wrap: WrapFunc | None = None
) -> LinkedComponent:
    """Read, compile (through `cache`) and link an HTTP component, checking it exports the handler.

    Blocking (compilation): call it off the event loop when the loop serves other work.
    """
    # Capabilities need a lattice; outside one they answer their interface's error (or an empty
    # config), so such components still run here.
    data = read_component_file(path)
    comp = cache.load(data, engine, path)
    linked = link(engine, comp, host_registry(), origin=path, wrap=wrap)
    if not any(n.split("@")[0] == INCOMING_HANDLER for n in linked.exports):
        raise ComponentError(
            f"{path} does not export {INCOMING_HANDLER}; it is not an HTTP component "
            "(build it for the wasi:http/proxy world)"
        )
    return linked


class ComponentApp:
    """`wasmlattice run`: one loaded, linked component and the handler that serves it over HTTP."""

    def __init__(self, path: str, opts: ServeOptions, engine: HostEngine | None = None) -> None:
        self.path = path
        self.opts = opts
        self.engine = engine or HostEngine(EngineSettings(strategy=opts.compiler))
        # Recording decides the link: a component served without it binds no recording wrapper.
        recorder = (
            None
            if opts.record_dir is None
            else Recorder(
                opts.record_dir, Path(path).stem, str(Path(path).resolve()), read_component_file(path)
            )
        )
        self.linked = load_http_component(
            self.engine,
            path,
            CompileCache(opts.cache_dir or default_cache_dir()),
            wrap=None if recorder is None else recorder.wrap,
        )
        self.pool = InstancePool(
            self.engine, self.linked, INCOMING_HANDLER, "handle", reuse=opts.reuse, max_memory=opts.max_memory
        )
        self.config = WasiConfig(
            component_id=Path(path).stem,
            env=list(opts.env),
            args=list(opts.args),
            read_only_dirs=dict(opts.read_only_dirs),
            allowed_outgoing=tuple(opts.allowed_outgoing),
            output=OutputLimiter(Path(path).stem, opts.output),
        )
        self.target = HttpTarget(path, self.pool, self.config, timeout=opts.timeout, threads=opts.threads)
        self.target.recorder = recorder
        self.handler = HttpHandler(
            lambda _request: self.target, max_body=opts.max_body, body_timeout=opts.limits.body_timeout
        )

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve one HTTP request by calling the guest's incoming handler."""
        return await self.handler.handle(request)

    async def close(self) -> None:
        """Release the worker threads and pooled client connections."""
        await self.handler.close()
        self.target.executor.shutdown(wait=False, cancel_futures=True)
        self.engine.close()


async def serve_app(
    app: ComponentApp, sock: socket.socket, ready: asyncio.Event | None = None, worker: int = 0
) -> None:
    """Serve `app` on `sock` until cancelled (`worker`: the index of this worker process)."""
    metrics = await _start_metrics(app, worker)
    server = IngressServer(
        app.handle if metrics is None else app.handler.counted(metrics, lambda _r: app.config.component_id),
        app.opts.limits,
        max_line_size=app.opts.max_header_size,
        max_field_size=app.opts.max_header_size,
        access_log=None,
    )
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await app.close()
        if metrics is not None:
            await metrics.release()


async def _start_metrics(app: ComponentApp, worker: int) -> HostMetrics | None:
    """Metrics of this worker when its settings enable them (docs/observability.md#metrics).

    Worker `i` of `--workers` serves `/metrics` on the configured port plus `i`: a scrape must
    read one process's counters, so the workers cannot share one port as they share the listener.
    """
    settings = app.opts.observability_settings()
    if not settings.metrics_wanted:
        return None
    from wasmlattice.observability.metrics import MetricsError, parse_listen, start_host_metrics

    try:
        if worker and settings.metrics_listen is not None:
            host, port = parse_listen(settings.metrics_listen)
            if port:
                shown = f"[{host}]" if ":" in host else host
                settings = dataclasses.replace(settings, metrics_listen=f"{shown}:{port + worker}")
        metrics = await start_host_metrics(settings, f"run-w{worker}", "")
    except MetricsError as e:
        raise ComponentError(str(e)) from None
    assert metrics is not None
    app.target.metrics = metrics.component(app.config.component_id, app.path)
    return metrics


log = logging.getLogger("wasmlattice.http")


def _describe(path: str, opts: ServeOptions) -> str:
    mode = (
        "a fresh instance per request"
        if opts.reuse == 1
        else f"instances reused for up to {opts.reuse} requests"
    )
    workers = f"{opts.workers} worker{'s' if opts.workers != 1 else ''}"
    return f"serving {path} on http://{opts.listen}/ ({workers}, {mode})"


async def _serve_until_signal(app: ComponentApp, sock: Any, on_ready: Any = None, worker: int = 0) -> None:
    # Traces (and OTLP logs) of this process, as a host sets them up; each worker is a process of
    # its own with its own exporter, named `run-w<i>` in the resource's host ID.
    observability.setup(app.opts.observability_settings(), host_id=f"run-w{worker}", role="run")
    try:
        await _serve_signalled(app, sock, on_ready, worker)
    finally:
        # The spans still batched go out before the process ends (a blocking post: off the loop).
        await asyncio.to_thread(observability.shutdown)


async def _serve_signalled(app: ComponentApp, sock: Any, on_ready: Any, worker: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ready = asyncio.Event()
    task = asyncio.ensure_future(serve_app(app, sock, ready, worker))
    ready_wait = asyncio.ensure_future(ready.wait())
    try:
        await asyncio.wait({task, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready_wait.cancel()  # scoped to this wait: no task outlives the function that made it
    if task.done():
        task.result()
    if on_ready is not None:
        on_ready()
    await stop.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _worker_main(path: str, opts: ServeOptions, ready: Any, index: int) -> None:
    logging.basicConfig(
        level=logging.getLogger().level or logging.INFO,
        format=f"%(asctime)s %(levelname)s %(name)s[w{index}]: %(message)s",
        stream=sys.stderr,
    )
    try:
        app = ComponentApp(path, opts)
        host, port = opts.host_port()
        sock = bind_socket(host, port)
    except Exception as e:
        ready.put((index, f"{type(e).__name__}: {e}"))
        return
    aio.run(_serve_until_signal(app, sock, on_ready=lambda: ready.put((index, None)), worker=index))


def run_server(path: str, opts: ServeOptions) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit code."""
    host, port = opts.host_port()
    try:
        # SO_REUSEPORT would let us share the port with a stranger (another `run`, another server),
        # splitting requests between us at random: only our own --workers may share it.
        if port and port_in_use(host, port):
            raise ComponentError(
                f"cannot listen on {opts.listen}: another process already listens there "
                "(only this command's own --workers share a port)"
            )
        probe = bind_socket(host, port)
    except OSError as e:
        raise ComponentError(f"cannot listen on {opts.listen}: {e.strerror or e}") from None
    except (ValueError, TypeError) as e:  # a host name the resolver cannot encode (a long non-ASCII label)
        raise ComponentError(f"cannot listen on {opts.listen}: {e}") from None
    if opts.workers == 1:
        app = ComponentApp(path, opts)
        print(f"wasmlattice: {_describe(path, opts)}", flush=True)
        aio.run(_serve_until_signal(app, probe))
        return 0
    probe.close()
    # Compile once here so that every worker loads the cached artifact (and errors show once).
    ComponentApp(path, opts).engine.close()
    return _supervise(path, opts)


def _supervise(path: str, opts: ServeOptions) -> int:
    ctx = multiprocessing.get_context("spawn")
    ready: Any = ctx.Queue()
    procs: dict[int, Any] = {}

    def start(i: int) -> None:
        p = ctx.Process(target=_worker_main, args=(path, opts, ready, i), name=f"wasmlattice-worker-{i}")
        p.start()
        procs[i] = p

    for i in range(opts.workers):
        start(i)
    for _ in range(opts.workers):
        i, err = ready.get()
        if err is not None:
            for p in procs.values():
                p.terminate()
            raise ComponentError(f"worker {i} failed to start: {err}")
    print(f"wasmlattice: {_describe(path, opts)}", flush=True)

    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    restarts: dict[int, float] = {}
    while not stopping:
        time.sleep(0.2)
        for i, p in list(procs.items()):
            if not p.is_alive() and not stopping:
                wait = min(10.0, 0.5 * 2 ** min(restarts.get(i, 0), 5))
                log.error("worker %d exited with %s; restarting in %.1fs", i, p.exitcode, wait)
                time.sleep(wait)
                restarts[i] = restarts.get(i, 0) + 1
                start(i)
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        p.join(10)
        if p.is_alive():
            p.kill()
    return 0
