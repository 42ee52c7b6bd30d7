"""The lattice artifact store (`lattice://`) against a real nats-server with JetStream.

Each test pushes from one NATS connection and reads from another with its own `LatticeStore`, as a
CLI on one machine and a host on another would.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats.js.errors
import pytest

from wasmlattice.artifacts.lattice_store import LatticeStore, blob_bucket, digest_of, tag_bucket
from wasmlattice.artifacts.source import ArtifactError, ArtifactSource
from wasmlattice.protocol.connection import NatsOptions, connect, jetstream

pytestmark = pytest.mark.timeout(120)

Connect = Callable[[], Awaitable[Any]]


@pytest.fixture
async def new_js(nats_url: str) -> AsyncIterator[Connect]:
    """Opens JetStream contexts on connections of their own; all closed at the end."""
    conns: list[Any] = []

    async def make() -> Any:
        nc = await connect(NatsOptions(url=nats_url))
        conns.append(nc)
        return jetstream(nc, NatsOptions(url=nats_url))

    try:
        yield make
    finally:
        for nc in conns:
            await nc.close()


async def blob_count(js: Any, lattice: str) -> int:
    """Live objects in the lattice's blob bucket."""
    store = await js.object_store(blob_bucket(lattice))
    try:
        return len([i for i in await store.list(ignore_deletes=True) if not i.deleted])
    except nats.js.errors.NotFoundError:  # nats-py's answer for an empty store
        return 0


async def test_push_then_pull_from_another_connection(new_js: Connect, lattice_name: str) -> None:
    pusher = LatticeStore(await new_js(), lattice_name)
    data = b"\0asm component bytes"
    digest = await pusher.push("lattice://hello:1.0", data, {"org.opencontainers.image.source": "here"})
    assert digest == digest_of(data)

    host: ArtifactSource = LatticeStore(await new_js(), lattice_name)
    assert await host.resolve("lattice://hello:1.0") == digest
    assert await host.pull("lattice://hello:1.0", digest) == data

    reader = LatticeStore(await new_js(), lattice_name)
    [record] = await reader.tags("hello")
    assert (record.name, record.tag, record.digest, record.size, record.media_type) == (
        "hello",
        "1.0",
        digest,
        len(data),
        "application/wasm",
    )
    assert record.annotations == {"org.opencontainers.image.source": "here"}
    assert record.created.endswith("Z")
    assert [a.ref for a in await reader.list()] == ["lattice://hello:1.0"]


async def test_same_bytes_twice_is_one_blob_and_retag(new_js: Connect, lattice_name: str) -> None:
    js = await new_js()
    store = LatticeStore(js, lattice_name)
    v1, v2 = b"version one", b"version two"
    d1 = await store.push("lattice://hello:1.0", v1)
    stream = f"OBJ_{blob_bucket(lattice_name)}"
    before = (await js.stream_info(stream)).state.last_seq
    assert await store.push("lattice://hello:1.0", v1) == d1
    assert await store.push("lattice://hello:stable", v1) == d1
    assert await store.push("lattice://other", v1) == d1
    # Same bytes under three tags: still one object, and nothing was written to its stream since.
    assert (await js.stream_info(stream)).state.last_seq == before
    assert await blob_count(js, lattice_name) == 1

    # Retag: `stable` moves to new bytes; another host sees the move.
    d2 = await store.push("lattice://hello:stable", v2)
    assert d2 != d1 and await blob_count(js, lattice_name) == 2
    host = LatticeStore(await new_js(), lattice_name)
    assert await host.resolve("lattice://hello:stable") == d2
    assert await host.resolve("lattice://hello:1.0") == d1
    assert await host.resolve("lattice://other") == d1  # no tag means latest
    assert await host.resolve("lattice://other:latest") == d1
    assert [a.tag for a in await host.tags("hello")] == ["1.0", "stable"]


async def test_digest_pinned_pull(new_js: Connect, lattice_name: str) -> None:
    store = LatticeStore(await new_js(), lattice_name)
    old = await store.push("lattice://hello:1.0", b"old bytes")
    await store.push("lattice://hello:1.0", b"new bytes")
    host = LatticeStore(await new_js(), lattice_name)
    pinned = f"lattice://hello:1.0@{old}"
    # The digest wins over the tag, which has moved on.
    assert await host.resolve(pinned) == old
    assert await host.pull(pinned, old) == b"old bytes"
    assert await host.pull(f"lattice://hello@{old}", old) == b"old bytes"
    other = digest_of(b"never pushed")
    with pytest.raises(ArtifactError, match=f"no artifact with digest {other} in the lattice store"):
        await host.resolve(f"lattice://hello@{other}")
    with pytest.raises(ArtifactError, match="the reference pins"):
        await host.pull(pinned, other)
    with pytest.raises(ArtifactError, match=f"has no blob {other}"):
        await host.pull("lattice://hello:1.0", other)
    with pytest.raises(ArtifactError, match="not sha256:"):
        await store.push(f"lattice://hello:2.0@{other}", b"these bytes")


async def test_tampered_object_is_refused(new_js: Connect, lattice_name: str) -> None:
    store = LatticeStore(await new_js(), lattice_name)
    data = b"the real component"
    digest = await store.push("lattice://hello:1.0", data)
    # Someone with write access to the bucket puts other bytes under the digest's object name.
    js = await new_js()
    raw = await js.object_store(blob_bucket(lattice_name))
    await raw.put(digest, b"evil bytes!")
    evil = digest_of(b"evil bytes!")

    host = LatticeStore(await new_js(), lattice_name)
    assert await host.resolve("lattice://hello:1.0") == digest  # the tag is untouched
    with pytest.raises(ArtifactError) as err:
        await host.pull("lattice://hello:1.0", digest)
    assert str(err.value) == (
        f"lattice://hello:1.0: digest mismatch: expected {digest}, the lattice store's bytes have {evil}"
    )
    # Pushing the real bytes again repairs the blob (the store's own digest no longer matched).
    await store.push("lattice://hello:1.0", data)
    assert await host.pull("lattice://hello:1.0", digest) == data


async def test_errors_name_what_is_missing(new_js: Connect, lattice_name: str) -> None:
    host = LatticeStore(await new_js(), lattice_name)
    with pytest.raises(ArtifactError) as err:
        await host.resolve("lattice://hello:1.0")
    assert str(err.value).startswith(
        f"lattice://hello:1.0: nothing was pushed to lattice '{lattice_name}' yet"
    )
    with pytest.raises(ArtifactError, match="nothing was pushed"):
        await host.pull("lattice://hello:1.0", digest_of(b"x"))
    assert await host.list() == [] and await host.tags("hello") == []

    store = LatticeStore(await new_js(), lattice_name)
    await store.push("lattice://hello:0.9", b"a")
    await store.push("lattice://hello:1.1", b"b")
    await store.push("lattice://world:1.0", b"c")
    # The same LatticeStore that found nothing before sees the buckets now.
    with pytest.raises(ArtifactError) as err:
        await host.resolve("lattice://hello:1.0")
    assert str(err.value) == "lattice://hello:1.0: no such tag in the lattice store (tags of hello: 0.9, 1.1)"
    with pytest.raises(ArtifactError) as err:
        await host.resolve("lattice://nope:1.0")
    assert str(err.value) == (
        f"lattice://nope:1.0: no artifact named nope in the lattice store "
        f"(names in lattice '{lattice_name}': hello, world)"
    )
    with pytest.raises(ArtifactError) as err:
        await host.resolve("lattice://hello")  # latest was never pushed
    assert str(err.value) == (
        "lattice://hello (no tag given, so :latest): "
        "no such tag in the lattice store (tags of hello: 0.9, 1.1)"
    )


async def test_limits_on_push_and_pull(new_js: Connect, lattice_name: str) -> None:
    store = LatticeStore(await new_js(), lattice_name, max_size=100)
    with pytest.raises(ArtifactError, match="artifact of 101 bytes is larger than the limit of 100"):
        await store.push("lattice://hello:1.0", b"x" * 101)
    with pytest.raises(ArtifactError, match="refusing to push an empty artifact"):
        await store.push("lattice://hello:1.0", b"")
    notes = r"annotations: key 'a b': contains U\+0020 \(no white space in keys\)"
    with pytest.raises(ArtifactError, match=notes):
        await store.push("lattice://hello:1.0", b"x", {"a b": "c"})
    with pytest.raises(ArtifactError, match=r"tag '1\.\.0'"):
        await store.push("lattice://hello:1..0", b"x")
    big = LatticeStore(await new_js(), lattice_name)
    digest = await big.push("lattice://hello:big", b"y" * 200)
    with pytest.raises(ArtifactError, match="the stored artifact has 200 bytes, more than the limit of 100"):
        await store.pull("lattice://hello:big", digest)
    with pytest.raises(ArtifactError, match="replicas must be between 1 and 5"):
        LatticeStore(await new_js(), lattice_name, replicas=0)


async def test_delete_untags_and_removes_unreferenced_blobs(new_js: Connect, lattice_name: str) -> None:
    js = await new_js()
    store = LatticeStore(js, lattice_name)
    shared = await store.push("lattice://hello:1.0", b"shared")
    await store.push("lattice://hello:stable", b"shared")
    only = await store.push("lattice://hello:2.0", b"only")

    result = await store.delete("lattice://hello:1.0")
    assert (result.digest, result.untagged, result.blob_removed) == (shared, ["hello:1.0"], False)
    host = LatticeStore(await new_js(), lattice_name)
    assert await host.pull("lattice://hello:stable", shared) == b"shared"  # still tagged

    result = await store.delete("lattice://hello:2.0")
    assert result.blob_removed and await blob_count(js, lattice_name) == 1
    with pytest.raises(ArtifactError, match="has no blob"):
        await host.pull("lattice://hello:2.0", only)

    with pytest.raises(ArtifactError, match=r"no such tag in the lattice store \(tags of hello: stable\)"):
        await store.delete("lattice://hello:1.0")
    result = await store.delete(f"lattice://hello@{shared}")  # every tag of hello on that digest
    assert result.untagged == ["hello:stable"] and result.blob_removed
    assert await host.list() == [] and await blob_count(js, lattice_name) == 0


async def test_hosts_racing_to_create_the_buckets(new_js: Connect, lattice_name: str) -> None:
    stores = [LatticeStore(await new_js(), lattice_name, replicas=1) for _ in range(6)]
    blobs = [os.urandom(1000) for _ in stores]
    pushes = [s.push(f"lattice://app:v{i}", b) for i, (s, b) in enumerate(zip(stores, blobs, strict=True))]
    digests = await asyncio.gather(*pushes)
    js = await new_js()
    # Both buckets exist once, with the settings asked for.
    info = await js.stream_info(f"OBJ_{blob_bucket(lattice_name)}")
    assert info.config.num_replicas == 1
    await js.stream_info(f"KV_{tag_bucket(lattice_name)}")
    host = LatticeStore(js, lattice_name)
    for i, (digest, data) in enumerate(zip(digests, blobs, strict=True)):
        assert await host.pull(f"lattice://app:v{i}", await host.resolve(f"lattice://app:v{i}")) == data
        assert digest == digest_of(data)


@pytest.mark.slow
async def test_large_blob_round_trips(new_js: Connect, lattice_name: str) -> None:
    data = os.urandom(18 * 1024 * 1024 + 12345)
    pusher = LatticeStore(await new_js(), lattice_name)
    digest = await pusher.push("lattice://big:1.0", data)
    js = await new_js()
    info = await (await js.object_store(blob_bucket(lattice_name))).get_info(digest)
    assert info.size == len(data) and info.chunks == -(-len(data) // (128 * 1024))
    host = LatticeStore(js, lattice_name)
    assert await host.resolve("lattice://big:1.0") == digest
    assert await host.pull("lattice://big:1.0", digest) == data


async def test_reads_a_store_without_direct_get(new_js: Connect, lattice_name: str) -> None:
    # An object store made by another tool may not allow direct gets; reading falls back to the API.
    js = await new_js()
    bucket = blob_bucket(lattice_name)
    await js.create_object_store(bucket)
    cfg = (await js.stream_info(f"OBJ_{bucket}")).config
    cfg.allow_direct = False
    await js.update_stream(cfg)
    store = LatticeStore(js, lattice_name, chunk_size=1000)
    data = os.urandom(5500)
    digest = await store.push("lattice://hello:1.0", data)
    host = LatticeStore(await new_js(), lattice_name)
    assert await host.pull("lattice://hello:1.0", digest) == data
