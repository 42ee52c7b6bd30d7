"""JetStream KV buckets (`wasmlattice.protocol.kv`) against a real nats-server, wasmCloud key layout."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from wasmlattice.nats_server import EmbeddedNats
from wasmlattice.protocol.connection import NatsOptions, connect, jetstream
from wasmlattice.protocol.kv import KvBucket, KvError, KvEvent, open_bucket

pytestmark = pytest.mark.timeout(60)

HOST_KEY = "NAQXXUQ2N7KGV5JLU3RHFT6XGTS5IAV6F7OE6IC3X5C72DP7TVW37NCQ"


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[Any]:
    nc = await connect(NatsOptions(url=nats_url))
    try:
        yield jetstream(nc, NatsOptions(url=nats_url))
    finally:
        await nc.close()


@pytest.fixture
async def lattice_data(js: Any, lattice_name: str) -> KvBucket:
    return await open_bucket(js, f"LATTICEDATA_{lattice_name}")


async def test_put_get_delete_keys(lattice_data: KvBucket) -> None:
    spec = json.dumps({"url": "file:///x.wasm", "links": []}).encode()
    rev1 = await lattice_data.put("COMPONENT_http-echo", spec)
    rev2 = await lattice_data.put(f"CLAIMS_{HOST_KEY}", b"{}")
    rev3 = await lattice_data.put("LINKDEF_legacy_1", b"{}")
    assert 0 < rev1 < rev2 < rev3
    assert await lattice_data.get("COMPONENT_http-echo") == spec
    assert await lattice_data.get_entry("COMPONENT_http-echo") == (spec, rev1)
    assert await lattice_data.get("COMPONENT_missing") is None
    assert await lattice_data.keys() == ["COMPONENT_http-echo", f"CLAIMS_{HOST_KEY}", "LINKDEF_legacy_1"]
    assert await lattice_data.keys("CLAIMS_") == [f"CLAIMS_{HOST_KEY}"]
    assert await lattice_data.keys("NOPE_") == []

    await lattice_data.delete("COMPONENT_http-echo")
    assert await lattice_data.get("COMPONENT_http-echo") is None
    assert "COMPONENT_http-echo" not in await lattice_data.keys()
    await lattice_data.delete("COMPONENT_never-set")  # deleting an absent key is fine
    assert await lattice_data.put("COMPONENT_http-echo", b"again") > rev3


async def test_config_bucket_names(js: Any, lattice_name: str) -> None:
    config = await open_bucket(js, f"CONFIGDATA_{lattice_name}")
    await config.put("my-config.v1", json.dumps({"a": "1"}).encode())
    await config.put("SECRET_db", b"{}")
    assert sorted(await config.keys()) == ["SECRET_db", "my-config.v1"]
    # Opening again reuses the bucket.
    again = await open_bucket(js, f"CONFIGDATA_{lattice_name}", create=False)
    assert await again.get("my-config.v1") == b'{"a": "1"}'


async def test_bad_names_and_missing_bucket(js: Any, lattice_name: str, lattice_data: KvBucket) -> None:
    with pytest.raises(KvError, match="does not exist"):
        await open_bucket(js, f"MISSING_{lattice_name}", create=False)
    with pytest.raises(KvError, match="invalid KV bucket name"):
        await open_bucket(js, "has.dot")
    with pytest.raises(KvError, match="invalid key 'a b' for KV bucket LATTICEDATA_"):
        await lattice_data.put("a b", b"x")


async def test_watch_initial_values_then_updates_and_deletes(lattice_data: KvBucket) -> None:
    await lattice_data.put("COMPONENT_a", b"1")
    await lattice_data.put("COMPONENT_b", b"2")
    await lattice_data.put("COMPONENT_gone", b"x")
    await lattice_data.delete("COMPONENT_gone")
    await lattice_data.put(f"CLAIMS_{HOST_KEY}", b"{}")
    await lattice_data.put("COMPONENT_a", b"1b")

    async with lattice_data.watch("COMPONENT_") as w:
        await w.wait_initial(5)
        initial = w.drain()
        assert [(e.key, e.value) for e in initial] == [("COMPONENT_b", b"2"), ("COMPONENT_a", b"1b")]

        rev = await lattice_data.put("COMPONENT_c", b"3")
        assert await w.next(5) == KvEvent("COMPONENT_c", b"3", rev)
        await lattice_data.put(f"CLAIMS_{HOST_KEY}", b"ignored by the prefix")
        await lattice_data.delete("COMPONENT_a")
        ev = await w.next(5)
        assert (ev.key, ev.value) == ("COMPONENT_a", None)
        await lattice_data.purge("COMPONENT_b")
        ev = await w.next(5)
        assert (ev.key, ev.value) == ("COMPONENT_b", None)
        assert w.last_revision == ev.revision
    # After the block the iteration ends.
    assert [e async for e in w] == []


async def test_watch_empty_bucket_and_single_key(lattice_data: KvBucket) -> None:
    async with lattice_data.watch() as w:
        await w.wait_initial(5)
        assert w.drain() == []
        async with lattice_data.watch(key="cfg.one") as one:
            await one.wait_initial(5)
            await lattice_data.put("cfg.two", b"2")
            await lattice_data.put("cfg.one", b"1")
            assert (await one.next(5)).key == "cfg.one"
            assert [(await w.next(5)).key, (await w.next(5)).key] == ["cfg.two", "cfg.one"]


async def test_watch_on_missing_bucket_fails_clearly(js: Any, lattice_name: str) -> None:
    bucket = await open_bucket(js, f"TMP_{lattice_name}")
    await js.delete_key_value(bucket.name)
    with pytest.raises(KvError, match="does not exist"):
        await bucket.watch().start()


async def test_a_wrong_jetstream_domain_is_named_in_the_error(nats_url: str, lattice_name: str) -> None:
    opts = NatsOptions(url=nats_url, js_domain="no-such-domain")
    nc = await connect(opts)
    try:
        with pytest.raises(KvError, match=r"JetStream did not answer.*--js-domain") as err:
            await open_bucket(jetstream(nc, opts), f"LATTICEDATA_{lattice_name}")
        assert f"LATTICEDATA_{lattice_name}" in str(err.value)
    finally:
        await nc.close()


async def test_watch_survives_nats_restart(tmp_path: Path) -> None:
    server = EmbeddedNats(port=0, data_dir=tmp_path / "nats")
    await server.start()
    try:
        opts = NatsOptions(url=server.url, reconnect_wait=0.1)
        nc = await connect(opts)
        bucket = await open_bucket(jetstream(nc, opts), "LATTICEDATA_restart")
        await bucket.put("COMPONENT_a", b"1")
        async with bucket.watch(heartbeat=0.5) as w:
            await w.wait_initial(5)
            assert [e.value for e in w.drain()] == [b"1"]
            before = await bucket.put("COMPONENT_a", b"2")
            assert (await w.next(5)).revision == before

            await server.stop()
            await server.start()  # same port and store directory

            # A write by another client right after the restart, possibly before the watch has
            # resubscribed: it must not be lost.
            other = await connect(NatsOptions(url=server.url))
            try:
                other_bucket = await open_bucket(jetstream(other, opts), "LATTICEDATA_restart", create=False)
                r3 = await other_bucket.put("COMPONENT_b", b"3")
            finally:
                await other.close()
            await _wait_connected(nc, 10)
            r4 = await bucket.put("COMPONENT_a", b"4")

            got = [await w.next(10), await w.next(10)]
            assert got == [KvEvent("COMPONENT_b", b"3", r3), KvEvent("COMPONENT_a", b"4", r4)]
            assert w.resubscribes >= 1
            await asyncio.sleep(0.2)
            assert w.drain() == []  # nothing delivered twice
        await nc.close()
    finally:
        await server.stop()


async def _wait_connected(nc: Any, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not nc.is_connected:
        assert asyncio.get_running_loop().time() < deadline, "client did not reconnect"
        await asyncio.sleep(0.05)
