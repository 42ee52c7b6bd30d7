"""Component-model values as JSON, for `wasmlattice call`: typed input checking and typed output.

JSON shapes: numbers and strings as themselves (a `char` is a one-character string), `list<T>` as an
array (`list<u8>` too, of numbers 0-255), a record as an object with its field names, a tuple as
an array, a variant as `{"case": payload}` or `"case"` when the case has no payload, an enum as
its case name, flags as an array of names, an option as `null` or the value, a result as
`{"ok": value}` or `{"err": value}` (`null` payload for `_`). Resources cannot be given.
"""

from __future__ import annotations

import json
import math
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

_INT_RANGES = {
    "u8": (0, 2**8 - 1),
    "u16": (0, 2**16 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
    "s8": (-(2**7), 2**7 - 1),
    "s16": (-(2**15), 2**15 - 1),
    "s32": (-(2**31), 2**31 - 1),
    "s64": (-(2**63), 2**63 - 1),
}


class JsonValueError(ValueError):
    """A JSON value does not fit the expected type; the message names where and what was expected."""


def _bad(path: str, t: WitType, got: Any, why: str = "") -> JsonValueError:
    # `got` came from JSON: shown as JSON (`{"a": true}`), as the user wrote it, not as Python.
    text = json.dumps(got, ensure_ascii=False)
    shown = text if len(text) < 60 else text[:57] + "..."
    extra = f" ({why})" if why else ""
    return JsonValueError(f"{path}: expected {t}, got {shown}{extra}")


def from_json(t: WitType, v: Any, path: str = "value") -> Any:
    """The host's Python value of type `t` for JSON value `v`; `JsonValueError` if it does not fit."""
    if isinstance(t, Prim):
        return _prim_from_json(t, v, path)
    if isinstance(t, ListT):
        if not isinstance(v, list):
            raise _bad(path, t, v)
        items = [from_json(t.elem, x, f"{path}[{i}]") for i, x in enumerate(v)]
        return bytes(items) if t.elem == Prim("u8") else items
    if isinstance(t, RecordT):
        if not isinstance(v, dict):
            raise _bad(path, t, v)
        names = [n for n, _ in t.fields]
        extra = sorted(set(v) - set(names))
        missing = [n for n in names if n not in v]
        if missing:
            raise _bad(path, t, v, f"missing {', '.join(missing)}")
        if extra:
            raise _bad(path, t, v, f"unknown {', '.join(extra)}")
        return tuple(from_json(ft, v[n], f"{path}.{n}") for n, ft in t.fields)
    if isinstance(t, TupleT):
        if not isinstance(v, list) or len(v) != len(t.elems):
            raise _bad(path, t, v)
        return tuple(
            from_json(et, x, f"{path}[{i}]") for i, (et, x) in enumerate(zip(t.elems, v, strict=True))
        )
    if isinstance(t, VariantT):
        cases = dict(t.cases)
        if isinstance(v, str) and v in cases and cases[v] is None:
            return v
        if isinstance(v, dict) and len(v) == 1:
            ((case, payload),) = v.items()
            if case in cases:
                pt = cases[case]
                if pt is None:
                    if payload is not None:
                        raise _bad(path, t, v, f"case {case} has no payload")
                    return case
                return (case, from_json(pt, payload, f"{path}.{case}"))
        raise _bad(path, t, v)
    if isinstance(t, EnumT):
        if isinstance(v, str) and v in t.names:
            return v
        raise _bad(path, t, v)
    if isinstance(t, FlagsT):
        if isinstance(v, list) and all(isinstance(x, str) and x in t.names for x in v):
            return set(v)
        raise _bad(path, t, v)
    if isinstance(t, OptionT):
        return None if v is None else from_json(t.inner, v, f"{path}?")
    if isinstance(t, ResultT):
        if isinstance(v, dict) and len(v) == 1:
            ((case, payload),) = v.items()
            if case == "ok":
                return Ok(None if t.ok is None else from_json(t.ok, payload, f"{path}.ok"))
            if case == "err":
                return Err(None if t.err is None else from_json(t.err, payload, f"{path}.err"))
        raise _bad(path, t, v, 'give {"ok": ...} or {"err": ...}')
    assert isinstance(t, HandleT)
    raise _bad(path, t, v, "resources cannot be passed from the command line")


def _prim_from_json(t: Prim, v: Any, path: str) -> Any:
    name = t.name
    if name == "bool":
        if isinstance(v, bool):
            return v
    elif name in _INT_RANGES:
        lo, hi = _INT_RANGES[name]
        if isinstance(v, int) and not isinstance(v, bool):
            if lo <= v <= hi:
                return v
            raise _bad(path, t, v, f"out of range {lo}..{hi}")
    elif name in ("f32", "f64"):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    elif name == "char":
        if isinstance(v, str) and len(v) == 1:
            return v
    elif name == "string" and isinstance(v, str):
        return v
    raise _bad(path, t, v)


def to_json(t: WitType | None, v: Any) -> Any:
    """A JSON value for the host's Python value `v` of type `t` (the shapes of `from_json`)."""
    if t is None:
        return None
    if isinstance(t, Prim):
        if t.name in ("f32", "f64") and isinstance(v, float) and not math.isfinite(v):
            return str(v)  # JSON has no NaN or infinities
        return v
    if isinstance(t, ListT):
        return [to_json(t.elem, x) for x in v]
    if isinstance(t, RecordT):
        return {n: to_json(ft, x) for (n, ft), x in zip(t.fields, v, strict=True)}
    if isinstance(t, TupleT):
        return [to_json(et, x) for et, x in zip(t.elems, v, strict=True)]
    if isinstance(t, VariantT):
        cases = dict(t.cases)
        if isinstance(v, str):
            return v
        case, payload = v
        pt = cases[case]
        return case if pt is None else {case: to_json(pt, payload)}
    if isinstance(t, EnumT):
        return v
    if isinstance(t, FlagsT):
        return sorted(v, key=t.names.index)
    if isinstance(t, OptionT):
        return None if v is None else to_json(t.inner, v)
    if isinstance(t, ResultT):
        if isinstance(v, Err):
            return {"err": to_json(t.err, v.value)}
        return {"ok": to_json(t.ok, v.value if isinstance(v, Ok) else v)}
    return repr(v)
