"""The wRPC value codec: golden bytes from the encoding's definition, round trips, and errors.

Every golden byte string below is written out by hand from the rules in the codec's docstring
(component-model value definition encoding as wrpc-runtime-wasmtime / wasm-tokio implement it);
several are the test vectors of leb128-tokio and utf8-tokio themselves (624485, -123456, the
all-ones maxima, the multibyte chars). None is produced by this codec.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wasmlattice.protocol.wrpc.async_values import (
    FUTURE_PENDING,
    STREAM_END,
    decode_future,
    decode_stream_chunk,
    encode_future_pending,
    encode_future_ready,
    encode_stream_chunk,
)
from wasmlattice.protocol.wrpc.codec import check_value, decoder, encoder
from wasmlattice.protocol.wrpc.primitives import CodecError, TruncatedError
from wasmlattice.protocol.wrpc.tuples import TupleCodec, params_codec, results_codec
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
    func,
)

B, U8, S8, U16, S16, U32, S32, U64, S64, F32, F64, CHAR, STR = (
    Prim(n)
    for n in ("bool", "u8", "s8", "u16", "s16", "u32", "s32", "u64", "s64", "f32", "f64", "char", "string")
)
PERSON = RecordT((("name", STR), ("age", U32)))
ABC = VariantT((("a", None), ("b", U32), ("c", STR)))
FLAGS9 = FlagsT(tuple(f"f{i}" for i in range(9)))
FLAGS33 = FlagsT(tuple(f"f{i}" for i in range(33)))
WIDE = VariantT(tuple((f"c{i}", None) for i in range(200)))
HANDLE = HandleT("blob", 7, True)
NESTED = ResultT(OptionT(VariantT((("a", None), ("b", U32)))), ListT(U8))

SAME = object()

# (type, Python value, expected hex, decoded value if it differs from the one encoded)
GOLDEN: list[tuple[WitType, Any, str, Any]] = [
    (B, False, "00", SAME),
    (B, True, "01", SAME),
    (U8, 0, "00", SAME),
    (U8, 255, "ff", SAME),  # raw byte, not LEB128
    (S8, -1, "ff", SAME),
    (S8, -128, "80", SAME),
    (S8, 127, "7f", SAME),
    (U16, 65535, "ffff03", SAME),
    (S16, 32767, "ffff01", SAME),
    (S16, -32768, "80807e", SAME),
    (S16, -1, "7f", SAME),
    (U32, 0, "00", SAME),
    (U32, 127, "7f", SAME),
    (U32, 128, "8001", SAME),
    (U32, 300, "ac02", SAME),
    (U32, 624485, "e58e26", SAME),
    (U32, 2**32 - 1, "ffffffff0f", SAME),
    (S32, 63, "3f", SAME),
    (S32, 64, "c000", SAME),
    (S32, -64, "40", SAME),
    (S32, -65, "bf7f", SAME),
    (S32, -123456, "c0bb78", SAME),
    (S32, -(2**31), "8080808078", SAME),
    (S32, 2**31 - 1, "ffffffff07", SAME),
    (U64, 0, "00", SAME),
    (U64, 2**64 - 1, "ffffffffffffffffff01", SAME),
    (S64, -1, "7f", SAME),
    (S64, -2, "7e", SAME),
    (S64, -(2**63), "8080808080808080807f", SAME),
    (S64, 2**63 - 1, "ffffffffffffffffff00", SAME),
    (F32, 1.0, "0000803f", SAME),
    (F32, -2.5, "000020c0", SAME),
    (F32, math.inf, "0000807f", SAME),
    (F64, 1.0, "000000000000f03f", SAME),
    (F64, -0.0, "0000000000000080", SAME),
    (F64, 0.1, "9a9999999999b93f", SAME),
    (F64, -math.inf, "000000000000f0ff", SAME),
    (CHAR, "$", "24", SAME),
    (CHAR, "И", "d098", SAME),
    (CHAR, "€", "e282ac", SAME),
    (CHAR, "𐍈", "f0908d88", SAME),
    (STR, "", "00", SAME),
    (STR, "hi", "026869", SAME),
    (STR, "€", "03e282ac", SAME),
    (STR, "héllo", "0668c3a96c6c6f", SAME),
    (STR, "a" * 128, "8001" + "61" * 128, SAME),
    (ListT(U8), b"", "00", SAME),
    (ListT(U8), b"\x01\x02\xff", "030102ff", SAME),
    (ListT(U8), [1, 2], "020102", b"\x01\x02"),
    (ListT(U32), [], "00", SAME),
    (ListT(U32), [1, 128, 300], "03018001ac02", SAME),
    (ListT(STR), ["a", ""], "02016100", SAME),
    (ListT(ListT(U8)), [b"", b"x"], "02000178", SAME),
    (PERSON, ("bo", 30), "02626f1e", SAME),
    (TupleT((U8, S8, B)), (1, -1, True), "01ff01", SAME),
    (ABC, "a", "00", ("a", None)),
    (ABC, ("a", None), "00", SAME),
    (ABC, ("b", 300), "01ac02", SAME),
    (ABC, ("c", "x"), "020178", SAME),
    (WIDE, "c150", "9601", ("c150", None)),  # the discriminant is LEB128, not a fixed-width byte
    (EnumT(("x", "y", "z")), "z", "02", SAME),
    (OptionT(U32), None, "00", SAME),
    (OptionT(U32), 5, "0105", SAME),
    (OptionT(OptionT(U32)), 7, "010107", SAME),
    (OptionT(OptionT(U32)), None, "00", SAME),
    (ResultT(U32, STR), Ok(1), "0001", SAME),
    (ResultT(U32, STR), 1, "0001", Ok(1)),
    (ResultT(U32, STR), Err("no"), "01026e6f", SAME),
    (ResultT(None, None), Ok(), "00", SAME),
    (ResultT(None, None), Err(), "01", SAME),
    (ResultT(None, U8), Err(7), "0107", SAME),
    (NESTED, Ok(("b", 1)), "00010101", SAME),
    (NESTED, Ok(None), "0000", SAME),
    (NESTED, Err(b"\x09"), "010109", SAME),
    (FlagsT(()), set(), "00", SAME),  # the reference writes one byte even for no flags
    (FlagsT(("a",)), {"a"}, "01", SAME),
    (FlagsT(("a",)), set(), "00", SAME),
    (FLAGS9, {"f0", "f8"}, "0101", SAME),
    (FLAGS9, {"f8"}, "0001", SAME),
    (FLAGS9, frozenset({"f3"}), "0800", {"f3"}),
    (FLAGS33, {"f0", "f32"}, "0100000001", SAME),
    (FLAGS33, ["f31"], "0000008000", {"f31"}),
    (FLAGS33, set(), "0000000000", SAME),
    (HANDLE, b"\xab\xcd", "02abcd", SAME),
]


@pytest.mark.parametrize(("t", "v", "hexed", "decoded"), GOLDEN, ids=[f"{g[0]}={g[2]}" for g in GOLDEN])
def test_golden(t: WitType, v: Any, hexed: str, decoded: Any) -> None:
    out = bytearray()
    encoder(t)(v, out)
    assert out.hex() == hexed
    data = bytes.fromhex(hexed)
    got, used = decoder(t)(memoryview(data), 0)
    assert used == len(data)
    want = v if decoded is SAME else decoded
    assert same(got, want), (got, want)
    assert type(got) is type(want)


def test_nan_is_written_as_the_quiet_nan_and_read_back_as_nan() -> None:
    assert TupleCodec([F32, F64]).encode([math.nan, math.nan]).hex() == "0000c07f" + "000000000000f87f"
    # NaN payloads are passed through, not canonicalised.
    x, y = TupleCodec([F32, F64]).decode(bytes.fromhex("0100807f" + "010000000000f8ff"))
    assert math.isnan(x) and math.isnan(y)
    assert struct.pack("<d", y).hex() == "010000000000f8ff"


def test_f32_rounds_and_refuses_values_beyond_its_range() -> None:
    assert TupleCodec([F32]).decode(TupleCodec([F32]).encode([0.1])) == [
        struct.unpack("<f", b"\xcd\xcc\xcc\x3d")[0]
    ]
    with pytest.raises(CodecError, match="out of range"):
        check_value(F32, 1e300)


def test_option_of_option_some_none_decodes_as_none_like_the_fast_path() -> None:
    assert TupleCodec([OptionT(OptionT(U32))]).decode(bytes.fromhex("0100")) == [None]


def test_signatures_encode_params_and_results_as_tuples() -> None:
    sig = func(U32, STR, returns=PERSON)
    assert params_codec(sig).encode([1, "a"]).hex() == "010161"
    assert params_codec(sig).decode(bytes.fromhex("010161")) == [1, "a"]
    assert results_codec(sig).encode([("x", 2)]).hex() == "017802"
    assert results_codec(sig).decode(bytes.fromhex("017802")) == [("x", 2)]
    none = func(U8)
    assert results_codec(none).encode([]) == b""
    assert results_codec(none).decode(b"") == []


def test_decode_prefix_reports_what_it_used() -> None:
    codec = TupleCodec([STR, U8])
    assert codec.decode_prefix(bytes.fromhex("0161" + "07" + "ffff")) == (["a", 7], 3)
    with pytest.raises(TruncatedError):
        codec.decode_prefix(bytes.fromhex("0261"))


# -- streams and futures ------------------------------------------------------------------------


def test_stream_chunks() -> None:
    chunk = encode_stream_chunk(encoder(U32), [1, 128])
    assert chunk.hex() == "02018001"
    assert STREAM_END == b"\x00"
    wire = chunk + encode_stream_chunk(encoder(U32), iter([5])) + STREAM_END
    items, o = decode_stream_chunk(decoder(U32), wire)
    assert (items, o) == ([1, 128], 4)
    items, o = decode_stream_chunk(decoder(U32), wire, o)
    assert (items, o) == ([5], 6)
    items, o = decode_stream_chunk(decoder(U32), wire, o)
    assert (items, o) == ([], 7)  # the end of the stream


def test_byte_stream_chunks_are_raw_bytes() -> None:
    chunk = encode_stream_chunk(encoder(U8), b"ab")
    assert chunk.hex() == "026162"
    assert decode_stream_chunk(decoder(U8), chunk + STREAM_END) == (b"ab", 3)
    assert decode_stream_chunk(decoder(U8), chunk + STREAM_END, 3) == (b"", 4)


def test_an_empty_chunk_is_refused_because_it_would_end_the_stream() -> None:
    with pytest.raises(CodecError, match="STREAM_END"):
        encode_stream_chunk(encoder(U32), [])
    with pytest.raises(CodecError, match="STREAM_END"):
        encode_stream_chunk(encoder(U8), b"")


def test_stream_chunk_errors_name_the_element() -> None:
    with pytest.raises(CodecError, match=r"^chunk\[1\]: expected u32, got str$"):
        encode_stream_chunk(encoder(U32), [1, "x"])
    with pytest.raises(TruncatedError):
        decode_stream_chunk(decoder(U32), bytes.fromhex("0201"))


def test_futures() -> None:
    assert encode_future_pending() == FUTURE_PENDING == b"\x00"
    ready = encode_future_ready(encoder(STR), "x")
    assert ready.hex() == "010178"
    assert decode_future(decoder(STR), ready) == (True, "x", 3)
    assert decode_future(decoder(STR), b"\x00") == (False, None, 1)
    with pytest.raises(CodecError, match="invalid future"):
        decode_future(decoder(STR), b"\x02")
    with pytest.raises(TruncatedError):
        decode_future(decoder(STR), b"")
    with pytest.raises(CodecError, match=r"^\.ready: expected string"):
        encode_future_ready(encoder(STR), 1)


# -- properties ---------------------------------------------------------------------------------

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
label = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=6)


def _names(max_size: int) -> st.SearchStrategy[tuple[str, ...]]:
    return st.lists(label, min_size=1, max_size=max_size, unique=True).map(tuple)


leaves: st.SearchStrategy[WitType] = st.one_of(
    st.sampled_from(
        ["bool", "s8", "u8", "s16", "u16", "s32", "u32", "s64", "u64", "f32", "f64", "char", "string"]
    ).map(Prim),
    _names(5).map(EnumT),
    _names(40).map(FlagsT),
    st.booleans().map(lambda owned: HandleT("res", 1, owned)),
)


def _grow(kids: st.SearchStrategy[WitType]) -> st.SearchStrategy[WitType]:
    return st.one_of(
        kids.map(ListT),
        st.lists(st.tuples(label, kids), min_size=1, max_size=4, unique_by=lambda f: f[0]).map(
            lambda fs: RecordT(tuple(fs))
        ),
        st.lists(kids, min_size=1, max_size=4).map(lambda es: TupleT(tuple(es))),
        st.lists(st.tuples(label, st.none() | kids), min_size=1, max_size=5, unique_by=lambda c: c[0]).map(
            lambda cs: VariantT(tuple(cs))
        ),
        kids.map(OptionT),
        st.tuples(st.none() | kids, st.none() | kids).map(lambda p: ResultT(*p)),
    )


types = st.recursive(leaves, _grow, max_leaves=10)


# Unicode scalar values: what `char` and `string` can hold (no surrogates).
SCALARS = st.characters(codec="utf-8")


def values(t: WitType) -> st.SearchStrategy[Any]:
    """Python values of `t` in the host's representation (as a decoder returns them)."""
    if isinstance(t, Prim):
        if t.name == "bool":
            return st.booleans()
        if t.name in INT_BOUNDS:
            return st.integers(*INT_BOUNDS[t.name])
        if t.name in ("f32", "f64"):
            return st.floats(width=32 if t.name == "f32" else 64)
        if t.name == "char":
            return SCALARS
        return st.text(SCALARS, max_size=12)
    if isinstance(t, ListT):
        return st.binary(max_size=40) if t.elem == U8 else st.lists(values(t.elem), max_size=3)
    if isinstance(t, RecordT):
        return st.tuples(*[values(ft) for _, ft in t.fields])
    if isinstance(t, TupleT):
        return st.tuples(*[values(et) for et in t.elems])
    if isinstance(t, VariantT):
        return st.one_of(
            [st.just((n, None)) if ct is None else st.tuples(st.just(n), values(ct)) for n, ct in t.cases]
        )
    if isinstance(t, EnumT):
        return st.sampled_from(t.names)
    if isinstance(t, FlagsT):
        return st.sets(st.sampled_from(t.names))
    if isinstance(t, OptionT):
        # some(none) of option<option<T>> has no Python value of its own (see the codec docstring).
        return st.none() | values(t.inner).filter(lambda v: v is not None)
    if isinstance(t, ResultT):
        ok = st.just(None) if t.ok is None else values(t.ok)
        err = st.just(None) if t.err is None else values(t.err)
        return ok.map(Ok) | err.map(Err)
    if isinstance(t, HandleT):
        return st.binary(max_size=16)
    raise AssertionError(t)


def same(a: Any, b: Any) -> bool:
    """Equality that tells -0.0 from 0.0 and takes NaN as equal to NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (Ok, Err)) and type(a) is type(b):
        return same(a.value, b.value)
    return bool(a == b)


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(max_examples=250, deadline=None)
@given(st.data())
def test_every_value_round_trips(data: st.DataObject) -> None:
    ts = data.draw(st.lists(types, min_size=1, max_size=3), label="types")
    vs = [data.draw(values(t), label=f"value of {t}") for t in ts]
    codec = TupleCodec(ts)
    wire = codec.encode(vs)
    got = codec.decode(wire)
    assert same(got, vs), (got, vs)
    prefix, used = codec.decode_prefix(wire + b"\x99")
    assert used == len(wire) and same(prefix, vs)


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(max_examples=120, deadline=None)
@given(st.data())
def test_every_strict_prefix_is_truncated(data: st.DataObject) -> None:
    t = data.draw(types, label="type")
    v = data.draw(values(t), label="value")
    codec = TupleCodec([t])
    wire = codec.encode([v])
    for n in range(len(wire)):
        with pytest.raises(TruncatedError):
            codec.decode_prefix(wire[:n])


@settings(max_examples=200, deadline=None)
@given(types, st.binary(max_size=40))
def test_arbitrary_bytes_decode_or_raise_codec_error(t: WitType, junk: bytes) -> None:
    try:
        TupleCodec([t]).decode_prefix(junk)
    except CodecError:
        pass


def test_every_prefix_of_a_complex_value_is_truncated() -> None:
    t = TupleT((PERSON, ListT(ABC), NESTED, FLAGS33, OptionT(F64), CHAR, HANDLE, S64))
    v = (
        ("Zoë", 2**31),
        [("a", None), ("c", "€uro"), ("b", 2**32 - 1)],
        Err(b"xyz"),
        {"f1", "f32"},
        -0.5,
        "𐍈",
        b"h",
        -(2**63),
    )
    wire = TupleCodec([t]).encode([v])
    assert TupleCodec([t]).decode(wire) == [v]
    for n in range(len(wire)):
        with pytest.raises(TruncatedError, match="truncated"):
            TupleCodec([t]).decode(wire[:n])


# -- decode errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "hexed", "message"),
    [
        (B, "02", "invalid bool byte 0x02"),
        (OptionT(U8), "0205", "invalid option status byte 0x02"),
        (ResultT(U8, U8), "0205", "invalid result status byte 0x02"),
        (ABC, "03", "bad discriminant 3 for variant"),
        (ABC, "8001", "bad discriminant 128 for variant"),
        (EnumT(("x", "y")), "02", "bad discriminant 2 for enum"),
        (STR, "02ff61", "invalid UTF-8 in string"),
        (STR, "03eda080", "invalid UTF-8 in string"),  # an encoded surrogate
        (CHAR, "ff", "invalid UTF-8 in char"),
        (CHAR, "c080", "invalid UTF-8 in char"),  # overlong NUL
        (CHAR, "eda080", "invalid UTF-8 in char"),  # surrogate U+D800
        (CHAR, "e24141", "invalid UTF-8 in char"),
        (U16, "ffff04", "does not fit in 16 bits"),
        (U32, "ffffffff10", "does not fit in 32 bits"),
        (U32, "8080808080", "does not fit in 32 bits"),  # a sixth byte would be needed
        (U64, "ffffffffffffffffff02", "does not fit in 64 bits"),
        (S64, "ffffffffffffffffff01", "does not fit in 64 bits"),  # sign bits disagree
        (S32, "ffffffff0f", "does not fit in 32 bits"),
        (S16, "808002", "does not fit in 16 bits"),
        (ListT(U32), "ffffffff0f", "truncated"),  # an absurd count fails fast
        (PERSON, "02ff61" + "00", r"^values\[0\]\.name: invalid UTF-8"),
        (ListT(ABC), "020009", r"^values\[0\]\[1\]: bad discriminant 9"),
        (NESTED, "00010203", r"^values\[0\]\.ok\.some: bad discriminant 2"),
    ],
)
def test_invalid_bytes_are_refused(t: WitType, hexed: str, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        TupleCodec([t]).decode(bytes.fromhex(hexed))


def test_overlong_but_in_range_leb128_is_accepted_as_core_wasm_does() -> None:
    assert TupleCodec([U32, S32]).decode(bytes.fromhex("8000" + "ff7f")) == [0, -1]


def test_flag_bits_beyond_the_names_are_ignored_as_the_reference_does() -> None:
    assert TupleCodec([FlagsT(("a", "b"))]).decode(b"\xfd") == [{"a"}]


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(CodecError, match="1 trailing bytes after params"):
        TupleCodec([U8], "params").decode(b"\x01\x02")


# -- encode errors ------------------------------------------------------------------------------

PARAMS = TupleCodec([U32, ListT(PERSON), ABC, ResultT(None, STR)], "params")
GOOD = [1, [("a", 1)], "a", Ok()]


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (0, "1", r"^params\[0\]: expected u32, got str$"),
        (0, True, r"^params\[0\]: expected u32, got bool$"),
        (0, -1, r"^params\[0\]: expected u32, got -1 \(out of range\)$"),
        (1, [("a", 1), ("b", "x")], r"^params\[1\]\[1\]\.age: expected u32, got str$"),
        (1, [("a", 1), 5], r"^params\[1\]\[1\]: expected record \{ name: string, age: u32 \}, got int$"),
        (
            1,
            [("a",)],
            r"^params\[1\]\[0\]: expected record \{ name: string, age: u32 \}, got tuple of length 1$",
        ),
        (1, [(7, 1)], r"^params\[1\]\[0\]\.name: expected string, got int$"),
        (1, "ab", r"^params\[1\]: expected list<record \{ name: string, age: u32 \}>, got str$"),
        (2, "zz", r"^params\[2\]: expected variant \{ a, b\(u32\), c\(string\) \}, got unknown case 'zz'$"),
        (2, "b", r"^params\[2\]: case 'b' of variant .* needs a payload$"),
        (2, ("a", 1), r"^params\[2\]: case 'a' of variant .* has no payload, got int$"),
        (2, ("c", b"x"), r"^params\[2\]\.c: expected string, got bytes$"),
        (2, 3, r"^params\[2\]: expected variant .* as a case name or \(case, payload\), got int$"),
        (3, Ok(1), r"^params\[3\]: ok case of result<_, string> has no payload, got int$"),
        (3, Err(2), r"^params\[3\]\.err: expected string, got int$"),
    ],
)
def test_encode_errors_name_the_path_and_the_expected_type(index: int, value: Any, message: str) -> None:
    vs = list(GOOD)
    vs[index] = value
    with pytest.raises(CodecError, match=message):
        PARAMS.encode(vs)


@pytest.mark.parametrize(
    ("t", "v", "message"),
    [
        (U8, 256, "expected u8, got 256"),
        (S8, -129, "expected s8, got -129"),
        (U64, 2**64, "out of range"),
        (S64, -(2**63) - 1, "out of range"),
        (F64, "1.0", "expected f64, got str"),
        (B, 1, "expected bool, got int"),
        (CHAR, "ab", "expected char, got str of length 2"),
        (CHAR, "\ud800", "surrogate"),
        (STR, "a\udc00", "lone surrogate"),
        (ListT(U8), [1, 256], "not all u8 values"),
        (EnumT(("x",)), "y", "unknown name 'y'"),
        (FLAGS9, {"f9"}, "unknown flag 'f9'"),
        (FLAGS9, "f1", "as a set of names, got str"),
        (HANDLE, 5, r"expected own<blob> as bytes, got int"),
        (OptionT(U8), "x", r"^\.some: expected u8, got str$"),
    ],
)
def test_check_value_refuses_wrong_values(t: WitType, v: Any, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        check_value(t, v)


def test_wrong_number_of_params() -> None:
    with pytest.raises(CodecError, match="expected 4 params, got 3"):
        PARAMS.encode(GOOD[:3])
    assert PARAMS.decode(PARAMS.encode(GOOD)) == [1, [("a", 1)], ("a", None), Ok()]


def test_codecs_are_built_once_per_type() -> None:
    assert encoder(ListT(PERSON)) is encoder(ListT(RecordT((("name", STR), ("age", U32)))))
    assert decoder(ListT(PERSON)) is decoder(ListT(PERSON))
