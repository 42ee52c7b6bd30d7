"""`wasi:blobstore@0.2.0-draft` through a real component on real host processes, on both backends.

The NATS backend stores containers as object store buckets on the test nats-server; the directory
backend under `tmp_path`. The `blob_guest` component answers JSON (see its `app.py`); a failed
call answers `{"error": "<the interface's error string>"}`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.http import get
from tests.support.lattice import LatticeEnv as Env
from tests.support.lattice import eventually, serve_http
from tests.support.processes import free_port
from wasmlattice.protocol.models import Link

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

NATS_BLOB = "builtin://blobstore-nats"
FS_BLOB = "builtin://blobstore-fs"
MISSING_LINK = "no link named `default` for `wasi:blobstore/blobstore`"
BIG = 8 * 1024 * 1024


def blob_link(source: str, target: str, config: list[str]) -> Link:
    return Link(
        source_id=source,
        target=target,
        wit_namespace="wasi",
        wit_package="blobstore",
        interfaces=["blobstore", "container", "types"],
        target_config=config,
    )


def pattern(n: int, seed: int = 0, start: int = 0) -> bytes:
    """What the guest's `/put?n=N&seed=S` writes: byte i is (i + S) % 251."""
    return bytes((i + seed) % 251 for i in range(start, start + n))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def call(url: str) -> dict[str, Any]:
    status, body = await get(url, timeout=120.0)
    assert status == 200, f"{url} -> {status} {body}"
    doc: dict[str, Any] = json.loads(body)
    return doc


async def ok(url: str) -> dict[str, Any]:
    doc = await call(url)
    assert "error" not in doc, f"{url} -> {doc}"
    return doc


async def error(url: str) -> str:
    doc = await call(url)
    assert "error" in doc, f"{url} should have failed, got {doc}"
    message: str = doc["error"]
    return message


async def start_provider(env: Env, host: str, ref: str, pid: str) -> None:
    assert await env.ctl.start_provider(host, ref, pid) == "successfully started provider"
    await env.wait_event(
        "provider_started",
        lambda e: e["data"]["provider_id"] == pid and e["data"].get("host_id", host) == host,
    )


async def missing_link_then_link(env: Env, url: str, component_id: str, provider: str, config: str) -> None:
    """Before its link, a call fails with the missing-link error (also logged); then link it."""
    assert await error(f"{url}/exists?c=any") == MISSING_LINK
    logs = env.log_text()
    assert MISSING_LINK in logs and component_id in logs
    await env.ctl.put_link(blob_link(component_id, provider, [config]))

    async def linked() -> None:
        assert await call(f"{url}/exists?c=any") == {"exists": False}

    await eventually(linked)


async def exercise(url: str, reader_url: str, c: str) -> None:
    """Every blobstore function once through `url`; data read back through `reader_url` too."""
    other = c + "-other"
    assert await ok(f"{url}/exists?c={c}") == {"exists": False}
    assert "does not exist" in await error(f"{url}/get-container?c={c}")
    assert await ok(f"{url}/create?c={c}") == {"name": c}
    assert "already exists" in await error(f"{url}/create?c={c}")
    assert await ok(f"{reader_url}/exists?c={c}") == {"exists": True}
    info = await ok(f"{url}/info?c={c}")
    assert info["name"] == c and abs(info["created_at"] - time.time()) < 300

    # A big object written in 64 KiB chunks, read as a stream (another instance, maybe another host).
    put = await ok(f"{url}/put?c={c}&o=big.bin&n={BIG}&seed=7")
    assert put == {"ok": True, "size": BIG, "sha256": sha(pattern(BIG, 7))}
    got = await ok(f"{reader_url}/get?c={c}&o=big.bin")
    assert (got["size"], got["len"], got["sha256"]) == (BIG, BIG, put["sha256"])
    assert got["reads"] > 1  # it arrived in pieces through the input-stream
    meta = await ok(f"{reader_url}/object-info?c={c}&o=big.bin")
    assert (meta["name"], meta["container"], meta["size"]) == ("big.bin", c, BIG)

    # Writing the data before `write-data` works too (and replaces the object).
    await ok(f"{url}/put?c={c}&o=big.bin&n=300000&seed=1&order=after&chunk=10000")
    got = await ok(f"{reader_url}/get?c={c}&o=big.bin&mode=sync")
    assert (got["size"], got["len"], got["sha256"]) == (300000, 300000, sha(pattern(300000, 1)))

    # Ranges: offsets inclusive, `end` clipped, a start past the end is empty, end < start fails.
    got = await ok(f"{reader_url}/get?c={c}&o=big.bin&start=1000&end=1999")
    assert (got["size"], got["len"], got["sha256"]) == (1000, 1000, sha(pattern(1000, 1, 1000)))
    got = await ok(f"{reader_url}/get?c={c}&o=big.bin&start=299990&end=999999999&mode=sync")
    assert got["text"] == pattern(10, 1, 299990).decode("latin-1")
    got = await ok(f"{reader_url}/get?c={c}&o=big.bin&start=400000&end=500000")
    assert (got["size"], got["len"]) == (0, 0)
    assert "before start" in await error(f"{reader_url}/get?c={c}&o=big.bin&start=10&end=9")
    assert "does not exist" in await error(f"{reader_url}/get?c={c}&o=nope")
    assert "does not exist" in await error(f"{reader_url}/object-info?c={c}&o=nope")

    # An empty object, and a value dropped unfinished leaves nothing.
    await ok(f"{url}/put?c={c}&o=empty&n=0")
    assert (await ok(f"{reader_url}/get?c={c}&o=empty"))["len"] == 0
    await ok(f"{url}/unfinished?c={c}&o=half&n=200000")
    assert await ok(f"{reader_url}/has?c={c}&o=half") == {"has": False}
    second = (await ok(f"{url}/write-twice?c={c}&o=once"))["second"]
    assert "already being written" in second
    assert (await ok(f"{reader_url}/get?c={c}&o=once"))["text"] == "once"
    assert await ok(f"{url}/body-twice") == {"second": "None"}

    # Listing with paging and skipping.
    for i in range(7):
        await ok(f"{url}/put-text?c={c}&o=dir/n{i}&v=value{i}")
    names = sorted(["big.bin", "empty", "once", *(f"dir/n{i}" for i in range(7))])
    listed = await ok(f"{reader_url}/list?c={c}&page=4")
    assert sorted(n for page in listed["pages"] for n in page) == names
    assert [len(p) for p in listed["pages"]] == [4, 4, 2] and listed["ends"] == [False, False, True]
    listed = await ok(f"{reader_url}/list?c={c}&page=100&skip=3")
    assert listed["skipped"] == [3, False] and len(listed["pages"][0]) == 7
    assert (await ok(f"{reader_url}/list?c={c}&skip=50"))["skipped"] == [10, True]

    # has / delete / delete-many (absent names are fine).
    assert await ok(f"{reader_url}/has?c={c}&o=dir/n0") == {"has": True}
    await ok(f"{url}/delete?c={c}&o=dir/n0")
    await ok(f"{url}/delete?c={c}&o=dir/n0")
    assert await ok(f"{reader_url}/has?c={c}&o=dir/n0") == {"has": False}
    await ok(f"{url}/delete-many?c={c}&o=dir/n1&o=dir/n2&o=never")
    left = await ok(f"{reader_url}/list?c={c}")
    assert left["pages"] == [sorted(["big.bin", "empty", "once", *(f"dir/n{i}" for i in range(3, 7))])]

    # copy and move, within and across containers; the destination container must exist.
    assert "does not exist" in await error(f"{url}/copy?sc={c}&so=once&dc={other}&do=x")
    await ok(f"{url}/create?c={other}")
    await ok(f"{url}/copy?sc={c}&so=dir/n3&dc={other}&do=copied")
    assert (await ok(f"{reader_url}/get?c={other}&o=copied"))["text"] == "value3"
    assert (await ok(f"{reader_url}/get?c={c}&o=dir/n3"))["text"] == "value3"
    await ok(f"{url}/move?sc={c}&so=dir/n4&dc={other}&do=moved")
    assert (await ok(f"{reader_url}/get?c={other}&o=moved"))["text"] == "value4"
    assert await ok(f"{reader_url}/has?c={c}&o=dir/n4") == {"has": False}
    await ok(f"{url}/move?sc={c}&so=dir/n5&dc={c}&do=renamed")
    assert (await ok(f"{reader_url}/get?c={c}&o=renamed"))["text"] == "value5"
    assert "does not exist" in await error(f"{url}/copy?sc={c}&so=nope&dc={other}&do=x")

    # clear, then delete the containers.
    await ok(f"{url}/clear?c={c}")
    assert (await ok(f"{reader_url}/list?c={c}"))["pages"] == [[]]
    assert await ok(f"{reader_url}/exists?c={c}") == {"exists": True}
    await ok(f"{url}/delete-container?c={c}")
    await ok(f"{url}/delete-container?c={other}")
    assert await ok(f"{reader_url}/exists?c={c}") == {"exists": False}
    assert "does not exist" in await error(f"{url}/delete-container?c={c}")


async def test_nats_object_store_across_hosts(env: Env, build_component: Callable[[str], Path]) -> None:
    ref = "file://" + str(build_component("blob_guest").resolve())
    env.start_host()
    env.start_host()
    host_a, host_b = await env.host_ids(2)
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    await env.ctl.put_config("blob-nats", {"bucket_prefix": prefix})
    await start_provider(env, host_a, NATS_BLOB, "blobs")
    await start_provider(env, host_b, NATS_BLOB, "blobs")
    url_a = await serve_http(env, host_a, "blob-a", ref, port=free_port(), ready_path="/body-twice")
    url_b = await serve_http(env, host_b, "blob-b", ref, port=free_port(), ready_path="/body-twice")

    await missing_link_then_link(env, url_a, "blob-a", "blobs", "blob-nats")
    await env.ctl.put_link(blob_link("blob-b", "blobs", ["blob-nats"]))
    await eventually(lambda: ok(f"{url_b}/exists?c=x"))

    await exercise(url_a, url_b, "photos")

    # A container name with characters a bucket cannot have maps to its own bucket.
    odd = "photos.2024/ü"
    await ok(f"{url_a}/create?c={quote(odd)}")
    await ok(f"{url_a}/put-text?c={quote(odd)}&o={quote('any name/ü ?*')}&v=hi")
    got = await ok(f"{url_b}/get?c={quote(odd)}&o={quote('any name/ü ?*')}")
    assert got["text"] == "hi"
    info = await env.nc.jetstream().stream_info(f"OBJ_{prefix}photos-2e2024-2f-c3-bc")
    assert info.state.messages >= 2  # one chunk, one meta message
    await ok(f"{url_a}/delete-container?c={quote(odd)}")
    assert await ok(f"{url_b}/exists?c={quote(odd)}") == {"exists": False}


async def test_directory_backend_confined(
    env: Env, build_component: Callable[[str], Path], tmp_path: Path
) -> None:
    ref = "file://" + str(build_component("blob_guest").resolve())
    root = tmp_path / "blobs"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"do not touch")
    env.start_host()
    (host,) = await env.host_ids(1)
    await env.ctl.put_config("blob-fs", {"root": str(root)})
    await start_provider(env, host, FS_BLOB, "files")
    url = await serve_http(env, host, "blob-fs", ref, port=free_port(), ready_path="/body-twice")
    await missing_link_then_link(env, url, "blob-fs", "files", "blob-fs")

    await exercise(url, url, "docs")

    # What was written is plain files under the root.
    await ok(f"{url}/create?c=box")
    await ok(f"{url}/put?c=box&o=a/b/big&n={BIG}&seed=3&chunk=100000")
    assert (root / "box" / "a" / "b" / "big").read_bytes() == pattern(BIG, 3)
    got = await ok(f"{url}/get?c=box&o=a/b/big&start={BIG - 5}&end={BIG + 100}")
    assert got["text"] == pattern(5, 3, BIG - 5).decode("latin-1")

    # Names that would leave the root (or their container) are refused with the interface's error.
    os.symlink(outside, root / "box" / "link")
    os.symlink(outside, root / "linked-container")
    bad_containers = ["..", "../outside", "a/b", ".hidden", "/tmp", "x%00y", "linked-container"]
    for bad in bad_containers:
        for route in ("create", "exists", "get-container", "delete-container"):
            message = await error(f"{url}/{route}?c={bad}")
            assert "container" in message and ("invalid" in message or "outside" in message), message
    bad_objects = ["../x", "../../outside/secret.txt", "/etc/passwd", "a/../../x", "a//b", "./a", "a%00b"]
    bad_objects += ["link/secret.txt", "link/new.txt"]
    for bad in bad_objects:
        for route in ("put-text", "get", "has", "delete", "object-info"):
            message = await error(f"{url}/{route}?c=box&o={bad}&v=evil")
            assert "object" in message and ("invalid" in message or "outside" in message), message
        assert "object" in await error(f"{url}/copy?sc=box&so=a/b/big&dc=box&do={bad}")
        assert "object" in await error(f"{url}/move?sc=box&so={bad}&dc=box&do=fine")
    assert "invalid object name" in await error(f"{url}/put-text?c=box&o=&v=x")

    # Nothing outside the root was touched, and the host keeps serving.
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == b"do not touch"
    assert not (tmp_path / "x").exists() and not (root.parent / "new.txt").exists()
    listed = await ok(f"{url}/list?c=box")
    assert listed["pages"] == [["a/b/big"]]  # the escaping symlink is not listed either
    await ok(f"{url}/delete-container?c=box")
    assert (outside / "secret.txt").read_bytes() == b"do not touch"
    assert sorted(p.name for p in root.iterdir()) == [".wasmlattice-tmp", "linked-container"]
    assert list((root / ".wasmlattice-tmp").iterdir()) == []
