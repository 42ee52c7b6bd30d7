"""Loading a manifest: bytes, text or a file, as YAML or JSON, into a validated `Manifest`.

The content type picks the format; without one, YAML is tried and then JSON, as wadm does. The loaded
document goes through `check.py`, which reports every problem at once.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from wasmlattice.apps.manifest.check import validate
from wasmlattice.apps.manifest.model import Manifest, ManifestError
from wasmlattice.apps.manifest.yaml_dialect import load_yaml, yaml_error_text

JSON_CONTENT_TYPE = "application/json"
YAML_CONTENT_TYPE = "application/yaml"


def parse_manifest(data: bytes | str, content_type: str | None = None) -> tuple[Manifest, list[str]]:
    """Parse YAML or JSON (by content type; with None: YAML then JSON) and validate; (manifest, warnings).

    Raises ManifestError with every error found (not just the first).
    """
    doc, from_yaml = _load_document(data, content_type)
    return validate(doc, from_yaml)


def parse_manifest_dict(doc: Mapping[str, Any]) -> tuple[Manifest, list[str]]:
    """Validate an already-loaded JSON-like manifest (such as a stored `raw`); (manifest, warnings)."""
    return validate(copy.deepcopy(dict(doc)), from_yaml=False)


def load_manifest_file(path: Path) -> tuple[Manifest, list[str]]:
    """Read and validate a manifest file; `.json` is read as JSON, `.yaml`/`.yml` as YAML, else either."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ManifestError([f"{path}: cannot read the manifest file ({exc.strerror or exc})"]) from None
    suffix = Path(path).suffix.lower()
    content_type = {".json": JSON_CONTENT_TYPE, ".yaml": YAML_CONTENT_TYPE, ".yml": YAML_CONTENT_TYPE}.get(
        suffix
    )
    return parse_manifest(data, content_type)


def _reject_duplicate_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _load_json(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_reject_duplicate_json_keys)


def _json_error_text(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"manifest: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
    return f"manifest: invalid JSON: {exc}"


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            [
                f"manifest: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                "save the file as UTF-8"
            ]
        ) from None


def _load_document(data: bytes | str, content_type: str | None) -> tuple[Any, bool]:
    """Decode and load the document; returns (document, came_from_yaml)."""
    text = _decode(data)
    kind = None if content_type is None else content_type.split(";", 1)[0].strip().lower()
    if kind not in (None, JSON_CONTENT_TYPE, YAML_CONTENT_TYPE):
        raise ManifestError(
            [
                f"content type: {content_type!r} is not supported; "
                f"use {JSON_CONTENT_TYPE!r}, {YAML_CONTENT_TYPE!r} or none (YAML, then JSON)"
            ]
        )
    if kind == JSON_CONTENT_TYPE:
        try:
            return _load_json(text), False
        except ValueError as exc:
            raise ManifestError([_json_error_text(exc)]) from None
    try:
        return load_yaml(text), True
    except yaml.YAMLError as exc:
        yaml_error = yaml_error_text(exc)
    if kind == YAML_CONTENT_TYPE:
        raise ManifestError([yaml_error])
    # Like wadm: JSON that YAML cannot read (tabs for indentation, for instance) still gets a chance.
    try:
        return _load_json(text), False
    except ValueError as exc:
        errors = [yaml_error]
        if text.lstrip().startswith(("{", "[")):
            errors.append(_json_error_text(exc))
        raise ManifestError(errors) from None
