"""`wasi:keyvalue/watcher@0.2.0-draft` exports called by the NATS and memory key-value providers.

A watcher link (provider -> component, source config `bucket`) makes the provider watch that bucket
and call the `kv_watcher` guest's `on-set` / `on-delete` for each change. The guest records what it
is told in the same bucket, through the bucket handle it is given: `seen:<key>` = value and
`deleted:<key>` = "1" (a set of `trap` traps). Everything is real: a host process, nats-server,
JetStream KV written by the test's own nats-py connection, and the memory provider written by the
`kv_draft` guest over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.http import get
from tests.support.lattice import LatticeEnv as Env
from tests.support.lattice import serve_http
from tests.support.processes import free_port
from wasmlattice.capabilities.kv_nats import nats_key
from wasmlattice.protocol.models import Link

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

NATS_KV = "builtin://keyvalue-nats"
MEMORY_KV = "builtin://keyvalue-memory"
WATCHER = "kvw"


def watcher_link(provider: str, source_config: list[str]) -> Link:
    return Link(
        source_id=provider,
        target=WATCHER,
        wit_namespace="wasi",
        wit_package="keyvalue",
        interfaces=["watcher"],
        source_config=source_config,
    )


async def until(read: Callable[[], Awaitable[Any]], expected: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = await read()
        if got == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: last read {got!r}, expected {expected!r}")
        await asyncio.sleep(0.05)


@pytest.fixture
def watcher_ref(build_component: Callable[[str], Path]) -> str:
    return "file://" + str(build_component("kv_watcher").resolve())


async def start(env: Env, watcher_ref: str, provider_ref: str, provider_id: str) -> str:
    """One host running the provider and the watcher component; the host ID."""
    env.start_host()
    (host,) = await env.host_ids(1)
    assert await env.ctl.start_provider(host, provider_ref, provider_id) == "successfully started provider"
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == provider_id)
    assert await env.ctl.scale_component(host, watcher_ref, WATCHER, 2) == ""
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == WATCHER)
    return host


async def test_nats_watcher(env: Env, watcher_ref: str) -> None:
    bucket = f"kvw{uuid.uuid4().hex[:8]}"
    js = env.nc.jetstream()
    kv = await js.create_key_value(bucket=bucket, history=1)

    async def read(key: str) -> bytes | None:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await kv.get(nats_key(key))
        except KeyNotFoundError:
            return None
        return bytes(entry.value or b"")

    await start(env, watcher_ref, NATS_KV, "kv-nats")
    # Set before the link exists: a watch reports only later changes, never this one.
    await kv.put("old", b"before")
    await env.ctl.put_config("kvw-src", {"bucket": bucket})
    await env.ctl.put_link(watcher_link("kv-nats", ["kvw-src"]))
    await env.wait_log(f"watcher link `default` to {WATCHER}: watching bucket '{bucket}'")

    # The guest writes through the handle it got, into the watched bucket.
    await kv.put("k1", b"v1")
    await until(lambda: read("seen:k1"), b"v1", "seen:k1")
    await kv.put("k1", b"v2")
    await until(lambda: read("seen:k1"), b"v2", "seen:k1 updated")
    await kv.delete("k1")
    await until(lambda: read("deleted:k1"), b"1", "deleted:k1")
    # A key the host stores encoded (see `nats_key`) is reported by its own name.
    await kv.put(nats_key("a key/ü"), b"\x00\xff")
    await until(lambda: read("seen:a key/ü"), b"\x00\xff", "seen:a key/ü")

    # A trap is logged with the component, function and key; the next change is still delivered.
    await kv.put("trap", b"x")
    text = await env.wait_log(f"component {WATCHER} trapped in on-set for key 'trap' of bucket '{bucket}'")
    assert "deliberate trap" in text
    await kv.put("k2", b"after")
    await until(lambda: read("seen:k2"), b"after", "seen:k2")
    assert await read("seen:old") is None

    # Without the link, changes are no longer delivered.
    await env.ctl.delete_link("kv-nats", "wasi", "keyvalue")
    await env.wait_log(f"watcher link `default` to {WATCHER}: stopped watching")
    await kv.put("k3", b"late")
    await asyncio.sleep(1.0)
    assert await read("seen:k3") is None
    assert env.host_tracebacks() == []


async def test_memory_watcher(env: Env, watcher_ref: str, build_component: Callable[[str], Path]) -> None:
    bucket = f"mem{uuid.uuid4().hex[:8]}"
    host = await start(env, watcher_ref, MEMORY_KV, "kv-mem")
    await env.ctl.put_config("mem-bucket", {"bucket": bucket})
    # The `kv_draft` guest writes the memory bucket over HTTP through a store link.
    url = await serve_http(
        env, host, "kvd", "file://" + str(build_component("kv_draft").resolve()), port=free_port()
    )
    await env.ctl.put_link(
        Link(
            source_id="kvd",
            target="kv-mem",
            wit_namespace="wasi",
            wit_package="keyvalue",
            interfaces=["store", "atomics", "batch"],
            target_config=["mem-bucket"],
        )
    )
    await env.ctl.put_link(watcher_link("kv-mem", ["mem-bucket"]))
    await env.wait_log(f"watcher link `default` to {WATCHER}: watching bucket '{bucket}'")

    async def read(key: str) -> Any:
        status, body = await get(f"{url}/get?key={key}")
        assert status == 200, body
        return json.loads(body)["ok"]

    async def write(path: str) -> None:
        status, body = await get(f"{url}/{path}")
        assert status == 200, body

    await write("set?key=a&value=one")
    await until(lambda: read("seen:a"), "one", "seen:a")
    await write("incr?key=n&delta=3")
    await until(lambda: read("seen:n"), "3", "seen:n")
    await write("delete?key=a")
    await until(lambda: read("deleted:a"), "1", "deleted:a")
    assert await read("a") is None

    await env.ctl.delete_link("kv-mem", "wasi", "keyvalue")
    await env.wait_log(f"watcher link `default` to {WATCHER}: stopped watching")
    await write("set?key=b&value=two")
    await asyncio.sleep(1.0)
    assert await read("seen:b") is None
    assert env.host_tracebacks() == []
