"""Golden tests pinning control-interface payloads, subjects and events to the wasmCloud v1 reference.

Expected JSON is written literally from docs/protocol.md (control interface, events, links), not
derived from the models, so a renamed field, a wrong default or a null-instead-of-omitted fails here.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from wasmlattice.protocol import events as ev
from wasmlattice.protocol import subjects as sj
from wasmlattice.protocol.models import (
    ClaimsList,
    ComponentAuctionAck,
    ComponentAuctionRequest,
    ComponentDescription,
    CtlResponse,
    DeleteInterfaceLinkDefinitionRequest,
    Host,
    HostInventory,
    HostLabel,
    HostLabelIdentifier,
    Link,
    LinkList,
    NamedConfig,
    PayloadError,
    ProviderAuctionAck,
    ProviderAuctionRequest,
    ProviderDescription,
    RegistryCredentialMap,
    ScaleComponentCommand,
    StartProviderCommand,
    StopHostCommand,
    StopProviderCommand,
    UpdateComponentCommand,
    fallback_error_body,
    is_reserved_label,
    parse_payload,
)
from wasmlattice.protocol.subjects import CtlOperation as Op
from wasmlattice.protocol.wire import WireModel

NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
HOST = "NBXHOSTIDEXAMPLE"


def wire(model: Any) -> Any:
    """Decode what the model puts on the wire."""
    return json.loads(model.to_wire())


# --- subjects ---


def test_ctl_subjects_literal() -> None:
    p = "wasmbus.ctl.v1.default"
    assert sj.ctl_subject(Op.COMPONENT_AUCTION) == f"{p}.component.auction"
    assert sj.ctl_subject(Op.COMPONENT_SCALE, target=HOST) == f"{p}.component.scale.{HOST}"
    assert sj.ctl_subject(Op.COMPONENT_UPDATE, target=HOST) == f"{p}.component.update.{HOST}"
    assert sj.ctl_subject(Op.PROVIDER_AUCTION) == f"{p}.provider.auction"
    assert sj.ctl_subject(Op.PROVIDER_START, target=HOST) == f"{p}.provider.start.{HOST}"
    assert sj.ctl_subject(Op.PROVIDER_STOP, target=HOST) == f"{p}.provider.stop.{HOST}"
    assert sj.ctl_subject(Op.HOST_PING) == f"{p}.host.ping"
    assert sj.ctl_subject(Op.HOST_GET, target=HOST) == f"{p}.host.get.{HOST}"
    assert sj.ctl_subject(Op.HOST_STOP, target=HOST) == f"{p}.host.stop.{HOST}"
    assert sj.ctl_subject(Op.LABEL_PUT, target=HOST) == f"{p}.label.put.{HOST}"
    assert sj.ctl_subject(Op.LABEL_DEL, target=HOST) == f"{p}.label.del.{HOST}"
    assert sj.ctl_subject(Op.LINK_PUT) == f"{p}.link.put"
    assert sj.ctl_subject(Op.LINK_DEL) == f"{p}.link.del"
    assert sj.ctl_subject(Op.LINK_GET) == f"{p}.link.get"
    assert sj.ctl_subject(Op.CLAIMS_GET) == f"{p}.claims.get"
    assert sj.ctl_subject(Op.CONFIG_PUT, target="cfg") == f"{p}.config.put.cfg"
    assert sj.ctl_subject(Op.CONFIG_GET, target="cfg") == f"{p}.config.get.cfg"
    assert sj.ctl_subject(Op.CONFIG_DEL, target="cfg") == f"{p}.config.del.cfg"
    assert sj.ctl_subject(Op.REGISTRY_PUT) == f"{p}.registry.put"
    assert sj.ctl_subject(Op.HOST_PING, "lat1", None, "custom.ctl") == "custom.ctl.v1.lat1.host.ping"


def test_subject_tokens_rejected() -> None:
    with pytest.raises(ValueError, match="subject token"):
        sj.ctl_subject(Op.CONFIG_PUT, target="a.b")
    with pytest.raises(ValueError, match="needs a host ID"):
        sj.ctl_subject("component.scale")
    with pytest.raises(ValueError, match="no trailing"):
        sj.ctl_subject("host.ping", target=HOST)


def test_host_subscriptions_and_queue_groups() -> None:
    p = "wasmbus.ctl.v1.lat"
    subs = {(s.subject, s.queue) for s in sj.host_subscriptions(HOST, "lat")}
    assert subs == {
        (f"{p}.component.auction", None),
        (f"{p}.provider.auction", None),
        (f"{p}.component.*.{HOST}", None),
        (f"{p}.provider.*.{HOST}", None),
        (f"{p}.host.*.{HOST}", None),
        (f"{p}.host.ping", None),
        (f"{p}.label.*.{HOST}", None),
        (f"{p}.link.*", f"{p}.link"),
        (f"{p}.claims.get", f"{p}.claims"),
        (f"{p}.config.>", f"{p}.config"),
        (f"{p}.registry.put", None),
    }
    off = sj.host_subscriptions(HOST, "lat", component_auctions=False, provider_auctions=False)
    assert not any(s.subject.endswith("auction") for s in off)


@pytest.mark.parametrize(
    ("subject", "op", "host", "extra"),
    [
        ("wasmbus.ctl.v1.default.component.auction", "component.auction", None, ()),
        (f"wasmbus.ctl.v1.default.component.scale.{HOST}", "component.scale", HOST, ()),
        (f"wasmbus.ctl.v1.default.component.update.{HOST}", "component.update", HOST, ()),
        (f"wasmbus.ctl.v1.default.provider.start.{HOST}", "provider.start", HOST, ()),
        (f"wasmbus.ctl.v1.default.provider.stop.{HOST}", "provider.stop", HOST, ()),
        (f"wasmbus.ctl.v1.default.host.get.{HOST}", "host.get", HOST, ()),
        (f"wasmbus.ctl.v1.default.host.stop.{HOST}", "host.stop", HOST, ()),
        ("wasmbus.ctl.v1.default.host.ping", "host.ping", None, ()),
        (f"wasmbus.ctl.v1.default.label.put.{HOST}", "label.put", HOST, ()),
        (f"wasmbus.ctl.v1.default.label.del.{HOST}", "label.del", HOST, ()),
        ("wasmbus.ctl.v1.default.link.put", "link.put", None, ()),
        ("wasmbus.ctl.v1.default.link.del", "link.del", None, ()),
        ("wasmbus.ctl.v1.default.link.get", "link.get", None, ()),
        ("wasmbus.ctl.v1.default.claims.get", "claims.get", None, ()),
        ("wasmbus.ctl.v1.default.config.put.cfg", "config.put", None, ("cfg",)),
        ("wasmbus.ctl.v1.default.config.get.cfg", "config.get", None, ("cfg",)),
        ("wasmbus.ctl.v1.default.config.del.cfg", "config.del", None, ("cfg",)),
        ("wasmbus.ctl.v1.default.registry.put", "registry.put", None, ()),
    ],
)
def test_parse_ctl_subject(subject: str, op: str, host: str | None, extra: tuple[str, ...]) -> None:
    parsed = sj.parse_ctl_subject(subject)
    assert (parsed.operation.value, parsed.host_id, parsed.extra, parsed.lattice) == (
        op,
        host,
        extra,
        "default",
    )


@pytest.mark.parametrize(
    "subject",
    [
        "wasmbus.ctl.v1.default.config.put.a.b",  # dotted config name
        "wasmbus.ctl.v1.default.component.scale",  # host missing
        "wasmbus.ctl.v1.default.host.ping.extra",
        "wasmbus.ctl.v1.default.nope.get",
        "wasmbus.ctl.v2.default.host.ping",
        "other.ctl.v1.default.host.ping",
        "wasmbus.ctl.v1.default",
    ],
)
def test_parse_unsupported_subject(subject: str) -> None:
    with pytest.raises(sj.UnsupportedSubjectError) as info:
        sj.parse_ctl_subject(subject)
    assert str(info.value) == "unsupported subject"


def test_custom_prefix_parse_and_events_and_kv() -> None:
    assert sj.parse_ctl_subject("my.pfx.v1.l2.host.ping", "my.pfx").lattice == "l2"
    assert sj.event_subject("host_started", "lat") == "wasmbus.evt.lat.host_started"
    assert sj.events_wildcard("lat") == "wasmbus.evt.lat.>"
    assert sj.lattice_data_bucket("lat") == "LATTICEDATA_lat"
    assert sj.config_data_bucket("lat") == "CONFIGDATA_lat"
    assert sj.component_spec_key("echo") == "COMPONENT_echo"
    assert sj.claims_key("MABC") == "CLAIMS_MABC"
    assert sj.parse_lattice_key("COMPONENT_echo") == sj.LatticeKey("component", "echo")
    assert sj.parse_lattice_key("LINKDEF_x").kind == "legacy"
    assert sj.is_secret_reference("SECRET_db") and not sj.is_secret_reference("db")
    assert sj.provider_shutdown("p1", "lat") == "wasmbus.rpc.lat.p1.default.shutdown"
    assert sj.provider_health("p1", "lat") == "wasmbus.rpc.lat.p1.health"
    assert sj.linkdefs_del("p1", "lat") == "wasmbus.rpc.lat.p1.linkdefs.del"


# --- envelope ---


def test_ctl_response_envelope() -> None:
    assert wire(CtlResponse[None].fail("boom")) == {"success": False, "message": "boom"}
    assert wire(CtlResponse[None].ok()) == {"success": True, "message": ""}
    assert wire(CtlResponse[list[Link]].ok([])) == {"success": True, "message": "", "response": []}
    assert json.loads(fallback_error_body("x")) == {"success": False, "error": "x"}
    ack = ComponentAuctionAck(component_ref="r", component_id="c", host_id=HOST, constraints={"a": "b"})
    got = CtlResponse[ComponentAuctionAck].from_wire(CtlResponse.ok(ack).to_wire())
    assert got.response == ack


# --- auction acks: literal JSON of the field names of docs/protocol.md#payloads ---


def test_component_auction_ack_literal_json() -> None:
    ack = ComponentAuctionAck(
        component_ref="file:///echo.wasm", component_id="echo", host_id=HOST, constraints={"zone": "eu"}
    )
    assert ack.to_wire() == (
        b'{"component_ref":"file:///echo.wasm","component_id":"echo",'
        b'"host_id":"NBXHOSTIDEXAMPLE","constraints":{"zone":"eu"}}'
    )
    # What a v1 host replies to `component.auction`, read by field name (all fields default).
    reply = (
        b'{"success":true,"message":"","response":{"component_ref":"r","component_id":"c",'
        b'"host_id":"NBXHOSTIDEXAMPLE","constraints":{"a":"b"}}}'
    )
    got = CtlResponse[ComponentAuctionAck].from_wire(reply).response
    assert got == ComponentAuctionAck(
        component_ref="r", component_id="c", host_id=HOST, constraints={"a": "b"}
    )
    assert wire(ComponentAuctionAck.from_wire(b"{}")) == {
        "component_ref": "",
        "component_id": "",
        "host_id": "",
        "constraints": {},
    }


def test_provider_auction_ack_literal_json() -> None:
    ack = ProviderAuctionAck(
        host_id=HOST, provider_ref="builtin://http-server", provider_id="web", constraints={"zone": "eu"}
    )
    assert ack.to_wire() == (
        b'{"host_id":"NBXHOSTIDEXAMPLE","provider_ref":"builtin://http-server",'
        b'"provider_id":"web","constraints":{"zone":"eu"}}'
    )
    reply = (
        b'{"success":true,"message":"","response":{"host_id":"NBXHOSTIDEXAMPLE",'
        b'"provider_ref":"p","provider_id":"web","constraints":{}}}'
    )
    got = CtlResponse[ProviderAuctionAck].from_wire(reply).response
    assert got == ProviderAuctionAck(host_id=HOST, provider_ref="p", provider_id="web", constraints={})


def test_interface_link_definition_put_payload() -> None:
    from wasmlattice.lattice.control import interface_link

    link = Link(
        source_id="web",
        target="echo",
        wit_namespace="wasi",
        wit_package="http",
        interfaces=["incoming-handler"],
        source_config=["addr", "extra"],
    )
    ild = interface_link(link, source_config={"address": "127.0.0.1:8080", "x": "1"}, target_config={})
    # docs/protocol.md#provider-link-definition: configs are resolved maps, secrets null (never omitted).
    assert ild.to_wire() == (
        b'{"source_id":"web","target":"echo","name":"default","wit_namespace":"wasi",'
        b'"wit_package":"http","interfaces":["incoming-handler"],'
        b'"source_config":{"address":"127.0.0.1:8080","x":"1"},"target_config":{},'
        b'"source_secrets":null,"target_secrets":null}'
    )
    assert sj.linkdefs_put("web", "lat") == "wasmbus.rpc.lat.web.linkdefs.put"


# --- requests: literal canonical JSON, defaults, round-trips ---


def test_scale_component_defaults_and_omissions() -> None:
    cmd = parse_payload(ScaleComponentCommand, b'{"component_id":"echo"}')
    assert wire(cmd) == {
        "component_ref": "",
        "component_id": "echo",
        "count": 0,
        "host_id": "",
        "config": [],
        "allow_update": False,
    }


def test_scale_component_roundtrip_and_max_instances_is_not_count() -> None:
    full = {
        "component_ref": "ghcr.io/x/echo:0.1.0",
        "component_id": "echo",
        "count": 5,
        "annotations": {"wasmcloud.dev/appspec": "app"},
        "component_limits": {"max_memory_limit": "1048576"},
        "host_id": HOST,
        "config": ["a", "SECRET_b"],
        "allow_update": True,
    }
    assert wire(ScaleComponentCommand.from_wire(json.dumps(full).encode())) == full
    # A sender using `max_instances` gets count 0, i.e. a stop (docs/protocol.md#payloads).
    assert ScaleComponentCommand.from_wire(b'{"component_id":"e","max_instances":4}').count == 0


@pytest.mark.parametrize(
    ("model", "body", "expected"),
    [
        (
            UpdateComponentCommand,
            {},
            {"component_id": "", "new_component_ref": "", "host_id": ""},
        ),
        (
            StartProviderCommand,
            {"provider_id": "p"},
            {"provider_id": "p", "provider_ref": "", "host_id": "", "config": []},
        ),
        (StopProviderCommand, {"provider_ref": "p"}, {"host_id": "", "provider_id": "p"}),
        (StopHostCommand, {"timeout": 500}, {"host_id": "", "timeout": 500}),
        (StopHostCommand, {}, {"host_id": ""}),
        (
            ComponentAuctionRequest,
            {"component_id": "c", "constraints": {}},
            {"component_ref": "", "component_id": "c", "constraints": {}},
        ),
        (
            ProviderAuctionRequest,
            {"provider_id": "p", "constraints": {"zone": "a"}},
            {"provider_ref": "", "provider_id": "p", "constraints": {"zone": "a"}},
        ),
        (
            ProviderAuctionAck,
            {},
            {"host_id": "", "provider_ref": "", "provider_id": "", "constraints": {}},
        ),
        (
            DeleteInterfaceLinkDefinitionRequest,
            {"source_id": "s", "wit_namespace": "wasi", "wit_package": "keyvalue"},
            {"source_id": "s", "name": "default", "wit_namespace": "wasi", "wit_package": "keyvalue"},
        ),
        (HostLabel, {"key": "zone", "value": "a"}, {"key": "zone", "value": "a"}),
        (HostLabelIdentifier, {"key": "zone"}, {"key": "zone"}),
    ],
)
def test_request_canonical_json(
    model: type[WireModel], body: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert wire(parse_payload(model, json.dumps(body).encode())) == expected


def test_stop_host_empty_payload() -> None:
    assert wire(parse_payload(StopHostCommand, b"")) == {"host_id": ""}


def test_link_defaults_and_roundtrip() -> None:
    link = Link.from_wire(
        b'{"source_id":"s","target":"t","wit_namespace":"wasi","wit_package":"keyvalue",'
        b'"interfaces":["store","atomics"]}'
    )
    expected = {
        "source_id": "s",
        "target": "t",
        "name": "default",
        "wit_namespace": "wasi",
        "wit_package": "keyvalue",
        "interfaces": ["store", "atomics"],
        "source_config": [],
        "target_config": [],
    }
    assert wire(link) == expected
    assert wire(LinkList.from_wire(json.dumps([expected]).encode())) == [expected]


def test_config_registry_claims_payloads() -> None:
    assert wire(NamedConfig.from_wire(b'{"k":"v"}')) == {"k": "v"}
    regs = RegistryCredentialMap.from_wire(
        b'{"ghcr.io":{"username":"u","password":"p"},"docker.io":{"token":"t","registryType":"oci"}}'
    )
    assert wire(regs) == {
        "ghcr.io": {"username": "u", "password": "p", "registryType": "oci"},
        "docker.io": {"token": "t", "registryType": "oci"},
    }
    assert regs.root["ghcr.io"].auth_kind() == "basic"
    assert regs.root["docker.io"].auth_kind() == "token"
    claims = [{"iss": "A", "issuer": "A", "sub": "M", "subject": "M", "tags": "a,b"}]
    assert wire(ClaimsList.from_wire(json.dumps(claims).encode())) == claims


# --- responses ---


def test_host_ping_response_omits_optionals() -> None:
    host = Host(id=HOST, friendly_name="a-b-1234", labels={"hostcore.os": "linux"}, lattice="default")
    assert wire(host) == {
        "id": HOST,
        "friendly_name": "a-b-1234",
        "labels": {"hostcore.os": "linux"},
        "lattice": "default",
        "uptime_seconds": 0,
    }
    full = {
        **wire(host),
        "uptime_human": "1h 2m 3s",
        "version": "0.1.0",
        "ctl_host": "nats://127.0.0.1:4222",
        "rpc_host": "nats://127.0.0.1:4222",
        "js_domain": "hub",
    }
    assert wire(Host.from_wire(json.dumps(full).encode())) == full


def test_inventory_shape_limits_null_and_actors_alias() -> None:
    inv = HostInventory.from_wire(
        json.dumps(
            {
                "host_id": HOST,
                "actors": [{"id": "echo", "image_ref": "r", "max_instances": 2}],
                "providers": [{"id": "p"}],
            }
        ).encode()
    )
    assert wire(inv) == {
        "host_id": HOST,
        "friendly_name": "",
        "labels": {},
        "version": "",
        "uptime_human": "",
        "uptime_seconds": 0,
        "components": [{"id": "echo", "image_ref": "r", "revision": 0, "max_instances": 2, "limits": None}],
        "providers": [{"id": "p", "revision": 0}],
    }
    comp = ComponentDescription(id="c", image_ref="r", name="n", annotations={}, limits={"a": "1"})
    assert wire(comp) == {
        "id": "c",
        "image_ref": "r",
        "name": "n",
        "annotations": {},
        "revision": 0,
        "max_instances": 0,
        "limits": {"a": "1"},
    }
    prov = ProviderDescription(id="p", image_ref="r", name="n", revision=3, annotations={})
    assert wire(prov) == {"id": "p", "image_ref": "r", "name": "n", "revision": 3, "annotations": {}}


def test_reserved_labels() -> None:
    assert is_reserved_label("HostCore.os") and not is_reserved_label("zone")


# --- malformed payloads ---


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (
            Link,
            b'{"source_id":42,"target":"t","wit_namespace":"w","wit_package":"p","interfaces":[]}',
            "link.put: field 'source_id': expected a string, found 42",
        ),
        (
            Link,
            b'{"source_id":"s","wit_namespace":"w","wit_package":"p","interfaces":[]}',
            "link.put: missing required field 'target'",
        ),
        (
            Link,
            b'{"source_id":"s","target":"t","wit_namespace":"w","wit_package":"p","interfaces":["a",1]}',
            "link.put: field 'interfaces[1]': expected a string, found 1",
        ),
        (Link, b"[1,2]", "link.put: expected a JSON object, found an array"),
        (Link, b"", "link.put: expected a JSON object, found an empty payload"),
        (
            Link,
            b'{"source_id":',
            "link.put: invalid JSON at line 1 column 14: Expecting value",
        ),
        (ScaleComponentCommand, b"{}", "component.scale: missing required field 'component_id'"),
        (
            ScaleComponentCommand,
            b'{"component_id":"c","count":"5"}',
            "component.scale: field 'count': expected an integer, found \"5\"",
        ),
        (
            ScaleComponentCommand,
            b'{"component_id":"c","count":-1}',
            "component.scale: field 'count': expected a number >= 0, found -1",
        ),
        (
            ScaleComponentCommand,
            b'{"component_id":"c","allow_update":1}',
            "component.scale: field 'allow_update': expected a boolean, found 1",
        ),
        (ScaleComponentCommand, b'"x"', "component.scale: expected a JSON object, found a string"),
        (ScaleComponentCommand, b"NaN", "component.scale: invalid JSON: NaN is not valid JSON"),
        (
            ScaleComponentCommand,
            b"\xff",
            "component.scale: invalid JSON: payload is not valid UTF-8 (byte 0)",
        ),
        (NamedConfig, b'{"k":1}', "config.put: field 'k': expected a string, found 1"),
        (
            RegistryCredentialMap,
            b'{"ghcr.io":{"username":7}}',
            "registry.put: field '[\"ghcr.io\"].username': expected a string, found 7",
        ),
        (
            HostInventory,
            b'{"components":[{"id":3}]}',
            "host.get response: field 'components[0].id': expected a string, found 3",
        ),
        (LinkList, b"{}", "link.get response: expected a JSON array, found an object"),
        (HostLabel, b'{"key":"k"}', "label.put: missing required field 'value'"),
    ],
)
def test_malformed_payload_messages(model: type[Any], data: bytes, message: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_payload(model, data)
    assert info.value.message == message


def test_multiple_errors_are_all_reported() -> None:
    with pytest.raises(PayloadError) as info:
        parse_payload(HostLabel, b'{"key":1}')
    assert (
        str(info.value)
        == "label.put: field 'key': expected a string, found 1; missing required field 'value'"
    )


# --- events ---


def envelope_ok(event: ev.CloudEvent, event_type: str) -> dict[str, Any]:
    """Check the CloudEvents envelope field by field and return the data object."""
    body = wire(event)
    assert set(body) == {"specversion", "id", "source", "type", "time", "datacontenttype", "data"}
    assert body["specversion"] == "1.0"
    assert str(uuid.UUID(body["id"])) == body["id"]
    assert body["source"] == HOST
    assert body["type"] == f"com.wasmcloud.lattice.{event_type}"
    assert body["time"] == "2024-05-06T07:08:09.123456Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", body["time"])
    assert body["datacontenttype"] == "application/json"
    assert event.subject("lat") == f"wasmbus.evt.lat.{event_type}"
    data: dict[str, Any] = body["data"]
    return data


LINK = Link(source_id="s", target="t", wit_namespace="wasi", wit_package="keyvalue", interfaces=["store"])
LINK_JSON = {
    "source_id": "s",
    "target": "t",
    "name": "default",
    "wit_namespace": "wasi",
    "wit_package": "keyvalue",
    "interfaces": ["store"],
    "source_config": [],
    "target_config": [],
}


@pytest.mark.parametrize(
    ("event", "event_type", "data"),
    [
        (
            ev.host_started(HOST, friendly_name="f", labels={"a": "b"}, version="1", now=NOW),
            "host_started",
            {"friendly_name": "f", "labels": {"a": "b"}, "uptime_seconds": 0, "version": "1"},
        ),
        (ev.host_stopped(HOST, labels={"a": "b"}, now=NOW), "host_stopped", {"labels": {"a": "b"}}),
        (
            ev.labels_changed(HOST, labels={"a": "b"}, now=NOW),
            "labels_changed",
            {"host_id": HOST, "labels": {"a": "b"}},
        ),
        (
            ev.component_scaled(HOST, component_id="c", image_ref="r", max_instances=3, now=NOW),
            "component_scaled",
            {"annotations": {}, "host_id": HOST, "image_ref": "r", "max_instances": 3, "component_id": "c"},
        ),
        (
            ev.component_scale_failed(
                HOST, component_id="c", image_ref="r", max_instances=1, error="e", public_key="M1", now=NOW
            ),
            "component_scale_failed",
            {
                "annotations": {},
                "component_id": "c",
                "host_id": HOST,
                "image_ref": "r",
                "max_instances": 1,
                "error": "e",
                "public_key": "M1",
            },
        ),
        (
            ev.provider_started(HOST, provider_id="p", image_ref="r", now=NOW),
            "provider_started",
            {"host_id": HOST, "image_ref": "r", "provider_id": "p", "annotations": {}},
        ),
        (
            ev.provider_started(
                HOST, provider_id="p", image_ref="r", claims=ev.ProviderClaimsData(issuer="A"), now=NOW
            ),
            "provider_started",
            {
                "host_id": HOST,
                "image_ref": "r",
                "provider_id": "p",
                "annotations": {},
                "claims": {
                    "issuer": "A",
                    "tags": None,
                    "name": None,
                    "version": None,
                    "not_before_human": "never",
                    "expires_human": "never",
                },
                "instance_id": "p",
                "public_key": "p",
                "link_name": "default",
            },
        ),
        (
            ev.provider_start_failed(HOST, provider_id="p", provider_ref="r", error="e", now=NOW),
            "provider_start_failed",
            {"provider_ref": "r", "provider_id": "p", "host_id": HOST, "error": "e", "link_name": "default"},
        ),
        (
            ev.provider_stopped(HOST, provider_id="p", now=NOW),
            "provider_stopped",
            {
                "host_id": HOST,
                "provider_id": "p",
                "annotations": {},
                "reason": "stop",
                "instance_id": "p",
                "public_key": "p",
                "link_name": "default",
            },
        ),
        (
            ev.health_check_passed(HOST, provider_id="p", now=NOW),
            "health_check_passed",
            {"host_id": HOST, "provider_id": "p"},
        ),
        (
            ev.health_check_failed(HOST, provider_id="p", now=NOW),
            "health_check_failed",
            {"host_id": HOST, "provider_id": "p"},
        ),
        (
            ev.health_check_status(HOST, provider_id="p", now=NOW),
            "health_check_status",
            {"host_id": HOST, "provider_id": "p"},
        ),
        (ev.linkdef_set(HOST, LINK, now=NOW), "linkdef_set", LINK_JSON),
        (
            ev.linkdef_set_failed(HOST, LINK, error="e", now=NOW),
            "linkdef_set_failed",
            {**LINK_JSON, "error": "e"},
        ),
        (
            ev.linkdef_deleted(
                HOST, source_id="s", name="default", wit_namespace="w", wit_package="p", now=NOW
            ),
            "linkdef_deleted",
            {"source_id": "s", "name": "default", "wit_namespace": "w", "wit_package": "p"},
        ),
        (
            ev.linkdef_deleted(
                HOST, source_id="s", name="n", wit_namespace="w", wit_package="p", removed=LINK, now=NOW
            ),
            "linkdef_deleted",
            {
                "source_id": "s",
                "name": "n",
                "wit_namespace": "w",
                "wit_package": "p",
                "target": "t",
                "interfaces": ["store"],
            },
        ),
        (ev.config_set(HOST, config_name="c", now=NOW), "config_set", {"config_name": "c"}),
        (ev.config_deleted(HOST, config_name="c", now=NOW), "config_deleted", {"config_name": "c"}),
    ],
)
def test_event_envelope_and_data(event: ev.CloudEvent, event_type: str, data: dict[str, Any]) -> None:
    assert envelope_ok(event, event_type) == data


def test_heartbeat_is_inventory() -> None:
    inv = HostInventory(host_id=HOST, friendly_name="f", version="1", uptime_human="1s", uptime_seconds=1)
    data = envelope_ok(ev.host_heartbeat(inv, now=NOW), "host_heartbeat")
    assert data == {
        "host_id": HOST,
        "friendly_name": "f",
        "labels": {},
        "version": "1",
        "uptime_human": "1s",
        "uptime_seconds": 1,
        "components": [],
        "providers": [],
    }


def test_component_scaled_signed_claims() -> None:
    full = ev.ComponentClaimsData(
        issuer="A", call_alias=None, tags=["t"], name="n", version="1.0", revision=2, expires_human="99"
    )
    data = envelope_ok(
        ev.component_scaled(
            HOST, component_id="c", image_ref="r", max_instances=1, public_key="M", claims=full, now=NOW
        ),
        "component_scaled",
    )
    assert data["public_key"] == "M"
    assert data["claims"] == {
        "issuer": "A",
        "call_alias": None,
        "tags": ["t"],
        "name": "n",
        "version": "1.0",
        "revision": 2,
        "not_before_human": "never",
        "expires_human": "99",
    }
    bare = ev.ComponentClaimsData(issuer="A", has_metadata=False, not_before_human="5")
    assert wire(bare) == {"issuer": "A", "not_before_human": "5", "expires_human": "never"}
    assert ev.human_epoch(None) == "never" and ev.human_epoch(12) == "12"


def test_event_roundtrip_and_ids_are_time_ordered() -> None:
    event = ev.config_set(HOST, config_name="c", now=NOW)
    again = ev.CloudEvent.from_wire(event.to_wire())
    assert again == event and again.event_type == "config_set"
    early, late = ev.ulid_uuid(1_000), ev.ulid_uuid(2_000)
    assert early < late
    assert uuid.UUID(early).bytes[:6] == (1_000).to_bytes(6, "big")
