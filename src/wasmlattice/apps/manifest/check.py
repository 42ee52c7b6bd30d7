"""Validating a loaded manifest document into a `Manifest`, naming every problem with its field path.

The top level, metadata, policies and components are read here (their traits in `check_traits.py`),
then the checks that need every component at once: unique names and IDs, link targets, owned link
configs, and the policy of every secret. Validation never stops at the first problem; `raw` is
normalised in place (strings for YAML numbers, trimmed name) and becomes the stored JSON form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, cast

from wasmlattice.apps.manifest.check_fields import key_path, name_list, show
from wasmlattice.apps.manifest.check_traits import LinkDraft, TraitChecker
from wasmlattice.apps.manifest.model import (
    APPLICATION_KIND,
    DESCRIPTION_ANNOTATION,
    LATEST_VERSION,
    OAM_API_VERSION,
    SECRET_POLICY_TYPE,
    SHARED_ANNOTATION,
    VERSION_ANNOTATION,
    Component,
    ConfigProperty,
    Manifest,
    ManifestError,
    Policy,
    ScalerTrait,
    SecretProperty,
    SharedRef,
    join_id,
)
from wasmlattice.apps.manifest.yaml_dialect import jsonable
from wasmlattice.protocol import limits
from wasmlattice.runtime.reuse import ReuseError, parse_reuse

_NAME_RE = re.compile(r"[-A-Za-z0-9_]+")


def validate(doc: Any, from_yaml: bool) -> tuple[Manifest, list[str]]:
    """Check a loaded document; (manifest, warnings), or ManifestError with every error found.

    From YAML (`from_yaml`), a number or boolean where a string is expected is read as written.
    """
    checker = ManifestChecker(from_yaml)
    manifest = checker.check(doc)
    if checker.errors or manifest is None:
        raise ManifestError(checker.errors or ["manifest: invalid"], checker.warnings)
    return manifest, checker.warnings


@dataclass
class ComponentDraft:
    """A parsed component plus where it and its secrets came from, for the cross-component checks."""

    path: str
    component: Component
    links: list[LinkDraft]
    secrets: list[tuple[SecretProperty, str]]


class ManifestChecker(TraitChecker):
    """Walks a loaded document, collecting every error and warning and normalising `raw` in place."""

    def __init__(self, from_yaml: bool) -> None:
        super().__init__(from_yaml)
        self.manifest_name: str | None = None

    def check(self, doc: Any) -> Manifest | None:
        """The manifest in `doc`, or None when it has errors (they are recorded)."""
        if doc is None:
            self.error("manifest", "the document is empty; expected an OAM Application manifest")
            return None
        top = self.mapping(doc, "manifest", "a mapping with apiVersion, kind, metadata and spec")
        if top is None:
            return None
        self.keys(top, "manifest", ("apiVersion", "kind", "metadata", "spec"), (), strict=True)
        api_version = self.field_text(top, "apiVersion", "")
        if api_version is not None and api_version != OAM_API_VERSION:
            self.warn("apiVersion", f"expected {OAM_API_VERSION!r}, found {show(api_version)} (not checked)")
        kind = self.field_text(top, "kind", "")
        if kind is not None and kind != APPLICATION_KIND:
            self.warn("kind", f"expected {APPLICATION_KIND!r}, found {show(kind)} (not checked)")

        name, annotations, labels = self.metadata(top["metadata"]) if "metadata" in top else (None, {}, {})
        policies = self.policies_and_components(top)
        if self.errors or name is None or policies is None:
            return None
        components, policy_list = policies
        version = annotations.get(VERSION_ANNOTATION) or None
        shared_text = annotations.get(SHARED_ANNOTATION)
        if shared_text is not None and shared_text not in ("true", "false"):
            self.warn(
                key_path("metadata.annotations", SHARED_ANNOTATION),
                f"expected 'true' or 'false', found {show(shared_text)}; the app is not shared",
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
            raw=cast(dict[str, Any], jsonable(top)),
        )

    def metadata(self, value: Any) -> tuple[str | None, dict[str, str], dict[str, str]]:
        """(name, annotations, labels) from `metadata`; the name is None when missing or invalid."""
        meta = self.mapping(value, "metadata")
        if meta is None:
            return None, {}, {}
        self.keys(meta, "metadata", ("name",), ("annotations", "labels"), strict=False)
        name = None
        raw_name = self.field_text(meta, "name", "metadata")
        if raw_name is not None:
            # wadm trims the name before use; the stored form is the trimmed one.
            meta["name"] = raw_name.strip()
            if len(raw_name.strip()) > limits.MAX_NAME_LEN:
                self.error("metadata.name", f"longer than {limits.MAX_NAME_LEN} characters")
            elif _NAME_RE.fullmatch(raw_name.strip()):
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

    # ---- spec

    def policies_and_components(self, top: dict[Any, Any]) -> tuple[list[Component], list[Policy]] | None:
        """The components and policies of `spec`, checked together; None without a usable spec."""
        if "spec" not in top:
            return None
        spec = self.mapping(top["spec"], "spec")
        if spec is None:
            return None
        self.keys(spec, "spec", ("components",), ("policies",), strict=False)
        policies = self.policies(spec.get("policies"))
        drafts: list[ComponentDraft] = []
        raw_components = spec.get("components", [])
        items = self.seq(raw_components, "spec.components", "components") if "components" in spec else []
        for index, item in enumerate(items or []):
            draft = self.component(item, f"spec.components[{index}]")
            if draft is not None:
                drafts.append(draft)
        self.cross_checks(drafts, policies)
        return [d.component for d in drafts], policies

    def policies(self, value: Any) -> list[Policy]:
        """The policies in `spec.policies`; of two with the same name, the first wins."""
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

    def component(self, value: Any, path: str) -> ComponentDraft | None:
        """One component or capability with its properties and traits, or None when unusable."""
        obj = self.mapping(value, path)
        if obj is None:
            return None
        self.keys(obj, path, ("name", "type", "properties"), ("traits", "annotations"), strict=False)
        name = self.field_text(obj, "name", path)
        annotations = self.component_annotations(obj.get("annotations"), f"{path}.annotations")
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
                f"found {show(raw_type)}",
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
        # A scaler trait with errors is reported as such, not as a missing scaler.
        raw_traits = obj.get("traits")
        has_scaler = isinstance(raw_traits, list) and any(
            isinstance(t, dict) and t.get("type") in ("spreadscaler", "daemonscaler") for t in raw_traits
        )
        if name is None or kind is None or props is None:
            return None
        if kind == "capability" and scaler is None and shared is None:
            # wadm runs a capability without a scaler trait as one provider on one host.
            scaler = ScalerTrait(kind="spreadscaler", instances=1, spread=[])
        elif (
            kind == "component" and scaler is None and shared is None and image is not None and not has_scaler
        ):
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
            annotations=annotations,
        )
        if annotations and kind == "capability":
            self.warn(f"{path}.annotations", "ignored: only components take annotations")
        return ComponentDraft(path=path, component=component, links=links, secrets=secrets)

    def component_annotations(self, value: Any, path: str) -> dict[str, str]:
        """A component's `annotations` (our extension); the warm-instance ones are checked here."""
        if value is None:
            return {}
        found = self.label_map(value, path) or {}
        try:
            parse_reuse(found)
        except ReuseError as e:
            self.error(key_path(path, e.key), str(e))
        return found

    def shared_ref(self, value: Any, path: str) -> SharedRef | None:
        """The `application` property: a component of a shared application, or None."""
        if value is None:
            return None
        obj = self.mapping(value, path, "a mapping with 'name' and 'component'")
        if obj is None:
            return None
        self.keys(obj, path, ("name", "component"), (), strict=False)
        app = self.field_text(obj, "name", path)
        comp = self.field_text(obj, "component", path)
        return SharedRef(name=app, component=comp) if app is not None and comp is not None else None

    def cross_checks(self, drafts: list[ComponentDraft], policies: list[Policy]) -> None:
        """The checks that need every component: unique names, link targets, owned link configs, policies."""
        by_name: dict[str, ComponentDraft] = {}
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
        images = {d.component.name: d.component.image for d in drafts}
        for draft in drafts:
            comp = draft.component
            self.check_provider_keys(comp.image, comp.config, draft.path, draft.links, images)
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
                    f"(policies: {name_list([p.name for p in policies])})",
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

    def check_ids(self, drafts: list[ComponentDraft]) -> None:
        """Explicit ids must be unique; computed ones too, as two names can sanitize to the same id."""
        ids: dict[str, str] = {}
        for draft in drafts:
            comp = draft.component
            if comp.application is not None:
                continue
            if comp.explicit_id is not None:
                cid, where, how = comp.explicit_id, f"{draft.path}.properties.id", ""
            elif self.manifest_name is not None:
                cid, where = join_id(self.manifest_name, comp.name), f"{draft.path}.name"
                how = " (computed from the manifest and component names; set 'id' to choose another)"
            else:
                continue
            try:
                limits.check_id(cid)
            except limits.LimitError as e:
                self.error(where, f"component id {limits.quote(cid)}{how}: {e}")
                continue
            if cid in ids:
                self.error(
                    where, f"component id {cid!r}{how} is already used by {ids[cid]}; ids must be unique"
                )
            else:
                ids[cid] = draft.path
