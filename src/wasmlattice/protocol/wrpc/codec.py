"""The wRPC value codec: component-model values to and from their wire bytes.

wRPC (bytecodealliance/wrpc, `SPEC.md`) carries parameters and results in the component model's
*value definition encoding* (component-model `Binary.md`, "Value Definitions", proposed in
component-model PR 336). Checked against the reference implementation that wasmCloud hosts run:
`wrpc-runtime-wasmtime` (`codec.rs`, the dynamic encoder/decoder for `wasmtime::component::Val`),
`wrpc-transport` (`value.rs`) and the `wasm-tokio` / `leb128-tokio` / `utf8-tokio` crates they use.

This module builds the encoder and decoder of any WIT type. The rules for primitive types (bool,
integers, floats, char, string, `list<u8>`) are in `primitives.py`; for the others, in the order
of `witypes`:

* `list<T>`: LEB128 u32 element count, then the elements; `list<u8>` is the count and raw bytes.
* `record` / `tuple`: the fields in declaration order, nothing else.
* `variant` / `enum`: the case index as unsigned LEB128 (the reference decodes a u32 whatever the
  case count), then for a variant the payload if the case has one.
* `option<T>`: one byte, 0 = none, 1 = some followed by `T`.
* `result<T, E>`: one byte, **0 = ok**, 1 = err, followed by the payload if that side has a type.
* `flags`: a little-endian bit vector, bit i = i-th name, in ceil(n/8) bytes, except that the
  reference writes one byte for zero names (its first size bucket is "up to 8"), so this does too.
  Bits beyond the last name are ignored on decode, as the reference and the canonical ABI do.
* resources (`own` / `borrow`): an opaque `list<u8>`; what the bytes mean is up to the peers, so
  the caller maps its handles to and from `bytes` (wrpc-runtime-wasmtime sends a UUID).

wRPC's async values (`stream<T>`, `future<T>`) are in `async_values.py`; a function's parameters
and results, encoded back to back, in `tuples.py`.

Python values follow the host's conventions (`witypes`, `fastcall`): records and tuples are
tuples; variants are `(case, payload)`, or a bare case name when the case has no payload, and
decode as `(case, payload)` with `None` for a payload-less case, exactly as `fastcall` lifts them;
enums are names; flags are sets of names (frozensets and lists are accepted on encode); options
are `None` or the value, so `option<option<T>>`'s some(none) decodes to `None`, like `fastcall`;
results decode as `Ok` / `Err` and encode from `Ok`, `Err` or a bare ok value; `list<u8>` is
`bytes`; handles are `bytes`.

Encoders and decoders are closures built once per type (and cached), so the per-call path never
inspects a type. Encoders validate as they go: a wrong value raises `CodecError` naming the path
(`params[1].name`) and the expected type.
"""

from __future__ import annotations

from typing import Any

from wasmlattice.protocol.wrpc.primitives import (
    PRIMS,
    U32_MAX,
    CodecError,
    Decoder,
    Encoder,
    dec_bytes,
    enc_bytes,
    get_uleb,
    put_uleb,
    truncated,
    type_name,
)
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


def _unknown(kind: str, v: Any) -> str:
    return f"unknown {kind} {v!r}" if isinstance(v, str) else type_name(v)


# -- building encoders --------------------------------------------------------------------------

_ENCODERS: dict[WitType, Encoder] = {}
_DECODERS: dict[WitType, Decoder] = {}


def encoder(t: WitType) -> Encoder:
    """The encoder for `t`: `enc(value, out)` appends the value's bytes to `out` (built once, cached)."""
    f = _ENCODERS.get(t)
    if f is None:
        f = _ENCODERS[t] = _make_encoder(t)
    return f


def decoder(t: WitType) -> Decoder:
    """The decoder for `t`: `dec(data, offset)` returns `(value, new_offset)` (built once, cached)."""
    f = _DECODERS.get(t)
    if f is None:
        f = _DECODERS[t] = _make_decoder(t)
    return f


def check_value(t: WitType, v: Any) -> None:
    """Raise `CodecError` unless `v` is a valid Python value of type `t`."""
    encoder(t)(v, bytearray())


def _make_encoder(t: WitType) -> Encoder:
    if isinstance(t, Prim):
        return PRIMS[t.name][0]
    if isinstance(t, ListT):
        return _list_encoder(t)
    if isinstance(t, (RecordT, TupleT)):
        return _fields_encoder(t)
    if isinstance(t, VariantT):
        return _variant_encoder(t)
    if isinstance(t, EnumT):
        return _enum_encoder(t)
    if isinstance(t, OptionT):
        return _option_encoder(t)
    if isinstance(t, ResultT):
        return _result_encoder(t)
    if isinstance(t, FlagsT):
        return _flags_encoder(t)
    if isinstance(t, HandleT):
        what = str(t)

        def enc_handle(v: Any, out: bytearray) -> None:
            if not isinstance(v, (bytes, bytearray, memoryview)):
                raise CodecError(f"expected {what} as bytes, got {type_name(v)}")
            enc_bytes(v, out, what)

        return enc_handle
    raise TypeError(f"unsupported type {t!r}")


def _list_encoder(t: ListT) -> Encoder:
    if t.elem == Prim("u8"):
        return enc_bytes
    elem = encoder(t.elem)
    what = str(t)

    def enc_list(v: Any, out: bytearray) -> None:
        if not isinstance(v, (list, tuple)):
            raise CodecError(f"expected {what}, got {type_name(v)}")
        n = len(v)
        if n > U32_MAX:
            raise CodecError(f"{what} longer than 2^32-1 elements")
        put_uleb(n, out)
        for i, x in enumerate(v):
            try:
                elem(x, out)
            except CodecError as e:
                raise e.within(f"[{i}]") from None

    return enc_list


def _fields_encoder(t: RecordT | TupleT) -> Encoder:
    if isinstance(t, RecordT):
        segments = [f".{n}" for n, _ in t.fields]
        fields = [encoder(ft) for _, ft in t.fields]
    else:
        segments = [f"[{i}]" for i in range(len(t.elems))]
        fields = [encoder(et) for et in t.elems]
    count = len(fields)
    what = str(t)
    pairs = list(zip(segments, fields, strict=True))

    def enc_fields(v: Any, out: bytearray) -> None:
        if not isinstance(v, (tuple, list)) or len(v) != count:
            got = f"{type_name(v)} of length {len(v)}" if isinstance(v, (tuple, list)) else type_name(v)
            raise CodecError(f"expected {what}, got {got}")
        for x, (segment, f) in zip(v, pairs, strict=True):
            try:
                f(x, out)
            except CodecError as e:
                raise e.within(segment) from None

    return enc_fields


def _variant_encoder(t: VariantT) -> Encoder:
    cases: dict[str, tuple[bytes, Encoder | None]] = {}
    for i, (name, ct) in enumerate(t.cases):
        disc = bytearray()
        put_uleb(i, disc)
        cases[name] = (bytes(disc), None if ct is None else encoder(ct))
    what = str(t)

    def enc_variant(v: Any, out: bytearray) -> None:
        if isinstance(v, str):
            name, payload = v, None
        elif isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str):
            name, payload = v
        else:
            raise CodecError(f"expected {what} as a case name or (case, payload), got {type_name(v)}")
        case = cases.get(name)
        if case is None:
            raise CodecError(f"expected {what}, got unknown case {name!r}")
        disc, f = case
        out += disc
        if f is None:
            if payload is not None:
                raise CodecError(f"case {name!r} of {what} has no payload, got {type_name(payload)}")
            return
        if payload is None and isinstance(v, str):
            raise CodecError(f"case {name!r} of {what} needs a payload")
        try:
            f(payload, out)
        except CodecError as e:
            raise e.within(f".{name}") from None

    return enc_variant


def _enum_encoder(t: EnumT) -> Encoder:
    discs: dict[str, bytes] = {}
    for i, name in enumerate(t.names):
        d = bytearray()
        put_uleb(i, d)
        discs[name] = bytes(d)
    what = str(t)

    def enc_enum(v: Any, out: bytearray) -> None:
        d = discs.get(v) if isinstance(v, str) else None
        if d is None:
            raise CodecError(f"expected {what}, got {_unknown('name', v)}")
        out += d

    return enc_enum


def _option_encoder(t: OptionT) -> Encoder:
    inner = encoder(t.inner)

    def enc_option(v: Any, out: bytearray) -> None:
        if v is None:
            out.append(0)
            return
        out.append(1)
        try:
            inner(v, out)
        except CodecError as e:
            raise e.within(".some") from None

    return enc_option


def _result_encoder(t: ResultT) -> Encoder:
    ok = None if t.ok is None else encoder(t.ok)
    err = None if t.err is None else encoder(t.err)
    what = str(t)

    def enc_result(v: Any, out: bytearray) -> None:
        if isinstance(v, Err):
            out.append(1)
            f, payload, segment = err, v.value, ".err"
        else:
            out.append(0)
            f, payload, segment = ok, (v.value if isinstance(v, Ok) else v), ".ok"
        if f is None:
            if payload is not None:
                raise CodecError(f"{segment[1:]} case of {what} has no payload, got {type_name(payload)}")
            return
        try:
            f(payload, out)
        except CodecError as e:
            raise e.within(segment) from None

    return enc_result


def _flags_size(count: int) -> int:
    # ceil(count / 8), but one byte for no flags, as wrpc-runtime-wasmtime writes it.
    return max(1, (count + 7) // 8)


def _flags_encoder(t: FlagsT) -> Encoder:
    bits = {name: 1 << i for i, name in enumerate(t.names)}
    size = _flags_size(len(t.names))
    what = str(t)

    def enc_flags(v: Any, out: bytearray) -> None:
        if not isinstance(v, (set, frozenset, list, tuple)):
            raise CodecError(f"expected {what} as a set of names, got {type_name(v)}")
        x = 0
        for name in v:
            b = bits.get(name) if isinstance(name, str) else None
            if b is None:
                raise CodecError(f"expected {what}, got {_unknown('flag', name)}")
            x |= b
        out += x.to_bytes(size, "little")

    return enc_flags


# -- building decoders --------------------------------------------------------------------------


def _min_size(t: WitType) -> int:
    """The fewest bytes any value of `t` encodes to (to reject absurd list counts early)."""
    if isinstance(t, Prim):
        return {"f32": 4, "f64": 8}.get(t.name, 1)
    if isinstance(t, RecordT):
        return sum(_min_size(ft) for _, ft in t.fields)
    if isinstance(t, TupleT):
        return sum(_min_size(et) for et in t.elems)
    if isinstance(t, FlagsT):
        return _flags_size(len(t.names))
    # list, handle, variant, enum, option, result: at least a count, discriminant or status byte
    return 1


def _make_decoder(t: WitType) -> Decoder:
    if isinstance(t, Prim):
        return PRIMS[t.name][1]
    if isinstance(t, ListT):
        return _list_decoder(t)
    if isinstance(t, (RecordT, TupleT)):
        return _fields_decoder(t)
    if isinstance(t, VariantT):
        return _variant_decoder(t)
    if isinstance(t, EnumT):
        return _enum_decoder(t)
    if isinstance(t, OptionT):
        return _option_decoder(t)
    if isinstance(t, ResultT):
        return _result_decoder(t)
    if isinstance(t, FlagsT):
        return _flags_decoder(t)
    if isinstance(t, HandleT):
        return dec_bytes
    raise TypeError(f"unsupported type {t!r}")


def _list_decoder(t: ListT) -> Decoder:
    if t.elem == Prim("u8"):
        return dec_bytes
    elem = decoder(t.elem)
    least = _min_size(t.elem)
    what = f"{t} length"

    def dec_list(data: memoryview, o: int) -> tuple[Any, int]:
        n, o = get_uleb(data, o, 32, what)
        if n * least > len(data) - o:
            raise truncated(f"{t} (needs at least {n * least} bytes, has {len(data) - o})")
        items: list[Any] = []
        append = items.append
        for i in range(n):
            try:
                x, o = elem(data, o)
            except CodecError as e:
                raise e.within(f"[{i}]") from None
            append(x)
        return items, o

    return dec_list


def _fields_decoder(t: RecordT | TupleT) -> Decoder:
    if isinstance(t, RecordT):
        pairs = [(f".{n}", decoder(ft)) for n, ft in t.fields]
    else:
        pairs = [(f"[{i}]", decoder(et)) for i, et in enumerate(t.elems)]

    def dec_fields(data: memoryview, o: int) -> tuple[Any, int]:
        vals: list[Any] = []
        for segment, f in pairs:
            try:
                x, o = f(data, o)
            except CodecError as e:
                raise e.within(segment) from None
            vals.append(x)
        return tuple(vals), o

    return dec_fields


def _variant_decoder(t: VariantT) -> Decoder:
    cases = [(name, None if ct is None else decoder(ct)) for name, ct in t.cases]
    count = len(cases)
    what = str(t)

    def dec_variant(data: memoryview, o: int) -> tuple[Any, int]:
        i, o = get_uleb(data, o, 32, "variant discriminant")
        if i >= count:
            raise CodecError(f"bad discriminant {i} for {what}")
        name, f = cases[i]
        if f is None:
            return (name, None), o
        try:
            x, o = f(data, o)
        except CodecError as e:
            raise e.within(f".{name}") from None
        return (name, x), o

    return dec_variant


def _enum_decoder(t: EnumT) -> Decoder:
    names = t.names
    count = len(names)
    what = str(t)

    def dec_enum(data: memoryview, o: int) -> tuple[Any, int]:
        i, o = get_uleb(data, o, 32, "enum discriminant")
        if i >= count:
            raise CodecError(f"bad discriminant {i} for {what}")
        return names[i], o

    return dec_enum


def _option_decoder(t: OptionT) -> Decoder:
    inner = decoder(t.inner)

    def dec_option(data: memoryview, o: int) -> tuple[Any, int]:
        try:
            b = data[o]
        except IndexError:
            raise truncated("option") from None
        if b == 0:
            return None, o + 1
        if b != 1:
            raise CodecError(f"invalid option status byte {b:#04x}")
        try:
            return inner(data, o + 1)
        except CodecError as e:
            raise e.within(".some") from None

    return dec_option


def _result_decoder(t: ResultT) -> Decoder:
    ok = None if t.ok is None else decoder(t.ok)
    err = None if t.err is None else decoder(t.err)

    def dec_result(data: memoryview, o: int) -> tuple[Any, int]:
        try:
            b = data[o]
        except IndexError:
            raise truncated("result") from None
        if b > 1:
            raise CodecError(f"invalid result status byte {b:#04x}")
        f = ok if b == 0 else err
        x = None
        o += 1
        if f is not None:
            try:
                x, o = f(data, o)
            except CodecError as e:
                raise e.within(".err" if b else ".ok") from None
        return (Err(x) if b else Ok(x)), o

    return dec_result


def _flags_decoder(t: FlagsT) -> Decoder:
    names = list(enumerate(t.names))
    size = _flags_size(len(names))

    def dec_flags(data: memoryview, o: int) -> tuple[Any, int]:
        end = o + size
        if end > len(data):
            raise truncated("flags")
        x = int.from_bytes(data[o:end], "little")
        return {name for i, name in names if x >> i & 1}, end

    return dec_flags
