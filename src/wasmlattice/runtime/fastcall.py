"""The fast host-call path: one C callback dispatches every host call; exports are called raw.

Each imported function is bound once, at link time, with the conversions `fastcall_values.Codec`
prepares for its signature, and defined in the linker with `add_func`; a single C callback
(`_dispatch`) then lifts the arguments, calls the Python implementation and lowers the result. A
host function's exception becomes a trap; the exception is kept on the store
(`StoreState.trap_cause`) and carried by the `GuestTrap` that the guest call raises.
`ExportFunc` calls a guest export the same way, without wasmtime-py's per-call type introspection.

This module and `fastcall_values.py` lean on the C API of the exactly pinned `wasmtime` package.
Keep all of that in these two.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from ctypes import CFUNCTYPE, c_char_p, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p
from typing import TYPE_CHECKING, Any

from wasmlattice.runtime.fastcall_values import VAL_SIZE, Codec, error_message, proto, proto_releasing
from wasmlattice.runtime.witypes import Err, FuncSig, ResultT

if TYPE_CHECKING:
    from wasmlattice.runtime.store import StoreState

_val_delete = proto("wasmtime_component_val_delete", None, c_void_p)
_error_new = proto("wasmtime_error_new", c_void_p, c_char_p)
# Once per call: wasmtime-py's `Store.set_epoch_deadline` looks up the context and converts its
# arguments each time; the store's context pointer is already on its `StoreState`.
_set_epoch_deadline = proto("wasmtime_context_set_epoch_deadline", None, c_void_p, c_uint64)
_func_call = proto_releasing(
    "wasmtime_component_func_call", c_void_p, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t
)
_add_func = proto(
    "wasmtime_component_linker_instance_add_func",
    c_void_p,
    c_void_p,
    c_char_p,
    c_size_t,
    c_void_p,
    c_void_p,
    c_void_p,
)
_add_resource = proto(
    "wasmtime_component_linker_instance_add_resource",
    c_void_p,
    c_void_p,
    c_char_p,
    c_size_t,
    c_void_p,
    c_void_p,
    c_void_p,
    c_void_p,
)
_resource_type_new_host = proto("wasmtime_component_resource_type_new_host", c_void_p, c_uint32)
_resource_type_delete = proto("wasmtime_component_resource_type_delete", None, c_void_p)


class Trap(Exception):
    """Raised by a host function to trap the guest with a message (the instance is then dead)."""


_tls = threading.local()


def current_state() -> StoreState:
    """The store whose guest is running on this thread."""
    st: StoreState = _tls.state
    return st


def set_epoch_deadline(st: StoreState, ticks: int) -> None:
    """`Store.set_epoch_deadline` for the store of `st`, without wasmtime-py's per-call lookups."""
    _set_epoch_deadline(st.ctx, ticks)


def set_current_state(st: StoreState | None) -> StoreState | None:
    """Make `st` the running store on this thread; returns the previous one."""
    prev: StoreState | None = getattr(_tls, "state", None)
    _tls.state = st
    return prev


class BoundFunc:
    """A host function with its conversions prepared for one import's signature."""

    __slots__ = ("impl", "lifts", "lower", "name", "result_is_result", "sig")

    def __init__(self, name: str, sig: FuncSig, impl: Callable[..., Any], codec: Codec) -> None:
        self.name = name
        self.sig = sig
        self.impl = impl
        self.lifts = tuple(codec.lift(t) for _, t in sig.params)
        self.lower = None if sig.result is None else codec.lower(sig.result)
        self.result_is_result = isinstance(sig.result, ResultT)


# Bound host functions by slot; the slot number is the callback's `data`. A slot is freed (and
# reused) when wasmtime drops the linker that defined it, so hosts that load and unload many
# components do not keep every signature they ever linked.
_BOUND: list[BoundFunc | None] = []
_FREE_SLOTS: list[int] = []
_BOUND_LOCK = threading.RLock()  # re-entrant: a GC-run finalizer may fire while it is held


def _dispatch(data: int, ctx: int, ty: int, args: int, nargs: int, results: int, nresults: int) -> int:
    # ctypes hands a NULL `void*` over as None, so index 0 arrives as None.
    bf = _BOUND[data or 0]
    assert bf is not None  # a freed slot's linker (and so its callbacks) is gone
    st: StoreState = _tls.state
    try:
        if nargs == 0:
            ret = bf.impl()
        elif nargs == 1:
            ret = bf.impl(bf.lifts[0](st, args))
        elif nargs == 2:
            l0, l1 = bf.lifts
            ret = bf.impl(l0(st, args), l1(st, args + VAL_SIZE))
        else:
            lifts = bf.lifts
            ret = bf.impl(*[lifts[i](st, args + i * VAL_SIZE) for i in range(nargs)])
        if bf.lower is not None:
            bf.lower(st, ret, results)
        return 0
    except Err as e:
        if bf.lower is not None and bf.result_is_result:
            try:
                bf.lower(st, e, results)
                return 0
            except BaseException as inner:  # a bad error payload is a host bug: trap
                return _trap(st, bf, inner)
        return _trap(st, bf, e)
    except BaseException as e:
        return _trap(st, bf, e)


def _trap(st: StoreState, bf: BoundFunc, e: BaseException) -> int:
    if st.trap_cause is None:
        st.trap_cause = e
    msg = str(e) if isinstance(e, Trap) else f"host function {bf.name} failed: {type(e).__name__}: {e}"
    p: int = _error_new(msg.encode("utf-8", "replace"))
    return p


_DISPATCH = CFUNCTYPE(c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t)(
    _dispatch
)


def _dtor(data: int, ctx: int, rep: int) -> int:
    st: StoreState | None = getattr(_tls, "state", None)
    if st is None:
        return 0
    obj = st.table.pop(rep, None)
    close = getattr(obj, "drop", None)
    if close is not None:
        try:
            close()
        except BaseException as e:
            if st.trap_cause is None:
                st.trap_cause = e
            p: int = _error_new(f"dropping a resource failed: {e}".encode())
            return p
    return 0


_DTOR = CFUNCTYPE(c_void_p, c_void_p, c_void_p, c_uint32)(_dtor)


def _finalize(data: int | None) -> None:
    idx = data or 0
    with _BOUND_LOCK:
        if idx < len(_BOUND) and _BOUND[idx] is not None:
            _BOUND[idx] = None
            _FREE_SLOTS.append(idx)


_FINALIZE = CFUNCTYPE(None, c_void_p)(_finalize)


def bound_slots_in_use() -> int:
    """How many host-function slots are taken (for tests and diagnostics)."""
    with _BOUND_LOCK:
        return len(_BOUND) - len(_FREE_SLOTS)


def add_func(linker_instance: Any, name: str, bound: BoundFunc) -> None:
    """Define `name` in a wasmtime-py `LinkerInstance` as a fast-path host function."""
    with _BOUND_LOCK:
        if _FREE_SLOTS:
            idx = _FREE_SLOTS.pop()
            _BOUND[idx] = bound
        else:
            idx = len(_BOUND)
            _BOUND.append(bound)
    b = name.encode()
    li = ctypes.cast(linker_instance.ptr(), c_void_p).value
    e = _add_func(
        li, b, len(b), ctypes.cast(_DISPATCH, c_void_p).value, idx, ctypes.cast(_FINALIZE, c_void_p).value
    )
    if e:
        raise RuntimeError(f"cannot define {name}: {error_message(e)}")


def add_resource(linker_instance: Any, name: str, type_id: int) -> None:
    """Define resource `name` in a `LinkerInstance` as the host resource type `type_id`."""
    b = name.encode()
    li = ctypes.cast(linker_instance.ptr(), c_void_p).value
    rt = _resource_type_new_host(type_id)
    try:
        e = _add_resource(li, b, len(b), rt, ctypes.cast(_DTOR, c_void_p).value, None, None)
    finally:
        _resource_type_delete(rt)
    if e:
        raise RuntimeError(f"cannot define resource {name}: {error_message(e)}")


class ExportFunc:
    """A guest export with its conversions prepared, called without wasmtime-py's per-call introspection."""

    def __init__(self, name: str, sig: FuncSig, codec: Codec) -> None:
        self.name = name
        self.sig = sig
        self.lowers = tuple(codec.lower(t) for _, t in sig.params)
        self.lift = None if sig.result is None else codec.lift(sig.result)
        self.nparams = len(sig.params)

    def call(self, st: StoreState, func: Any, *args: Any) -> Any:
        """Call the export `func` (a `wasmtime_component_func_t`) in store `st` with Python args."""
        n = self.nparams
        params = (c_uint8 * (VAL_SIZE * max(n, 1)))()
        pa = ctypes.addressof(params)
        done = 0
        result = (c_uint8 * VAL_SIZE)()
        ra = ctypes.addressof(result)
        nres = 0 if self.lift is None else 1
        prev = set_current_state(st)
        try:
            for i in range(n):
                self.lowers[i](st, args[i], pa + i * VAL_SIZE)
                done += 1
            st.trap_cause = None
            e = _func_call(ctypes.addressof(func), st.ctx, pa, n, ra if nres else None, nres)
            if e:
                raise GuestTrap(error_message(e), st.trap_cause)
            if self.lift is None:
                return None
            try:
                return self.lift(st, ra)
            finally:
                _val_delete(ra)
        finally:
            for i in range(done):
                _val_delete(pa + i * VAL_SIZE)
            set_current_state(prev)


class GuestTrap(Exception):
    """The guest trapped (or a host function it called failed); the instance must be discarded."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause

    @property
    def reason(self) -> str:
        """A one-line reason: the host-side cause if there is one, else wasmtime's first line."""
        if self.cause is not None and not isinstance(self.cause, Trap):
            return f"{type(self.cause).__name__}: {self.cause}"
        if isinstance(self.cause, Trap):
            return str(self.cause)
        first = self.message.strip().splitlines()
        return first[-1].strip() if first else "trap"
