"""`wasmlattice dev`'s manifest rewrite, HTTP address lookup and content-addressed build copies."""

from __future__ import annotations

from pathlib import Path

import yaml

from wasmlattice.cli.dev_cmd import dev_manifest, http_addresses, stage_build
from wasmlattice.project.scaffold import new_project


def test_stage_build_is_content_addressed(tmp_path: Path) -> None:
    out = tmp_path / "hello.wasm"
    out.write_bytes(b"one")
    first = stage_build(out, tmp_path / "builds")
    assert stage_build(out, tmp_path / "builds") == first
    out.write_bytes(b"two")
    second = stage_build(out, tmp_path / "builds")
    assert second != first and first.read_bytes() == b"one" and second.read_bytes() == b"two"
    assert second.name.startswith("hello-") and second.suffix == ".wasm"


def test_template_manifest_points_at_the_staged_copy(tmp_path: Path) -> None:
    root = tmp_path / "hello"
    new_project("hello", "python-http", root)
    raw = yaml.safe_load((root / "wadm.yaml").read_text())
    staged = {(root / "build" / "hello.wasm").resolve(): tmp_path / "builds" / "hello-abc.wasm"}
    out, replaced = dev_manifest(raw, root, staged)
    assert replaced == ["hello"]
    images = {c["name"]: c["properties"]["image"] for c in out["spec"]["components"]}
    assert images == {"hello": f"file://{tmp_path}/builds/hello-abc.wasm", "http": "builtin://http-server"}
    assert out["metadata"]["annotations"]["version"].startswith("dev-")
    assert raw["spec"]["components"][0]["properties"]["image"] == "file://build/hello.wasm"  # not mutated
    other, _ = dev_manifest(raw, root, {k: tmp_path / "builds" / "hello-def.wasm" for k in staged})
    assert other["metadata"]["annotations"]["version"] != out["metadata"]["annotations"]["version"]
    assert http_addresses(raw) == ["127.0.0.1:8080"]


def test_no_http_link_no_address() -> None:
    assert http_addresses({"spec": {"components": [{"name": "x", "traits": [{"type": "link"}]}]}}) == []
