"""Plain, hashable descriptions of component-model value types.

wasmtime-py's type objects answer every question with an FFI call; these are built once at link
time from them and then drive the precomputed conversions of the fast call path (and, later, the
wRPC value codec and the `call` command's JSON checking).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRIMITIVES = ("bool", "s8", "u8", "s16", "u16", "s32", "u32", "s64", "u64", "f32", "f64", "char", "string")


@dataclass(frozen=True)
class Prim:
    """A primitive type: bool, integers, floats, char or string."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ListT:
    """`list<T>`."""

    elem: WitType

    def __str__(self) -> str:
        return f"list<{self.elem}>"


@dataclass(frozen=True)
class RecordT:
    """`record { name: T, ... }`; Python values are tuples in field order."""

    fields: tuple[tuple[str, WitType], ...]

    def __str__(self) -> str:
        return "record { " + ", ".join(f"{n}: {t}" for n, t in self.fields) + " }"


@dataclass(frozen=True)
class TupleT:
    """`tuple<A, B, ...>`."""

    elems: tuple[WitType, ...]

    def __str__(self) -> str:
        return "tuple<" + ", ".join(str(t) for t in self.elems) + ">"


@dataclass(frozen=True)
class VariantT:
    """`variant { case(T), ... }`; Python values are `(case, payload)` or a bare case name."""

    cases: tuple[tuple[str, WitType | None], ...]

    def __str__(self) -> str:
        return "variant { " + ", ".join(n if t is None else f"{n}({t})" for n, t in self.cases) + " }"


@dataclass(frozen=True)
class EnumT:
    """`enum { a, b }`; Python values are case names."""

    names: tuple[str, ...]

    def __str__(self) -> str:
        return "enum { " + ", ".join(self.names) + " }"


@dataclass(frozen=True)
class OptionT:
    """`option<T>`; Python values are `None` or the payload."""

    inner: WitType

    def __str__(self) -> str:
        return f"option<{self.inner}>"


@dataclass(frozen=True)
class ResultT:
    """`result<T, E>`; Python values are `Ok`, `Err`, or a bare ok payload."""

    ok: WitType | None
    err: WitType | None

    def __str__(self) -> str:
        return f"result<{self.ok or '_'}, {self.err or '_'}>"


@dataclass(frozen=True)
class FlagsT:
    """`flags { a, b }`; Python values are sets of flag names."""

    names: tuple[str, ...]

    def __str__(self) -> str:
        return "flags { " + ", ".join(self.names) + " }"


@dataclass(frozen=True)
class HandleT:
    """`own<R>` or `borrow<R>` of a host resource type, identified by its host type id."""

    resource: str
    type_id: int
    owned: bool

    def __str__(self) -> str:
        return f"{'own' if self.owned else 'borrow'}<{self.resource}>"


WitType = Prim | ListT | RecordT | TupleT | VariantT | EnumT | OptionT | ResultT | FlagsT | HandleT


@dataclass(frozen=True)
class FuncSig:
    """A function's parameter and result types."""

    params: tuple[tuple[str, WitType], ...]
    result: WitType | None

    def __str__(self) -> str:
        ps = ", ".join(f"{n}: {t}" for n, t in self.params)
        return f"func({ps})" + (f" -> {self.result}" if self.result is not None else "")


class Ok:
    """The ok case of a `result`, for results nested inside other values."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Ok({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ok) and other.value == self.value

    def __hash__(self) -> int:
        return hash(("ok", self.value))


class Err(Exception):
    """The error case of a `result`: returned, or raised by a host function whose result is a `result`."""

    def __init__(self, value: Any = None) -> None:
        super().__init__(value)
        self.value = value

    def __repr__(self) -> str:
        return f"Err({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Err) and other.value == self.value

    def __hash__(self) -> int:
        return hash(("err", self.value))


# -- declaring the types a host implementation expects -----------------------------------------
# Capability implementations declare each function's signature with these, so `link` can bind
# them to whichever interface version a component imports when (and only when) the types match.

BOOL, U8, U32, U64, S64, STRING = (Prim(n) for n in ("bool", "u8", "u32", "u64", "s64", "string"))
BYTES = ListT(U8)


def own(resource: str) -> HandleT:
    """`own<resource>` (the type id is filled in at link time; shapes ignore it)."""
    return HandleT(resource, 0, True)


def borrow(resource: str) -> HandleT:
    """`borrow<resource>`."""
    return HandleT(resource, 0, False)


def option(inner: WitType) -> OptionT:
    """`option<inner>`."""
    return OptionT(inner)


def result(ok: WitType | None = None, err: WitType | None = None) -> ResultT:
    """`result<ok, err>`."""
    return ResultT(ok, err)


def lst(elem: WitType) -> ListT:
    """`list<elem>`."""
    return ListT(elem)


def tup(*elems: WitType) -> TupleT:
    """`tuple<...>`."""
    return TupleT(tuple(elems))


def record(**fields: WitType) -> RecordT:
    """`record { ... }` (keyword names use `_` for `-`)."""
    return RecordT(tuple((n.replace("_", "-"), t) for n, t in fields.items()))


def variant(*cases: str | tuple[str, WitType]) -> VariantT:
    """`variant { ... }`: bare case names or `(name, payload)` pairs."""
    return VariantT(tuple((c, None) if isinstance(c, str) else c for c in cases))


def enum(*names: str) -> EnumT:
    """`enum { ... }`."""
    return EnumT(tuple(names))


def func(*params: WitType, returns: WitType | None = None) -> FuncSig:
    """A signature from parameter types (names are not part of a shape)."""
    return FuncSig(tuple((f"p{i}", t) for i, t in enumerate(params)), returns)


def _shape(t: WitType | None) -> Any:
    # Structure without what does not change the meaning of a value: handle type ids.
    if t is None or isinstance(t, (Prim, EnumT, FlagsT)):
        return t
    if isinstance(t, HandleT):
        return ("handle", t.resource, t.owned)
    if isinstance(t, ListT):
        return ("list", _shape(t.elem))
    if isinstance(t, OptionT):
        return ("option", _shape(t.inner))
    if isinstance(t, ResultT):
        return ("result", _shape(t.ok), _shape(t.err))
    if isinstance(t, TupleT):
        return ("tuple", tuple(_shape(e) for e in t.elems))
    if isinstance(t, RecordT):
        return ("record", tuple((n, _shape(e)) for n, e in t.fields))
    return ("variant", tuple((n, _shape(e)) for n, e in t.cases))


def same_shape(a: FuncSig, b: FuncSig) -> bool:
    """Whether two signatures take and return the same types (parameter names and type ids aside)."""
    return (
        len(a.params) == len(b.params)
        and all(_shape(x) == _shape(y) for (_, x), (_, y) in zip(a.params, b.params, strict=True))
        and _shape(a.result) == _shape(b.result)
    )


def shape_text(sig: FuncSig) -> str:
    """A signature as text without parameter names, for error messages."""
    ps = ", ".join(str(t) for _, t in sig.params)
    return f"func({ps})" + (f" -> {sig.result}" if sig.result is not None else "")


def has_handle(t: WitType | None) -> bool:
    """Whether values of `t` contain resource handles (which cannot be copied between components)."""
    if t is None:
        return False
    if isinstance(t, HandleT):
        return True
    if isinstance(t, ListT):
        return has_handle(t.elem)
    if isinstance(t, OptionT):
        return has_handle(t.inner)
    if isinstance(t, ResultT):
        return has_handle(t.ok) or has_handle(t.err)
    if isinstance(t, TupleT):
        return any(has_handle(e) for e in t.elems)
    if isinstance(t, RecordT):
        return any(has_handle(e) for _, e in t.fields)
    if isinstance(t, VariantT):
        return any(has_handle(e) for _, e in t.cases)
    return False
