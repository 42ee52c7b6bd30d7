"""The fast call path's conversions: every value type round-trips through wasmtime's C values."""

from __future__ import annotations

import ctypes
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wasmlattice.runtime import fastcall, fastcall_values
from wasmlattice.runtime.witypes import (
    EnumT,
    Err,
    FlagsT,
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

CODEC = fastcall_values.Codec()

INT_BOUNDS = {
    "s8": (-(2**7), 2**7 - 1),
    "u8": (0, 2**8 - 1),
    "s16": (-(2**15), 2**15 - 1),
    "u16": (0, 2**16 - 1),
    "s32": (-(2**31), 2**31 - 1),
    "u32": (0, 2**32 - 1),
    "s64": (-(2**63), 2**63 - 1),
    "u64": (0, 2**64 - 1),
}

names = st.from_regex(r"\A[a-z][a-z0-9]{0,6}(-[a-z][a-z0-9]{0,4}){0,2}\Z")


def _unique(xs: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(xs))


prims = st.sampled_from(
    ["bool", "s8", "u8", "s16", "u16", "s32", "u32", "s64", "u64", "f32", "f64", "char", "string"]
).map(Prim)


def _compound(children: st.SearchStrategy[WitType]) -> st.SearchStrategy[WitType]:
    return st.one_of(
        children.map(ListT),
        st.lists(st.tuples(names, children), min_size=1, max_size=4).map(
            lambda fs: RecordT(tuple(dict(fs).items()))
        ),
        st.lists(children, min_size=1, max_size=4).map(lambda es: TupleT(tuple(es))),
        st.lists(st.tuples(names, st.one_of(st.none(), children)), min_size=1, max_size=4).map(
            lambda cs: VariantT(tuple(dict(cs).items()))
        ),
        st.lists(names, min_size=1, max_size=5).map(lambda ns: EnumT(_unique(ns))),
        # option<option<T>> is ambiguous with None-as-none; the host never needs it.
        children.filter(lambda t: not isinstance(t, OptionT)).map(OptionT),
        st.tuples(st.one_of(st.none(), children), st.one_of(st.none(), children)).map(lambda p: ResultT(*p)),
        st.lists(names, min_size=0, max_size=6).map(lambda ns: FlagsT(_unique(ns))),
    )


types = st.recursive(prims, _compound, max_leaves=8)


def values(t: WitType) -> st.SearchStrategy[Any]:
    """A strategy for Python values of type `t`, in the representation the host uses."""
    if isinstance(t, Prim):
        if t.name == "bool":
            return st.booleans()
        if t.name in INT_BOUNDS:
            lo, hi = INT_BOUNDS[t.name]
            return st.integers(lo, hi)
        if t.name == "f32":
            return st.floats(width=32, allow_nan=False)
        if t.name == "f64":
            return st.floats(allow_nan=False)
        if t.name == "char":
            return st.characters(exclude_categories=("Cs",))
        return st.text(max_size=20)
    if isinstance(t, ListT):
        if t.elem == Prim("u8"):
            return st.binary(max_size=300)
        return st.lists(values(t.elem), max_size=4)
    if isinstance(t, RecordT):
        return st.tuples(*[values(ft) for _, ft in t.fields])
    if isinstance(t, TupleT):
        return st.tuples(*[values(et) for et in t.elems])
    if isinstance(t, VariantT):
        return st.one_of(
            *[
                st.just((n, None)) if ct is None else values(ct).map(lambda v, n=n: (n, v))
                for n, ct in t.cases
            ]
        )
    if isinstance(t, EnumT):
        return st.sampled_from(t.names)
    if isinstance(t, OptionT):
        return st.one_of(st.none(), values(t.inner))
    if isinstance(t, ResultT):
        ok = st.just(None) if t.ok is None else values(t.ok)
        err = st.just(None) if t.err is None else values(t.err)
        return st.one_of(ok.map(Ok), err.map(Err))
    if isinstance(t, FlagsT):
        return st.sets(st.sampled_from(t.names)) if t.names else st.just(set())
    raise AssertionError(t)


def roundtrip(t: WitType, v: Any) -> Any:
    buf = (ctypes.c_uint8 * fastcall_values.VAL_SIZE)()
    addr = ctypes.addressof(buf)
    CODEC.lower(t)(None, v, addr)  # type: ignore[arg-type]
    try:
        return CODEC.lift(t)(None, addr)  # type: ignore[arg-type]
    finally:
        fastcall._val_delete(addr)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (Ok, Err)) and type(a) is type(b):
        return same(a.value, b.value)
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_every_type_round_trips(data: st.DataObject) -> None:
    t = data.draw(types, label="type")
    v = data.draw(values(t), label="value")
    got = roundtrip(t, v)
    if isinstance(t, Prim) and t.name == "f32":
        assert got == ctypes.c_float(v).value
    elif _has_f32(t):
        return  # f32 precision is checked on its own above; nested f32s lose bits by design
    else:
        assert same(got, v), (str(t), v, got)


def _has_f32(t: WitType) -> bool:
    return "f32" in str(t)


@pytest.mark.parametrize(
    ("t", "v"),
    [
        (Prim("u8"), 256),
        (Prim("s8"), -129),
        (Prim("u32"), -1),
        (Prim("u64"), 2**64),
    ],
)
def test_out_of_range_integers_are_refused(t: WitType, v: int) -> None:
    buf = (ctypes.c_uint8 * fastcall_values.VAL_SIZE)()
    with pytest.raises(ValueError, match="out of range"):
        CODEC.lower(t)(None, v, ctypes.addressof(buf))  # type: ignore[arg-type]


def test_unknown_variant_case_is_refused_by_name() -> None:
    t = VariantT((("a", None), ("b", Prim("u8"))))
    buf = (ctypes.c_uint8 * fastcall_values.VAL_SIZE)()
    with pytest.raises(ValueError, match="'zzz' is not a case"):
        CODEC.lower(t)(None, ("zzz", None), ctypes.addressof(buf))  # type: ignore[arg-type]


def test_bytes_use_the_bulk_path_and_keep_every_byte() -> None:
    payload = bytes(range(256)) * 1024
    assert roundtrip(ListT(Prim("u8")), payload) == payload


def test_plain_value_lowers_as_ok() -> None:
    assert roundtrip(ResultT(Prim("u32"), Prim("string")), 7) == Ok(7)
    assert roundtrip(ResultT(Prim("u32"), Prim("string")), Err("no")) == Err("no")


# ---------------------------------------------------------------------------------------------
# The C API we bind, checked against the pinned wasmtime release. The wheel ships no C headers;
# wasmtime-py generates `wasmtime/_bindings.py` from that release's headers, so its prototypes
# and structures stand in for them. Types are compared by how they are passed (the x86-64 / arm64
# C ABI): any pointer or 8-byte integer is one machine word, smaller integers keep size and sign.
# ---------------------------------------------------------------------------------------------


def _abi(t: Any) -> Any:
    if t is None:
        return None
    if t in (ctypes.c_void_p, ctypes.c_char_p) or issubclass(t, (ctypes._Pointer, ctypes._CFuncPtr)):
        return "word"
    if t in (ctypes.c_float, ctypes.c_double):
        return ("float", ctypes.sizeof(t))
    if issubclass(t, ctypes._SimpleCData):
        size = ctypes.sizeof(t)
        if size == 8:
            return "word"
        return ("int", size, t._type_ in "bhilq")
    raise AssertionError(f"unexpected C type {t}")


def _abi_sig(restype: Any, argtypes: Any) -> tuple[Any, ...]:
    return (_abi(restype), *(_abi(a) for a in argtypes))


def _bindings() -> Any:
    from wasmtime import _bindings

    return _bindings


def test_every_bound_c_function_matches_the_pinned_release() -> None:
    from wasmlattice.runtime import interrupt  # binds wasmtime_store_epoch_deadline_callback

    assert interrupt.CHECK_SECONDS > 0
    b = _bindings()
    sigs = fastcall_values.C_SIGNATURES
    assert len(sigs) >= 20  # both modules imported: the list is the whole of what we bind
    for name, (restype, argtypes) in sorted(sigs.items()):
        theirs = getattr(b, f"_{name}", None)
        assert theirs is not None, f"{name} is not in this wasmtime release"
        assert _abi_sig(restype, argtypes) == _abi_sig(theirs.restype, theirs.argtypes), name


def test_callbacks_we_hand_to_wasmtime_match_the_pinned_release() -> None:
    from wasmlattice.runtime import interrupt

    b = _bindings()

    def ours(cb: Any) -> tuple[Any, ...]:
        return _abi_sig(cb._restype_, cb._argtypes_)

    assert ours(type(fastcall._DISPATCH)) == ours(b.wasmtime_component_func_callback_t)
    assert ours(type(fastcall._DTOR)) == ours(b.wasmtime_component_resource_destructor_t)
    add_func = b._wasmtime_component_linker_instance_add_func.argtypes
    assert ours(type(fastcall._FINALIZE)) == ours(add_func[-1])
    epoch = b._wasmtime_store_epoch_deadline_callback.argtypes
    assert ours(interrupt._Callback) == ours(epoch[1])
    assert ours(interrupt._Finalizer) == ours(epoch[3])


def test_value_layout_and_kinds_match_the_pinned_release() -> None:
    from wasmtime import _ffi

    b = _bindings()
    fv = fastcall_values
    # The offsets fastcall_values.py reads and writes by address.
    assert ctypes.sizeof(b.wasmtime_component_val_t) == fv.VAL_SIZE
    assert b.wasmtime_component_val_t.of.offset == 8
    for vec in (
        "wasm_name_t",
        "wasmtime_component_vallist_t",
        "wasmtime_component_valtuple_t",
        "wasmtime_component_valflags_t",
        "wasmtime_component_valrecord_t",
    ):
        t = getattr(b, vec)
        assert (t.size.offset, t.data.offset, ctypes.sizeof(t)) == (0, 8, fv.NAME_SIZE), vec
    entry = b.wasmtime_component_valrecord_entry_t
    assert (ctypes.sizeof(entry), entry.val.offset) == (fv.ENTRY_SIZE, fv.NAME_SIZE)
    variant = b.wasmtime_component_valvariant_t
    assert (variant.discriminant.offset, variant.val.offset) == (0, 16)  # name at +8, payload at +24
    result = b.wasmtime_component_valresult_t
    assert (result.is_ok.offset, result.val.offset) == (0, 8)  # flag at +8, payload at +16
    kinds = {
        "BOOL": fv.K_BOOL, "S8": fv.K_S8, "U8": fv.K_U8, "S16": fv.K_S16, "U16": fv.K_U16,
        "S32": fv.K_S32, "U32": fv.K_U32, "S64": fv.K_S64, "U64": fv.K_U64, "F32": fv.K_F32,
        "F64": fv.K_F64, "CHAR": fv.K_CHAR, "STRING": fv.K_STRING, "LIST": fv.K_LIST,
        "RECORD": fv.K_RECORD, "TUPLE": fv.K_TUPLE, "VARIANT": fv.K_VARIANT, "ENUM": fv.K_ENUM,
        "OPTION": fv.K_OPTION, "RESULT": fv.K_RESULT, "FLAGS": fv.K_FLAGS, "RESOURCE": fv.K_RESOURCE,
    }  # fmt: skip
    for name, k in kinds.items():
        assert getattr(_ffi, f"WASMTIME_COMPONENT_{name}").value == k, name
