"""Reading the fields of a loaded manifest: each value checked for its shape and every problem named.

`FieldChecker` collects errors and warnings as `<field path>: <what was found, what was expected>` and
never stops at the first one, so a user fixes a manifest in one go (the same error/warning split as
wadm's validator). `check_traits.py` and `check.py` build the manifest's own checks on top of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from wasmlattice.apps.manifest.yaml_dialect import yaml_text
from wasmlattice.protocol import limits

_LABEL_NAME_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_PART_RE = re.compile(r"[A-Za-z]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?")
_PLAIN_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_label_key(key: str) -> bool:
    """Whether `key` is a Kubernetes-style label key: `name` or `prefix/name`, prefix a DNS subdomain."""
    prefix, sep, name = key.rpartition("/")
    if sep and (not prefix or len(prefix) > 253 or "/" in prefix):
        return False
    if sep and not all(_DNS_PART_RE.fullmatch(part) for part in prefix.split(".")):
        return False
    return _LABEL_NAME_RE.fullmatch(name) is not None


def show(value: Any) -> str:
    """How a found value is quoted in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    written = yaml_text(value)
    if written is not None:
        return written
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def key_path(base: str, key: str) -> str:
    """The path of `key` under `base`: `base.key`, or `base["key"]` when the key is not a plain name."""
    if not base:
        return key
    return f"{base}.{key}" if _PLAIN_KEY_RE.fullmatch(key) else f"{base}[{json.dumps(key)}]"


def name_list(items: list[str]) -> str:
    """`items` joined for a message, or "none"."""
    return ", ".join(items) if items else "none"


class FieldChecker:
    """Reads fields of a loaded document, collecting every error and warning and normalising it in place."""

    def __init__(self, from_yaml: bool) -> None:
        self.from_yaml = from_yaml
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, path: str, message: str) -> None:
        """Record an error at field `path`."""
        self.errors.append(f"{path}: {message}")

    def warn(self, path: str, message: str) -> None:
        """Record a warning at field `path`."""
        self.warnings.append(f"{path}: {message}")

    def limit(self, value: str | None, path: str, check: Callable[[str], str]) -> str | None:
        """`value` if it passes one of the input limits of protocol/limits.py, else None and an error."""
        if value is None:
            return None
        try:
            return check(value)
        except limits.LimitError as e:
            self.error(path, str(e))
            return None

    def mapping(self, value: Any, path: str, what: str = "a mapping") -> dict[Any, Any] | None:
        """`value` if it is a mapping, else None and an error saying `what` was expected."""
        if isinstance(value, dict):
            return value
        self.error(path, f"expected {what}, found {show(value)}")
        return None

    def keys(
        self,
        obj: dict[Any, Any],
        path: str,
        required: tuple[str, ...],
        optional: tuple[str, ...],
        strict: bool,
        hints: Mapping[str, str] | None = None,
    ) -> None:
        """Report missing required keys, and unknown keys (errors if `strict`, else warnings)."""
        for key in required:
            if key not in obj:
                hint = (hints or {}).get(key)
                self.error(path, f"missing required key '{key}'" + (f" ({hint})" if hint else ""))
        allowed = required + optional
        # Top-level keys are named bare ("extra"), not as "manifest.extra".
        base = "" if path == "manifest" else path
        for key in obj:
            if key in allowed:
                continue
            listing = ", ".join(allowed)
            if strict:
                self.error(key_path(base, str(key)), f"unknown key '{key}' (allowed keys: {listing})")
            else:
                self.warn(key_path(base, str(key)), f"unknown key '{key}' is ignored (known keys: {listing})")

    def text(self, value: Any, path: str) -> str | None:
        """A string; from YAML, a plain number or boolean is read as the text written."""
        if isinstance(value, str):
            return value
        if self.from_yaml:
            written = yaml_text(value)
            if written is not None:
                return written
            if isinstance(value, bool):
                return "true" if value else "false"
        self.error(path, f"expected a string, found {show(value)}")
        return None

    def field_text(self, obj: dict[Any, Any], key: str, path: str, *, nonempty: bool = True) -> str | None:
        """Read `obj[key]` as a string (writing the normalised text back into `raw`)."""
        if key not in obj:
            return None
        fpath = key_path(path, key)
        value = self.text(obj[key], fpath)
        if value is None:
            return None
        obj[key] = value
        if self.limit(value, fpath, lambda v: limits.check_text(v, limits.MAX_REF_LEN)) is None:
            return None
        if nonempty and not value.strip():
            self.error(fpath, "expected a non-empty string, found ''")
            return None
        return value

    def string_map(self, value: Any, path: str) -> dict[str, str] | None:
        """A map of string to string; keys and values are normalised in place."""
        obj = self.mapping(value, path, "a mapping of strings to strings")
        if obj is None:
            return None
        out: dict[str, str] = {}
        ok = True
        for key, item in list(obj.items()):
            skey = self.text(key, path) if not isinstance(key, str) else key
            if skey is None:
                ok = False
                continue
            sval = self.text(item, key_path(path, skey))
            if sval is None:
                ok = False
                continue
            out[skey] = sval
        if ok:
            obj.clear()
            obj.update(out)
        return out if ok else None

    def whole(self, value: Any, path: str) -> int | None:
        """`value` as a whole number of 0 or more, else None and an error."""
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                self.error(path, f"expected a whole number of 0 or more, found {show(value)}")
                return None
            return int(value)
        self.error(path, f"expected a whole number, found {show(value)}")
        return None

    def seq(self, value: Any, path: str, what: str) -> list[Any] | None:
        """`value` if it is a list (of `what`), else None and an error."""
        if isinstance(value, list):
            return value
        self.error(path, f"expected a list of {what}, found {show(value)}")
        return None

    def label_map(self, value: Any, path: str) -> dict[str, str] | None:
        """A string map whose keys are valid label keys (as metadata labels and annotations need)."""
        found = self.string_map(value, path)
        if found is None:
            return None
        if len(found) > limits.MAX_LABELS:
            self.error(path, f"at most {limits.MAX_LABELS} entries, found {len(found)}")
        for key, item in found.items():
            self.limit(item, key_path(path, key), limits.check_label_value)
            if not is_label_key(key):
                self.error(
                    key_path(path, key),
                    f"{key!r} is not a valid key (expected 'name' or 'prefix/name': name is 1-63 letters, "
                    "digits, '-', '_' or '.', starting and ending with a letter or digit; prefix is a DNS "
                    "subdomain such as 'example.com')",
                )
        return found
