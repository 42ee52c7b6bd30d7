"""Input limits of the control plane: every cap on what a message may carry, in one place.

Every ID, name, label, link field, config name and reference that enters the host (control
interface, wadm API, manifests, CLI) is checked against these caps before anything acts on it
(docs/security.md#input-limits, docs/protocol.md#field-limits). They keep each subject we build
from a message's values far below nats-server's control-line limit (4 KiB by default) and each
payload we publish (replies, events, inventories, link definitions) below its payload limit
(1 MiB by default), so no message can make the server close our connection.

The checks return the value or raise `LimitError` whose message names the limit, not the field:
callers prefix the field (`component_id: longer than 256 characters`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

# Component, provider and host IDs, lattice names: each becomes one NATS subject token.
MAX_ID_LEN = 256
# Config names (also subject tokens), link names, WIT namespaces, packages and interfaces, app names.
MAX_NAME_LEN = 256
# Host labels, auction constraints, annotations and component limits share the label caps.
MAX_LABEL_KEY_LEN = 128
MAX_LABEL_VALUE_LEN = 4096
MAX_LABELS = 64
# Component and provider image references (OCI, file://, builtin URLs).
MAX_REF_LEN = 4096
# Config names per command or link end, interfaces per link.
MAX_LIST_ITEMS = 64
# Largest control or wadm request body the host reads; nats-server's default max_payload.
MAX_PAYLOAD = 1024 * 1024
# Longest subject the host publishes on; nats-server closes a connection whose control line
# (`PUB <subject> <reply> <size>`) exceeds 4096 bytes, so subjects stay well below.
MAX_SUBJECT_LEN = 2048

# The characters of IDs and config names. Each becomes a NATS subject token (where `.` separates
# tokens, `*` and `>` are wildcards, white space ends the subject) and part of a JetStream KV key
# (`COMPONENT_<id>`, a config's name), which allows only `-/_=.` besides ASCII letters and digits.
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=/")
TOKEN_CHARS_TEXT = "ASCII letters, digits, '-', '_', '=' and '/'"


class LimitError(ValueError):
    """A value breaks an input limit; the message says which (`longer than 256 characters`)."""


def _show_char(c: str) -> str:
    if c.isprintable() and not c.isspace():
        return f"'{c}'"
    return f"U+{ord(c):04X}"


def _is_control(c: str) -> bool:
    # Cc: C0/C1 controls, Cs: surrogates (a JSON "\ud800" decodes to one); neither encodes safely.
    return unicodedata.category(c) in ("Cc", "Cs")


def has_unpaired_surrogate(text: str) -> bool:
    """Whether `text` holds a lone UTF-16 surrogate (it cannot be encoded as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_text(value: str, max_len: int, *, what: str = "characters") -> str:
    """`value` if it has at most `max_len` characters, no control characters and no lone surrogate."""
    if len(value) > max_len:
        raise LimitError(f"longer than {max_len} {what}")
    if has_unpaired_surrogate(value):
        raise LimitError("contains an unpaired surrogate (not valid Unicode)")
    for c in value:
        if _is_control(c):
            raise LimitError(f"contains the control character {_show_char(c)}")
    return value


def check_token(value: str, max_len: int = MAX_ID_LEN, *, allow_empty: bool = False) -> str:
    """`value` if it can be one NATS subject token and KV key: bounded, only `TOKEN_CHARS`."""
    if not value:
        if allow_empty:
            return value
        raise LimitError("must not be empty")
    check_text(value, max_len)
    for c in value:
        if c not in TOKEN_CHARS:
            raise LimitError(
                f"contains {_show_char(c)}: it becomes a NATS subject token and KV key, "
                f"so only {TOKEN_CHARS_TEXT} are allowed"
            )
    return value


def check_id(value: str) -> str:
    """A component, provider or host ID: a non-empty subject token of at most `MAX_ID_LEN` characters."""
    return check_token(value, MAX_ID_LEN)


def check_optional_id(value: str) -> str:
    """An ID field that may be empty (its default), else as `check_id`."""
    return check_token(value, MAX_ID_LEN, allow_empty=True)


def check_name(value: str) -> str:
    """A link name, WIT namespace, package or interface: at most `MAX_NAME_LEN`, no white space."""
    check_text(value, MAX_NAME_LEN)
    for c in value:
        if c.isspace() or c in "*>":
            raise LimitError(f"contains {_show_char(c)} (no '*', '>' or white space)")
    return value


def check_config_name(value: str) -> str:
    """A named-config or secret name: a non-empty subject token of at most `MAX_NAME_LEN` characters."""
    return check_token(value, MAX_NAME_LEN)


def check_ref(value: str) -> str:
    """An image reference: at most `MAX_REF_LEN` characters, no control characters."""
    return check_text(value, MAX_REF_LEN)


def check_label_key(key: str) -> str:
    """A label (or constraint, annotation) key: non-empty, at most `MAX_LABEL_KEY_LEN`, no white space."""
    if not key:
        raise LimitError("a key must not be empty")
    check_text(key, MAX_LABEL_KEY_LEN)
    for c in key:
        if c.isspace():
            raise LimitError(f"contains {_show_char(c)} (no white space in keys)")
    return key


def check_label_value(value: str) -> str:
    """A label (or constraint, annotation) value: at most `MAX_LABEL_VALUE_LEN`, no control characters."""
    return check_text(value, MAX_LABEL_VALUE_LEN)


def check_label_map(labels: Mapping[str, str], max_entries: int = MAX_LABELS) -> dict[str, str]:
    """A whole label-like map: at most `max_entries` entries, each key and value within the caps."""
    if len(labels) > max_entries:
        raise LimitError(f"at most {max_entries} entries, found {len(labels)}")
    for key, value in labels.items():
        try:
            check_label_key(key)
        except LimitError as e:
            raise LimitError(f"key {quote(key)}: {e}") from None
        try:
            check_label_value(value)
        except LimitError as e:
            raise LimitError(f"value of {quote(key)}: {e}") from None
    return dict(labels)


def check_list(items: Sequence[str], check: Any, max_items: int = MAX_LIST_ITEMS) -> list[str]:
    """A list of at most `max_items` strings, each passing `check`; errors name the item's index."""
    if len(items) > max_items:
        raise LimitError(f"at most {max_items} items, found {len(items)}")
    for i, item in enumerate(items):
        try:
            check(item)
        except LimitError as e:
            raise LimitError(f"[{i}]: {e}") from None
    return list(items)


def check_subject(subject: str) -> str:
    """A subject the host is about to publish on: at most `MAX_SUBJECT_LEN` bytes of valid UTF-8."""
    try:
        size = len(subject.encode("utf-8"))
    except UnicodeEncodeError:
        raise LimitError("subject contains an unpaired surrogate") from None
    if size > MAX_SUBJECT_LEN:
        raise LimitError(f"subject of {size} bytes is longer than {MAX_SUBJECT_LEN}")
    return subject


def quote(text: str, limit: int = 40) -> str:
    """`text` quoted for a message, cut to `limit` characters, unprintable parts escaped."""
    # A hostile key may be megabytes long or hold unprintable characters.
    shown = text if len(text) <= limit else text[: limit - 3] + "..."
    return repr(shown.encode("utf-8", "backslashreplace").decode("utf-8"))


def find_unpaired_surrogate(obj: Any, path: str = "") -> str | None:
    """The path (`labels.key`, `config[2]`) of the first string in decoded JSON with a lone surrogate."""
    if isinstance(obj, str):
        return path if has_unpaired_surrogate(obj) else None
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            found = find_unpaired_surrogate(item, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if isinstance(obj, dict):
        for key, item in obj.items():
            if key.isidentifier() and len(key) <= 40:
                sub = f"{path}.{key}" if path else key
            else:
                sub = f"{path}[{quote(key, 30)}]"
            if has_unpaired_surrogate(key):
                return sub + " (key)"
            found = find_unpaired_surrogate(item, sub)
            if found is not None:
                return found
    return None
