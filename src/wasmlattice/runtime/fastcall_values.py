"""The fast host-call path's values: wasmtime's C value layout and conversions to and from Python.

wasmtime-py's generic `add_func` path re-derives every type through FFI on each call (about 27 µs
for a trivial call, up to 0.5 ms for `wasi:http` signatures). Here each function's argument and
result conversions (`Codec`) are built once, at link time, as closures over plain type
descriptions (`witypes`); `fastcall.py` dispatches host calls and calls exports with them. Values
are read and written by address with our own ctypes prototypes (taking `c_void_p`), so no
per-call pointer objects are made.

This module and `fastcall.py` lean on the C API of the exactly pinned `wasmtime` package. Keep all
of that in these two.
"""

from __future__ import annotations

import ctypes
import struct
import threading
from collections.abc import Callable
from ctypes import (
    CFUNCTYPE,
    c_bool,
    c_char_p,
    c_double,
    c_float,
    c_int8,
    c_int16,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import TYPE_CHECKING, Any

from wasmtime import _ffi as ffi

from wasmlattice.runtime.witypes import (
    EnumT,
    Err,
    FlagsT,
    HandleT,
    ListT,
    Ok,
    OptionT,
    Prim,
    RecordT,
    ResultT,
    TupleT,
    VariantT,
    WitType,
)

if TYPE_CHECKING:
    from wasmlattice.runtime.store import StoreState

_lib = ffi.dll

# Every C function we bind, by name: (restype, argtypes). tests/unit/test_fastcall.py checks each
# against the prototypes wasmtime-py generates from the pinned release's C headers
# (`wasmtime/_bindings.py`; the wheel ships no headers), so an upgrade that changes one fails there.
C_SIGNATURES: dict[str, tuple[Any, tuple[Any, ...]]] = {}


def proto(name: str, restype: Any, *argtypes: Any) -> Any:
    """Our own foreign-function object (never mutate wasmtime-py's shared ones).

    These C functions are short and never run wasm, so they keep the GIL (PYFUNCTYPE): dropping
    and re-taking it around each would cost more than the call, and invite contention.
    """
    C_SIGNATURES[name] = (restype, argtypes)
    return ctypes.PYFUNCTYPE(restype, *argtypes)((name, _lib))


def proto_releasing(name: str, restype: Any, *argtypes: Any) -> Any:
    """A foreign function that releases the GIL: for calls that run wasm."""
    C_SIGNATURES[name] = (restype, argtypes)
    return CFUNCTYPE(restype, *argtypes)((name, _lib))


# Value kinds of wasmtime_component_val_t.
K_BOOL, K_S8, K_U8, K_S16, K_U16, K_S32, K_U32, K_S64, K_U64, K_F32, K_F64 = range(11)
K_CHAR, K_STRING, K_LIST, K_RECORD, K_TUPLE, K_VARIANT, K_ENUM, K_OPTION, K_RESULT = range(11, 20)
K_FLAGS, K_RESOURCE = 20, 21

VAL_SIZE = ctypes.sizeof(ffi.wasmtime_component_val_t)
assert VAL_SIZE == 32, "wasmtime_component_val_t layout changed: re-check the offsets here"
ENTRY_SIZE = 16 + VAL_SIZE  # record entry: wasm_name_t + value
NAME_SIZE = 16  # wasm_name_t: size_t size, uint8_t* data

_byte_vec_new = proto("wasm_byte_vec_new", None, c_void_p, c_size_t, c_char_p)
_vallist_new_uninit = proto("wasmtime_component_vallist_new_uninit", None, c_void_p, c_size_t)
_valrecord_new_uninit = proto("wasmtime_component_valrecord_new_uninit", None, c_void_p, c_size_t)
_valtuple_new_uninit = proto("wasmtime_component_valtuple_new_uninit", None, c_void_p, c_size_t)
_valflags_new_uninit = proto("wasmtime_component_valflags_new_uninit", None, c_void_p, c_size_t)
_val_new = proto("wasmtime_component_val_new", c_void_p, c_void_p)
_host_new = proto("wasmtime_component_resource_host_new", c_void_p, c_bool, c_uint32, c_uint32)
_host_rep = proto("wasmtime_component_resource_host_rep", c_uint32, c_void_p)
_host_delete = proto("wasmtime_component_resource_host_delete", None, c_void_p)
_host_to_any = proto("wasmtime_component_resource_host_to_any", c_void_p, c_void_p, c_void_p, c_void_p)
_any_to_host = proto("wasmtime_component_resource_any_to_host", c_void_p, c_void_p, c_void_p, c_void_p)
_error_message = proto("wasmtime_error_message", None, c_void_p, c_void_p)
_error_delete = proto("wasmtime_error_delete", None, c_void_p)
_byte_vec_delete = proto("wasm_byte_vec_delete", None, c_void_p)

_string_at = ctypes.string_at
_memmove = ctypes.memmove


def _reader(ctype: Any) -> Callable[[int], Any]:
    """A function reading a `ctype` at an address."""
    from_address = ctype.from_address

    def read(addr: int) -> Any:
        return from_address(addr).value

    return read


_read_bool = _reader(c_bool)
_read_size = _reader(c_size_t)
_read_ptr = _reader(c_void_p)


def _write_ptr(addr: int, value: int | None) -> None:
    c_void_p.from_address(addr).value = value


def error_message(err: int) -> str:
    """Read and free a `wasmtime_error_t`."""
    vec = (c_uint8 * 16)()
    _error_message(err, ctypes.addressof(vec))
    size = _read_size(ctypes.addressof(vec))
    data = _read_ptr(ctypes.addressof(vec) + 8)
    msg = _string_at(data, size).decode("utf-8", "replace") if size else ""
    _byte_vec_delete(ctypes.addressof(vec))
    _error_delete(err)
    return msg


# ---------------------------------------------------------------------------------------------
# Lifting (C value at an address -> Python) and lowering (Python -> C value at an address).
# A lift is `(state, addr) -> value`; a lower is `(state, value, addr) -> None`. Lowered values
# must own only Rust-allocated memory (the C API frees results after the callback), so nested
# data is made with the C API's own constructors.
# ---------------------------------------------------------------------------------------------

Lift = Callable[["StoreState", int], Any]
Lower = Callable[["StoreState", Any, int], None]

_PRIM_CTYPES: dict[str, tuple[int, Any, str]] = {
    "bool": (K_BOOL, c_bool, "?"),
    "s8": (K_S8, c_int8, "b"),
    "u8": (K_U8, c_uint8, "B"),
    "s16": (K_S16, c_int16, "h"),
    "u16": (K_U16, c_uint16, "H"),
    "s32": (K_S32, c_int32, "i"),
    "u32": (K_U32, c_uint32, "I"),
    "s64": (K_S64, c_int64, "q"),
    "u64": (K_U64, c_uint64, "Q"),
    "f32": (K_F32, c_float, "f"),
    "f64": (K_F64, c_double, "d"),
    "char": (K_CHAR, c_uint32, "I"),
}

_INT_RANGES = {
    "s8": (-(2**7), 2**7 - 1),
    "u8": (0, 2**8 - 1),
    "s16": (-(2**15), 2**15 - 1),
    "u16": (0, 2**16 - 1),
    "s32": (-(2**31), 2**31 - 1),
    "u32": (0, 2**32 - 1),
    "s64": (-(2**63), 2**63 - 1),
    "u64": (0, 2**64 - 1),
}


def _lift_prim(name: str) -> Lift:
    if name == "string":

        def lift_string(st: StoreState, a: int) -> str:
            n = _read_size(a + 8)
            return _string_at(_read_ptr(a + 16), n).decode("utf-8") if n else ""

        return lift_string
    _, ctype, _ = _PRIM_CTYPES[name]
    read = _reader(ctype)
    if name == "char":

        def lift_char(st: StoreState, a: int) -> str:
            return chr(read(a + 8))

        return lift_char

    def lift_num(st: StoreState, a: int) -> Any:
        return read(a + 8)

    return lift_num


def _lower_prim(name: str) -> Lower:
    if name == "string":

        def lower_string(st: StoreState, v: Any, a: int) -> None:
            b = v.encode("utf-8")
            _write_kind(a, K_STRING)
            _byte_vec_new(a + 8, len(b), b)

        return lower_string
    kind, _, code = _PRIM_CTYPES[name]
    pack = struct.Struct("<B7x" + code).pack
    size = struct.calcsize("<B7x" + code)
    if name == "char":

        def lower_char(st: StoreState, v: Any, a: int) -> None:
            _memmove(a, pack(kind, ord(v)), size)

        return lower_char
    if name in _INT_RANGES:
        lo, hi = _INT_RANGES[name]

        def lower_int(st: StoreState, v: Any, a: int) -> None:
            if not lo <= v <= hi:
                raise ValueError(f"{v} is out of range for {name}")
            _memmove(a, pack(kind, v), size)

        return lower_int

    def lower_other(st: StoreState, v: Any, a: int) -> None:
        _memmove(a, pack(kind, v), size)

    return lower_other


def _write_kind(a: int, kind: int) -> None:
    c_uint8.from_address(a).value = kind


_U8_TEMPLATE = bytearray()
_U8_LOCK = threading.Lock()


def _u8_template(n: int) -> bytearray:
    """A buffer of `n` u8 values (kind byte set, payload zero), grown on demand and shared."""
    global _U8_TEMPLATE
    need = n * VAL_SIZE
    if len(_U8_TEMPLATE) < need:
        with _U8_LOCK:
            if len(_U8_TEMPLATE) < need:
                size = max(need, 2 * len(_U8_TEMPLATE), 64 * VAL_SIZE)
                t = bytearray(size)
                t[0::VAL_SIZE] = bytes([K_U8]) * (size // VAL_SIZE)
                _U8_TEMPLATE = t
    return _U8_TEMPLATE


def _lift_bytes(st: StoreState, a: int) -> bytes:
    n = _read_size(a + 8)
    if not n:
        return b""
    return _string_at(_read_ptr(a + 16), n * VAL_SIZE)[8::VAL_SIZE]


def _lower_bytes(st: StoreState, v: Any, a: int) -> None:
    n = len(v)
    _write_kind(a, K_LIST)
    _vallist_new_uninit(a + 8, n)
    if n:
        buf = _u8_template(n)[: n * VAL_SIZE]
        buf[8::VAL_SIZE] = v
        _memmove(_read_ptr(a + 16), bytes(buf), n * VAL_SIZE)


class Codec:
    """Builds (and caches, per type) the lift and lower closures for value types."""

    def __init__(self) -> None:
        self._lifts: dict[WitType, Lift] = {}
        self._lowers: dict[WitType, Lower] = {}

    def lift(self, t: WitType) -> Lift:
        """The lift closure for `t`."""
        f = self._lifts.get(t)
        if f is None:
            f = self._lifts[t] = self._make_lift(t)
        return f

    def lower(self, t: WitType) -> Lower:
        """The lower closure for `t`."""
        f = self._lowers.get(t)
        if f is None:
            f = self._lowers[t] = self._make_lower(t)
        return f

    def _make_lift(self, t: WitType) -> Lift:
        if isinstance(t, Prim):
            return _lift_prim(t.name)
        if isinstance(t, ListT):
            if t.elem == Prim("u8"):
                return _lift_bytes
            elem = self.lift(t.elem)

            def lift_list(st: StoreState, a: int) -> list[Any]:
                n = _read_size(a + 8)
                d = _read_ptr(a + 16)
                return [elem(st, d + i * VAL_SIZE) for i in range(n)]

            return lift_list
        if isinstance(t, RecordT):
            fields = [self.lift(ft) for _, ft in t.fields]

            def lift_record(st: StoreState, a: int) -> tuple[Any, ...]:
                d = _read_ptr(a + 16) + NAME_SIZE
                return tuple([f(st, d + i * ENTRY_SIZE) for i, f in enumerate(fields)])

            return lift_record
        if isinstance(t, TupleT):
            elems = [self.lift(et) for et in t.elems]

            def lift_tuple(st: StoreState, a: int) -> tuple[Any, ...]:
                d = _read_ptr(a + 16)
                return tuple([f(st, d + i * VAL_SIZE) for i, f in enumerate(elems)])

            return lift_tuple
        if isinstance(t, VariantT):
            cases = {n.encode(): (n, None if ct is None else self.lift(ct)) for n, ct in t.cases}

            def lift_variant(st: StoreState, a: int) -> Any:
                name, f = cases[_string_at(_read_ptr(a + 16), _read_size(a + 8))]
                if f is None:
                    return (name, None)
                return (name, f(st, _read_ptr(a + 24)))

            return lift_variant
        if isinstance(t, EnumT):

            def lift_enum(st: StoreState, a: int) -> str:
                return _string_at(_read_ptr(a + 16), _read_size(a + 8)).decode()

            return lift_enum
        if isinstance(t, OptionT):
            inner = self.lift(t.inner)

            def lift_option(st: StoreState, a: int) -> Any:
                p = _read_ptr(a + 8)
                return None if not p else inner(st, p)

            return lift_option
        if isinstance(t, ResultT):
            ok = None if t.ok is None else self.lift(t.ok)
            err = None if t.err is None else self.lift(t.err)

            def lift_result(st: StoreState, a: int) -> Ok | Err:
                p = _read_ptr(a + 16)
                if _read_bool(a + 8):
                    return Ok(ok(st, p) if ok is not None else None)
                return Err(err(st, p) if err is not None else None)

            return lift_result
        if isinstance(t, FlagsT):

            def lift_flags(st: StoreState, a: int) -> set[str]:
                n = _read_size(a + 8)
                d = _read_ptr(a + 16)
                out = set()
                for i in range(n):
                    e = d + i * NAME_SIZE
                    out.add(_string_at(_read_ptr(e + 8), _read_size(e)).decode())
                return out

            return lift_flags
        if isinstance(t, HandleT):
            return _lift_own if t.owned else _lift_borrow
        raise TypeError(f"unsupported type {t}")

    def _make_lower(self, t: WitType) -> Lower:
        if isinstance(t, Prim):
            return _lower_prim(t.name)
        if isinstance(t, ListT):
            if t.elem == Prim("u8"):
                return _lower_bytes
            elem = self.lower(t.elem)

            def lower_list(st: StoreState, v: Any, a: int) -> None:
                n = len(v)
                _write_kind(a, K_LIST)
                _vallist_new_uninit(a + 8, n)
                d = _read_ptr(a + 16)
                for i, x in enumerate(v):
                    elem(st, x, d + i * VAL_SIZE)

            return lower_list
        if isinstance(t, RecordT):
            fields = [(n.encode(), self.lower(ft)) for n, ft in t.fields]
            count = len(fields)

            def lower_record(st: StoreState, v: Any, a: int) -> None:
                if len(v) != count:
                    raise ValueError(f"expected {count} record fields, got {len(v)}")
                _write_kind(a, K_RECORD)
                _valrecord_new_uninit(a + 8, count)
                d = _read_ptr(a + 16)
                for i, (name, f) in enumerate(fields):
                    e = d + i * ENTRY_SIZE
                    _byte_vec_new(e, len(name), name)
                    f(st, v[i], e + NAME_SIZE)

            return lower_record
        if isinstance(t, TupleT):
            elems = [self.lower(et) for et in t.elems]
            count = len(elems)

            def lower_tuple(st: StoreState, v: Any, a: int) -> None:
                _write_kind(a, K_TUPLE)
                _valtuple_new_uninit(a + 8, count)
                d = _read_ptr(a + 16)
                for i, f in enumerate(elems):
                    f(st, v[i], d + i * VAL_SIZE)

            return lower_tuple
        if isinstance(t, VariantT):
            vcases = {n: (n.encode(), None if ct is None else self.lower(ct)) for n, ct in t.cases}

            def lower_variant(st: StoreState, v: Any, a: int) -> None:
                if isinstance(v, str):
                    name, payload = v, None
                else:
                    name, payload = v
                try:
                    bname, f = vcases[name]
                except KeyError:
                    raise ValueError(f"{name!r} is not a case of {t}") from None
                _write_kind(a, K_VARIANT)
                _byte_vec_new(a + 8, len(bname), bname)
                _write_ptr(a + 24, None if f is None else _boxed(st, f, payload))

            return lower_variant
        if isinstance(t, EnumT):
            names = {n: n.encode() for n in t.names}

            def lower_enum(st: StoreState, v: Any, a: int) -> None:
                b = names[v]
                _write_kind(a, K_ENUM)
                _byte_vec_new(a + 8, len(b), b)

            return lower_enum
        if isinstance(t, OptionT):
            inner = self.lower(t.inner)

            def lower_option(st: StoreState, v: Any, a: int) -> None:
                _write_kind(a, K_OPTION)
                _write_ptr(a + 8, None if v is None else _boxed(st, inner, v))

            return lower_option
        if isinstance(t, ResultT):
            ok = None if t.ok is None else self.lower(t.ok)
            err = None if t.err is None else self.lower(t.err)

            def lower_result(st: StoreState, v: Any, a: int) -> None:
                if isinstance(v, Err):
                    is_ok, f, payload = False, err, v.value
                elif isinstance(v, Ok):
                    is_ok, f, payload = True, ok, v.value
                else:
                    is_ok, f, payload = True, ok, v
                _write_kind(a, K_RESULT)
                c_bool.from_address(a + 8).value = is_ok
                _write_ptr(a + 16, None if f is None else _boxed(st, f, payload))

            return lower_result
        if isinstance(t, FlagsT):
            fnames = {n: n.encode() for n in t.names}

            def lower_flags(st: StoreState, v: Any, a: int) -> None:
                _write_kind(a, K_FLAGS)
                _valflags_new_uninit(a + 8, len(v))
                d = _read_ptr(a + 16)
                for i, n in enumerate(v):
                    b = fnames[n]
                    _byte_vec_new(d + i * NAME_SIZE, len(b), b)

            return lower_flags
        if isinstance(t, HandleT):
            tid, owned = t.type_id, t.owned

            def lower_handle(st: StoreState, v: Any, a: int) -> None:
                host = _host_new(owned, st.insert(v), tid)
                # wasmtime writes the new handle straight into the value's payload slot.
                e = _host_to_any(st.ctx, host, a + 8)
                _host_delete(host)
                if e:
                    raise RuntimeError(error_message(e))
                _write_kind(a, K_RESOURCE)

            return lower_handle
        raise TypeError(f"unsupported type {t}")


def _boxed(st: StoreState, lower: Lower, v: Any) -> int:
    """Lower `v` into a Rust-owned heap value (`val_new` moves the temporary)."""
    tmp = (c_uint8 * VAL_SIZE)()
    lower(st, v, ctypes.addressof(tmp))
    p: int = _val_new(ctypes.addressof(tmp))
    return p


def _host_rep_of(st: StoreState, a: int) -> int:
    out = c_void_p()
    e = _any_to_host(st.ctx, _read_ptr(a + 8), ctypes.addressof(out))
    if e:
        raise RuntimeError(f"resource handle is not a host resource: {error_message(e)}")
    rep: int = _host_rep(out.value)
    _host_delete(out.value)
    return rep


def _lift_borrow(st: StoreState, a: int) -> Any:
    return st.table[_host_rep_of(st, a)]


def _lift_own(st: StoreState, a: int) -> Any:
    # Ownership moves to the host: the guest will never run the destructor for this handle.
    return st.table.pop(_host_rep_of(st, a))
