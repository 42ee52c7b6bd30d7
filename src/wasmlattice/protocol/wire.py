"""Wire-model base class and strict payload parsing with precise, field-naming error messages.

Every control-interface and event payload is a `WireModel`. Parsing mirrors serde's behaviour in the
wasmCloud host: types are strict (no "5" -> 5 coercion, no 1 -> true), unknown fields are ignored,
and fields marked optional (docs/protocol.md#payloads) are omitted from the JSON when they are None.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    RootModel,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)
from pydantic_core import ErrorDetails

from wasmlattice.protocol.limits import MAX_PAYLOAD, find_unpaired_surrogate

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
I32_MIN = -(2**31)
I32_MAX = 2**31 - 1

# How much of an offending value an error message quotes; payloads can be large.
_FOUND_LIMIT = 60
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# How much of one path part (a map key may be anything a sender chose) an error message quotes.
_PATH_PART_LIMIT = 40


class PayloadError(ValueError):
    """A payload could not be parsed; the message names the field path, what was found and expected."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class WireModel(BaseModel):
    """Base of every wire payload: strict parsing, wire-name serialization, optional-field omission."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True, frozen=False)

    # Wire names of fields that are left out of the JSON when their value is None (serde
    # `skip_serializing_if = "Option::is_none"`); other None fields serialize as `null`.
    omit_if_none: ClassVar[frozenset[str]] = frozenset()
    # The name used to prefix parse errors, e.g. "link.put".
    payload_name: ClassVar[str] = "payload"
    # Whether an empty body parses as the all-defaults model (e.g. `host.stop`).
    empty_payload_ok: ClassVar[bool] = False

    @model_serializer(mode="wrap")
    def _omit_optional(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        drop = self._keys_to_drop()
        if isinstance(data, dict) and (self.omit_if_none or drop):
            return {
                k: v for k, v in data.items() if k not in drop and not (v is None and k in self.omit_if_none)
            }
        return data

    def _keys_to_drop(self) -> frozenset[str]:
        # Hook for payloads whose key set depends on state (e.g. claims without JWT metadata).
        return frozenset()

    def to_wire(self) -> bytes:
        """Serialize to compact JSON bytes using the wire field names."""
        return self.model_dump_json(by_alias=True).encode()

    def to_json_obj(self) -> dict[str, Any]:
        """Return the JSON object (as Python data) that `to_wire` would encode."""
        obj: dict[str, Any] = json.loads(self.to_wire())
        return obj

    @classmethod
    def from_wire(cls, data: bytes | str) -> Self:
        """Parse JSON bytes into this model; raises `PayloadError` with a precise message."""
        return parse_payload(cls, data)


M = TypeVar("M", bound=BaseModel)
RootT = TypeVar("RootT")


class WireRoot(RootModel[RootT], Generic[RootT]):
    """Base of payloads whose JSON is a bare map or list (named config, registry map, link list)."""

    payload_name: ClassVar[str] = "payload"
    empty_payload_ok: ClassVar[bool] = False

    def to_wire(self) -> bytes:
        """Serialize to compact JSON bytes using the wire field names."""
        return self.model_dump_json(by_alias=True).encode()

    @classmethod
    def from_wire(cls, data: bytes | str) -> Self:
        """Parse JSON bytes into this model; raises `PayloadError` with a precise message."""
        return parse_payload(cls, data)


def _reject_constant(name: str) -> Any:
    # serde_json rejects NaN/Infinity; Python's json accepts them unless told otherwise.
    raise ValueError(f"{name} is not valid JSON")


def _json_kind(value: Any) -> str:
    """Name a decoded JSON value's kind the way a user would ("an array", "a string", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _found(value: Any) -> str:
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > _FOUND_LIMIT:
        text = text[: _FOUND_LIMIT - 3] + "..."
    return text


def format_path(loc: Sequence[int | str]) -> str:
    """Render a pydantic error location as `components[0].id` (odd map keys as `["ghcr.io"]`)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            # pydantic's marker for an error in a map key rather than its value
            out += " (key)"
        elif _IDENT.match(part) and len(part) <= _PATH_PART_LIMIT:
            out += f".{part}" if out else part
        else:
            shown = part if len(part) <= _PATH_PART_LIMIT else part[: _PATH_PART_LIMIT - 3] + "..."
            out += f"[{json.dumps(shown)}]"
    return out


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "an array",
    "float_type": "a number",
    "literal_error": "one of the allowed values",
}


def _describe(err: ErrorDetails) -> str:
    path = format_path(err["loc"])
    kind = err["type"]
    if kind == "missing":
        return f"missing required field '{path}'"
    where = f"field '{path}': " if path else ""
    found = _found(err.get("input"))
    ctx = err.get("ctx") or {}
    bounds = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()), "?")
        return f"{where}expected a number {bounds[kind]} {limit}, found {found}"
    if kind == "too_long" and "max_length" in ctx:
        found_len = ctx.get("actual_length")
        if found_len is None and isinstance(err.get("input"), list | dict):
            found_len = len(err["input"])
        return f"{path or 'payload'}: at most {ctx['max_length']} entries, found {found_len}"
    if kind == "value_error" and "error" in ctx:
        # Our limit checks (protocol/limits.py) word the whole rule: `component_id: longer than ...`.
        return f"{path or 'payload'}: {ctx['error']}"
    if kind == "literal_error":
        return f"{where}expected {ctx.get('expected', 'an allowed value')}, found {found}"
    expected = _EXPECTED.get(kind)
    if expected is not None:
        return f"{where}expected {expected}, found {found}"
    return f"{where}{err['msg']}, found {found}"


def describe_validation_error(name: str, exc: ValidationError) -> str:
    """Turn a pydantic ValidationError into one line: `<name>: field 'x': expected ..., found ...`."""
    parts = [_describe(e) for e in exc.errors(include_url=False)]
    return f"{name}: " + "; ".join(parts)


def decode_json(name: str, data: bytes | str) -> Any:
    """Decode JSON text strictly (UTF-8, no NaN); raise `PayloadError` naming the position on failure."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(
                f"{name}: invalid JSON: payload is not valid UTF-8 (byte {exc.start})"
            ) from exc
    else:
        text = data
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"{name}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except ValueError as exc:
        raise PayloadError(f"{name}: invalid JSON: {exc}") from exc
    # A `\ud800` escape decodes to a lone surrogate, which no reply or event could encode later:
    # refuse it here, wherever it is (only escapes can produce one from UTF-8 input).
    if not isinstance(data, bytes) or b"\\u" in data:
        where = find_unpaired_surrogate(obj)
        if where is not None:
            field = f"{where}: " if where else ""
            raise PayloadError(f"{name}: {field}contains an unpaired surrogate (not valid Unicode)")
    return obj


def parse_payload(model: type[M], data: bytes | str, name: str | None = None) -> M:
    """Parse a JSON payload into `model`, raising `PayloadError` with a precise one-line message."""
    label = name or getattr(model, "payload_name", None) or model.__name__
    empty_ok = bool(getattr(model, "empty_payload_ok", False))
    if len(data) > MAX_PAYLOAD:
        raise PayloadError(f"{label}: payload of {len(data)} bytes is larger than {MAX_PAYLOAD} bytes")
    if not data.strip():
        if empty_ok:
            return model.model_validate({})
        raise PayloadError(f"{label}: expected a JSON object, found an empty payload")
    obj = decode_json(label, data)
    root = getattr(model, "model_fields", {}).get("root")
    if root is not None and getattr(root.annotation, "__origin__", None) is list:
        if not isinstance(obj, list):
            raise PayloadError(f"{label}: expected a JSON array, found {_json_kind(obj)}")
        return validate_obj(model, obj, label)
    if not isinstance(obj, dict):
        raise PayloadError(f"{label}: expected a JSON object, found {_json_kind(obj)}")
    return validate_obj(model, obj, label)


def validate_obj(model: type[M], obj: Any, name: str | None = None) -> M:
    """Validate already-decoded JSON data into `model` (strict), raising `PayloadError` on failure."""
    label = name or getattr(model, "payload_name", None) or model.__name__
    try:
        return model.model_validate(obj, strict=True)
    except ValidationError as exc:
        raise PayloadError(describe_validation_error(label, exc)) from exc


def dumps_compact(obj: Any) -> bytes:
    """Encode plain JSON data compactly (no spaces), like serde_json::to_vec."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def wire_list(items: Iterable[WireModel]) -> list[dict[str, Any]]:
    """Return the JSON objects of several models, in order."""
    return [item.to_json_obj() for item in items]
