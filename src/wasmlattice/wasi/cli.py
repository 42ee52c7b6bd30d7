"""`wasi:cli` 0.2: environment, arguments, exit, and stdio (stdout/stderr go to the host's log)."""

from __future__ import annotations

import logging

from wasmlattice.runtime.fastcall import Trap
from wasmlattice.runtime.linking import HostInterface
from wasmlattice.runtime.witypes import Err
from wasmlattice.wasi.ctx import WasiCtx, ctx
from wasmlattice.wasi.io import BytePipe, InputStream, OutputStream

_MAX_LINE = 16 * 1024


class GuestExit(Trap):
    """The guest called `wasi:cli/exit`."""

    def __init__(self, code: int) -> None:
        super().__init__(f"guest exited with status {code}")
        self.code = code


class _LogSink:
    """Line-buffered guest output into the host log, tagged with the component and stream."""

    def __init__(self, wctx: WasiCtx, stream: str) -> None:
        self.wctx = wctx
        self.stream = stream
        self.level = logging.INFO if stream == "stdout" else logging.WARNING
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        self.buf += data
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                if len(self.buf) > _MAX_LINE:
                    self._emit(bytes(self.buf))
                    self.buf.clear()
                return
            self._emit(bytes(self.buf[:i]))
            del self.buf[: i + 1]

    def _emit(self, line: bytes) -> None:
        self.wctx.log.log(
            self.level,
            "[%s %s] %s",
            self.wctx.config.component_id,
            self.stream,
            line.decode("utf-8", "replace").rstrip("\r"),
        )

    def flush(self) -> None:
        if self.buf:
            self._emit(bytes(self.buf))
            self.buf.clear()


def _sink(stream: str) -> _LogSink:
    wctx = ctx()
    s: _LogSink | None = wctx.sinks.get(stream)
    if s is None:
        s = wctx.sinks[stream] = _LogSink(wctx, stream)
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
