"""The wRPC value codec: component-model values to and from their wire bytes.

wRPC (bytecodealliance/wrpc, `SPEC.md`) carries parameters and results in the component model's
*value definition encoding* (component-model `Binary.md`, "Value Definitions", proposed in
component-model PR 336). Checked against the reference implementation that wasmCloud hosts run:
`wrpc-runtime-wasmtime` (`codec.rs`, the dynamic encoder/decoder for `wasmtime::component::Val`),
`wrpc-transport` (`value.rs`) and the `wasm-tokio` / `leb128-tokio` / `utf8-tokio` crates they use.
The rules, in the order of `witypes`:

* `bool`: one byte, 0 or 1; any other byte is rejected.
* `u8` / `s8`: one raw byte (two's complement for `s8`), not LEB128.
* `u16` / `u32` / `u64`: unsigned LEB128; `s16` / `s32` / `s64`: signed LEB128. Encoders write the
  shortest form. Decoders follow the core-wasm rule for an N-bit integer: at most ceil(N/7) bytes,
  and the unused high bits of a maximal-length final byte must be zero (unsigned) or copies of the
  sign bit (signed). This accepts every encoding a conforming encoder writes (including s64's
  minimum, `80 80 .. 80 7f`) and is slightly stricter than leb128-tokio for odd final bytes.
* `f32` / `f64`: IEEE 754 little-endian, 4 / 8 bytes. NaNs are not canonicalised in either
  direction (the reference writes the bits it is given); a Python NaN packs as the quiet NaN
  `00 00 c0 7f` / `00 .. f8 7f`. An `f32` value is rounded to single precision; finite values
  beyond its range are rejected.
* `char`: the scalar value's UTF-8 bytes (1 to 4) with no length prefix (utf8-tokio), not a
  LEB128 number. Surrogates and malformed or overlong UTF-8 are rejected.
* `string`: LEB128 u32 byte length, then UTF-8 (a core-wasm `name`); invalid UTF-8 is rejected.
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

wRPC's additions (SPEC.md "Component model value definition encoding extensions", value.rs):
`future<T>` is `variant { pending, ready(T) }`; when pending, the value later arrives on the
future's own index path as a bare `T`. `stream<T>` inline is `list<T>`; an empty inline list
means pending, and the elements then arrive on the stream's path as `list<T>` chunks ended by an
empty list (a single `00` byte). `witypes` has no stream or future types (WASI 0.2 components
cannot use them), so those are helpers for the transport: `encode_stream_chunk`,
`decode_stream_chunk`, `STREAM_END`, `encode_future_pending`, `encode_future_ready`, `decode_future`.

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

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

from wasmlattice.runtime.witypes import (
    EnumT,
    Err,
    FlagsT,
    FuncSig,
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

Encoder: TypeAlias = Callable[[Any, bytearray], None]
Decoder: TypeAlias = Callable[[memoryview, int], tuple[Any, int]]

U32_MAX = 0xFFFF_FFFF

STREAM_END = b"\x00"
"""The chunk that ends a pending stream: an empty `list<T>`."""

FUTURE_PENDING = b"\x00"
"""An inline `future<T>` whose value will follow on its own path."""


class CodecError(ValueError):
    """A value does not match its type, or bytes are not a valid encoding of it."""

    def __init__(self, detail: str, path: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}" if self.path else self.detail

    def within(self, segment: str) -> CodecError:
        """Prefix the path with the segment of the enclosing value (returns self, for `raise`)."""
        self.path = segment + self.path
        return self


class TruncatedError(CodecError):
    """The bytes end before the value does; a transport receiving in pieces may wait for more."""


def _got(v: Any) -> str:
    # The type only: values may be large or secret.
    return type(v).__name__


def _unknown(kind: str, v: Any) -> str:
    return f"unknown {kind} {v!r}" if isinstance(v, str) else _got(v)


def _truncated(what: str) -> TruncatedError:
    return TruncatedError(f"truncated {what}")


# -- LEB128 -------------------------------------------------------------------------------------


def _put_uleb(v: int, out: bytearray) -> None:
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _put_sleb(v: int, out: bytearray) -> None:
    while True:
        b = v & 0x7F
        v >>= 7
        if (v == 0 and not b & 0x40) or (v == -1 and b & 0x40):
            out.append(b)
            return
        out.append(b | 0x80)


def _get_uleb(data: memoryview, o: int, bits: int, what: str) -> tuple[int, int]:
    try:
        b = data[o]
        if b < 0x80:
            return b, o + 1
        last = (bits + 6) // 7 - 1
        v = b & 0x7F
        shift = 7
        for i in range(1, last + 1):
            b = data[o + i]
            if i == last and (b & 0x80 or b >> (bits - shift)):
                raise CodecError(f"LEB128 {what} does not fit in {bits} bits")
            v |= (b & 0x7F) << shift
            if b < 0x80:
                return v, o + i + 1
            shift += 7
    except IndexError:
        raise _truncated(what) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _get_sleb(data: memoryview, o: int, bits: int, what: str) -> tuple[int, int]:
    try:
        b = data[o]
        if b < 0x80:
            return (b - 0x80 if b & 0x40 else b), o + 1
        last = (bits + 6) // 7 - 1
        v = b & 0x7F
        shift = 7
        for i in range(1, last + 1):
            b = data[o + i]
            if i == last:
                # The value's own bits end inside this byte; everything above the sign bit must
                # repeat it, and there must be no continuation.
                top = b >> (bits - shift - 1)
                if b & 0x80 or top not in (0, 0x7F >> (bits - shift - 1)):
                    raise CodecError(f"LEB128 {what} does not fit in {bits} bits")
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return (v - (1 << shift) if b & 0x40 else v), o + i + 1
    except IndexError:
        raise _truncated(what) from None
    raise AssertionError("unreachable")  # pragma: no cover


# -- primitives ---------------------------------------------------------------------------------

_INT_RANGES = {
    "u16": (0, 0xFFFF, 16, False),
    "u32": (0, U32_MAX, 32, False),
    "u64": (0, 2**64 - 1, 64, False),
    "s16": (-(2**15), 2**15 - 1, 16, True),
    "s32": (-(2**31), 2**31 - 1, 32, True),
    "s64": (-(2**63), 2**63 - 1, 64, True),
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _enc_bool(v: Any, out: bytearray) -> None:
    if v is True:
        out.append(1)
    elif v is False:
        out.append(0)
    else:
        raise CodecError(f"expected bool, got {_got(v)}")


def _dec_bool(data: memoryview, o: int) -> tuple[Any, int]:
    try:
        b = data[o]
    except IndexError:
        raise _truncated("bool") from None
    if b > 1:
        raise CodecError(f"invalid bool byte {b:#04x}")
    return b == 1, o + 1


def _enc_u8(v: Any, out: bytearray) -> None:
    if not _is_int(v) or not 0 <= v <= 0xFF:
        raise CodecError(f"expected u8, got {_int_problem(v)}")
    out.append(v)


def _dec_u8(data: memoryview, o: int) -> tuple[Any, int]:
    try:
        return data[o], o + 1
    except IndexError:
        raise _truncated("u8") from None


def _enc_s8(v: Any, out: bytearray) -> None:
    if not _is_int(v) or not -0x80 <= v <= 0x7F:
        raise CodecError(f"expected s8, got {_int_problem(v)}")
    out.append(v & 0xFF)


def _dec_s8(data: memoryview, o: int) -> tuple[Any, int]:
    try:
        b = data[o]
    except IndexError:
        raise _truncated("s8") from None
    return (b - 0x100 if b & 0x80 else b), o + 1


def _int_problem(v: Any) -> str:
    return f"{v} (out of range)" if _is_int(v) else _got(v)


def _int_codec(name: str) -> tuple[Encoder, Decoder]:
    lo, hi, bits, signed = _INT_RANGES[name]
    put = _put_sleb if signed else _put_uleb
    get = _get_sleb if signed else _get_uleb

    def enc_int(v: Any, out: bytearray) -> None:
        if not _is_int(v) or not lo <= v <= hi:
            raise CodecError(f"expected {name}, got {_int_problem(v)}")
        if 0 <= v < 0x40:
            out.append(v)  # the common case: one byte in either form
        else:
            put(v, out)

    def dec_int(data: memoryview, o: int) -> tuple[Any, int]:
        return get(data, o, bits, name)

    return enc_int, dec_int


def _float_codec(name: str) -> tuple[Encoder, Decoder]:
    s = struct.Struct("<f" if name == "f32" else "<d")
    pack, unpack_from, size = s.pack, s.unpack_from, s.size

    def enc_float(v: Any, out: bytearray) -> None:
        if not isinstance(v, (float, int)) or isinstance(v, bool):
            raise CodecError(f"expected {name}, got {_got(v)}")
        try:
            out += pack(v)
        except (OverflowError, struct.error):
            raise CodecError(f"expected {name}, got {v!r} (out of range)") from None

    def dec_float(data: memoryview, o: int) -> tuple[Any, int]:
        if len(data) - o < size:
            raise _truncated(name)
        return unpack_from(data, o)[0], o + size

    return enc_float, dec_float


def _enc_char(v: Any, out: bytearray) -> None:
    if not isinstance(v, str) or len(v) != 1:
        raise CodecError(
            f"expected char, got {_got(v) if not isinstance(v, str) else f'str of length {len(v)}'}"
        )
    try:
        out += v.encode()
    except UnicodeEncodeError:
        raise CodecError("expected char, got a surrogate (not a Unicode scalar value)") from None


def _char_len(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _dec_char(data: memoryview, o: int) -> tuple[Any, int]:
    try:
        lead = data[o]
    except IndexError:
        raise _truncated("char") from None
    if lead < 0x80:
        return chr(lead), o + 1
    n = _char_len(lead)
    if not n:
        raise CodecError(f"invalid UTF-8 in char (lead byte {lead:#04x})")
    if len(data) - o < n:
        raise _truncated("char")
    try:
        return str(data[o : o + n], "utf-8"), o + n
    except UnicodeDecodeError:
        raise CodecError("invalid UTF-8 in char") from None


def _enc_string(v: Any, out: bytearray) -> None:
    if not isinstance(v, str):
        raise CodecError(f"expected string, got {_got(v)}")
    if v.isascii():
        n = len(v)
        b = v.encode("ascii")
    else:
        try:
            b = v.encode()
        except UnicodeEncodeError:
            raise CodecError("expected string, got a str with a lone surrogate (not UTF-8)") from None
        n = len(b)
    if n < 0x80:
        out.append(n)
    elif n > U32_MAX:
        raise CodecError("string longer than 2^32-1 bytes")
    else:
        _put_uleb(n, out)
    out += b


def _dec_string(data: memoryview, o: int) -> tuple[Any, int]:
    n, o = _get_uleb(data, o, 32, "string length")
    end = o + n
    if end > len(data):
        raise _truncated(f"string (needs {n} bytes, has {len(data) - o})")
    try:
        return str(data[o:end], "utf-8"), end
    except UnicodeDecodeError:
        raise CodecError("invalid UTF-8 in string") from None


def _enc_bytes(v: Any, out: bytearray, what: str = "list<u8>") -> None:
    if not isinstance(v, (bytes, bytearray, memoryview)):
        if not isinstance(v, (list, tuple)):
            raise CodecError(f"expected {what}, got {_got(v)}")
        try:
            v = bytes(v)
        except (TypeError, ValueError):
            raise CodecError(f"expected {what}, got a {_got(v)} that is not all u8 values") from None
    n = v.nbytes if isinstance(v, memoryview) else len(v)
    if n > U32_MAX:
        raise CodecError(f"{what} longer than 2^32-1 bytes")
    _put_uleb(n, out)
    out += v


def _dec_bytes(data: memoryview, o: int) -> tuple[Any, int]:
    n, o = _get_uleb(data, o, 32, "list<u8> length")
    end = o + n
    if end > len(data):
        raise _truncated(f"list<u8> (needs {n} bytes, has {len(data) - o})")
    return bytes(data[o:end]), end


_PRIMS: dict[str, tuple[Encoder, Decoder]] = {
    "bool": (_enc_bool, _dec_bool),
    "u8": (_enc_u8, _dec_u8),
    "s8": (_enc_s8, _dec_s8),
    "char": (_enc_char, _dec_char),
    "string": (_enc_string, _dec_string),
    **{n: _int_codec(n) for n in _INT_RANGES},
    **{n: _float_codec(n) for n in ("f32", "f64")},
}


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
        return _PRIMS[t.name][0]
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
                raise CodecError(f"expected {what} as bytes, got {_got(v)}")
            _enc_bytes(v, out, what)

        return enc_handle
    raise TypeError(f"unsupported type {t!r}")


def _list_encoder(t: ListT) -> Encoder:
    if t.elem == Prim("u8"):
        return _enc_bytes
    elem = encoder(t.elem)
    what = str(t)

    def enc_list(v: Any, out: bytearray) -> None:
        if not isinstance(v, (list, tuple)):
            raise CodecError(f"expected {what}, got {_got(v)}")
        n = len(v)
        if n > U32_MAX:
            raise CodecError(f"{what} longer than 2^32-1 elements")
        _put_uleb(n, out)
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
            got = f"{_got(v)} of length {len(v)}" if isinstance(v, (tuple, list)) else _got(v)
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
        _put_uleb(i, disc)
        cases[name] = (bytes(disc), None if ct is None else encoder(ct))
    what = str(t)

    def enc_variant(v: Any, out: bytearray) -> None:
        if isinstance(v, str):
            name, payload = v, None
        elif isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str):
            name, payload = v
        else:
            raise CodecError(f"expected {what} as a case name or (case, payload), got {_got(v)}")
        case = cases.get(name)
        if case is None:
            raise CodecError(f"expected {what}, got unknown case {name!r}")
        disc, f = case
        out += disc
        if f is None:
            if payload is not None:
                raise CodecError(f"case {name!r} of {what} has no payload, got {_got(payload)}")
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
        _put_uleb(i, d)
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
                raise CodecError(f"{segment[1:]} case of {what} has no payload, got {_got(payload)}")
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
            raise CodecError(f"expected {what} as a set of names, got {_got(v)}")
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
        return _PRIMS[t.name][1]
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
        return _dec_bytes
    raise TypeError(f"unsupported type {t!r}")


def _list_decoder(t: ListT) -> Decoder:
    if t.elem == Prim("u8"):
        return _dec_bytes
    elem = decoder(t.elem)
    least = _min_size(t.elem)
    what = f"{t} length"

    def dec_list(data: memoryview, o: int) -> tuple[Any, int]:
        n, o = _get_uleb(data, o, 32, what)
        if n * least > len(data) - o:
            raise _truncated(f"{t} (needs at least {n * least} bytes, has {len(data) - o})")
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
        i, o = _get_uleb(data, o, 32, "variant discriminant")
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
        i, o = _get_uleb(data, o, 32, "enum discriminant")
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
            raise _truncated("option") from None
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
            raise _truncated("result") from None
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
            raise _truncated("flags")
        x = int.from_bytes(data[o:end], "little")
        return {name for i, name in names if x >> i & 1}, end

    return dec_flags


# -- parameter and result tuples ----------------------------------------------------------------


class TupleCodec:
    """Encodes and decodes a sequence of values of fixed types back to back: params or results."""

    def __init__(self, types: Sequence[WitType], label: str = "values") -> None:
        self.types = tuple(types)
        self.label = label
        self._encoders = [(f"{label}[{i}]", encoder(t)) for i, t in enumerate(self.types)]
        self._decoders = [(f"{label}[{i}]", decoder(t)) for i, t in enumerate(self.types)]

    def encode(self, values: Sequence[Any]) -> bytes:
        """The concatenated encodings of `values` (one per type)."""
        if not isinstance(values, (tuple, list)) or len(values) != len(self._encoders):
            got = f"{len(values)}" if isinstance(values, (tuple, list)) else _got(values)
            raise CodecError(f"expected {len(self._encoders)} {self.label}, got {got}")
        out = bytearray()
        for v, (segment, f) in zip(values, self._encoders, strict=True):
            try:
                f(v, out)
            except CodecError as e:
                raise e.within(segment) from None
        return bytes(out)

    def decode_prefix(self, data: bytes | bytearray | memoryview) -> tuple[list[Any], int]:
        """The values at the start of `data` and how many bytes they used.

        Raises `TruncatedError` when `data` ends first (more may still arrive), `CodecError` when
        the bytes cannot be a valid encoding.
        """
        with memoryview(data) as mv:
            if mv.format != "B" or mv.ndim != 1:
                raise TypeError("expected a flat byte buffer")
            vals: list[Any] = []
            o = 0
            for segment, f in self._decoders:
                try:
                    x, o = f(mv, o)
                except CodecError as e:
                    raise e.within(segment) from None
                vals.append(x)
            return vals, o

    def decode(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """The values encoded in exactly `data`; trailing bytes are an error."""
        vals, used = self.decode_prefix(data)
        if used != len(data):
            raise CodecError(f"{len(data) - used} trailing bytes after {self.label}")
        return vals


def params_codec(sig: FuncSig) -> TupleCodec:
    """The codec for a function's parameters (encoded as the tuple of parameters)."""
    return TupleCodec([t for _, t in sig.params], "params")


def results_codec(sig: FuncSig) -> TupleCodec:
    """The codec for a function's results: a 1-tuple for one result, empty for none."""
    return TupleCodec([] if sig.result is None else [sig.result], "results")


# -- async values: streams and futures ----------------------------------------------------------


def encode_stream_chunk(elem_encoder: Encoder, items: Iterable[Any]) -> bytes:
    """One non-empty chunk of a pending `stream<T>` (a `list<T>`); bytes-like items for `stream<u8>`."""
    out = bytearray()
    if elem_encoder is _enc_u8 and isinstance(items, (bytes, bytearray, memoryview)):
        if not len(items):
            raise CodecError("an empty chunk would end the stream; send STREAM_END to end it")
        _enc_bytes(items, out)
        return bytes(out)
    seq = items if isinstance(items, (list, tuple)) else list(items)
    if not seq:
        raise CodecError("an empty chunk would end the stream; send STREAM_END to end it")
    if len(seq) > U32_MAX:
        raise CodecError("stream chunk longer than 2^32-1 elements")
    _put_uleb(len(seq), out)
    for i, x in enumerate(seq):
        try:
            elem_encoder(x, out)
        except CodecError as e:
            raise e.within(f"chunk[{i}]") from None
    return bytes(out)


def decode_stream_chunk(
    elem_decoder: Decoder, data: bytes | bytearray | memoryview, offset: int = 0
) -> tuple[list[Any] | bytes, int]:
    """One chunk of a pending stream and the offset after it; an empty chunk is the end of the stream.

    Elements decoded with the `u8` decoder come back as `bytes`.
    """
    with memoryview(data) as mv:
        if elem_decoder is _dec_u8:
            return _dec_bytes(mv, offset)
        n, o = _get_uleb(mv, offset, 32, "stream chunk length")
        items: list[Any] = []
        for i in range(n):
            try:
                x, o = elem_decoder(mv, o)
            except CodecError as e:
                raise e.within(f"chunk[{i}]") from None
            items.append(x)
        return items, o


def encode_future_pending() -> bytes:
    """An inline `future<T>` that is still pending: its value follows later on the future's path."""
    return FUTURE_PENDING


def encode_future_ready(elem_encoder: Encoder, value: Any) -> bytes:
    """An inline `future<T>` that is already resolved to `value`."""
    out = bytearray(b"\x01")
    try:
        elem_encoder(value, out)
    except CodecError as e:
        raise e.within(".ready") from None
    return bytes(out)


def decode_future(
    elem_decoder: Decoder, data: bytes | bytearray | memoryview, offset: int = 0
) -> tuple[bool, Any, int]:
    """An inline `future<T>`: `(ready, value, new_offset)`; when not ready, value is `None`.

    A pending future's value arrives later on its own path as a bare `T`: decode it with `decoder(T)`.
    """
    with memoryview(data) as mv:
        try:
            b = mv[offset]
        except IndexError:
            raise _truncated("future") from None
        if b == 0:
            return False, None, offset + 1
        if b != 1:
            raise CodecError(f"invalid future discriminant {b}")
        try:
            x, o = elem_decoder(mv, offset + 1)
        except CodecError as e:
            raise e.within(".ready") from None
        return True, x, o
