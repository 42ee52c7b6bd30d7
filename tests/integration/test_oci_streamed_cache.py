"""A cold pull hashes the layer on another thread as it streams in and writes the cache once the bytes
are checked, after handing them over (artifacts/oci.py, artifacts/cache.py): against a real
docker-registry, the cache holds exactly the checked bytes, a fetch right after a pull waits for the
file instead of pulling again, and a tampered layer, a cancelled pull or an unwritable cache leave
nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from tests.support.registry import registry_server
from wasmlattice.artifacts.cache import ArtifactCache
from wasmlattice.artifacts.fetch import ArtifactFetcher, FetchPolicy
from wasmlattice.artifacts.oci import OciClient
from wasmlattice.artifacts.push import push_component, wasm_config
from wasmlattice.artifacts.reference import parse_oci_ref
from wasmlattice.artifacts.source import ArtifactError

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def layer_bytes(size: int, seed: bytes) -> bytes:
    """A core-module header and `size` bytes of pseudo-random filler (many receive buffers' worth)."""
    out = bytearray(b"\0asm\x01\x00\x00\x00")
    block = hashlib.sha512(seed).digest()
    while len(out) < size:
        block = hashlib.sha512(block).digest()
        out += block
    return bytes(out[:size])


def leftovers(root: Path) -> list[Path]:
    """Temporary cache files under `root`."""
    return [p for p in root.rglob(".tmp-*")]


async def test_cold_pull_streams_into_the_cache_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    data = layer_bytes(6 << 20, b"streamed")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with registry_server(tmp_path / "registry") as reg:
        ref = f"{reg.host}/test/streamed:1.0"
        async with OciClient(insecure=[reg.host]) as client:
            await push_component(client, parse_oci_ref(ref), data, wasm_config(data))

        def fetcher(cache_dir: Path, max_size: int = 256 << 20) -> ArtifactFetcher:
            return ArtifactFetcher(
                FetchPolicy.of(False, [reg.host], max_size), cache=ArtifactCache(cache_dir)
            )

        # Cold: the bytes come back whole; a fetch right after (the file may still be being
        # written) is served from the cache, which holds exactly them, under their digest.
        f = fetcher(tmp_path / "cache")
        try:
            got = await f.fetch(ref)
            assert got.data == data and got.digest == digest and not got.cached
            again = await f.fetch(ref)
            assert again.cached and again.data == data
            assert (tmp_path / "cache" / "sha256" / digest.split(":")[1]).read_bytes() == data
            assert not leftovers(tmp_path / "cache")
        finally:
            await f.close()
        # Closing a fetcher waits for its writes: a command that pulled leaves the file behind.
        f = fetcher(tmp_path / "closed")
        try:
            await f.fetch(ref)
        finally:
            await f.close()
        assert (tmp_path / "closed" / "sha256" / digest.split(":")[1]).read_bytes() == data

        # Above the size cap (the manifest's size says so): refused, nothing cached.
        f = fetcher(tmp_path / "small", max_size=1 << 20)
        try:
            with pytest.raises(ArtifactError, match="max-component-size"):
                await f.fetch(ref)
        finally:
            await f.close()
        assert not list((tmp_path / "small").rglob(digest.split(":")[1])) and not leftovers(
            tmp_path / "small"
        )

        # Cancelled half way: no partial file stays behind.
        seen: list[int] = []
        f = ArtifactFetcher(
            FetchPolicy.of(False, [reg.host]),
            cache=ArtifactCache(tmp_path / "cancelled"),
            progress=lambda done, total: seen.append(done),
        )
        try:
            task = asyncio.ensure_future(f.fetch(ref))
            while not seen and not task.done():
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await f.close()
        assert seen and seen[-1] < len(data), "the pull finished before it could be cancelled"
        assert not list((tmp_path / "cancelled").rglob(digest.split(":")[1]))
        assert not leftovers(tmp_path / "cancelled")

        # A cache that cannot be written (its `sha256` is a file, which stops root too) costs the
        # caching, not the pull.
        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "sha256").write_text("not a directory")
        f = fetcher(broken)
        try:
            assert (await f.fetch(ref)).data == data
        finally:
            await f.close()
        assert (broken / "sha256").read_text() == "not a directory" and not leftovers(broken)

        # The registry's bytes no longer match the manifest: refused, and not cached.
        blob = reg.blob_path(digest)
        blob.write_bytes(data[:-2] + b"XX")
        f = fetcher(tmp_path / "tampered")
        try:
            with pytest.raises(ArtifactError, match="digest mismatch"):
                await f.fetch(ref)
        finally:
            await f.close()
        assert not list((tmp_path / "tampered").rglob(digest.split(":")[1]))
        assert not leftovers(tmp_path / "tampered")
