"""`wasi:http` 0.2 shared types: fields (headers and trailers) with the forbidden-header rules,
methods, and error codes."""

from __future__ import annotations

import re
from typing import Any

from wasmlattice.runtime.witypes import Err
from wasmlattice.wasi.io import IoError

# Headers a guest may not set (the same set wasmtime refuses by default).
FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "host",
        "http2-settings",
    }
)
TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

METHODS = ("get", "head", "post", "put", "delete", "connect", "options", "trace", "patch")


def method_to_wit(method: str) -> Any:
    """An HTTP method string as the `method` variant."""
    m = method.lower()
    return (m, None) if m in METHODS and method.isupper() else ("other", method)


def method_from_wit(v: Any) -> str:
    """The `method` variant as an HTTP method string."""
    name, payload = v
    return str(payload) if name == "other" else name.upper()


def header_text(value: bytes) -> str:
    """A field value as the str aiohttp writes: aiohttp encodes header strs as UTF-8, so a UTF-8
    value passes through byte for byte; other bytes (obs-text) go out as their UTF-8 encoding."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def internal_error(message: str) -> tuple[str, str]:
    """An `error-code.internal-error` with a message."""
    return ("internal-error", message)


class Fields:
    """`fields` (also `headers` and `trailers`): an ordered multimap with lowercase names."""

    __slots__ = ("entries", "immutable")

    def __init__(self, entries: list[tuple[str, bytes]] | None = None, immutable: bool = False) -> None:
        self.entries: list[tuple[str, bytes]] = entries if entries is not None else []
        self.immutable = immutable

    @staticmethod
    def check_name(name: str) -> str:
        """Validate a field name for a guest-set field; its lowercase form."""
        b = name.encode("utf-8", "surrogateescape")
        if not TOKEN.match(b):
            raise Err("invalid-syntax")
        low = name.lower()
        if low in FORBIDDEN_HEADERS:
            raise Err("forbidden")
        return low

    @staticmethod
    def check_value(value: bytes) -> bytes:
        """Validate a field value."""
        if _BAD_VALUE.search(value):
            raise Err("invalid-syntax")
        return value

    def _mutable(self) -> None:
        if self.immutable:
            raise Err("immutable")

    @classmethod
    def from_list(cls, entries: list[tuple[str, bytes]]) -> Fields:
        """`[static]fields.from-list`."""
        return cls([(cls.check_name(n), cls.check_value(v)) for n, v in entries])

    def get(self, name: str) -> list[bytes]:
        """All values of a field."""
        low = name.lower()
        return [v for n, v in self.entries if n == low]

    def has(self, name: str) -> bool:
        """Whether a field is present."""
        low = name.lower()
        return any(n == low for n, _ in self.entries)

    def set(self, name: str, values: list[bytes]) -> None:
        """Replace a field's values."""
        self._mutable()
        low = self.check_name(name)
        for v in values:
            self.check_value(v)
        self.entries = [(n, v) for n, v in self.entries if n != low] + [(low, v) for v in values]

    def delete(self, name: str) -> None:
        """Remove a field."""
        self._mutable()
        low = self.check_name(name)
        self.entries = [(n, v) for n, v in self.entries if n != low]

    def append(self, name: str, value: bytes) -> None:
        """Add a value to a field."""
        self._mutable()
        self.entries.append((self.check_name(name), self.check_value(value)))

    def list_entries(self) -> list[tuple[str, bytes]]:
        """All (name, value) pairs in order."""
        return list(self.entries)

    def clone(self) -> Fields:
        """A mutable copy."""
        return Fields(list(self.entries))

    def first(self, name: str) -> bytes | None:
        """The first value of a field, if any (host-side helper)."""
        for n, v in self.entries:
            if n == name:
                return v
        return None


def http_error_code(err: IoError) -> Any:
    """`http-error-code`: the HTTP error code behind an `error`, if any."""
    code = err.code
    if isinstance(code, tuple) and code and isinstance(code[0], str) and code[0][:1].isalpha():
        return code
    return None
