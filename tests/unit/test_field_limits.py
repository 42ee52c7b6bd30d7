"""The input limits of the control plane (docs/protocol.md#field-limits), as a parser sees them.

Each hostile value is refused by `parse_payload` with a one-line message naming the field and the
limit; values within the limits still parse, so wasmCloud's own payloads keep working.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from wasmlattice.apps.manifest.load import parse_manifest
from wasmlattice.apps.manifest.model import ManifestError
from wasmlattice.host.host import Host, LabelError, merge_labels, parse_label_args
from wasmlattice.protocol import limits
from wasmlattice.protocol.models import (
    ComponentSpecification,
    HostLabel,
    Link,
    NamedConfig,
    PayloadError,
    RegistryCredentialMap,
    ScaleComponentCommand,
    StartProviderCommand,
    parse_payload,
)

LINK = {
    "source_id": "src",
    "target": "kv-provider",
    "wit_namespace": "wasi",
    "wit_package": "keyvalue",
    "interfaces": ["store"],
}


def refused(model: type[Any], body: bytes | dict[str, Any]) -> str:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(PayloadError) as info:
        parse_payload(model, data)
    return info.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"component_id": "x" * 257}, "component.scale: component_id: longer than 256 characters"),
        ({"component_id": "*"}, "component_id: contains '*': it becomes a NATS subject token"),
        ({"component_id": "a.b"}, "component_id: contains '.'"),
        ({"component_id": "a b"}, "component_id: contains U+0020"),
        ({"component_id": ""}, "component_id: must not be empty"),
        ({"component_id": "c", "config": ["ok", "no.dot"]}, "config[1]: contains '.'"),
        ({"component_id": "c", "config": ["c"] * 65}, "config: at most 64 entries, found 65"),
        ({"component_id": "c", "component_ref": "r" * 4097}, "component_ref: longer than 4096 characters"),
        ({"component_id": "c", "host_id": "N" * 300}, "host_id: longer than 256 characters"),
        ({"component_id": "c", "annotations": {"k": "v" * 4097}}, "annotations.k: longer than 4096"),
        ({"component_id": "c", "annotations": {" k": "v"}}, "(key): contains U+0020"),
    ],
)
def test_scale_fields_are_refused_by_name(body: dict[str, Any], message: str) -> None:
    assert message in refused(ScaleComponentCommand, body)


def test_values_within_the_limits_parse() -> None:
    cmd = parse_payload(
        ScaleComponentCommand,
        json.dumps(
            {
                "component_id": "app-http_component=1/x",
                "component_ref": "ghcr.io/wasmcloud/components/http-hello-world-rust:0.1.0",
                "count": 1,
                "annotations": {"wasmcloud.dev/managed-by": "wadm", "é": "😀"},
                "config": ["app-cfg", "SECRET_app-key"],
            }
        ),
    )
    assert cmd.component_id == "app-http_component=1/x"
    # A surrogate pair (one astral character) is fine; only a lone half is refused.
    assert parse_payload(HostLabel, b'{"key": "\\ud83d\\ude00", "value": "ok"}').key == "😀"
    assert parse_payload(StartProviderCommand, b'{"provider_id": "p" }').provider_id == "p"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"key": "k", "value": "\\ud800"}',
        b'{"key": "\\udfff", "value": "v"}',
        b'{"key": "k", "value": "v", "extra": ["\\ud800"]}',
    ],
)
def test_a_lone_surrogate_anywhere_is_refused(raw: bytes) -> None:
    assert "unpaired surrogate" in refused(HostLabel, raw)


def test_other_payloads() -> None:
    assert "label.put: value: longer than 4096 characters" in refused(
        HostLabel, {"key": "k", "value": "v" * 600_000}
    )
    assert "key: longer than 128 characters" in refused(HostLabel, {"key": "k" * 129, "value": "v"})
    assert "source_id: longer than 256 characters" in refused(Link, {**LINK, "source_id": "x" * 5000})
    assert "target: contains '>'" in refused(Link, {**LINK, "target": ">"})
    assert "interfaces[0]: contains U+0020" in refused(Link, {**LINK, "interfaces": ["a b"]})
    assert "name: contains '*'" in refused(Link, {**LINK, "name": "*"})
    assert "at most 64 entries" in refused(RegistryCredentialMap, {f"r{i}": {} for i in range(65)})
    assert "larger than 1048576 bytes" in refused(NamedConfig, {"k": "v" * (1024 * 1024)})


def test_stored_links_over_the_limits_are_skipped() -> None:
    spec = {"url": "", "links": [{**LINK, "target": "x" * 5000}, LINK, {**LINK, "source_id": "*"}]}
    parsed = parse_payload(ComponentSpecification, json.dumps(spec))
    assert [link.target for link in parsed.links] == ["kv-provider"]


def test_host_labels() -> None:
    host = Host()
    with pytest.raises(LabelError, match="value: longer than 4096 characters"):
        host.put_label("big", "v" * 4097)
    with pytest.raises(LabelError, match="key: contains the control character U\\+0000"):
        host.put_label("a\x00", "v")
    for i in range(limits.MAX_LABELS - len(host.labels)):
        host.put_label(f"k{i}", "v")
    with pytest.raises(LabelError, match="labels: a host has at most 64 labels"):
        host.put_label("one-more", "v")
    host.put_label("k0", "replaced")
    assert len(host.labels) == limits.MAX_LABELS
    # Start-up labels: a bad one stops the command line, the environment's are dropped with a warning.
    with pytest.raises(LabelError, match="value: longer than 4096"):
        parse_label_args(["k=" + "v" * 5000])
    merged = merge_labels({"ok": "1", "bad": "v" * 5000}, {f"c{i}": "v" for i in range(100)})
    assert "bad" not in merged and len(merged) == limits.MAX_LABELS


def test_manifest_fields_are_checked_against_the_limits() -> None:
    manifest = {
        "apiVersion": "core.oam.dev/v1beta1",
        "kind": "Application",
        "metadata": {"name": "app", "annotations": {"version": "v1"}},
        "spec": {
            "components": [
                {
                    "name": "c" * 300,
                    "type": "component",
                    "properties": {"image": "file:///c.wasm", "config": [{"name": "cfg.x"}]},
                    "traits": [
                        {"type": "spreadscaler", "properties": {"instances": 1}},
                        {
                            "type": "link",
                            "properties": {
                                "target": "c" * 300,
                                "namespace": "wasi",
                                "package": "key value",
                                "interfaces": ["store"],
                            },
                        },
                    ],
                }
            ]
        },
    }
    with pytest.raises(ManifestError) as info:
        parse_manifest(json.dumps(manifest).encode(), "application/json")
    text = "; ".join(info.value.errors)
    assert "config[0].name: contains '.'" in text
    assert "package: contains U+0020" in text
    assert "longer than 256 characters" in text
