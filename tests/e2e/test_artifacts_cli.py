"""`wasmlattice artifacts list/delete` as a user runs them: CLI subprocesses against a real nats-server."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import cli

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def core_module(tag: bytes) -> bytes:
    """A minimal core wasm module made distinct by a custom section (push reads no component)."""
    name = b"note"
    body = bytes([len(name)]) + name + tag
    return b"\0asm\x01\x00\x00\x00" + bytes([0, len(body)]) + body


def test_list_and_delete_the_lattice_store(nats_url: str, lattice_name: str, tmp_path: Path) -> None:
    common = ("--nats-url", nats_url, "--lattice", lattice_name)
    # Our own artifact cache: a pull below must reach the store, not a cache of an earlier run.
    env = {"WASMLATTICE_ARTIFACT_CACHE_DIR": str(tmp_path / "cache")}

    def run(*args: str) -> Any:
        return cli(*args, *common, env=env)

    def ok(*args: str) -> str:
        r = run(*args)
        assert r.returncode == 0, f"{args}: {r.stderr}"
        return str(r.stdout)

    # Nothing pushed yet: empty, not an error.
    assert json.loads(ok("artifacts", "list", "-o", "json")) == []
    assert "holds nothing" in ok("artifacts", "list")

    a, b = tmp_path / "a.wasm", tmp_path / "b.wasm"
    a.write_bytes(core_module(b"a"))
    b.write_bytes(core_module(b"bb"))
    da = "sha256:" + hashlib.sha256(a.read_bytes()).hexdigest()
    db = "sha256:" + hashlib.sha256(b.read_bytes()).hexdigest()
    assert ok("push", "lattice://hello:1.0", str(a), "-a", "team=web").strip() == f"lattice://hello@{da}"
    ok("push", "lattice://hello:1.1", str(b))
    ok("push", "lattice://world:1", str(a))

    listed = json.loads(ok("artifacts", "list", "-o", "json"))
    assert [(x["ref"], x["digest"], x["size"]) for x in listed] == [
        ("lattice://hello:1.0", da, a.stat().st_size),
        ("lattice://hello:1.1", db, b.stat().st_size),
        ("lattice://world:1", da, a.stat().st_size),
    ]
    assert listed[0]["annotations"] == {"team": "web"} and listed[0]["media_type"] == "application/wasm"
    assert listed[0]["created"].endswith("Z")
    assert [x["tag"] for x in json.loads(ok("artifacts", "list", "hello", "-o", "json"))] == ["1.0", "1.1"]
    assert json.loads(ok("artifacts", "list", "nope", "-o", "json")) == []
    text = ok("artifacts", "list")
    for ref in ("lattice://hello:1.0", "lattice://hello:1.1", "lattice://world:1", "team=web"):
        assert ref in text, text

    # A tag whose bytes another tag still uses: the tag goes, the bytes stay.
    gone = json.loads(ok("artifacts", "delete", "lattice://hello:1.0", "-o", "json"))
    assert gone == {"success": True, "digest": da, "untagged": ["hello:1.0"], "blob_removed": False}
    assert [x["ref"] for x in json.loads(ok("artifacts", "list", "-o", "json"))] == [
        "lattice://hello:1.1",
        "lattice://world:1",
    ]
    # By digest: every tag of that name on it, and now the bytes too.
    out = ok("artifacts", "delete", f"lattice://world@{da}")
    assert "lattice://world:1" in out and "removed its bytes" in out, out
    pulled = run("pull", f"lattice://hello@{da}", "-o", str(tmp_path / "x.wasm"))
    assert pulled.returncode != 0 and da in pulled.stderr, pulled.stderr
    assert [x["ref"] for x in json.loads(ok("artifacts", "list", "-o", "json"))] == ["lattice://hello:1.1"]

    # Refusals name the cause.
    unknown = run("artifacts", "delete", "lattice://hello:9")
    assert unknown.returncode == 1 and "no such tag" in unknown.stderr and "1.1" in unknown.stderr
    wrong = run("artifacts", "delete", f"lattice://hello:1.1@{da}", "-o", "json")
    assert wrong.returncode == 1 and json.loads(wrong.stdout)["success"] is False
    assert db in wrong.stderr, wrong.stderr
    oci = run("artifacts", "delete", "localhost:5000/hello:1")
    assert oci.returncode == 2 and "not a lattice:// reference" in oci.stderr
    bad = run("artifacts", "list", "Bad Name")
    assert bad.returncode == 1 and "Bad Name" in bad.stderr, bad.stderr
    # Still there after the refusals.
    assert [x["ref"] for x in json.loads(ok("artifacts", "list", "-o", "json"))] == ["lattice://hello:1.1"]
