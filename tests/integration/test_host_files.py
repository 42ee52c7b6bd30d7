"""The host owns its powers: no control message reaches the host's files (docs/security.md).

Attacks from any NATS client of the lattice, against a real host process: a blobstore-fs root
chosen in link config to read the host's secrets key or write outside the allowed directories;
`file://` references to `/dev/zero`, a FIFO, paths outside the allowed directories (whose errors
must not tell whether they exist), and any `file://` on a host without `--allow-file-load`. After
each, the host still answers ping and inventory and serves HTTP for the component it already ran.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.http import get
from tests.support.lattice import LatticeEnv as Env
from tests.support.lattice import eventually, serve_http
from tests.support.processes import free_port
from wasmlattice.client.ctl import CtlError
from wasmlattice.protocol.models import Link
from wasmlattice.runtime.hostfiles import MSG_NOT_ALLOWED

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

FS_BLOB = "builtin://blobstore-fs"
MISSING_LINK = "no link named `default` for `wasi:blobstore/blobstore`"


def ref(path: Path | str) -> str:
    return f"file://{path}"


def blob_link(source: str, config: str) -> Link:
    return Link(
        source_id=source,
        target="files",
        wit_namespace="wasi",
        wit_package="blobstore",
        interfaces=["blobstore", "container", "types"],
        target_config=[config],
    )


async def call(url: str) -> dict[str, Any]:
    status, body = await get(url, timeout=60.0)
    assert status == 200, f"{url} -> {status} {body}"
    doc: dict[str, Any] = json.loads(body)
    return doc


async def assert_alive(env: Env, host: str, echo_url: str | None) -> None:
    """The host answers ping and inventory, and serves HTTP for the component it already ran."""
    assert host in [h.id for h in await env.ctl.ping_hosts(1.0)]
    inventory = await env.inventory(host)
    if echo_url is not None:
        assert "echo" in [c.id for c in inventory.components]
        status, _ = await get(f"{echo_url}/count", timeout=30.0)
        assert status == 200


def rss(pid: int) -> int:
    """Resident memory of process `pid`, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def peak_rss(pid: int, seconds: float, limit: int) -> int:
    """The highest RSS of `pid` over `seconds`; the process is killed as soon as it passes `limit`
    (a host streaming /dev/zero into memory would otherwise take the machine down)."""
    peak, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, rss(pid))
        if peak > limit:
            os.kill(pid, signal.SIGKILL)
            break
        await asyncio.sleep(0.02)
    return peak


async def refused(env: Env, host: str, path: Path | str, component_id: str) -> str:
    """The scale reply's refusal of `file://path` (the attempt must fail in the reply)."""
    with pytest.raises(CtlError) as e:
        await env.ctl.scale_component(host, ref(path), component_id, 1)
    return str(e.value)


async def test_blobstore_fs_root_outside_allowed_dirs_cannot_reach_the_host_files(
    env: Env, build_component: Callable[[str], Path], http_echo_wasm: Path, tmp_path: Path
) -> None:
    allowed, home = tmp_path / "allowed", tmp_path / "home"  # `home`: where ~/.ssh would be
    allowed.mkdir()
    # The host's secrets key where a host finds it by default: $XDG_DATA_HOME/wasmlattice/secrets.key.
    xdg = tmp_path / "xdg"
    key = xdg / "wasmlattice" / "secrets.key"
    key.parent.mkdir(parents=True)
    key_text = base64.b64encode(os.urandom(32)).decode()
    key.write_text(key_text)
    blob, echo = allowed / "blob.wasm", allowed / "echo.wasm"
    shutil.copyfile(build_component("blob_guest"), blob)
    shutil.copyfile(http_echo_wasm, echo)
    env.start_host(
        "--allow-file-load", "--allow-dir", str(allowed), files=False, env={"XDG_DATA_HOME": str(xdg)}
    )
    (host,) = await env.host_ids(1)
    echo_url = await serve_http(env, host, "echo", ref(echo), port=free_port(), ready_path="/count")

    # Any NATS client can put config and links: a root at the directory holding the key.
    await env.ctl.put_config("steal", {"root": str(xdg)})
    await env.ctl.start_provider(host, FS_BLOB, "files")
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "files")
    url = await serve_http(env, host, "thief", ref(blob), port=free_port(), ready_path="/body-twice")
    await env.ctl.put_link(blob_link("thief", "steal"))

    async def read_key() -> dict[str, Any]:
        doc = await call(f"{url}/get?c=wasmlattice&o=secrets.key")
        assert doc.get("error") != MISSING_LINK, "the link has not arrived yet"
        return doc

    doc = await eventually(read_key)
    assert key_text not in json.dumps(doc)
    error = doc.get("error", "")
    assert f"blobstore-fs root {str(xdg)!r} is not inside a directory this host allows" in error, doc
    assert f"--allow-dir; allowed: {allowed.resolve()}" in error
    await env.wait_log(f"link `default` from `thief`: blobstore-fs root {str(xdg)!r}")
    await assert_alive(env, host, echo_url)

    # Writing outside the allowed directories (say ~/.ssh/authorized_keys) is refused too.
    await env.ctl.put_config("plant", {"root": str(home)})
    await env.ctl.put_link(blob_link("thief", "plant"))

    async def plant() -> str:
        doc = await call(f"{url}/create?c=ssh")
        assert str(home) in doc.get("error", ""), doc
        doc = await call(f"{url}/put-text?c=ssh&o=authorized_keys&v={quote('ssh-ed25519 AAAA evil')}")
        message: str = doc.get("error", "")
        assert str(home) in message, doc
        return message

    assert "is not inside a directory this host allows" in await eventually(plant)
    assert not home.exists()  # not even the root directory was made
    await assert_alive(env, host, echo_url)

    # A root inside an allowed directory works.
    await env.ctl.put_config("fine", {"root": str(allowed / "blobs")})
    await env.ctl.put_link(blob_link("thief", "fine"))

    async def create() -> None:
        assert await call(f"{url}/create?c=box") == {"name": "box"}

    await eventually(create)
    assert (allowed / "blobs" / "box").is_dir()
    assert key.read_text() == key_text and not home.exists()
    await assert_alive(env, host, echo_url)


async def test_without_allow_file_load_file_refs_are_refused(env: Env, http_echo_wasm: Path) -> None:
    env.start_host(files=False)  # the default of `wasmlattice host`, as in wasmCloud
    (host,) = await env.host_ids(1)
    message = await refused(env, host, http_echo_wasm, "echo")
    assert "file loading is disabled on this host; start it with --allow-file-load" in message
    failed = await env.wait_event("component_scale_failed", lambda e: e["data"]["component_id"] == "echo")
    assert "--allow-file-load" in failed["data"]["error"]
    await asyncio.sleep(1.0)  # nothing starts later either
    assert (await env.inventory(host)).components == []
    await assert_alive(env, host, None)


async def test_dev_zero_fifos_and_outside_paths_neither_stall_nor_reveal(
    env: Env, http_echo_wasm: Path, tmp_path: Path
) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    echo = allowed / "echo.wasm"
    shutil.copyfile(http_echo_wasm, echo)
    shutil.copyfile(http_echo_wasm, outside / "exists.wasm")
    os.symlink(outside / "exists.wasm", allowed / "link.wasm")
    os.mkfifo(allowed / "pipe.wasm")
    os.mkfifo(outside / "pipe.wasm")
    env.start_host("--allow-file-load", "--allow-dir", str(allowed), files=False)
    (host,) = await env.host_ids(1)
    echo_url = await serve_http(env, host, "echo", ref(echo), port=free_port(), ready_path="/count")
    pid = env.process_of(host).pid

    # /dev/zero: refused in the reply, and never read (the host's memory stays where it was).
    before = rss(pid)
    started = time.monotonic()
    try:
        reply = str(await env.ctl.scale_component(host, "file:///dev/zero", "zero", 1))
    except CtlError as e:
        reply = str(e)
    took = time.monotonic() - started
    peak = await peak_rss(pid, 2.0, limit=before + 512 * 1024 * 1024)
    assert peak < before + 64 * 1024 * 1024, f"RSS grew from {before} to {peak} bytes"
    assert reply.endswith(f"cannot load 'file:///dev/zero': {MSG_NOT_ALLOWED}"), reply
    assert took < 5.0
    failed = await env.wait_event("component_scale_failed", lambda e: e["data"]["component_id"] == "zero")
    assert failed["data"]["error"] == f"cannot load 'file:///dev/zero': {MSG_NOT_ALLOWED}"
    await assert_alive(env, host, echo_url)

    # Outside the allowed directories: one answer, whether the file exists, is missing, is reached
    # through a link from inside, or is a FIFO.
    outside_paths = [
        outside / "exists.wasm",
        outside / "missing.wasm",
        allowed / "link.wasm",
        outside / "pipe.wasm",
        Path("/etc/passwd"),
    ]
    answers = {
        str(path): (await refused(env, host, path, f"probe{i}")).replace(ref(path), "REF")
        for i, path in enumerate(outside_paths)
    }
    assert set(answers.values()) == {f"component.scale failed: cannot load 'REF': {MSG_NOT_ALLOWED}"}, answers
    with pytest.raises(CtlError, match=MSG_NOT_ALLOWED.replace("(", r"\(").replace(")", r"\)")):
        await env.ctl.update_component(host, "echo", ref(outside / "exists.wasm"))
    await assert_alive(env, host, echo_url)

    # A FIFO inside them: refused without blocking; the next scale on the host goes through at once.
    assert await env.ctl.scale_component(host, ref(allowed / "pipe.wasm"), "fifo", 1) == ""
    failed = await env.wait_event(
        "component_scale_failed", lambda e: e["data"]["component_id"] == "fifo", timeout=10
    )
    assert failed["data"]["error"] == f"cannot load {ref(allowed / 'pipe.wasm')!r}: not a regular file"
    started = time.monotonic()
    assert await env.ctl.scale_component(host, ref(echo), "echo2", 1) == ""
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "echo2", timeout=15)
    assert time.monotonic() - started < 15
    inventory = await env.inventory(host)
    assert sorted(c.id for c in inventory.components) == ["echo", "echo2"]
    await assert_alive(env, host, echo_url)
