"""OCI reference parsing, the fetch policy, and registry credential sources (no network)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from wasmlattice.artifacts.auth import (
    Credential,
    Credentials,
    flag_credentials,
    load_docker_config,
    normalize_registry,
    static_source,
)
from wasmlattice.artifacts.fetch import FetchPolicy
from wasmlattice.artifacts.oci import parse_challenge
from wasmlattice.artifacts.push import wasm_config, wasm_manifest
from wasmlattice.artifacts.reference import OciReference, parse_oci_ref, scheme_of
from wasmlattice.artifacts.source import ArtifactError

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("localhost:5000/hello:0.1.0", OciReference("localhost:5000", "hello", "0.1.0")),
        ("ghcr.io/org/x:1", OciReference("ghcr.io", "org/x", "1")),
        ("oci://ghcr.io/org/x:1", OciReference("ghcr.io", "org/x", "1")),
        ("https://ghcr.io/org/x:1", OciReference("ghcr.io", "org/x", "1")),
        ("http://127.0.0.1:5000/a/b:v2", OciReference("127.0.0.1:5000", "a/b", "v2")),
        (f"ghcr.io/org/x@{D}", OciReference("ghcr.io", "org/x", None, D)),
        (f"ghcr.io/org/x:1@{D}", OciReference("ghcr.io", "org/x", "1", D)),
        ("hello:1", OciReference("docker.io", "library/hello", "1")),
        ("org/hello:1", OciReference("docker.io", "org/hello", "1")),
        ("index.docker.io/org/hello:1", OciReference("docker.io", "org/hello", "1")),
        ("ghcr.io/org/x", OciReference("ghcr.io", "org/x")),
    ],
)
def test_parse_oci_ref(ref: str, expected: OciReference) -> None:
    assert parse_oci_ref(ref) == expected


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ("", "empty"),
        ("ghcr.io/Org/x:1", "repository"),
        ("ghcr.io/org/x:-bad", "tag"),
        ("ghcr.io/org/x@sha256:abc", "digest"),
        ("ghcr.io/org/x@md5:" + "a" * 32, "digest"),
        ("ftp://ghcr.io/x:1", "scheme"),
        ("bad_host:99/x:1", "registry"),
        ("host.io:99999/x:1", "registry"),
        ("ghcr.io/" + "a" * 600, "too long"),
    ],
)
def test_parse_oci_ref_refuses(ref: str, needle: str) -> None:
    with pytest.raises(ArtifactError, match=needle):
        parse_oci_ref(ref)


def test_reference_properties() -> None:
    r = parse_oci_ref("localhost:5000/a:latest")
    assert r.is_latest and r.reference == "latest" and r.hostname == "localhost"
    assert parse_oci_ref("localhost:5000/a").is_latest
    assert not parse_oci_ref(f"localhost:5000/a@{D}").is_latest
    assert parse_oci_ref("hello:1").api_host == "registry-1.docker.io"
    assert str(parse_oci_ref(f"oci://ghcr.io/o/x:1@{D}")) == f"ghcr.io/o/x:1@{D}"
    assert [scheme_of(r) for r in ("ghcr.io/x:1", "oci://a/b:1", "file:///x", "lattice://x")] == [
        "oci",
        "oci",
        "file",
        "lattice",
    ]


def test_policy_refuses_latest_and_undeclared_plain_http() -> None:
    policy = FetchPolicy.of(allow_latest=False, allowed_insecure=["localhost:5000"])
    with pytest.raises(ArtifactError, match=r"latest.*--allow-latest"):
        policy.check_oci("ghcr.io/o/x:latest")
    with pytest.raises(ArtifactError, match="no tag or digest"):
        policy.check_oci("ghcr.io/o/x")
    with pytest.raises(ArtifactError, match=r"plain HTTP.*--allowed-insecure"):
        policy.check_oci("http://ghcr.io/o/x:1")
    policy.check_oci("http://localhost:5000/o/x:1")
    FetchPolicy.of(allow_latest=True).check_oci("ghcr.io/o/x")


def test_docker_config(tmp_path: Path) -> None:
    auth = base64.b64encode(b"me:pa:ss").decode()
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": auth},
                    "localhost:5000": {"username": "u", "password": "p"},
                    "ghcr.io": {"identitytoken": "x"},
                },
                "credsStore": "desktop",
            }
        )
    )
    creds = load_docker_config(cfg)
    assert set(creds) == {"docker.io", "localhost:5000"}
    assert (creds["docker.io"].username, creds["docker.io"].password) == ("me", "pa:ss")
    assert "pa:ss" not in repr(creds["docker.io"])
    assert load_docker_config(tmp_path / "missing.json") == {}
    cfg.write_text(json.dumps({"auths": {"x.io": {"auth": "!!!"}}}))
    with pytest.raises(ArtifactError, match=r"auths.x.io.auth is not base64"):
        load_docker_config(cfg)
    cfg.write_text("{")
    with pytest.raises(ArtifactError, match="not JSON"):
        load_docker_config(cfg)


def test_credential_order_and_flags() -> None:
    first = Credential("a", "1", origin="registry.put")
    second = Credential("b", "2", origin="--oci-user")
    creds = Credentials([static_source({"ghcr.io": first}), static_source({"https://ghcr.io": second})])
    assert creds.lookup("ghcr.io") is first
    assert creds.lookup("quay.io") is None
    assert normalize_registry("https://registry-1.docker.io/v2/") == "docker.io"
    assert flag_credentials(None, None, None) == {}
    assert flag_credentials("ghcr.io", "u", "p")["ghcr.io"].username == "u"
    with pytest.raises(ArtifactError, match="all three"):
        flag_credentials("ghcr.io", "u", None)


def test_challenge_parsing() -> None:
    ch = parse_challenge('Bearer realm="https://auth.io/token",service="reg",scope="repository:a/b:pull"')
    assert ch is not None and ch.scheme == "bearer"
    assert ch.params == {"realm": "https://auth.io/token", "service": "reg", "scope": "repository:a/b:pull"}
    basic = parse_challenge('Basic realm="x"')
    assert basic is not None and basic.scheme == "basic"
    assert parse_challenge("Negotiate") is None


def test_wasm_artifact_layout() -> None:
    data = b"\0asm\x0d\x00\x01\x00rest"
    config = json.loads(wasm_config(data, ["wasi:cli/env@0.2.0"], ["wasi:http/incoming-handler@0.2.0"]))
    assert config["architecture"] == "wasm" and config["os"] == "wasip2"
    assert config["layerDigests"] == ["sha256:" + __import__("hashlib").sha256(data).hexdigest()]
    assert config["component"]["exports"] == ["wasi:http/incoming-handler@0.2.0"]
    assert config["created"].endswith("Z")
    module = json.loads(wasm_config(b"\0asm\x01\x00\x00\x00"))
    assert module["os"] == "wasip1" and "component" not in module
    manifest = json.loads(wasm_manifest(b"{}", data, {"k": "v"}))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.wasm.config.v0+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/wasm"]
    assert manifest["annotations"] == {"k": "v"}
