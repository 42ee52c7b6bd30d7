"""wadm-compatible application manifests (OAM `core.oam.dev/v1beta1`): models, parsing and validation.

The accepted format follows wadm 0.21 (docs/wadm.md#manifest-format): YAML or JSON, the
older spellings (`actor`, `replicas`, a plain-string link `target`, `source_config`/`target_config`), and
the same error/warning split as wadm's validator. Validation never stops at the first problem: every error
is collected and reported with its field path, what was found and what was expected.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import yaml

__all__ = [
    "OAM_API_VERSION",
    "SECRET_POLICY_TYPE",
    "SHARED_ANNOTATION",
    "Component",
    "ConfigProperty",
    "LinkTrait",
    "Manifest",
    "ManifestError",
    "Policy",
    "ScalerTrait",
    "SecretProperty",
    "SharedRef",
    "Spread",
    "distribute",
    "load_manifest_file",
    "new_version",
    "parse_manifest",
    "parse_manifest_dict",
    "sanitize_id_part",
]

OAM_API_VERSION = "core.oam.dev/v1beta1"
APPLICATION_KIND = "Application"
VERSION_ANNOTATION = "version"
DESCRIPTION_ANNOTATION = "description"
SHARED_ANNOTATION = "experimental.wasmcloud.dev/shared"
SECRET_POLICY_TYPE = "policy.secret.wasmcloud.dev/v1alpha1"
LATEST_VERSION = "latest"
DEFAULT_SPREAD_WEIGHT = 100
DEFAULT_LINK_NAME = "default"

JSON_CONTENT_TYPE = "application/json"
YAML_CONTENT_TYPE = "application/yaml"

# Packages and interfaces wadm knows under its well-known namespaces; anything else under these
# namespaces is most likely a typo, so it earns a warning (custom namespaces are never checked).
KNOWN_INTERFACES: dict[str, dict[str, frozenset[str]]] = {
    "wasi": {
        "blobstore": frozenset({"blobstore"}),
        "config": frozenset({"runtime"}),
        "keyvalue": frozenset({"atomics", "store", "batch", "watch"}),
        "http": frozenset({"incoming-handler", "outgoing-handler"}),
        "logging": frozenset({"logging"}),
    },
    "wrpc": {
        "blobstore": frozenset({"blobstore"}),
        "keyvalue": frozenset({"atomics", "store"}),
        "http": frozenset({"incoming-handler", "outgoing-handler"}),
    },
    "wasmcloud": {
        "messaging": frozenset({"consumer", "handler"}),
    },
}


class ManifestError(ValueError):
    """A manifest that cannot be used: every error found (and the warnings seen on the way)."""

    def __init__(self, errors: list[str], warnings: list[str] | None = None) -> None:
        self.errors = list(errors)
        self.warnings = list(warnings or [])
        super().__init__("; ".join(self.errors))


@dataclass(frozen=True)
class ConfigProperty:
    """A named config: owned by the app when it has `properties`, external (must already exist) otherwise."""

    name: str
    properties: dict[str, str] | None


@dataclass(frozen=True)
class SecretProperty:
    """A reference to a secret: `key` (and optional `field`/`version`) in the backend of policy `policy`."""

    name: str
    key: str
    field: str | None
    version: str | None
    policy: str


@dataclass(frozen=True)
class SharedRef:
    """A reference to component `component` of the deployed shared application `name`."""

    name: str
    component: str


@dataclass(frozen=True)
class Spread:
    """A placement bucket: hosts whose labels match all `requirements`; weight None means 100."""

    name: str
    requirements: dict[str, str]
    weight: int | None


@dataclass(frozen=True)
class ScalerTrait:
    """A spreadscaler (split `instances` over the spreads) or daemonscaler (`instances` on every match)."""

    kind: Literal["spreadscaler", "daemonscaler"]
    instances: int
    spread: list[Spread]


@dataclass(frozen=True)
class LinkTrait:
    """A link from the component carrying the trait (the source) to component `target` of this manifest."""

    namespace: str
    package: str
    interfaces: list[str]
    name: str
    target: str
    source_config: list[ConfigProperty]
    target_config: list[ConfigProperty]
    source_secrets: list[SecretProperty]
    target_secrets: list[SecretProperty]


@dataclass(frozen=True)
class Component:
    """A component or provider with its scaler and outgoing links.

    A capability without a scaler trait gets an implicit 1-instance spreadscaler; a shared reference
    (`application` set) has no image and no scaler, since the shared application runs it.
    """

    name: str
    kind: Literal["component", "capability"]
    image: str | None
    application: SharedRef | None
    explicit_id: str | None
    config: list[ConfigProperty]
    secrets: list[SecretProperty]
    scaler: ScalerTrait | None
    links: list[LinkTrait]


@dataclass(frozen=True)
class Policy:
    """A named policy; only `policy.secret.wasmcloud.dev/v1alpha1` (needs `backend`) means anything."""

    name: str
    type: str
    properties: dict[str, str]


@dataclass(frozen=True)
class Manifest:
    """A validated application manifest; `raw` is its JSON-able form, as stored and served back."""

    name: str
    version: str | None
    description: str | None
    shared: bool
    annotations: dict[str, str]
    labels: dict[str, str]
    components: list[Component]
    policies: list[Policy]
    raw: dict[str, Any]

    def component_id(self, c: Component, shared_apps: Mapping[str, Manifest] | None = None) -> str:
        """The host-side ID of `c`: its explicit id, else `<manifest>-<component>` sanitized."""
        if c.explicit_id:
            return c.explicit_id
        if c.application is not None:
            # The ID belongs to the shared app; an explicit id there can only be seen with its manifest.
            owner = (shared_apps or {}).get(c.application.name)
            if owner is not None:
                target = owner.component_named(c.application.component)
                if target is not None and target.application is None:
                    return owner.component_id(target)
            return _join_id(c.application.name, c.application.component)
        return _join_id(self.name, c.name)

    def config_name(self, name: str) -> str:
        """The name under which an owned config (one with `properties`) is stored: `<manifest>-<name>`."""
        return _join_id(self.name, name)

    def secret_name(self, name: str) -> str:
        """The config name that holds an app secret's reference: `SECRET_<manifest>-<name>`."""
        return "SECRET_" + _join_id(self.name, name)

    def component_named(self, name: str) -> Component | None:
        """The component called `name` in this manifest, or None."""
        return next((c for c in self.components if c.name == name), None)

    def with_version(self, version: str) -> Manifest:
        """The same manifest with `metadata.annotations.version` set to `version` (in `raw` too)."""
        if not version or version == LATEST_VERSION:
            raise ValueError(
                f"version {version!r} cannot be stored: use a non-empty name other than 'latest'"
            )
        raw = copy.deepcopy(self.raw)
        metadata = raw.setdefault("metadata", {})
        annotations = metadata.get("annotations")
        if not isinstance(annotations, dict):
            annotations = {}
            metadata["annotations"] = annotations
        annotations[VERSION_ANNOTATION] = version
        return replace(
            self, version=version, annotations={**self.annotations, VERSION_ANNOTATION: version}, raw=raw
        )


def sanitize_id_part(text: str) -> str:
    """Lowercase `text` and replace every character that is not an ASCII letter or digit by `_`."""
    return "".join(ch if ch.isascii() and ch.isalnum() else "_" for ch in text.lower())


def _join_id(manifest_name: str, name: str) -> str:
    return f"{sanitize_id_part(manifest_name)}-{sanitize_id_part(name)}"


# --------------------------------------------------------------------------------------------- loading


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


def _load_yaml(text: str) -> Any:
    docs = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    if len(docs) > 1:
        raise ManifestError(
            [f"manifest: found {len(docs)} YAML documents separated by '---'; give one manifest at a time"]
        )
    return docs[0] if docs else None


def _yaml_error_text(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    detail = f"{problem} ({context})" if context else str(problem)
    return f"manifest: invalid YAML at {where}{detail}"


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
        return _load_yaml(text), True
    except yaml.YAMLError as exc:
        yaml_error = _yaml_error_text(exc)
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


# --------------------------------------------------------------------------------------------- checking

_NAME_RE = re.compile(r"[-A-Za-z0-9_]+")
_LABEL_NAME_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_PART_RE = re.compile(r"[A-Za-z]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?")
_PLAIN_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _is_label_key(key: str) -> bool:
    prefix, sep, name = key.rpartition("/")
    if sep and (not prefix or len(prefix) > 253 or "/" in prefix):
        return False
    if sep and not all(_DNS_PART_RE.fullmatch(part) for part in prefix.split(".")):
        return False
    return _LABEL_NAME_RE.fullmatch(name) is not None


def _show(value: Any) -> str:
    """How a found value is quoted in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, _YamlInt | _YamlFloat):
        return value.text
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _key_path(base: str, key: str) -> str:
    if not base:
        return key
    return f"{base}.{key}" if _PLAIN_KEY_RE.fullmatch(key) else f"{base}[{json.dumps(key)}]"


def _names(items: list[str]) -> str:
    return ", ".join(items) if items else "none"


@dataclass
class _LinkDraft:
    """A parsed link plus where its parts came from, for the cross-component checks."""

    trait: LinkTrait
    path: str
    target_path: str
    configs: list[tuple[ConfigProperty, str]]


@dataclass
class _ComponentDraft:
    path: str
    component: Component
    links: list[_LinkDraft]
    secrets: list[tuple[SecretProperty, str]]


class _Checker:
    """Walks a loaded document, collecting every error and warning and normalising `raw` in place."""

    def __init__(self, from_yaml: bool) -> None:
        self.from_yaml = from_yaml
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.manifest_name: str | None = None
        # Secrets found in links, checked against the policies together with the components' own.
        self.link_secrets: list[tuple[SecretProperty, str]] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}")

    # ---- generic shapes

    def mapping(self, value: Any, path: str, what: str = "a mapping") -> dict[Any, Any] | None:
        if isinstance(value, dict):
            return value
        self.error(path, f"expected {what}, found {_show(value)}")
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
                self.error(_key_path(base, str(key)), f"unknown key '{key}' (allowed keys: {listing})")
            else:
                self.warn(
                    _key_path(base, str(key)), f"unknown key '{key}' is ignored (known keys: {listing})"
                )

    def text(self, value: Any, path: str) -> str | None:
        """A string; from YAML, a plain number or boolean is read as the text written."""
        if isinstance(value, str):
            return value
        if self.from_yaml:
            if isinstance(value, _YamlInt | _YamlFloat):
                return value.text
            if isinstance(value, bool):
                return "true" if value else "false"
        self.error(path, f"expected a string, found {_show(value)}")
        return None

    def field_text(self, obj: dict[Any, Any], key: str, path: str, *, nonempty: bool = True) -> str | None:
        """Read `obj[key]` as a string (writing the normalised text back into `raw`)."""
        if key not in obj:
            return None
        fpath = _key_path(path, key)
        value = self.text(obj[key], fpath)
        if value is None:
            return None
        obj[key] = value
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
            sval = self.text(item, _key_path(path, skey))
            if sval is None:
                ok = False
                continue
            out[skey] = sval
        if ok:
            obj.clear()
            obj.update(out)
        return out if ok else None

    def whole(self, value: Any, path: str) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                self.error(path, f"expected a whole number of 0 or more, found {_show(value)}")
                return None
            return int(value)
        self.error(path, f"expected a whole number, found {_show(value)}")
        return None

    def seq(self, value: Any, path: str, what: str) -> list[Any] | None:
        if isinstance(value, list):
            return value
        self.error(path, f"expected a list of {what}, found {_show(value)}")
        return None

    # ---- top level

    def check(self, doc: Any) -> Manifest | None:
        if doc is None:
            self.error("manifest", "the document is empty; expected an OAM Application manifest")
            return None
        top = self.mapping(doc, "manifest", "a mapping with apiVersion, kind, metadata and spec")
        if top is None:
            return None
        self.keys(top, "manifest", ("apiVersion", "kind", "metadata", "spec"), (), strict=True)
        api_version = self.field_text(top, "apiVersion", "")
        if api_version is not None and api_version != OAM_API_VERSION:
            self.warn("apiVersion", f"expected {OAM_API_VERSION!r}, found {_show(api_version)} (not checked)")
        kind = self.field_text(top, "kind", "")
        if kind is not None and kind != APPLICATION_KIND:
            self.warn("kind", f"expected {APPLICATION_KIND!r}, found {_show(kind)} (not checked)")

        name, annotations, labels = self.metadata(top["metadata"]) if "metadata" in top else (None, {}, {})
        policies = self.policies_and_components(top)
        if self.errors or name is None or policies is None:
            return None
        components, policy_list = policies
        version = annotations.get(VERSION_ANNOTATION) or None
        shared_text = annotations.get(SHARED_ANNOTATION)
        if shared_text is not None and shared_text not in ("true", "false"):
            self.warn(
                _key_path("metadata.annotations", SHARED_ANNOTATION),
                f"expected 'true' or 'false', found {_show(shared_text)}; the app is not shared",
            )
        return Manifest(
            name=name,
            version=version,
            description=annotations.get(DESCRIPTION_ANNOTATION),
            shared=shared_text == "true",
            annotations=annotations,
            labels=labels,
            components=components,
            policies=policy_list,
            raw=cast(dict[str, Any], _jsonable(top)),
        )

    def metadata(self, value: Any) -> tuple[str | None, dict[str, str], dict[str, str]]:
        meta = self.mapping(value, "metadata")
        if meta is None:
            return None, {}, {}
        self.keys(meta, "metadata", ("name",), ("annotations", "labels"), strict=False)
        name = None
        raw_name = self.field_text(meta, "name", "metadata")
        if raw_name is not None:
            # wadm trims the name before use; the stored form is the trimmed one.
            meta["name"] = raw_name.strip()
            if _NAME_RE.fullmatch(raw_name.strip()):
                name = self.manifest_name = raw_name.strip()
            else:
                self.error(
                    "metadata.name", f"{raw_name!r} is not a valid name (letters, digits, '_' and '-' only)"
                )
        # wadm insists on the key; we accept a missing or empty one and store it as {}.
        if meta.get("annotations") is None:
            meta["annotations"] = {}
        annotations = self.label_map(meta["annotations"], "metadata.annotations") or {}
        version = annotations.get(VERSION_ANNOTATION)
        if version is not None and version.strip() == LATEST_VERSION:
            self.error(
                "metadata.annotations.version",
                "'latest' is reserved (it names the newest stored version); "
                "choose another version or leave it out to get a generated one",
            )
        labels: dict[str, str] = {}
        if meta.get("labels") is not None:
            labels = self.label_map(meta["labels"], "metadata.labels") or {}
        return name, annotations, labels

    def label_map(self, value: Any, path: str) -> dict[str, str] | None:
        found = self.string_map(value, path)
        if found is None:
            return None
        for key in found:
            if not _is_label_key(key):
                self.error(
                    _key_path(path, key),
                    f"{key!r} is not a valid key (expected 'name' or 'prefix/name': name is 1-63 letters, "
                    "digits, '-', '_' or '.', starting and ending with a letter or digit; prefix is a DNS "
                    "subdomain such as 'example.com')",
                )
        return found

    # ---- spec

    def policies_and_components(self, top: dict[Any, Any]) -> tuple[list[Component], list[Policy]] | None:
        if "spec" not in top:
            return None
        spec = self.mapping(top["spec"], "spec")
        if spec is None:
            return None
        self.keys(spec, "spec", ("components",), ("policies",), strict=False)
        policies = self.policies(spec.get("policies"))
        drafts: list[_ComponentDraft] = []
        raw_components = spec.get("components", [])
        items = self.seq(raw_components, "spec.components", "components") if "components" in spec else []
        for index, item in enumerate(items or []):
            draft = self.component(item, f"spec.components[{index}]")
            if draft is not None:
                drafts.append(draft)
        self.cross_checks(drafts, policies)
        return [d.component for d in drafts], policies

    def policies(self, value: Any) -> list[Policy]:
        if value is None:
            return []
        items = self.seq(value, "spec.policies", "policies")
        out: list[Policy] = []
        seen: dict[str, str] = {}
        for index, item in enumerate(items or []):
            path = f"spec.policies[{index}]"
            obj = self.mapping(item, path)
            if obj is None:
                continue
            self.keys(obj, path, ("name", "type", "properties"), (), strict=False)
            name = self.field_text(obj, "name", path)
            ptype = self.field_text(obj, "type", path)
            props = self.string_map(obj["properties"], f"{path}.properties") if "properties" in obj else None
            if name is None or ptype is None or props is None:
                continue
            if name in seen:
                self.warn(
                    f"{path}.name", f"policy {name!r} is already defined at {seen[name]}; the first wins"
                )
                continue
            seen[name] = path
            out.append(Policy(name=name, type=ptype, properties=props))
        return out

    def component(self, value: Any, path: str) -> _ComponentDraft | None:
        obj = self.mapping(value, path)
        if obj is None:
            return None
        self.keys(obj, path, ("name", "type", "properties"), ("traits",), strict=False)
        name = self.field_text(obj, "name", path)
        kind: Literal["component", "capability"] | None = None
        raw_type = self.field_text(obj, "type", path)
        if raw_type in ("component", "actor"):
            kind = "component"
        elif raw_type == "capability":
            kind = "capability"
        elif raw_type is not None:
            self.error(
                f"{path}.type",
                f"expected 'component' or 'capability' ('actor' is the older spelling of 'component'), "
                f"found {_show(raw_type)}",
            )
        props_path = f"{path}.properties"
        props = self.mapping(obj["properties"], props_path) if "properties" in obj else None
        image = shared = explicit_id = None
        config: list[ConfigProperty] = []
        secrets: list[tuple[SecretProperty, str]] = []
        if props is not None:
            self.keys(props, props_path, (), ("image", "application", "id", "config", "secrets"), strict=True)
            image = self.field_text(props, "image", props_path)
            shared = self.shared_ref(props.get("application"), f"{props_path}.application")
            explicit_id = self.field_text(props, "id", props_path)
            has_image, has_app = "image" in props, props.get("application") is not None
            if has_image and has_app:
                self.error(props_path, "give either 'image' or 'application' (a shared component), not both")
            elif not has_image and not has_app:
                self.error(
                    props_path,
                    "missing 'image' (an OCI reference, file:// path or builtin://) or 'application' "
                    "(a component of a shared application)",
                )
            config = self.configs(props.get("config"), f"{props_path}.config")
            secrets = self.secrets(props.get("secrets"), f"{props_path}.secrets")
            if has_app:
                for key in ("config", "secrets"):
                    if props.get(key):
                        self.error(
                            f"{props_path}.{key}",
                            f"a reference to a shared application cannot carry '{key}'; "
                            "set it in the shared application instead",
                        )
                if explicit_id is not None:
                    self.warn(
                        f"{props_path}.id",
                        "ignored: a shared reference uses the ID owned by the shared application",
                    )
        scaler, links = self.traits(obj.get("traits"), path, kind, shared)
        if name is None or kind is None or props is None:
            return None
        if kind == "capability" and scaler is None and shared is None:
            # wadm runs a capability without a scaler trait as one provider on one host.
            scaler = ScalerTrait(kind="spreadscaler", instances=1, spread=[])
        elif kind == "component" and scaler is None and shared is None and image is not None:
            self.warn(path, f"component {name!r} has no spreadscaler or daemonscaler, so it is never started")
        component = Component(
            name=name,
            kind=kind,
            image=image,
            application=shared,
            explicit_id=explicit_id if shared is None else None,
            config=config,
            secrets=[s for s, _ in secrets],
            scaler=scaler,
            links=[d.trait for d in links],
        )
        return _ComponentDraft(path=path, component=component, links=links, secrets=secrets)

    def shared_ref(self, value: Any, path: str) -> SharedRef | None:
        if value is None:
            return None
        obj = self.mapping(value, path, "a mapping with 'name' and 'component'")
        if obj is None:
            return None
        self.keys(obj, path, ("name", "component"), (), strict=False)
        app = self.field_text(obj, "name", path)
        comp = self.field_text(obj, "component", path)
        return SharedRef(name=app, component=comp) if app is not None and comp is not None else None

    def configs(self, value: Any, path: str) -> list[ConfigProperty]:
        if value is None:
            return []
        out: list[ConfigProperty] = []
        for index, item in enumerate(self.seq(value, path, "configs") or []):
            ipath = f"{path}[{index}]"
            obj = self.mapping(item, ipath)
            if obj is None:
                continue
            self.keys(obj, ipath, ("name",), ("properties",), strict=True)
            name = self.field_text(obj, "name", ipath)
            props = None
            if obj.get("properties") is not None:
                props = self.string_map(obj["properties"], f"{ipath}.properties")
                if props is None:
                    continue
            if name is not None:
                out.append(ConfigProperty(name=name, properties=props))
        return out

    def secrets(self, value: Any, path: str) -> list[tuple[SecretProperty, str]]:
        if value is None:
            return []
        out: list[tuple[SecretProperty, str]] = []
        for index, item in enumerate(self.seq(value, path, "secrets") or []):
            ipath = f"{path}[{index}]"
            obj = self.mapping(item, ipath)
            if obj is None:
                continue
            self.keys(obj, ipath, ("name", "properties"), (), strict=False)
            name = self.field_text(obj, "name", ipath)
            ppath = f"{ipath}.properties"
            props = self.mapping(obj["properties"], ppath) if "properties" in obj else None
            if props is None:
                continue
            self.keys(props, ppath, ("policy", "key"), ("field", "version"), strict=False)
            policy = self.field_text(props, "policy", ppath)
            key = self.field_text(props, "key", ppath)
            field = self.field_text(props, "field", ppath)
            version = self.field_text(props, "version", ppath)
            if name is not None and policy is not None and key is not None:
                secret = SecretProperty(name=name, key=key, field=field, version=version, policy=policy)
                out.append((secret, ipath))
        return out

    # ---- traits

    def traits(
        self,
        value: Any,
        path: str,
        kind: str | None,
        shared: SharedRef | None,
    ) -> tuple[ScalerTrait | None, list[_LinkDraft]]:
        if value is None:
            return None, []
        scaler: ScalerTrait | None = None
        scaler_path = ""
        links: list[_LinkDraft] = []
        for index, item in enumerate(self.seq(value, f"{path}.traits", "traits") or []):
            tpath = f"{path}.traits[{index}]"
            obj = self.mapping(item, tpath)
            if obj is None:
                continue
            self.keys(obj, tpath, ("type", "properties"), (), strict=True)
            ttype = self.field_text(obj, "type", tpath)
            if ttype is None or "properties" not in obj:
                continue
            if ttype in ("spreadscaler", "daemonscaler"):
                found = self.scaler(cast(Literal["spreadscaler", "daemonscaler"], ttype), obj, tpath, kind)
                if shared is not None:
                    self.error(
                        tpath,
                        f"a reference to a shared application cannot have a {ttype}; "
                        f"the shared application {shared.name!r} scales {shared.component!r}",
                    )
                elif scaler is not None:
                    self.error(
                        tpath,
                        f"a second scaler trait ({ttype}); this component already has one at {scaler_path}",
                    )
                elif found is not None:
                    scaler, scaler_path = found, tpath
            elif ttype == "link":
                link = self.link(obj["properties"], f"{tpath}.properties", tpath)
                if link is not None:
                    links.append(link)
            # Other trait types are custom scalers wadm does not run; like wadm, keep and ignore them.
        return scaler, links

    def scaler(
        self,
        ttype: Literal["spreadscaler", "daemonscaler"],
        trait: dict[Any, Any],
        tpath: str,
        kind: str | None,
    ) -> ScalerTrait | None:
        path = f"{tpath}.properties"
        props = self.mapping(trait["properties"], path, f"a mapping with the {ttype} properties")
        if props is None:
            return None
        allowed = ("instances", "replicas", "spread")
        for key in props:
            if key not in allowed:
                self.error(
                    _key_path(path, str(key)),
                    f"unknown key '{key}' for a {ttype} (allowed keys: instances, spread; "
                    "'replicas' is the older spelling of 'instances')",
                )
        instances: int | None = None
        if "instances" in props and "replicas" in props:
            self.error(path, "give 'instances' or its older spelling 'replicas', not both")
        elif "instances" in props or "replicas" in props:
            key = "instances" if "instances" in props else "replicas"
            instances = self.whole(props[key], f"{path}.{key}")
        elif ttype == "daemonscaler" and kind == "capability":
            # A daemonscaler provider runs once per matching host, so the count means nothing (wadm#194).
            props["instances"] = instances = 1
        else:
            self.error(path, f"missing required key 'instances' (how many instances this {ttype} runs)")
        spreads: list[Spread] = []
        if props.get("spread") is not None:
            spreads = self.spreads(props["spread"], f"{path}.spread")
        if ttype == "spreadscaler" and spreads and instances and all(s.weight == 0 for s in spreads):
            self.error(f"{path}.spread", "every spread has weight 0, so no instance can be placed")
        return ScalerTrait(kind=ttype, instances=instances, spread=spreads) if instances is not None else None

    def spreads(self, value: Any, path: str) -> list[Spread]:
        out: list[Spread] = []
        seen: set[str] = set()
        for index, item in enumerate(self.seq(value, path, "spreads") or []):
            spath = f"{path}[{index}]"
            obj = self.mapping(item, spath)
            if obj is None:
                continue
            self.keys(
                obj,
                spath,
                ("name", "requirements"),
                ("weight",),
                strict=True,
                hints={"requirements": "the host labels to match; use 'requirements: {}' to allow any host"},
            )
            name = self.field_text(obj, "name", spath)
            reqs = (
                self.string_map(obj["requirements"], f"{spath}.requirements")
                if "requirements" in obj
                else None
            )
            weight = self.whole(obj["weight"], f"{spath}.weight") if obj.get("weight") is not None else None
            if name is not None and name in seen:
                self.warn(f"{spath}.name", f"spread name {name!r} is used twice in this scaler")
            if name is not None:
                seen.add(name)
            if name is not None and reqs is not None:
                out.append(Spread(name=name, requirements=reqs, weight=weight))
        return out

    def link(self, value: Any, path: str, tpath: str) -> _LinkDraft | None:
        props = self.mapping(value, path, "a mapping with the link properties")
        if props is None:
            return None
        # wadm reads links by hand and skips unknown keys, so they are only worth a warning.
        self.keys(
            props,
            path,
            ("namespace", "package", "interfaces"),
            ("target", "name", "source", "source_config", "target_config"),
            strict=False,
        )
        namespace = self.field_text(props, "namespace", path)
        package = self.field_text(props, "package", path)
        link_name = (
            self.field_text(props, "name", path) if props.get("name") is not None else DEFAULT_LINK_NAME
        )
        interfaces = (
            self.interfaces(props["interfaces"], f"{path}.interfaces") if "interfaces" in props else None
        )

        configs: list[tuple[ConfigProperty, str]] = []
        target, target_path = "", f"{path}.target"
        target_config: list[ConfigProperty] = []
        target_secrets: list[tuple[SecretProperty, str]] = []
        raw_target = props.get("target")
        if isinstance(raw_target, dict):
            self.keys(raw_target, target_path, ("name",), ("config", "secrets"), strict=False)
            target = self.field_text(raw_target, "name", target_path) or ""
            target_path = f"{target_path}.name"
            target_config = self.configs(raw_target.get("config"), f"{path}.target.config")
            configs += [(c, f"{path}.target.config[{i}]") for i, c in enumerate(target_config)]
            target_secrets = self.secrets(raw_target.get("secrets"), f"{path}.target.secrets")
        elif "target" in props:
            target = self.text(raw_target, target_path) or ""
        if props.get("target_config") is not None:
            self.warn(f"{path}.target_config", "deprecated: use target.config instead")
            legacy = self.configs(props["target_config"], f"{path}.target_config")
            if isinstance(raw_target, dict) and raw_target.get("config"):
                self.warn(f"{path}.target_config", "ignored because target.config is also given")
            else:
                target_config = legacy
                configs += [(c, f"{path}.target_config[{i}]") for i, c in enumerate(legacy)]

        source_config: list[ConfigProperty] = []
        source_secrets: list[tuple[SecretProperty, str]] = []
        has_source = props.get("source") is not None
        if has_source:
            source = self.mapping(
                props["source"], f"{path}.source", "a mapping with 'config' and/or 'secrets'"
            )
            if source is not None:
                self.keys(source, f"{path}.source", (), ("config", "secrets"), strict=False)
                source_config = self.configs(source.get("config"), f"{path}.source.config")
                configs += [(c, f"{path}.source.config[{i}]") for i, c in enumerate(source_config)]
                source_secrets = self.secrets(source.get("secrets"), f"{path}.source.secrets")
        if props.get("source_config") is not None:
            self.warn(f"{path}.source_config", "deprecated: use source.config instead")
            legacy = self.configs(props["source_config"], f"{path}.source_config")
            if has_source:
                self.warn(f"{path}.source_config", "ignored because a 'source' block is also given")
            else:
                source_config = legacy
                configs += [(c, f"{path}.source_config[{i}]") for i, c in enumerate(legacy)]

        if namespace is None or package is None or link_name is None or interfaces is None:
            return None
        self.check_known_interface(namespace, package, interfaces, path)
        trait = LinkTrait(
            namespace=namespace,
            package=package,
            interfaces=interfaces,
            name=link_name,
            target=target,
            source_config=source_config,
            target_config=target_config,
            source_secrets=[s for s, _ in source_secrets],
            target_secrets=[s for s, _ in target_secrets],
        )
        self.link_secrets.extend(source_secrets + target_secrets)
        return _LinkDraft(trait=trait, path=tpath, target_path=target_path, configs=configs)

    def interfaces(self, value: Any, path: str) -> list[str] | None:
        items = self.seq(value, path, "interface names")
        if items is None:
            return None
        if not items:
            self.error(path, "expected at least one interface, found an empty list")
            return None
        out: list[str] = []
        for index, item in enumerate(items):
            iface = self.text(item, f"{path}[{index}]")
            if iface is not None and not iface.strip():
                self.error(f"{path}[{index}]", "expected a non-empty interface name, found ''")
            elif iface is not None:
                items[index] = iface
                out.append(iface)
        return out if len(out) == len(items) else None

    def check_known_interface(self, namespace: str, package: str, interfaces: list[str], path: str) -> None:
        packages = KNOWN_INTERFACES.get(namespace)
        if packages is None:
            return
        known = packages.get(package)
        if known is None:
            self.warn(
                f"{path}.package",
                f"unknown package {package!r} in namespace {namespace!r} (known: {_names(sorted(packages))})",
            )
            return
        for index, iface in enumerate(interfaces):
            if iface not in known:
                self.warn(
                    f"{path}.interfaces[{index}]",
                    f"unknown interface {iface!r} of {namespace}:{package} (known: {_names(sorted(known))})",
                )

    # ---- checks across components

    def cross_checks(self, drafts: list[_ComponentDraft], policies: list[Policy]) -> None:
        by_name: dict[str, _ComponentDraft] = {}
        for draft in drafts:
            name = draft.component.name
            if name in by_name:
                self.error(
                    f"{draft.path}.name",
                    f"component name {name!r} is already used by {by_name[name].path}; names must be unique",
                )
            else:
                by_name[name] = draft

        self.check_ids(drafts)
        all_names = ", ".join(d.component.name for d in drafts) or "none"
        owned_configs: dict[str, str] = {}
        for draft in drafts:
            seen_links: dict[tuple[str, str, str, str], str] = {}
            for link in draft.links:
                trait = link.trait
                for iface in trait.interfaces:
                    key = (trait.name, trait.namespace, trait.package, iface)
                    if key in seen_links:
                        self.error(
                            link.path,
                            f"duplicate link {trait.namespace}:{trait.package}/{iface} named {trait.name!r}; "
                            f"{seen_links[key]} already declares it (give one of them another 'name')",
                        )
                    else:
                        seen_links[key] = link.path
                target = by_name.get(trait.target)
                if not trait.target:
                    self.error(link.target_path, "the link has no target; name a component of this manifest")
                elif target is None:
                    self.error(
                        link.target_path,
                        f"no component named {trait.target!r} in this manifest (components: {all_names})",
                    )
                    self.warn(
                        link.target_path, f"dangling link to {trait.target!r}, which is not in this manifest"
                    )
                elif draft.component.kind == "capability" and target.component.kind == "capability":
                    self.warn(
                        link.target_path,
                        f"a capability cannot link to another capability ({trait.target!r}); "
                        "the link is skipped",
                    )
                for config, cpath in link.configs:
                    if config.properties is None:
                        continue
                    if config.name in owned_configs:
                        self.error(
                            f"{cpath}.name",
                            f"link config {config.name!r} with properties is already defined at "
                            f"{owned_configs[config.name]}; link config names with properties must be unique",
                        )
                    else:
                        owned_configs[config.name] = cpath

        policy_by_name = {p.name: p for p in policies}
        used: set[str] = set()
        every_secret = [s for d in drafts for s in d.secrets] + self.link_secrets
        for secret, spath in every_secret:
            ppath = f"{spath}.properties.policy"
            policy = policy_by_name.get(secret.policy)
            used.add(secret.policy)
            if policy is None:
                self.error(
                    ppath,
                    f"no policy named {secret.policy!r} in spec.policies "
                    f"(policies: {_names([p.name for p in policies])})",
                )
            elif policy.type != SECRET_POLICY_TYPE:
                self.error(
                    ppath,
                    f"policy {secret.policy!r} has type {policy.type!r}; a secret needs a policy of type "
                    f"{SECRET_POLICY_TYPE!r}",
                )
            elif "backend" not in policy.properties:
                self.error(
                    ppath,
                    f"policy {secret.policy!r} has no 'backend' property; add one (for example nats-kv)",
                )

    def check_ids(self, drafts: list[_ComponentDraft]) -> None:
        """Explicit ids must be unique; computed ones too, as two names can sanitize to the same id."""
        ids: dict[str, str] = {}
        for draft in drafts:
            comp = draft.component
            if comp.application is not None:
                continue
            if comp.explicit_id is not None:
                cid, where, how = comp.explicit_id, f"{draft.path}.properties.id", ""
            elif self.manifest_name is not None:
                cid, where = _join_id(self.manifest_name, comp.name), f"{draft.path}.name"
                how = " (computed from the manifest and component names; set 'id' to choose another)"
            else:
                continue
            if cid in ids:
                self.error(
                    where, f"component id {cid!r}{how} is already used by {ids[cid]}; ids must be unique"
                )
            else:
                ids[cid] = draft.path


def _jsonable(value: Any) -> Any:
    """A plain-JSON copy of a loaded document (YAML number subclasses become plain numbers)."""
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else _show_key(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        # NaN and infinities have no JSON form; keep what the user wrote.
        return float(value) if value == value and value not in (float("inf"), float("-inf")) else _show(value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def _show_key(key: Any) -> str:
    if isinstance(key, _YamlInt | _YamlFloat):
        return key.text
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _validate(doc: Any, from_yaml: bool) -> tuple[Manifest, list[str]]:
    checker = _Checker(from_yaml)
    manifest = checker.check(doc)
    if checker.errors or manifest is None:
        raise ManifestError(checker.errors or ["manifest: invalid"], checker.warnings)
    return manifest, checker.warnings


# --------------------------------------------------------------------------------------------- public API


def parse_manifest(data: bytes | str, content_type: str | None = None) -> tuple[Manifest, list[str]]:
    """Parse YAML or JSON (by content type; with None: YAML then JSON) and validate; (manifest, warnings).

    Raises ManifestError with every error found (not just the first).
    """
    doc, from_yaml = _load_document(data, content_type)
    return _validate(doc, from_yaml)


def parse_manifest_dict(doc: Mapping[str, Any]) -> tuple[Manifest, list[str]]:
    """Validate an already-loaded JSON-like manifest (such as a stored `raw`); (manifest, warnings)."""
    return _validate(copy.deepcopy(dict(doc)), from_yaml=False)


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


def distribute(instances: int, spreads: list[Spread]) -> list[tuple[Spread, int]]:
    """Split `instances` over `spreads` by weight (default 100): floor shares, remainder to the heaviest."""
    if not spreads:
        return [(Spread(name="default", requirements={}, weight=None), instances)]
    weights = [DEFAULT_SPREAD_WEIGHT if s.weight is None else s.weight for s in spreads]
    total = sum(weights)
    if total == 0:
        return [(s, 0) for s in spreads]
    counts = [instances * w // total for w in weights]
    left = instances - sum(counts)
    # Python's sort is stable, so equal weights receive the remainder in manifest order.
    for index in sorted(range(len(spreads)), key=lambda i: -weights[i]):
        if left <= 0:
            break
        counts[index] += 1
        left -= 1
    return list(zip(spreads, counts, strict=True))


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ulid_lock = threading.Lock()
_ulid_last: tuple[int, int] = (0, 0)


def _encode_ulid(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_version() -> str:
    """A new ULID (26 Crockford base32 chars): strictly increasing, even within one millisecond."""
    global _ulid_last
    with _ulid_lock:
        millis = time.time_ns() // 1_000_000
        last_ms, last_rand = _ulid_last
        if millis <= last_ms and last_rand < (1 << 80) - 1:
            # Same (or an earlier, clock stepped back) millisecond: bump the random part to stay ordered.
            millis, rand = last_ms, last_rand + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _ulid_last = (millis, rand)
    return _encode_ulid(((millis & ((1 << 48) - 1)) << 80) | rand)
