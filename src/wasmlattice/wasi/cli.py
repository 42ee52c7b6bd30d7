"""`wasi:cli` 0.2: environment, arguments, exit, and stdio (stdout/stderr go to the host's log).

Guest output is cut into lines and bounded per component by `wasi/output_limit.py`.
"""

from __future__ import annotations

import logging

from wasmlattice.runtime.fastcall import Trap
from wasmlattice.runtime.linking import HostInterface
from wasmlattice.runtime.witypes import Err
from wasmlattice.wasi.ctx import ctx
from wasmlattice.wasi.io import BytePipe, InputStream, OutputStream
from wasmlattice.wasi.output_limit import LineSink, OutputLimiter


class GuestExit(Trap):
    """The guest called `wasi:cli/exit`."""

    def __init__(self, code: int) -> None:
        super().__init__(f"guest exited with status {code}")
        self.code = code


def _sink(stream: str) -> LineSink:
    wctx = ctx()
    s: LineSink | None = wctx.sinks.get(stream)
    if s is None:
        level = logging.INFO if stream == "stdout" else logging.WARNING
        tag = f"[{wctx.config.component_id} {stream}]"
        log = wctx.log

        def emit(line: str) -> None:
            log.log(level, "%s %s", tag, line)

        def on_oom() -> None:
            wctx.out_of_memory = True

        limiter = wctx.config.output or OutputLimiter(wctx.config.component_id)
        s = wctx.sinks[stream] = LineSink(limiter, stream, emit, on_oom)
        wctx.cleanups.append(s.flush)
    return s


def _stdin() -> InputStream:
    pipe = BytePipe(ctx())
    pipe.eof = True  # components get no stdin
    return InputStream(pipe)


def _exit(status: object) -> None:
    raise GuestExit(1 if isinstance(status, Err) else 0)


def _exit_with_code(code: int) -> None:
    raise GuestExit(code)


def _stdout() -> OutputStream:
    return OutputStream(None, sink=_sink("stdout").write)


def _stderr() -> OutputStream:
    return OutputStream(None, sink=_sink("stderr").write)


def interfaces() -> list[HostInterface]:
    """The `wasi:cli` interfaces."""
    return [
        HostInterface(
            "wasi:cli/environment",
            {
                "get-environment": lambda: list(ctx().config.env),
                "get-arguments": lambda: list(ctx().config.args),
                "initial-cwd": lambda: None,
            },
        ),
        HostInterface("wasi:cli/exit", {"exit": _exit, "exit-with-code": _exit_with_code}),
        HostInterface("wasi:cli/stdin", {"get-stdin": _stdin}),
        HostInterface("wasi:cli/stdout", {"get-stdout": _stdout}),
        HostInterface("wasi:cli/stderr", {"get-stderr": _stderr}),
        HostInterface("wasi:cli/terminal-input", {}),
        HostInterface("wasi:cli/terminal-output", {}),
        HostInterface("wasi:cli/terminal-stdin", {"get-terminal-stdin": lambda: None}),
        HostInterface("wasi:cli/terminal-stdout", {"get-terminal-stdout": lambda: None}),
        HostInterface("wasi:cli/terminal-stderr", {"get-terminal-stderr": lambda: None}),
    ]
