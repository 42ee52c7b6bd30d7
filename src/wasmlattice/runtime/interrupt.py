"""Stopping a running guest from outside: its deadline, a client gone, its component retired.

wasmtime checks the store's epoch deadline at function entries and loop back-edges, and the
engine's ticker (`runtime.engine`) advances the epoch every `EPOCH_TICK_SECONDS`. Each store gets
an epoch-deadline callback (wasmtime's `wasmtime_store_epoch_deadline_callback`, which
wasmtime-py does not wrap) that runs on the guest's own thread every `CHECK_SECONDS` of guest
execution: it traps when the call's `Interruption` was set (from any thread) or its deadline has
passed, and otherwise lets the guest run on. Setting a store's deadline from another thread
instead would race with the running guest; the callback only reads Python attributes.

A guest blocked in a host call (not running wasm) is not reached by the callback; host waits are
bounded by the WASI context's own deadline (`wasi.ctx`).
"""

from __future__ import annotations

import ctypes
import threading
import time
import weakref
from ctypes import POINTER, c_size_t, c_uint8, c_uint64, c_void_p
from typing import Any

import wasmtime

from wasmlattice.runtime.engine import EPOCH_TICK_SECONDS
from wasmlattice.runtime.fastcall import Trap
from wasmlattice.runtime.fastcall_values import proto

# How often a running guest checks whether it was interrupted: it bounds how long a guest runs
# on after its client went away or its component was stopped, at the cost of one Python call
# per running guest per period.
CHECK_SECONDS = 0.1
_CHECK_TICKS = max(1, round(CHECK_SECONDS / EPOCH_TICK_SECONDS))
_CONTINUE = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE

_Callback = ctypes.CFUNCTYPE(c_size_t, c_void_p, c_void_p, POINTER(c_uint64), POINTER(c_uint8))
_Finalizer = ctypes.CFUNCTYPE(None, c_void_p)
_set_callback = proto(
    "wasmtime_store_epoch_deadline_callback", None, c_void_p, _Callback, c_void_p, _Finalizer
)
_error_new = proto("wasmtime_error_new", c_void_p, ctypes.c_char_p)


class DeadlineExceeded(Trap):
    """The guest's deadline passed (while it ran, or while the host waited on its behalf)."""


class Interrupted(Trap):
    """The guest was stopped before its deadline: its client went away or its component stopped."""


class Interruption:
    """Asks one guest call to stop: set from any thread, seen by the guest within CHECK_SECONDS."""

    __slots__ = ("label", "reason")

    def __init__(self, label: str = "") -> None:
        self.label = label  # what the call serves, for logs (e.g. "GET /loop")
        self.reason: str | None = None

    def interrupt(self, reason: str) -> None:
        """Stop the guest call (the first reason given stands)."""
        if self.reason is None:
            self.reason = reason


_local = threading.local()


def current() -> Interruption | None:
    """The interruption of the guest call this thread runs now (None: none was set)."""
    return getattr(_local, "token", None)


def set_current(token: Interruption | None) -> Interruption | None:
    """Make `token` this thread's current interruption; returns the previous one."""
    prev = getattr(_local, "token", None)
    _local.token = token
    return prev


class CallLimits:
    """What the epoch callback of one store checks: the running call's deadline and interruption."""

    __slots__ = ("__weakref__", "deadline", "token")

    def __init__(self) -> None:
        self.deadline = float("inf")  # monotonic
        self.token: Interruption | None = None

    def start(self, timeout: float | None) -> None:
        """Arm for one call: `timeout` seconds from now (None: none) and this thread's interruption."""
        self.deadline = float("inf") if timeout is None else time.monotonic() + timeout
        self.token = current()


def install(store: wasmtime.Store, limits: CallLimits, state: Any) -> Any:
    """Give `store` the epoch callback checking `limits`; `state.trap_cause` says why it trapped.

    Returns the callback object, which must live as long as the store (it is also kept on it).
    """
    limits_ref = weakref.ref(limits)

    def check(_ctx: int, _env: int, delta: Any, kind: Any) -> int:
        try:
            lim = limits_ref()
            if lim is None:
                return int(_error_new(b"guest interrupted: its instance is gone") or 0)
            token = lim.token
            if token is not None and token.reason is not None:
                state.trap_cause = Interrupted(f"guest interrupted: {token.reason}")
                return int(_error_new(f"guest interrupted: {token.reason}".encode()) or 0)
            left = lim.deadline - time.monotonic()
            if left <= 0:
                state.trap_cause = DeadlineExceeded("deadline exceeded")
                return int(_error_new(b"guest interrupted: deadline exceeded") or 0)
            ticks = min(_CHECK_TICKS, max(1, round(left / EPOCH_TICK_SECONDS)))
            delta[0] = ticks
            kind[0] = _CONTINUE
            return 0
        except BaseException:  # an exception must not cross into wasmtime: stop the guest
            return int(_error_new(b"guest interrupted: the interruption check failed") or 0)

    cb = _Callback(check)
    _set_callback(ctypes.cast(store.ptr(), c_void_p), cb, None, _Finalizer())
    store._wasmlattice_epoch_cb = cb  # type: ignore[attr-defined]
    return cb


def first_check_ticks(timeout: float | None) -> int:
    """Epoch ticks until a call's first check (its deadline when sooner)."""
    if timeout is None:
        return _CHECK_TICKS
    return min(_CHECK_TICKS, max(1, round(timeout / EPOCH_TICK_SECONDS)))
