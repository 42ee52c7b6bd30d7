"""Checking what a component carries: its config and secret references and its traits.

A trait is a scaler (`spreadscaler` or `daemonscaler`, with weighted spreads over host labels) or a
link to another component of the manifest (an interface, with configs and secrets for either end).
Links are only drafted here; `check.py` resolves their targets once every component is known.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal, cast

from wasmlattice.apps.manifest.check_fields import FieldChecker, key_path, name_list
from wasmlattice.apps.manifest.model import (
    DEFAULT_LINK_NAME,
    ConfigProperty,
    LinkTrait,
    ScalerTrait,
    SecretProperty,
    SharedRef,
    Spread,
)
from wasmlattice.capabilities.config_keys import Role
from wasmlattice.capabilities.manager import config_key_problems
from wasmlattice.protocol import limits

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


@dataclass
class LinkDraft:
    """A parsed link plus where its parts came from, for the cross-component checks."""

    trait: LinkTrait
    path: str
    target_path: str
    configs: list[tuple[ConfigProperty, str]]


class TraitChecker(FieldChecker):
    """Reads config and secret references and the scaler and link traits of components."""

    def __init__(self, from_yaml: bool) -> None:
        super().__init__(from_yaml)
        # Secrets found in links, checked against the policies together with the components' own.
        self.link_secrets: list[tuple[SecretProperty, str]] = []

    def configs(self, value: Any, path: str) -> list[ConfigProperty]:
        """A list of config references (`name`, optional `properties`)."""
        if value is None:
            return []
        out: list[ConfigProperty] = []
        for index, item in enumerate(self.seq(value, path, "configs") or []):
            ipath = f"{path}[{index}]"
            obj = self.mapping(item, ipath)
            if obj is None:
                continue
            self.keys(obj, ipath, ("name",), ("properties",), strict=True)
            name = self.limit(self.field_text(obj, "name", ipath), f"{ipath}.name", limits.check_config_name)
            props = None
            if obj.get("properties") is not None:
                props = self.string_map(obj["properties"], f"{ipath}.properties")
                if props is None:
                    continue
            if name is not None:
                out.append(ConfigProperty(name=name, properties=props))
        return out

    def secrets(self, value: Any, path: str) -> list[tuple[SecretProperty, str]]:
        """A list of secret references, each with the path it was found at (for the policy check)."""
        if value is None:
            return []
        out: list[tuple[SecretProperty, str]] = []
        for index, item in enumerate(self.seq(value, path, "secrets") or []):
            ipath = f"{path}[{index}]"
            obj = self.mapping(item, ipath)
            if obj is None:
                continue
            self.keys(obj, ipath, ("name", "properties"), (), strict=False)
            name = self.limit(self.field_text(obj, "name", ipath), f"{ipath}.name", limits.check_config_name)
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
    ) -> tuple[ScalerTrait | None, list[LinkDraft]]:
        """A component's scaler (at most one) and its links; other trait types are kept and ignored."""
        if value is None:
            return None, []
        scaler: ScalerTrait | None = None
        scaler_path = ""
        links: list[LinkDraft] = []
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
        """A spreadscaler or daemonscaler trait; `replicas` is read as the older `instances`."""
        path = f"{tpath}.properties"
        props = self.mapping(trait["properties"], path, f"a mapping with the {ttype} properties")
        if props is None:
            return None
        allowed = ("instances", "replicas", "spread")
        meant: set[str] = set()
        for key in props:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.75)
                hint = (
                    f"did you mean '{close[0]}'?"
                    if close
                    else "allowed keys: instances, spread; 'replicas' is the older spelling of 'instances'"
                )
                meant.update(close)
                self.error(key_path(path, str(key)), f"unknown key '{key}' for a {ttype}: {hint}")
        instances: int | None = None
        if meant & {"instances", "replicas"} and not {"instances", "replicas"} & set(props):
            pass  # the misspelt count is the one message (above)
        elif "instances" in props and "replicas" in props:
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
        """The weighted spreads of a scaler, each with the host labels it requires."""
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
            if reqs is not None:
                # Requirements become auction constraints: the control interface's label limits.
                try:
                    limits.check_label_map(reqs)
                except limits.LimitError as e:
                    self.error(f"{spath}.requirements", str(e))
                    reqs = None
            weight = self.whole(obj["weight"], f"{spath}.weight") if obj.get("weight") is not None else None
            if name is not None and name in seen:
                self.warn(f"{spath}.name", f"spread name {name!r} is used twice in this scaler")
            if name is not None:
                seen.add(name)
            if name is not None and reqs is not None:
                out.append(Spread(name=name, requirements=reqs, weight=weight))
        return out

    def link(self, value: Any, path: str, tpath: str) -> LinkDraft | None:
        """A link trait, drafted: its target is resolved once every component is known."""
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
        namespace, package = (
            self.limit(self.field_text(props, key, path), f"{path}.{key}", limits.check_name)
            for key in ("namespace", "package")
        )
        link_name = (
            self.limit(self.field_text(props, "name", path), f"{path}.name", limits.check_name)
            if props.get("name") is not None
            else DEFAULT_LINK_NAME
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
        return LinkDraft(trait=trait, path=tpath, target_path=target_path, configs=configs)

    def check_provider_keys(
        self,
        image: str | None,
        config: list[ConfigProperty],
        path: str,
        links: list[LinkDraft],
        images: dict[str, str | None],
    ) -> None:
        """Check inline config keys of a builtin provider (docs/config-keys.md): its own config
        and the link configs on its side (`images`: component name -> image, for link targets).

        A typo of a key the provider reads (`adress`) is an error with the suggestion; a key close
        to nothing is a warning, since wasmCloud's providers ignore keys they do not read.
        """
        if image is not None:
            for index, prop in enumerate(config):
                self.check_keys(image, prop, f"{path}.properties.config[{index}]", "provider")
        for link in links:
            for prop, cpath in link.configs:
                is_source = any(prop is c for c in link.trait.source_config)
                ref = image if is_source else images.get(link.trait.target)
                if ref is not None:
                    self.check_keys(ref, prop, cpath, "source" if is_source else "target")

    def check_keys(self, ref: str, prop: ConfigProperty, path: str, role: Role) -> None:
        """One inline config against the keys the builtin provider `ref` reads in `role`."""
        for problem in config_key_problems(ref, prop.properties or {}, role):
            where = key_path(f"{path}.properties", problem.key)
            if problem.is_typo:
                self.error(where, problem.message())
            else:
                self.warn(where, problem.message())

    def interfaces(self, value: Any, path: str) -> list[str] | None:
        """A non-empty list of interface names, or None when any is unusable."""
        items = self.seq(value, path, "interface names")
        if items is None:
            return None
        if not items:
            self.error(path, "expected at least one interface, found an empty list")
            return None
        if len(items) > limits.MAX_LIST_ITEMS:
            self.error(path, f"at most {limits.MAX_LIST_ITEMS} interfaces, found {len(items)}")
            return None
        out: list[str] = []
        for index, item in enumerate(items):
            iface = self.limit(self.text(item, f"{path}[{index}]"), f"{path}[{index}]", limits.check_name)
            if iface is not None and not iface.strip():
                self.error(f"{path}[{index}]", "expected a non-empty interface name, found ''")
            elif iface is not None:
                items[index] = iface
                out.append(iface)
        return out if len(out) == len(items) else None

    def check_known_interface(self, namespace: str, package: str, interfaces: list[str], path: str) -> None:
        """Warn about a package or interface unknown under a well-known namespace (likely a typo)."""
        packages = KNOWN_INTERFACES.get(namespace)
        if packages is None:
            return
        known = packages.get(package)
        if known is None:
            self.warn(
                f"{path}.package",
                f"unknown package {package!r} in namespace {namespace!r} "
                f"(known: {name_list(sorted(packages))})",
            )
            return
        for index, iface in enumerate(interfaces):
            if iface not in known:
                self.warn(
                    f"{path}.interfaces[{index}]",
                    f"unknown interface {iface!r} of {namespace}:{package} "
                    f"(known: {name_list(sorted(known))})",
                )

    # ---- checks across components
