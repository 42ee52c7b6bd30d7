"""Pushing a component as the OCI wasm artifact, the layout `wash push` writes (the `oci-wasm` crate).

Manifest `application/vnd.oci.image.manifest.v1+json`; config `application/vnd.wasm.config.v0+json`
with `created`, `architecture: "wasm"`, `os` (`wasip2` for a component, `wasip1` for a core
module), `layerDigests` and, for a component, `component: {exports, imports, target}`; one layer
`application/wasm` (https://tag-runtime.cncf.io/wgs/wasm/deliverables/wasm-oci-artifact/).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from wasmlattice.artifacts.cache import sha256_digest
from wasmlattice.artifacts.oci import OCI_MANIFEST, WASM_CONFIG, WASM_LAYER, Descriptor, OciClient, Progress
from wasmlattice.artifacts.reference import OciReference

_CORE_MODULE_VERSION = b"\x01\x00\x00\x00"


@dataclass(frozen=True)
class Pushed:
    """What a push stored: the manifest's digest and the layer's."""

    ref: OciReference
    manifest_digest: str
    layer_digest: str
    size: int


def wasm_config(
    data: bytes,
    imports: Sequence[str] | None = None,
    exports: Sequence[str] | None = None,
    created: datetime | None = None,
) -> bytes:
    """The config blob of the OCI wasm artifact for `data` (imports/exports: the component's names)."""
    is_module = data[4:8] == _CORE_MODULE_VERSION
    doc: dict[str, Any] = {
        "created": (created or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "architecture": "wasm",
        "os": "wasip1" if is_module else "wasip2",
        "layerDigests": [sha256_digest(data)],
    }
    if not is_module:
        doc["component"] = {"exports": list(exports or []), "imports": list(imports or []), "target": None}
    return json.dumps(doc, separators=(",", ":")).encode()


def wasm_manifest(config: bytes, data: bytes, annotations: Mapping[str, str] | None = None) -> bytes:
    """The image manifest naming `config` and the one wasm layer `data`."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": Descriptor(WASM_CONFIG, sha256_digest(config), len(config)).to_json(),
        "layers": [Descriptor(WASM_LAYER, sha256_digest(data), len(data)).to_json()],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return json.dumps(doc, separators=(",", ":")).encode()


async def push_component(
    client: OciClient,
    ref: OciReference,
    data: bytes,
    config: bytes,
    annotations: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> Pushed:
    """Upload config and layer (skipping blobs the registry has), then the manifest under `ref`."""
    await client.push_blob(ref, config)
    layer = await client.push_blob(ref, data, progress)
    manifest = wasm_manifest(config, data, annotations)
    digest = await client.put_manifest(ref, manifest, OCI_MANIFEST)
    return Pushed(ref, digest, layer, len(data))
