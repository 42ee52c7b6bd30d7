"""`wasmlattice run`: one process, or several worker processes sharing the port with SO_REUSEPORT.

Threads cannot scale guests past the GIL (every host call takes it back), so throughput comes
from processes. The parent compiles the component once (filling the compile cache), then
supervises workers that load the compiled artifact, restarting any that die.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import sys
import time
from typing import Any

from wasmlattice import aio
from wasmlattice.http.server import ComponentApp, ServeOptions, bind_socket, serve_app
from wasmlattice.runtime.component import ComponentError

log = logging.getLogger("wasmlattice.http")


def _describe(path: str, opts: ServeOptions) -> str:
    mode = (
        "a fresh instance per request"
        if opts.reuse == 1
        else f"instances reused for up to {opts.reuse} requests"
    )
    workers = f"{opts.workers} worker{'s' if opts.workers != 1 else ''}"
    return f"serving {path} on http://{opts.listen}/ ({workers}, {mode})"


async def _serve_until_signal(app: ComponentApp, sock: Any, on_ready: Any = None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ready = asyncio.Event()
    task = asyncio.ensure_future(serve_app(app, sock, ready))
    await asyncio.wait({task, asyncio.ensure_future(ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
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
    aio.run(_serve_until_signal(app, sock, on_ready=lambda: ready.put((index, None))))


def run_server(path: str, opts: ServeOptions) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit code."""
    host, port = opts.host_port()
    try:
        probe = bind_socket(host, port)
    except OSError as e:
        raise ComponentError(f"cannot listen on {opts.listen}: {e.strerror}") from None
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
