"""Application manifests: parsing (YAML/JSON), every validation check, IDs, spread math and ULIDs."""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from wasmlattice.apps.manifest.load import load_manifest_file, parse_manifest, parse_manifest_dict
from wasmlattice.apps.manifest.model import Component, ManifestError, Spread, new_version, sanitize_id_part
from wasmlattice.apps.placement import distribute

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "manifests"


def base() -> dict[str, Any]:
    """A small valid manifest that the invalid cases below break one piece at a time."""
    return {
        "apiVersion": "core.oam.dev/v1beta1",
        "kind": "Application",
        "metadata": {"name": "app", "annotations": {"version": "v1"}},
        "spec": {
            "policies": [
                {
                    "name": "vault",
                    "type": "policy.secret.wasmcloud.dev/v1alpha1",
                    "properties": {"backend": "kv"},
                }
            ],
            "components": [
                {
                    "name": "a",
                    "type": "component",
                    "properties": {"image": "ghcr.io/x/a:1"},
                    "traits": [
                        {"type": "spreadscaler", "properties": {"instances": 2}},
                        {
                            "type": "link",
                            "properties": {
                                "namespace": "wasi",
                                "package": "keyvalue",
                                "interfaces": ["store"],
                                "target": {"name": "b"},
                            },
                        },
                    ],
                },
                {"name": "b", "type": "capability", "properties": {"image": "builtin://keyvalue"}},
            ],
        },
    }


def as_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


def errors_of(doc: dict[str, Any] | str) -> list[str]:
    text = doc if isinstance(doc, str) else as_yaml(doc)
    with pytest.raises(ManifestError) as info:
        parse_manifest(text)
    assert str(info.value) == "; ".join(info.value.errors)
    return info.value.errors


def comp(doc: dict[str, Any], index: int) -> dict[str, Any]:
    result: dict[str, Any] = doc["spec"]["components"][index]
    return result


# ----------------------------------------------------------------------------------------------- valid


@pytest.mark.parametrize("path", sorted(FIXTURES.iterdir()), ids=lambda p: p.name)
def test_every_fixture_parses(path: Path) -> None:
    manifest, _ = load_manifest_file(path)
    assert manifest.components
    # `raw` is plain JSON and parses back to the same manifest.
    again, _ = parse_manifest(json.dumps(manifest.raw), "application/json")
    assert again == manifest


def test_minimal_http_app_ids_and_configs() -> None:
    manifest, warnings = load_manifest_file(FIXTURES / "echo-demo.yaml")
    assert warnings == []
    assert (manifest.name, manifest.version, manifest.description) == (
        "echo-demo",
        "v0.1.0",
        "Smallest useful HTTP app",
    )
    echo, web = manifest.components
    assert manifest.component_id(echo) == "echo_demo-echo"
    assert manifest.component_id(web) == "echo_demo-web"
    assert echo.scaler is not None and echo.scaler.instances == 2
    # A capability without a scaler trait gets one implicit instance.
    assert web.scaler is not None
    assert (web.scaler.kind, web.scaler.instances, web.scaler.spread) == ("spreadscaler", 1, [])
    (link,) = web.links
    assert (link.namespace, link.package, link.interfaces, link.name, link.target) == (
        "wasi",
        "http",
        ["incoming-handler"],
        "default",
        "echo",
    )
    assert link.source_config[0].properties == {"address": "127.0.0.1:8080"}
    assert manifest.config_name(link.source_config[0].name) == "echo_demo-listen"


def test_json_form_equals_yaml_form() -> None:
    from_yaml, _ = load_manifest_file(FIXTURES / "echo-demo.yaml")
    from_json, _ = load_manifest_file(FIXTURES / "echo-demo.json")
    assert from_json.components == from_yaml.components
    # No content type: YAML is tried first, JSON second (tabs are valid JSON but not YAML).
    text = (FIXTURES / "echo-demo.json").read_text().replace("  ", "\t")
    manifest, _ = parse_manifest(text.encode())
    assert manifest.components == from_yaml.components


def test_multi_region_shop() -> None:
    manifest, warnings = load_manifest_file(FIXTURES / "shop.yaml")
    assert warnings == []
    api, kv = manifest.components
    assert api.explicit_id == "shop_api" and manifest.component_id(api) == "shop_api"
    assert api.config[0].name == "shop-flags" and api.config[0].properties is None
    (secret,) = api.secrets
    assert (secret.name, secret.key, secret.field, secret.version, secret.policy) == (
        "db-pass",
        "shop/db",
        "password",
        None,
        "vault",
    )
    assert manifest.secret_name("db-pass") == "SECRET_shop-db_pass"
    assert api.scaler is not None
    assert [(s.name, n) for s, n in distribute(api.scaler.instances, api.scaler.spread)] == [
        ("east", 7),
        ("west", 3),
    ]
    (link,) = api.links
    assert (link.name, link.interfaces, link.target) == ("sessions", ["atomics", "store"], "kv")
    assert link.target_config[0].properties == {"url": "redis://10.0.0.5:6379"}
    assert kv.scaler is not None and kv.scaler.kind == "daemonscaler"
    assert kv.scaler.spread == [Spread(name="edge", requirements={"tier": "edge"}, weight=None)]
    assert manifest.policies[0].properties == {"backend": "nats-kv"}


def test_shared_app_and_consumer() -> None:
    shared, _ = load_manifest_file(FIXTURES / "shared-http.yaml")
    consumer, warnings = load_manifest_file(FIXTURES / "greeter.yaml")
    assert shared.shared and not consumer.shared
    assert warnings == []
    front = consumer.component_named("front")
    assert front is not None and front.application is not None
    assert (front.image, front.scaler, front.application.name) == (None, None, "shared-http")
    assert consumer.component_id(front) == "shared_http-httpserver"
    # With the shared manifest at hand, an explicit id there wins.
    raw = copy.deepcopy(shared.raw)
    raw["spec"]["components"][0]["properties"]["id"] = "pool-http"
    with_id, _ = parse_manifest_dict(raw)
    assert consumer.component_id(front, {"shared-http": with_id}) == "pool-http"


def test_older_spellings_with_their_warnings() -> None:
    manifest, warnings = load_manifest_file(FIXTURES / "legacy.yaml")
    component, server, redis = manifest.components
    assert component.kind == "component"  # from `actor`
    assert component.scaler is not None and component.scaler.instances == 4  # from `replicas`
    assert component.links[0].target == "kvredis"  # plain-string target
    assert component.links[0].target_config[0].name == "redis-url"
    assert server.links[0].source_config[0].properties == {"address": "0.0.0.0:8080"}
    assert manifest.config_name("httpaddr") == "hello_simple-httpaddr"
    assert manifest.annotations == {} and manifest.version is None
    assert manifest.raw["metadata"]["annotations"] == {}
    assert [w.split(":")[0] for w in warnings] == [
        "spec.components[0].traits[1].properties.target_config",
        "spec.components[1].traits[0].properties.source_config",
    ]
    assert all("deprecated" in w for w in warnings)
    assert server.image == "builtin://http-server" and redis.image == "wasmcloud+builtin://keyvalue-redis"


def test_source_block_wins_over_source_config() -> None:
    doc = base()
    link = comp(doc, 0)["traits"][1]["properties"]
    link["source"] = {"config": [{"name": "new"}]}
    link["source_config"] = [{"name": "old"}]
    manifest, warnings = parse_manifest(as_yaml(doc))
    assert [c.name for c in manifest.components[0].links[0].source_config] == ["new"]
    assert any("ignored because a 'source' block" in w for w in warnings)


def test_yaml_scalars_in_string_fields_keep_their_text() -> None:
    text = as_yaml(base()).replace("version: v1", "version: 1.10\n    built: 2024-05-01")
    manifest, _ = parse_manifest(text)
    assert manifest.version == "1.10"
    assert manifest.annotations["built"] == "2024-05-01"
    assert manifest.raw["metadata"]["annotations"]["version"] == "1.10"


def test_yaml_12_booleans_only() -> None:
    # PyYAML's YAML 1.1 rules would turn `on`/`yes` into booleans; wadm (YAML 1.2) keeps them as text.
    doc = base()
    comp(doc, 0)["properties"]["config"] = [{"name": "c", "properties": {"__ON__": "__YES__"}}]
    text = as_yaml(doc).replace("__ON__", "on").replace("__YES__", "yes")
    manifest, _ = parse_manifest(text, "application/yaml")
    assert manifest.components[0].config[0].properties == {"on": "yes"}


def test_warnings_for_unknown_interfaces_and_capability_links() -> None:
    doc = base()
    link = comp(doc, 0)["traits"][1]["properties"]
    link["interfaces"] = ["stor"]
    comp(doc, 1)["traits"] = [
        {
            "type": "link",
            "properties": {"namespace": "wasi", "package": "htp", "interfaces": ["x"], "target": "b"},
        }
    ]
    comp(doc, 0)["traits"].append(
        {
            "type": "link",
            "properties": {"namespace": "acme", "package": "any", "interfaces": ["thing"], "target": "b"},
        }
    )
    _, warnings = parse_manifest(as_yaml(doc))
    assert any(
        w.startswith("spec.components[0].traits[1].properties.interfaces[0]: unknown interface 'stor'")
        for w in warnings
    )
    assert any(
        w.startswith("spec.components[1].traits[0].properties.package: unknown package 'htp'")
        for w in warnings
    )
    assert any("cannot link to another capability" in w for w in warnings)
    assert not any("acme" in w for w in warnings)  # custom namespaces are never second-guessed


def test_custom_traits_are_kept_and_ignored() -> None:
    doc = base()
    comp(doc, 0)["traits"].append({"type": "customscaler", "properties": {"anything": [1, 2]}})
    manifest, _ = parse_manifest(as_yaml(doc))
    assert manifest.components[0].scaler is not None
    assert manifest.raw["spec"]["components"][0]["traits"][2]["type"] == "customscaler"


def test_daemonscaler_provider_may_omit_instances() -> None:
    doc = base()
    comp(doc, 1)["traits"] = [{"type": "daemonscaler", "properties": {"spread": []}}]
    manifest, _ = parse_manifest(as_yaml(doc))
    assert manifest.components[1].scaler is not None and manifest.components[1].scaler.instances == 1
    assert manifest.raw["spec"]["components"][1]["traits"][0]["properties"]["instances"] == 1


def test_with_version_sets_annotation_and_raw() -> None:
    manifest, _ = load_manifest_file(FIXTURES / "legacy.yaml")
    versioned = manifest.with_version("v9")
    assert versioned.version == "v9" and versioned.annotations["version"] == "v9"
    assert versioned.raw["metadata"]["annotations"]["version"] == "v9"
    assert manifest.raw["metadata"]["annotations"] == {}  # the original is untouched
    with pytest.raises(ValueError, match="latest"):
        manifest.with_version("latest")


# --------------------------------------------------------------------------------------------- invalid


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return apply


def _del(path: list[Any]) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return apply


def _add_component(component: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc["spec"]["components"].append(component)


def _add_trait(index: int, trait: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc["spec"]["components"][index]["traits"].append(trait)


C0 = ["spec", "components", 0]
C1 = ["spec", "components", 1]
LINK = [*C0, "traits", 1, "properties"]
SCALE = [*C0, "traits", 0, "properties"]
KV_LINK = {"namespace": "wasi", "package": "keyvalue", "interfaces": ["store"], "target": "b"}
SECRET = {"name": "pw", "properties": {"policy": "vault", "key": "db"}}

INVALID: list[tuple[str, Callable[[dict[str, Any]], object], str]] = [
    (
        "name with a space",
        _set(["metadata", "name"], "my app"),
        "metadata.name: 'my app' is not a valid name (letters, digits, '_' and '-' only)",
    ),
    ("name with a dot", _set(["metadata", "name"], "my.app"), "metadata.name: 'my.app' is not a valid name"),
    (
        "version latest",
        _set(["metadata", "annotations", "version"], "latest"),
        "metadata.annotations.version: 'latest'",
    ),
    (
        "bad label key",
        _set(["metadata", "labels"], {"bad key!": "x"}),
        "metadata.labels[\"bad key!\"]: 'bad key!' is not a valid key",
    ),
    (
        "bad annotation prefix",
        _set(["metadata", "annotations", "-bad.io/x"], "y"),
        "metadata.annotations[\"-bad.io/x\"]: '-bad.io/x' is not a valid key",
    ),
    (
        "annotation not a string",
        _set(["metadata", "annotations", "n"], [1]),
        "metadata.annotations.n: expected a string",
    ),
    (
        "duplicate component name",
        _add_component({"name": "a", "type": "capability", "properties": {"image": "x"}}),
        "spec.components[2].name: component name 'a' is already used by spec.components[0]",
    ),
    (
        "duplicate explicit id",
        lambda d: [comp(d, i)["properties"].update(id="same") for i in (0, 1)],
        "spec.components[1].properties.id: component id 'same' is already used by spec.components[0]",
    ),
    (
        "computed ids collide",
        _add_component({"name": "A", "type": "capability", "properties": {"image": "x"}}),
        "spec.components[2].name: component id 'app-a' (computed",
    ),
    (
        "image and application",
        _set([*C1, "properties", "application"], {"name": "s", "component": "c"}),
        "spec.components[1].properties: give either 'image' or 'application'",
    ),
    (
        "neither image nor application",
        _del([*C1, "properties", "image"]),
        "spec.components[1].properties: missing 'image'",
    ),
    (
        "shared ref with config",
        _set(
            [*C1, "properties"], {"application": {"name": "s", "component": "c"}, "config": [{"name": "x"}]}
        ),
        "spec.components[1].properties.config: a reference to a shared application cannot carry 'config'",
    ),
    (
        "shared ref with secrets",
        _set([*C1, "properties"], {"application": {"name": "s", "component": "c"}, "secrets": [SECRET]}),
        "spec.components[1].properties.secrets: a reference to a shared application cannot carry 'secrets'",
    ),
    (
        "shared ref with a scaler",
        lambda d: comp(d, 1).update(
            properties={"application": {"name": "s", "component": "c"}},
            traits=[{"type": "spreadscaler", "properties": {"instances": 1}}],
        ),
        "spec.components[1].traits[0]: a reference to a shared application cannot have a spreadscaler",
    ),
    (
        "link to a missing component",
        _set([*LINK, "target"], {"name": "kvx"}),
        "spec.components[0].traits[1].properties.target.name: no component named 'kvx' in this manifest "
        "(components: a, b)",
    ),
    (
        "string link target missing",
        _set([*LINK, "target"], "kvx"),
        "spec.components[0].traits[1].properties.target: no component named 'kvx'",
    ),
    (
        "link without target",
        _del([*LINK, "target"]),
        "spec.components[0].traits[1].properties.target: the link has no target",
    ),
    (
        "duplicate link",
        _add_trait(0, {"type": "link", "properties": dict(KV_LINK)}),
        "spec.components[0].traits[2]: duplicate link wasi:keyvalue/store named 'default'",
    ),
    (
        "duplicate link config names",
        lambda d: [
            _set([*LINK, "source"], {"config": [{"name": "c", "properties": {"k": "v"}}]})(d),
            _add_trait(
                0,
                {
                    "type": "link",
                    "properties": {
                        **KV_LINK,
                        "name": "two",
                        "source_config": [{"name": "c", "properties": {"k": "w"}}],
                    },
                },
            )(d),
        ],
        "spec.components[0].traits[2].properties.source_config[0].name: link config 'c' with properties is "
        "already defined at spec.components[0].traits[1].properties.source.config[0]",
    ),
    (
        "scaler property misspelled",
        _set(SCALE, {"instaces": 2}),
        "spec.components[0].traits[0].properties.instaces: unknown key 'instaces' for a spreadscaler: "
        "did you mean 'instances'?",
    ),
    (
        "link without namespace",
        _del([*LINK, "namespace"]),
        "spec.components[0].traits[1].properties: missing required key 'namespace'",
    ),
    (
        "instances as a word",
        _set([*SCALE, "instances"], "two"),
        "spec.components[0].traits[0].properties.instances: expected a whole number, found 'two'",
    ),
    (
        "negative instances",
        _set([*SCALE, "instances"], -1),
        "spec.components[0].traits[0].properties.instances: expected a whole number of 0 or more, found -1",
    ),
    (
        "fractional instances",
        _set([*SCALE, "instances"], 1.5),
        "spec.components[0].traits[0].properties.instances: expected a whole number, found 1.5",
    ),
    (
        "spread without requirements",
        _set([*SCALE, "spread"], [{"name": "x"}]),
        "spec.components[0].traits[0].properties.spread[0]: missing required key 'requirements'",
    ),
    (
        "negative weight",
        _set([*SCALE, "spread"], [{"name": "x", "requirements": {}, "weight": -3}]),
        "spec.components[0].traits[0].properties.spread[0].weight: expected a whole number of 0 or more",
    ),
    (
        "unknown top-level key",
        _set(["extra"], 1),
        "extra: unknown key 'extra' (allowed keys: apiVersion, kind, metadata, spec)",
    ),
    (
        "unknown properties key",
        _set([*C0, "properties", "imgae"], "x"),
        "spec.components[0].properties.imgae: unknown key 'imgae' "
        "(allowed keys: image, application, id, config, secrets)",
    ),
    (
        "unknown trait key",
        _set([*C0, "traits", 0, "props"], {}),
        "spec.components[0].traits[0].props: unknown key 'props' (allowed keys: type, properties)",
    ),
    (
        "unknown config key",
        _set([*C0, "properties", "config"], [{"name": "c", "value": "v"}]),
        "spec.components[0].properties.config[0].value: unknown key 'value' (allowed keys: name, properties)",
    ),
    (
        "bad component type",
        _set([*C1, "type"], "provider"),
        "spec.components[1].type: expected 'component' or 'capability'",
    ),
    (
        "secret with unknown policy",
        _set([*C0, "properties", "secrets"], [{"name": "pw", "properties": {"policy": "nope", "key": "db"}}]),
        "spec.components[0].properties.secrets[0].properties.policy: no policy named 'nope' in spec.policies "
        "(policies: vault)",
    ),
    (
        "secret policy of the wrong type",
        lambda d: [
            _set(["spec", "policies", 0, "type"], "other")(d),
            _set([*C0, "properties", "secrets"], [SECRET])(d),
        ],
        "spec.components[0].properties.secrets[0].properties.policy: policy 'vault' has type 'other'",
    ),
    (
        "secret policy without backend",
        lambda d: [
            _set(["spec", "policies", 0, "properties"], {"x": "y"})(d),
            _set([*LINK, "target", "secrets"], [SECRET])(d),
        ],
        "spec.components[0].traits[1].properties.target.secrets[0].properties.policy: policy 'vault' has no "
        "'backend' property",
    ),
    ("missing spec", _del(["spec"]), "manifest: missing required key 'spec'"),
    (
        "components not a list",
        _set(["spec", "components"], {"a": 1}),
        "spec.components: expected a list of components",
    ),
    (
        "two scalers",
        _add_trait(0, {"type": "daemonscaler", "properties": {"instances": 1}}),
        "spec.components[0].traits[2]: a second scaler trait (daemonscaler)",
    ),
    (
        "empty interfaces",
        _set([*LINK, "interfaces"], []),
        "spec.components[0].traits[1].properties.interfaces: expected at least one interface",
    ),
]


@pytest.mark.parametrize(("label", "mutate", "expected"), INVALID, ids=[case[0] for case in INVALID])
def test_invalid_manifest_is_refused_with_its_path(
    label: str, mutate: Callable[[dict[str, Any]], object], expected: str
) -> None:
    doc = base()
    mutate(doc)
    errors = errors_of(doc)
    assert any(e.startswith(expected) for e in errors), errors


def test_base_manifest_is_valid() -> None:
    manifest, warnings = parse_manifest(as_yaml(base()))
    assert warnings == []
    assert [c.name for c in manifest.components] == ["a", "b"]


def test_all_errors_are_reported_together() -> None:
    doc = base()
    doc["metadata"]["name"] = "my app"
    doc["metadata"]["annotations"]["version"] = "latest"
    comp(doc, 0)["traits"][0]["properties"]["instances"] = "two"
    comp(doc, 0)["traits"][1]["properties"]["target"] = "kvx"
    comp(doc, 1)["properties"]["colour"] = "red"
    with pytest.raises(ManifestError) as info:
        parse_manifest(as_yaml(doc))
    paths = [e.split(":")[0] for e in info.value.errors]
    assert paths == [
        "metadata.name",
        "metadata.annotations.version",
        "spec.components[0].traits[0].properties.instances",
        "spec.components[1].properties.colour",
        "spec.components[0].traits[1].properties.target",
    ]
    assert any("dangling" in w for w in info.value.warnings)


def test_bad_yaml_reports_line_and_column() -> None:
    errors = errors_of("apiVersion: x\nmetadata:\n  name: a\n   bad: [\n")
    assert len(errors) == 1 and errors[0].startswith("manifest: invalid YAML at line 4"), errors


def test_duplicate_yaml_key_is_an_error() -> None:
    errors = errors_of("apiVersion: x\nkind: y\nkind: z\n")
    assert errors[0].startswith("manifest: invalid YAML at line 3, column 1: duplicate key 'kind'"), errors


def test_bad_json_with_content_type() -> None:
    with pytest.raises(ManifestError, match=r"manifest: invalid JSON at line 1, column 2"):
        parse_manifest(b"{nope", "application/json")


def test_unsupported_content_type_is_named() -> None:
    with pytest.raises(ManifestError, match=r"content type: 'text/plain' is not supported"):
        parse_manifest(as_yaml(base()), "text/plain")
    manifest, _ = parse_manifest(json.dumps(base()), "application/json; charset=utf-8")
    assert manifest.name == "app"


def test_json_numbers_are_not_strings() -> None:
    doc = base()
    doc["metadata"]["annotations"]["version"] = 2
    with pytest.raises(ManifestError, match=r"metadata.annotations.version: expected a string, found 2"):
        parse_manifest(json.dumps(doc), "application/json")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "manifest: the document is empty"),
        ("- a\n- b\n", "manifest: expected a mapping"),
        ("a: 1\n---\nb: 2\n", "manifest: found 2 YAML documents"),
    ],
)
def test_documents_that_are_not_one_manifest(text: str, expected: str) -> None:
    assert errors_of(text)[0].startswith(expected)


def test_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read the manifest file"):
        load_manifest_file(tmp_path / "absent.yaml")


# ------------------------------------------------------------------------------------- ids and spreads


@pytest.mark.parametrize(
    ("app", "name", "expected"),
    [
        ("hello-world", "http-component", "hello_world-http_component"),
        ("hello-simple", "httpaddr", "hello_simple-httpaddr"),
        ("complex", "defaultcode", "complex-defaultcode"),
        ("My_App", "Web.Server", "my_app-web_server"),
        ("app", "café", "app-caf_"),
    ],
)
def test_component_id_and_config_name_sanitizing(app: str, name: str, expected: str) -> None:
    doc = base()
    doc["metadata"]["name"] = app
    comp(doc, 1)["name"] = name
    comp(doc, 0)["traits"][1]["properties"]["target"] = name
    manifest, _ = parse_manifest(as_yaml(doc))
    assert manifest.config_name(name) == expected
    component: Component = manifest.components[1]
    assert manifest.component_id(component) == expected
    assert sanitize_id_part(name) == expected.split("-", 1)[1]


def _spreads(*weights: int | None) -> list[Spread]:
    return [Spread(name=f"s{i}", requirements={}, weight=w) for i, w in enumerate(weights)]


@pytest.mark.parametrize(
    ("instances", "weights", "expected"),
    [
        (10, (100, 100), [5, 5]),
        (7, (40, 30), [4, 3]),
        (7, (100, 100), [4, 3]),
        (7, (None, None), [4, 3]),
        (10, (70, 30), [7, 3]),
        (5, (40, 40, 20), [2, 2, 1]),
        (3, (20, 40, 40), [0, 2, 1]),
        (1, (20, 40, 40), [0, 1, 0]),
        (0, (1, 1), [0, 0]),
        (4, (0, 100), [0, 4]),
    ],
)
def test_distribute_examples(instances: int, weights: tuple[int | None, ...], expected: list[int]) -> None:
    spreads = _spreads(*weights)
    result = distribute(instances, spreads)
    assert [s for s, _ in result] == spreads
    assert [n for _, n in result] == expected


def test_distribute_without_spreads_uses_one_default_spread() -> None:
    ((spread, count),) = distribute(6, [])
    assert (spread.name, spread.requirements, count) == ("default", {}, 6)


@given(st.integers(0, 10_000), st.lists(st.integers(1, 1000), min_size=1, max_size=8))
def test_distribute_places_every_instance_close_to_its_share(instances: int, weights: list[int]) -> None:
    counts = [n for _, n in distribute(instances, _spreads(*weights))]
    assert sum(counts) == instances
    total = sum(weights)
    for weight, count in zip(weights, counts, strict=True):
        # floor(share), plus at most one of the remainder (handed to the heaviest spreads first):
        # a spread whose share is a whole number can still get one more.
        share = instances * weight / total
        assert int(share) <= count <= int(share) + 1, (share, count)


def test_distribute_hands_the_remainder_to_the_heaviest_spreads() -> None:
    # 145 over these weights (total 2610): the floors sum to 143; the 2 left go to the heaviest
    # (1000), then to the first of the two 702s, although its share is exactly 39.
    counts = [n for _, n in distribute(145, _spreads(1, 1, 1, 96, 107, 702, 702, 1000))]
    assert counts == [0, 0, 0, 5, 5, 40, 39, 56]


# ------------------------------------------------------------------------------------------------ ULID


def test_ulid_format_and_order() -> None:
    before = int(time.time() * 1000)
    versions = [new_version() for _ in range(2000)]
    assert all(re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", v) for v in versions)
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    stamp = 0
    for char in versions[0][:10]:
        stamp = stamp * 32 + alphabet.index(char)
    assert before - 5 <= stamp <= int(time.time() * 1000) + 5
    time.sleep(0.002)
    assert new_version()[:10] > versions[-1][:10]


def _web_link_config(image: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The echo demo with the http-server's image set, and its link's inline source config."""
    manifest, _ = load_manifest_file(FIXTURES / "echo-demo.yaml")
    doc = copy.deepcopy(manifest.raw)
    web = next(c for c in doc["spec"]["components"] if c["name"] == "web")
    web["properties"]["image"] = image
    link = next(t for t in web["traits"] if t["type"] == "link")
    (config,) = link["properties"]["source"]["config"]
    return doc, config


@pytest.mark.parametrize("image", ["builtin://http-server", "wasmcloud+builtin://http-server"])
def test_a_misspelt_http_server_key_in_link_config_is_refused_with_a_suggestion(image: str) -> None:
    doc, config = _web_link_config(image)
    config["properties"] = {"adress": "127.0.0.1:8080"}
    (error,) = errors_of(doc)
    expected = (
        ".properties.adress: unknown key 'adress' for http-server (link source config): "
        "did you mean 'address'?"
    )
    assert error.endswith(expected), error
    # wasmCloud's own http-server keys are not typos, and a key close to nothing is only a warning.
    config["properties"] = {"address": "127.0.0.1:8080", "cors_allowed_origins": "*", "team": "web"}
    _, warnings = parse_manifest(as_yaml(doc))
    (warning,) = [w for w in warnings if "'team'" in w]
    assert "unknown key 'team' for http-server (link source config): not read by this provider" in warning
    assert "keys it reads: address, port" in warning


def test_keys_of_a_provider_that_is_not_builtin_are_not_checked() -> None:
    # wasmCloud's own http-server image reads its own keys; only builtin providers are known here.
    doc, config = _web_link_config("ghcr.io/wasmcloud/http-server:0.23.0")
    config["properties"] = {"adress": "127.0.0.1:8080"}
    _, warnings = parse_manifest(as_yaml(doc))
    assert not [w for w in warnings if "adress" in w]


def test_provider_config_and_link_target_config_keys_are_checked() -> None:
    doc = base()
    provider = comp(doc, 1)
    provider["properties"]["image"] = "builtin://keyvalue-nats"
    provider["properties"]["config"] = [{"name": "kv", "properties": {"max_value_byte": "10"}}]
    link = comp(doc, 0)["traits"][1]["properties"]
    link["target"]["config"] = [{"name": "b", "properties": {"buket": "x", "js_domain": "hub"}}]
    errors = errors_of(doc)
    assert sorted(errors) == [
        "spec.components[0].traits[1].properties.target.config[0].properties.buket: unknown key 'buket' "
        "for keyvalue-nats (link target config): did you mean 'bucket'?",
        "spec.components[1].properties.config[0].properties.max_value_byte: unknown key 'max_value_byte' "
        "for keyvalue-nats (provider config): did you mean 'max_value_bytes'?",
    ], errors
    # Right keys (and a key wasmCloud's keyvalue-nats reads) pass; other keys close to nothing warn.
    provider["properties"]["config"] = [{"name": "kv", "properties": {"MAX_VALUE_BYTES": "10", "team": "a"}}]
    link["target"]["config"] = [{"name": "b", "properties": {"bucket": "x", "js_domain": "hub"}}]
    _, warnings = parse_manifest(as_yaml(doc))
    assert [w for w in warnings if "unknown key" in w] == [
        "spec.components[1].properties.config[0].properties.team: unknown key 'team' for keyvalue-nats "
        "(provider config): not read by this provider, ignored (keys it reads: bucket, max_value_bytes, "
        "list_page_size)"
    ]


def test_a_misspelt_instances_is_the_only_message() -> None:
    doc = base()
    comp(doc, 0)["traits"][0]["properties"] = {"instanses": 2}
    with pytest.raises(ManifestError) as info:
        parse_manifest(as_yaml(doc))
    assert info.value.errors == [
        "spec.components[0].traits[0].properties.instanses: unknown key 'instanses' for a spreadscaler: "
        "did you mean 'instances'?"
    ]
    assert not [w for w in info.value.warnings if "spreadscaler" in w], info.value.warnings


def test_every_missing_link_target_is_an_error() -> None:
    """wadm refuses a manifest whose links name components it does not list ("The following
    capability component(s) are missing from the manifest: ..."), from any source, components and
    capabilities alike; each missing target is named at its link."""
    doc = base()
    comp(doc, 0)["traits"][1]["properties"]["target"] = {"name": "kvx"}
    comp(doc, 1)["traits"] = [
        {
            "type": "link",
            "properties": {
                "namespace": "wasi",
                "package": "http",
                "interfaces": ["incoming-handler"],
                "target": {"name": "ghost"},
            },
        }
    ]
    errors = errors_of(doc)
    assert errors == [
        "spec.components[0].traits[1].properties.target.name: no component named 'kvx' in this manifest "
        "(components: a, b)",
        "spec.components[1].traits[0].properties.target.name: no component named 'ghost' in this manifest "
        "(components: a, b)",
    ]


def test_a_link_to_a_shared_reference_is_not_missing() -> None:
    """A component listed by reference to a shared application counts as listed, as in wadm."""
    doc = base()
    comp(doc, 1)["properties"] = {"application": {"name": "shared-kv", "component": "kv"}}
    manifest, _ = parse_manifest(as_yaml(doc))
    assert [c.name for c in manifest.components] == ["a", "b"]
