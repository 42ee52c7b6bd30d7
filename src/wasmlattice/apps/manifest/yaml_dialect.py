"""The YAML dialect manifests are read in, as wadm's parser reads them.

Plain scalars resolve the YAML 1.2 way (dates stay text, only true/false are booleans), numbers keep
the text they were written as (so `version: 1.10` can become '1.10' where a string is expected),
duplicate keys are refused, and one file holds one manifest.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from wasmlattice.apps.manifest.model import ManifestError


class _YamlInt(int):
    """An int read from YAML that remembers its source text, so `version: 010` can become '010'."""

    text: str


class _YamlFloat(float):
    """A float read from YAML that remembers its source text, so `version: 1.10` can become '1.10'."""

    text: str


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that keeps scalar text, leaves dates as strings and refuses duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {str(key)!r} (first at line {seen[key].start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> Any:
    value = yaml.SafeLoader.construct_yaml_int(loader, node)
    result = _YamlInt(value)
    result.text = str(node.value)
    return result


def _construct_float(loader: _Loader, node: yaml.ScalarNode) -> Any:
    value = yaml.SafeLoader.construct_yaml_float(loader, node)
    result = _YamlFloat(value)
    result.text = str(node.value)
    return result


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
# Resolve plain scalars the YAML 1.2 way, as wadm's parser does: dates such as `version: 2024-05-01`
# stay text, and only true/false are booleans, so a config key `on` or value `yes` is kept as written.
_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    """The one document in `text` (None if it is empty); more than one is a ManifestError."""
    docs = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    if len(docs) > 1:
        raise ManifestError(
            [f"manifest: found {len(docs)} YAML documents separated by '---'; give one manifest at a time"]
        )
    return docs[0] if docs else None


def yaml_error_text(exc: yaml.YAMLError) -> str:
    """The message for a YAML syntax error, with its line and column."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    detail = f"{problem} ({context})" if context else str(problem)
    return f"manifest: invalid YAML at {where}{detail}"


def yaml_text(value: Any) -> str | None:
    """The text a YAML number was written as (`010`, `1.10`), or None for any other value."""
    return value.text if isinstance(value, _YamlInt | _YamlFloat) else None


def jsonable(value: Any) -> Any:
    """A plain-JSON copy of a loaded document (YAML number subclasses become plain numbers)."""
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else _show_key(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        # NaN and infinities have no JSON form; keep what the user wrote.
        return (
            float(value) if value == value and value not in (float("inf"), float("-inf")) else _written(value)
        )
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def _show_key(key: Any) -> str:
    if isinstance(key, _YamlInt | _YamlFloat):
        return key.text
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _written(value: float) -> str:
    written = yaml_text(value)
    return written if written is not None else repr(value)
