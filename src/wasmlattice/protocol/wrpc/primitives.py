"""Primitive values on the wRPC wire: bool, integers, floats, char, string and byte lists.

The ground floor of the wRPC value codec: `codec.py` builds the encoders and decoders of compound
types from these, and names the reference implementation the rules were checked against. Here too
are `CodecError`, which every part of the codec raises, and LEB128. The rules:

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
* `list<u8>`: LEB128 u32 byte count, then the raw bytes (as `bytes` in Python); resource handles
  travel the same way.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, TypeAlias

Encoder: TypeAlias = Callable[[Any, bytearray], None]
Decoder: TypeAlias = Callable[[memoryview, int], tuple[Any, int]]

U32_MAX = 0xFFFF_FFFF


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


def type_name(v: Any) -> str:
    """What an error message says about a bad value: its type only (values may be large or secret)."""
    return type(v).__name__


def truncated(what: str) -> TruncatedError:
    """The error for bytes that end inside `what`."""
    return TruncatedError(f"truncated {what}")


# -- LEB128 -------------------------------------------------------------------------------------


def put_uleb(v: int, out: bytearray) -> None:
    """Append `v` (>= 0) to `out` as unsigned LEB128, shortest form."""
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


def get_uleb(data: memoryview, o: int, bits: int, what: str) -> tuple[int, int]:
    """The unsigned LEB128 `bits`-bit integer at `o` and the offset after it."""
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
        raise truncated(what) from None
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
        raise truncated(what) from None
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
        raise CodecError(f"expected bool, got {type_name(v)}")


def _dec_bool(data: memoryview, o: int) -> tuple[Any, int]:
    try:
        b = data[o]
    except IndexError:
        raise truncated("bool") from None
    if b > 1:
        raise CodecError(f"invalid bool byte {b:#04x}")
    return b == 1, o + 1


def enc_u8(v: Any, out: bytearray) -> None:
    """Append a `u8` (one raw byte)."""
    if not _is_int(v) or not 0 <= v <= 0xFF:
        raise CodecError(f"expected u8, got {_int_problem(v)}")
    out.append(v)


def dec_u8(data: memoryview, o: int) -> tuple[Any, int]:
    """The `u8` at `o` and the offset after it."""
    try:
        return data[o], o + 1
    except IndexError:
        raise truncated("u8") from None


def _enc_s8(v: Any, out: bytearray) -> None:
    if not _is_int(v) or not -0x80 <= v <= 0x7F:
        raise CodecError(f"expected s8, got {_int_problem(v)}")
    out.append(v & 0xFF)


def _dec_s8(data: memoryview, o: int) -> tuple[Any, int]:
    try:
        b = data[o]
    except IndexError:
        raise truncated("s8") from None
    return (b - 0x100 if b & 0x80 else b), o + 1


def _int_problem(v: Any) -> str:
    return f"{v} (out of range)" if _is_int(v) else type_name(v)


def _int_codec(name: str) -> tuple[Encoder, Decoder]:
    lo, hi, bits, signed = _INT_RANGES[name]
    put = _put_sleb if signed else put_uleb
    get = _get_sleb if signed else get_uleb

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
            raise CodecError(f"expected {name}, got {type_name(v)}")
        try:
            out += pack(v)
        except (OverflowError, struct.error):
            raise CodecError(f"expected {name}, got {v!r} (out of range)") from None

    def dec_float(data: memoryview, o: int) -> tuple[Any, int]:
        if len(data) - o < size:
            raise truncated(name)
        return unpack_from(data, o)[0], o + size

    return enc_float, dec_float


def _enc_char(v: Any, out: bytearray) -> None:
    if not isinstance(v, str) or len(v) != 1:
        raise CodecError(
            f"expected char, got {type_name(v) if not isinstance(v, str) else f'str of length {len(v)}'}"
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
        raise truncated("char") from None
    if lead < 0x80:
        return chr(lead), o + 1
    n = _char_len(lead)
    if not n:
        raise CodecError(f"invalid UTF-8 in char (lead byte {lead:#04x})")
    if len(data) - o < n:
        raise truncated("char")
    try:
        return str(data[o : o + n], "utf-8"), o + n
    except UnicodeDecodeError:
        raise CodecError("invalid UTF-8 in char") from None


def _enc_string(v: Any, out: bytearray) -> None:
    if not isinstance(v, str):
        raise CodecError(f"expected string, got {type_name(v)}")
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
        put_uleb(n, out)
    out += b


def _dec_string(data: memoryview, o: int) -> tuple[Any, int]:
    n, o = get_uleb(data, o, 32, "string length")
    end = o + n
    if end > len(data):
        raise truncated(f"string (needs {n} bytes, has {len(data) - o})")
    try:
        return str(data[o:end], "utf-8"), end
    except UnicodeDecodeError:
        raise CodecError("invalid UTF-8 in string") from None


def enc_bytes(v: Any, out: bytearray, what: str = "list<u8>") -> None:
    """Append a `list<u8>` (bytes-like, or a list or tuple of u8 values); `what` names it in errors."""
    if not isinstance(v, (bytes, bytearray, memoryview)):
        if not isinstance(v, (list, tuple)):
            raise CodecError(f"expected {what}, got {type_name(v)}")
        try:
            v = bytes(v)
        except (TypeError, ValueError):
            raise CodecError(f"expected {what}, got a {type_name(v)} that is not all u8 values") from None
    n = v.nbytes if isinstance(v, memoryview) else len(v)
    if n > U32_MAX:
        raise CodecError(f"{what} longer than 2^32-1 bytes")
    put_uleb(n, out)
    out += v


def dec_bytes(data: memoryview, o: int) -> tuple[Any, int]:
    """The `list<u8>` at `o` as `bytes`, and the offset after it."""
    n, o = get_uleb(data, o, 32, "list<u8> length")
    end = o + n
    if end > len(data):
        raise truncated(f"list<u8> (needs {n} bytes, has {len(data) - o})")
    return bytes(data[o:end]), end


# The encoder and decoder of each primitive type, by its WIT name.
PRIMS: dict[str, tuple[Encoder, Decoder]] = {
    "bool": (_enc_bool, _dec_bool),
    "u8": (enc_u8, dec_u8),
    "s8": (_enc_s8, _dec_s8),
    "char": (_enc_char, _dec_char),
    "string": (_enc_string, _dec_string),
    **{n: _int_codec(n) for n in _INT_RANGES},
    **{n: _float_codec(n) for n in ("f32", "f64")},
}
