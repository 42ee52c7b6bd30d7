"""`wasi:keyvalue` (0.2.0-draft and draft2) through real components on real host processes.

Backends are real: JetStream KV on the test nats-server, a real redis-server, and the in-process
memory provider. The `kv_draft` guest picks its link per request with `wasmcloud:bus/lattice`
(`?link=NAME`); `kv_draft2` is built against spin-sdk's draft2 WIT. Both answer JSON (see their
`app.py`): `{"ok": ...}`, or 500 with the interface's own error `{"error": "other", "message": ...}`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.http import get_json
from tests.support.lattice import HTTP_SERVER, eventually, http_link, kv_link, serve_http
from tests.support.lattice import LatticeEnv as Env
from tests.support.processes import free_port
from wasmlattice.capabilities.kv_nats import ENCODED_PREFIX, nats_key

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

NATS_KV = "builtin://keyvalue-nats"
REDIS_KV = "builtin://keyvalue-redis"
MEMORY_KV = "builtin://keyvalue-memory"


async def ok(url: str) -> Any:
    status, doc = await get_json(url)
    assert status == 200, f"{url} -> {status} {doc}"
    return doc["ok"]


async def fails(url: str) -> str:
    """The message of the interface's `other` error that `url` answers with."""
    status, doc = await get_json(url)
    assert status == 500 and doc["error"] == "other", f"{url} -> {status} {doc}"
    message: str = doc["message"]
    return message


def uid() -> str:
    return uuid.uuid4().hex[:8]


async def start_providers(env: Env, host: str, *refs: tuple[str, str]) -> None:
    for ref, pid in refs:
        assert await env.ctl.start_provider(host, ref, pid) == "successfully started provider"
        await env.wait_event(
            "provider_started",
            lambda e, p=pid, h=host: e["data"]["provider_id"] == p and e["data"].get("host_id", h) == h,
        )


async def exercise_store(url: str, q: str, tag: str) -> None:
    """Every draft store/atomics/batch function once, through `url` with query prefix `q`."""
    k = f"{tag}-key"
    assert await ok(f"{url}/get?{q}&key={k}") is None
    assert await ok(f"{url}/set?{q}&key={k}&value=hello") == 5
    assert await ok(f"{url}/get?{q}&key={k}") == "hello"
    assert await ok(f"{url}/exists?{q}&key={k}") is True
    assert await ok(f"{url}/delete?{q}&key={k}") is True
    assert await ok(f"{url}/exists?{q}&key={k}") is False
    assert await ok(f"{url}/get?{q}&key={k}") is None
    assert await ok(f"{url}/delete?{q}&key={k}") is True  # deleting an unset key is fine

    # A key JetStream cannot store as is round-trips (stored encoded, listed decoded).
    odd = "a key/with spaces*>ü.."
    assert await ok(f"{url}/set?{q}&key={quote(odd)}&value=odd") == 3
    assert await ok(f"{url}/get?{q}&key={quote(odd)}") == "odd"

    assert await ok(f"{url}/incr?{q}&key={tag}-n&delta=5") == 5
    assert await ok(f"{url}/incr?{q}&key={tag}-n&delta=7") == 12
    assert await ok(f"{url}/get?{q}&key={tag}-n") == "12"

    pairs = "&".join(f"k={tag}-m{i}&v=v{i}" for i in range(3))
    assert await ok(f"{url}/set-many?{q}&{pairs}") == 3
    got = await ok(f"{url}/get-many?{q}&key={tag}-m0&key={tag}-none&key={tag}-m2")
    assert got == [[f"{tag}-m0", "v0"], None, [f"{tag}-m2", "v2"]]
    assert await ok(f"{url}/delete-many?{q}&key={tag}-m0&key={tag}-m1&key={tag}-none") is True
    assert await ok(f"{url}/get-many?{q}&key={tag}-m0&key={tag}-m1&key={tag}-m2") == [
        None,
        None,
        [f"{tag}-m2", "v2"],
    ]

    # list-keys with cursor paging (the links set `list_page_size` to 10).
    many = "&".join(f"k={tag}-p{i:02}&v=x" for i in range(25))
    assert await ok(f"{url}/set-many?{q}&{many}") == 25
    listed = await ok(f"{url}/list?{q}")
    expected = sorted([odd, f"{tag}-n", f"{tag}-m2", *(f"{tag}-p{i:02}" for i in range(25))])
    assert listed["keys"] == expected
    assert listed["pages"] >= 3
    first = await ok(f"{url}/list-page?{q}")
    assert first["cursor"] is not None and len(first["keys"]) <= 10 + 5  # Redis SCAN counts are hints


async def test_every_backend_across_two_hosts_and_link_names(
    env: Env, build_component: Callable[[str], Path], redis_url: str
) -> None:
    import nats
    import redis.asyncio as aioredis

    ref = "file://" + str(build_component("kv_draft").resolve())
    env.start_host()
    env.start_host()
    host_a, host_b = await env.host_ids(2)
    ctl = env.ctl
    n = uid()
    nats_bucket, other_bucket, redis_bucket = f"kvn_{n}", f"kvo_{n}", f"kvr_{n}"
    await ctl.put_config("kv-nats", {"bucket": nats_bucket, "list_page_size": "10"})
    await ctl.put_config("kv-other", {"bucket": other_bucket, "list_page_size": "10"})
    await ctl.put_config("kv-redis", {"url": redis_url, "bucket": redis_bucket, "list_page_size": "10"})
    await ctl.put_config("kv-mem", {"list_page_size": "10"})
    urls = []
    for host, http_id in ((host_a, "http-a"), (host_b, "http-b")):
        await start_providers(env, host, (NATS_KV, "nats-kv"), (REDIS_KV, "redis-kv"), (MEMORY_KV, "mem-kv"))
        assert await ctl.scale_component(host, ref, "kvd", 4) == ""
        await env.wait_event(
            "component_scaled",
            lambda e, h=host: e["data"]["component_id"] == "kvd" and e["data"]["host_id"] == h,
        )
        port = free_port()
        await ctl.put_config(f"{http_id}-addr", {"address": f"127.0.0.1:{port}"})
        await start_providers(env, host, (HTTP_SERVER, http_id))
        await ctl.put_link(http_link(http_id, "kvd", [f"{http_id}-addr"]))
        urls.append(f"http://127.0.0.1:{port}")
    for name, target, config in (
        ("default", "nats-kv", "kv-nats"),
        ("other", "nats-kv", "kv-other"),
        ("redis", "redis-kv", "kv-redis"),
        ("mem", "mem-kv", "kv-mem"),
    ):
        assert await ctl.put_link(kv_link("kvd", target, name, [config])) == "successfully set link"
    url_a, url_b = urls
    for url in urls:
        for name in ("default", "other", "redis", "mem"):
            await eventually(lambda u=url, m=name: ok(f"{u}/exists?link={m}&key=warmup"))

    # Every function on every backend (on host A).
    for name in ("default", "redis", "mem"):
        await exercise_store(url_a, f"link={name}", name)

    # Written on host A, read on host B (the same bucket through the same link).
    for name in ("default", "redis"):
        assert await ok(f"{url_a}/set?link={name}&key=shared&value=from-a") == 6
        assert await ok(f"{url_b}/get?link={name}&key=shared") == "from-a"
        assert await ok(f"{url_b}/incr?link={name}&key={name}-n&delta=1") == 13
    # Memory buckets live in each host's process.
    assert await ok(f"{url_a}/set?link=mem&key=shared&value=from-a") == 6
    assert await ok(f"{url_b}/get?link=mem&key=shared") is None

    # Two links with different names reach different buckets.
    assert await ok(f"{url_a}/set?link=default&key=which&value=one") == 3
    assert await ok(f"{url_a}/set?link=other&key=which&value=two") == 3
    assert await ok(f"{url_b}/get?key=which") == "one"  # no link name: `default`
    assert await ok(f"{url_b}/get?link=other&key=which") == "two"
    assert await ok(f"{url_b}/get?link=redis&key=which") is None

    # The data is where a plain client expects it: JetStream KV buckets, Redis keys under a prefix.
    nc = await nats.connect(env.nats_url)
    try:
        js = nc.jetstream()
        assert (await (await js.key_value(nats_bucket)).get("which")).value == b"one"
        assert (await (await js.key_value(other_bucket)).get("which")).value == b"two"
        odd = "a key/with spaces*>ü.."
        assert nats_key(odd).startswith(ENCODED_PREFIX)
        assert (await (await js.key_value(nats_bucket)).get(nats_key(odd))).value == b"odd"
    finally:
        await nc.close()
    r = aioredis.Redis.from_url(redis_url)
    try:
        assert await r.get(f"{redis_bucket}:shared") == b"from-a"
        assert await r.get(f"{redis_bucket}:redis-n") == b"13"
    finally:
        await r.aclose()


async def test_draft2_guest_every_function(
    env: Env, build_component: Callable[[str], Path], redis_url: str
) -> None:
    ref = "file://" + str(build_component("kv_draft2").resolve())
    env.start_host()
    (host,) = await env.host_ids(1)
    ctl = env.ctl
    n = uid()
    await start_providers(env, host, (NATS_KV, "nats-kv"), (REDIS_KV, "redis-kv"), (MEMORY_KV, "mem-kv"))
    await ctl.put_config("kv-nats", {"bucket": f"kv2n_{n}", "list_page_size": "10"})
    await ctl.put_config("kv-redis", {"url": redis_url, "bucket": f"kv2r_{n}", "list_page_size": "10"})
    await ctl.put_config("kv-mem", {"list_page_size": "10"})
    for cid, target, config in (
        ("kv2-nats", "nats-kv", "kv-nats"),
        ("kv2-redis", "redis-kv", "kv-redis"),
        ("kv2-mem", "mem-kv", "kv-mem"),
    ):
        await ctl.put_link(kv_link(cid, target, config=[config]))
        url = await serve_http(env, host, cid, ref, port=free_port(), ready_path="/exists?key=warmup")
        await eventually(lambda u=url: ok(f"{u}/exists?key=warmup"))
        q = f"bucket=b{n}"
        assert await ok(f"{url}/set?{q}&key=a&value=1") == 1
        assert await ok(f"{url}/get?{q}&key=a") == "1"
        assert await ok(f"{url}/exists?{q}&key=a") is True
        assert await ok(f"{url}/delete?{q}&key=a") is True
        assert await ok(f"{url}/exists?{q}&key=a") is False
        # s64 deltas: negative numbers work in draft2.
        assert await ok(f"{url}/incr?{q}&key=c&delta=-5") == -5
        assert await ok(f"{url}/incr?{q}&key=c&delta=8") == 3
        assert await ok(f"{url}/set-many?{q}&k=x&v=1&k=y&v=2") == 2
        assert await ok(f"{url}/get-many?{q}&key=x&key=nope&key=y") == [
            ["x", "1"],
            ["nope", None],
            ["y", "2"],
        ]
        assert await ok(f"{url}/delete-many?{q}&key=x&key=y") is True
        assert await ok(f"{url}/get-many?{q}&key=x") == [["x", None]]
        many = "&".join(f"k=p{i:02}&v=x" for i in range(23))
        assert await ok(f"{url}/set-many?{q}&{many}") == 23
        listed = await ok(f"{url}/list?{q}")
        assert listed["keys"] == sorted(["c", *(f"p{i:02}" for i in range(23))]) and listed["pages"] >= 3
        first = await ok(f"{url}/list-page?{q}")
        assert isinstance(first["cursor"], str)
        assert (await ok(f"{url}/list-page?{q}&cursor={first['cursor']}"))["keys"] != first["keys"]
        assert "invalid list-keys cursor" in await fails(f"{url}/list-page?{q}&cursor=bogus")
        # Compare-and-swap: unset, then set; a write behind its back makes swap fail with a fresh cas.
        assert await ok(f"{url}/cas?{q}&key=s&value=first") == {"before": None}
        assert await ok(f"{url}/cas?{q}&key=s&value=second") == {"before": "first"}
        conflict = await ok(f"{url}/cas-conflict?{q}&key=s&value=third")
        assert conflict == {"first": "cas-failed", "fresh_current": "intruder", "final": "third"}
        assert await ok(f"{url}/cas-conflict?{q}&key=fresh&value=v") == {
            "first": "cas-failed",
            "fresh_current": "intruder",
            "final": "v",
        }


async def test_missing_link_bad_input_and_healing(env: Env, build_component: Callable[[str], Path]) -> None:
    ref = "file://" + str(build_component("kv_draft").resolve())
    env.start_host()
    (host,) = await env.host_ids(1)
    ctl = env.ctl
    bucket = f"kvh_{uid()}"
    await start_providers(env, host, (NATS_KV, "nats-kv"), (MEMORY_KV, "mem-kv"))
    await ctl.put_config("kv-nats", {"bucket": bucket})
    await ctl.put_config("kv-small", {"max_value_bytes": "100"})
    await ctl.put_link(kv_link("kvd", "nats-kv", config=["kv-nats"]))
    await ctl.put_link(kv_link("kvd", "mem-kv", "small", ["kv-small"]))
    await ctl.put_link(kv_link("kvd", "ghost-kv", "ghost"))
    url = await serve_http(env, host, "kvd", ref, port=free_port(), ready_path="/exists?key=warmup")
    await eventually(lambda: ok(f"{url}/set?key=keep&value=kept"))
    await eventually(lambda: ok(f"{url}/get?link=small&key=x"))

    # Bad input is answered with the interface's own error; the host keeps serving.
    assert "a key must be 1 to 1024 bytes" in await fails(f"{url}/set?key=&value=x")
    assert "invalid key ''" in await fails(f"{url}/get?key=")
    assert "a key must be 1 to 1024 bytes" in await fails(f"{url}/get?key={'k' * 1025}")
    assert "a key must be 1 to 1024 bytes" in await fails(f"{url}/get-many?key=a&key=")
    big = await fails(f"{url}/set?key=big&size={1024 * 1024 + 1}")
    assert "value of 1048577 bytes for key 'big' exceeds the limit of 1048576 bytes" in big
    assert "exceeds the limit of 100 bytes" in await fails(f"{url}/set?link=small&key=big&size=101")
    assert await ok(f"{url}/set?link=small&key=fits&size=100") == 100
    assert "exceeds the limit of 100 bytes" in await fails(f"{url}/set-many?link=small&k=a&v={'x' * 101}")
    assert "not a decimal integer" in await fails(f"{url}/incr?key=keep&delta=1")
    # Without a `bucket` setting the identifier names the bucket, and must be a valid name.
    assert "invalid bucket name 'no.dots'" in await fails(f"{url}/get?link=small&bucket=no.dots&key=a")
    # A link whose target is not running here.
    assert "`ghost-kv` (the target of link `ghost`" in await fails(f"{url}/get?link=ghost&key=a")
    assert await ok(f"{url}/get?key=keep") == "kept"

    # Deleting the link: the next call fails with the reason, in the response and the host log.
    await ctl.delete_link("kvd", "wasi", "keyvalue")
    message = "no link named `default` for `wasi:keyvalue/store`"

    async def unlinked() -> None:
        assert message in await fails(f"{url}/get?key=keep")

    await eventually(unlinked)
    deadline = time.monotonic() + 10
    log = env.log_dir / "host0.log"
    while message not in log.read_text(errors="replace") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert message in log.read_text(errors="replace")
    assert await ok(f"{url}/get?link=small&key=fits") == "x" * 100  # other links unaffected

    # Re-adding the link heals; the data was in the bucket all along.
    await ctl.put_link(kv_link("kvd", "nats-kv", config=["kv-nats"]))
    assert await eventually(lambda: ok(f"{url}/get?key=keep")) == "kept"


async def test_link_config_changes_apply_to_the_next_call(
    env: Env, build_component: Callable[[str], Path]
) -> None:
    """Changing a named config that a link lists re-targets the link's calls, without a new link."""
    ref = "file://" + str(build_component("kv_draft").resolve())
    env.start_host()
    (host,) = await env.host_ids(1)
    await start_providers(env, host, (MEMORY_KV, "mem-kv"))
    await env.ctl.put_config("kv-where", {"bucket": "first"})
    await env.ctl.put_link(kv_link("kvc", "mem-kv", config=["kv-where"]))
    url = await serve_http(env, host, "kvc", ref, port=free_port(), ready_path="/exists?key=warmup")
    await eventually(lambda: ok(f"{url}/set?key=k&value=one"))
    assert await ok(f"{url}/get?key=k") == "one"

    async def get_is(expected: Any) -> None:
        assert await ok(f"{url}/get?key=k") == expected

    await env.ctl.put_config("kv-where", {"bucket": "second"})
    await eventually(lambda: get_is(None))
    assert await ok(f"{url}/set?key=k&value=two") == 3
    await env.ctl.put_config("kv-where", {"bucket": "first"})
    await eventually(lambda: get_is("one"))
