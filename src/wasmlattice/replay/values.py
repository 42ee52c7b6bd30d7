"""Host-call values as JSON for recordings, directed by the call's WIT types (docs/record-replay.md).

Written by hand rather than with `client.values` (the `call` command's codec) because a recording
needs what that one refuses or spells verbosely: bytes (`list<u8>`) as `{"text": ...}` when they
are UTF-8 and `{"base64": ...}` otherwise, resource handles as `{"resource": NAME, "id": N}`
numbered by first appearance within one invocation, and redaction of configured values.

Shapes: primitives as themselves, lists and tuples and records as arrays (records in field order),
a variant as `{"case": NAME, "value": payload}` (no `value` without a payload), an enum as its
case name, flags as a sorted array, an option as `null` or `{"some": value}`, a result as
`{"ok": value}` or `{"err": value}`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

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

REDACTED = "<redacted>"
# Request headers whose values are credentials: recorded as REDACTED (incoming and outgoing requests).
REDACTED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})

_INT = {
    "u8": (0, 2**8 - 1),
    "u16": (0, 2**16 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
    "s8": (-(2**7), 2**7 - 1),
    "s16": (-(2**15), 2**15 - 1),
    "s32": (-(2**31), 2**31 - 1),
    "s64": (-(2**63), 2**63 - 1),
}


class RecordingError(ValueError):
    """A recording file (or one of its values) is not what this version writes; names the field."""


def encode_bytes(data: bytes) -> dict[str, str]:
    """Bytes as `{"text": ...}` when they are UTF-8, else `{"base64": ...}`."""
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def decode_bytes(v: Any, where: str) -> bytes:
    """The bytes `encode_bytes` wrote; `RecordingError` naming `where` otherwise."""
    if isinstance(v, dict) and len(v) == 1:
        if isinstance(v.get("text"), str):
            return bytes(v["text"].encode("utf-8"))
        if isinstance(v.get("base64"), str):
            try:
                return base64.b64decode(v["base64"], validate=True)
            except (binascii.Error, ValueError):
                raise RecordingError(f"{where}: invalid base64") from None
    raise RecordingError(f'{where}: expected {{"text": ...}} or {{"base64": ...}}, got {_short(v)}')


class Handles:
    """Resource handles of one invocation, numbered by first appearance (the same in record and replay)."""

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}
        self.keep: list[Any] = []  # keeps numbered objects alive, so their id() is never reused

    def number(self, obj: Any) -> int:
        """The number of `obj`, giving it the next one on first sight."""
        n = self.ids.get(id(obj))
        if n is None:
            n = self.ids[id(obj)] = len(self.keep) + 1
            self.keep.append(obj)
        return n


def encode(t: WitType | None, v: Any, handles: Handles) -> Any:
    """`v` (a host-call value of type `t`) as JSON."""
    if t is None:
        return None
    if isinstance(t, Prim):
        return v
    if isinstance(t, ListT):
        if t.elem == Prim("u8"):
            return encode_bytes(bytes(v))
        return [encode(t.elem, x, handles) for x in v]
    if isinstance(t, RecordT):
        return [encode(ft, x, handles) for (_, ft), x in zip(t.fields, v, strict=True)]
    if isinstance(t, TupleT):
        return [encode(et, x, handles) for et, x in zip(t.elems, v, strict=True)]
    if isinstance(t, VariantT):
        case, payload = (v, None) if isinstance(v, str) else v
        ct = dict(t.cases).get(case)
        return {"case": case} if ct is None else {"case": case, "value": encode(ct, payload, handles)}
    if isinstance(t, EnumT):
        return v
    if isinstance(t, FlagsT):
        return sorted(v)
    if isinstance(t, OptionT):
        return None if v is None else {"some": encode(t.inner, v, handles)}
    if isinstance(t, ResultT):
        if isinstance(v, Err):
            return {"err": encode(t.err, v.value, handles)}
        return {"ok": encode(t.ok, v.value if isinstance(v, Ok) else v, handles)}
    if isinstance(t, HandleT):
        return {"resource": t.resource, "id": handles.number(v)}
    raise RecordingError(f"cannot record a value of type {t}")


class Placeholder:
    """What replay hands the guest for a resource the recording returned (it only ever comes back)."""

    __slots__ = ("id", "resource")

    def __init__(self, resource: str, n: int) -> None:
        self.resource, self.id = resource, n

    def __repr__(self) -> str:
        return f"<recorded {self.resource} #{self.id}>"


def decode(t: WitType | None, v: Any, where: str) -> Any:
    """The Python value of JSON `v` of type `t`; `RecordingError` naming `where` when it is not one."""
    if t is None:
        if v is not None:
            raise RecordingError(f"{where}: expected null, got {_short(v)}")
        return None
    if isinstance(t, Prim):
        return _prim(t, v, where)
    if isinstance(t, ListT):
        if t.elem == Prim("u8"):
            return decode_bytes(v, where)
        return [decode(t.elem, x, f"{where}[{i}]") for i, x in enumerate(_array(v, where))]
    if isinstance(t, RecordT):
        items = _array(v, where, len(t.fields))
        return tuple(decode(ft, x, f"{where}.{n}") for (n, ft), x in zip(t.fields, items, strict=True))
    if isinstance(t, TupleT):
        items = _array(v, where, len(t.elems))
        return tuple(
            decode(et, x, f"{where}[{i}]") for i, (et, x) in enumerate(zip(t.elems, items, strict=True))
        )
    if isinstance(t, VariantT):
        if not isinstance(v, dict) or not isinstance(v.get("case"), str):
            raise RecordingError(f'{where}: expected {{"case": ...}}, got {_short(v)}')
        cases = dict(t.cases)
        case = v["case"]
        if case not in cases:
            raise RecordingError(f"{where}.case: {case!r} is not a case of {t}")
        ct = cases[case]
        return case if ct is None else (case, decode(ct, v.get("value"), f"{where}.value"))
    if isinstance(t, EnumT):
        if v not in t.names:
            raise RecordingError(f"{where}: {_short(v)} is not a case of {t}")
        return v
    if isinstance(t, FlagsT):
        items = _array(v, where)
        bad = [x for x in items if x not in t.names]
        if bad:
            raise RecordingError(f"{where}: {_short(bad[0])} is not a flag of {t}")
        return set(items)
    if isinstance(t, OptionT):
        if v is None:
            return None
        if not isinstance(v, dict) or set(v) != {"some"}:
            raise RecordingError(f'{where}: expected null or {{"some": ...}}, got {_short(v)}')
        return decode(t.inner, v["some"], f"{where}.some")
    if isinstance(t, ResultT):
        if isinstance(v, dict) and set(v) == {"ok"}:
            return Ok(decode(t.ok, v["ok"], f"{where}.ok"))
        if isinstance(v, dict) and set(v) == {"err"}:
            return Err(decode(t.err, v["err"], f"{where}.err"))
        raise RecordingError(f'{where}: expected {{"ok": ...}} or {{"err": ...}}, got {_short(v)}')
    if isinstance(t, HandleT):
        if not isinstance(v, dict) or v.get("resource") != t.resource or not _is_int(v.get("id")):
            raise RecordingError(
                f'{where}: expected {{"resource": {t.resource!r}, "id": N}}, got {_short(v)}'
            )
        return Placeholder(t.resource, v["id"])
    raise RecordingError(f"{where}: cannot replay a value of type {t}")


def redact(t: WitType | None, v: Any, keyed: bool = False) -> Any:
    """`v` with every string and byte string replaced by `REDACTED`; keys of key-value pairs kept."""
    if t is None or v is None:
        return v
    if isinstance(t, Prim):
        return REDACTED if t.name == "string" else v
    if isinstance(t, ListT):
        if t.elem == Prim("u8"):
            return REDACTED.encode()
        return [redact(t.elem, x) for x in v]
    if isinstance(t, TupleT):
        if len(t.elems) == 2 and t.elems[0] == Prim("string"):
            return (v[0], redact(t.elems[1], v[1]))  # (key, value): the key says what was asked
        return tuple(redact(et, x) for et, x in zip(t.elems, v, strict=True))
    if isinstance(t, RecordT):
        return tuple(redact(ft, x) for (_, ft), x in zip(t.fields, v, strict=True))
    if isinstance(t, VariantT):
        if isinstance(v, str):
            return v
        ct = dict(t.cases).get(v[0])
        return v if ct is None else (v[0], redact(ct, v[1]))
    if isinstance(t, OptionT):
        return redact(t.inner, v)
    if isinstance(t, ResultT):
        if isinstance(v, Err):
            return Err(redact(t.err, v.value))
        return Ok(redact(t.ok, v.value if isinstance(v, Ok) else v))
    return v


def _prim(t: Prim, v: Any, where: str) -> Any:
    name = t.name
    if name == "bool":
        ok = isinstance(v, bool)
    elif name in _INT:
        lo, hi = _INT[name]
        ok = _is_int(v) and lo <= v <= hi
    elif name in ("f32", "f64"):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    elif name == "char":
        ok = isinstance(v, str) and len(v) == 1
    else:
        ok = isinstance(v, str)
    if not ok:
        raise RecordingError(f"{where}: expected {name}, got {_short(v)}")
    return v


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _array(v: Any, where: str, n: int | None = None) -> list[Any]:
    if not isinstance(v, list):
        raise RecordingError(f"{where}: expected an array, got {_short(v)}")
    if n is not None and len(v) != n:
        raise RecordingError(f"{where}: expected {n} items, got {len(v)}")
    return v


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
