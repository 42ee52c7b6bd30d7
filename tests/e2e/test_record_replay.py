"""Record and replay (docs/record-replay.md): the notes example recorded on a real host, replayed offline.

A lattice host started with `--record-dir --record-all` serves the notes example (key-value on NATS,
messaging) over real HTTP; its recording of `GET /notes/todo` is replayed by `wasmlattice replay`
after the host is gone (no lattice, no NATS, no backend), and then against a changed copy of
the notes source, whose first differing host call is reported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import aiohttp
import pytest

from tests.support.cli import cli
from tests.support.components import EXAMPLES, forget_notes, load_deploy
from tests.support.lattice import LatticeEnv
from tests.support.processes import free_port
from wasmlattice import devbuild

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def recording_of(directory: Path, method: str, path: str) -> Path:
    """The one recording of `method path` in `directory`."""
    found = []
    for f in sorted(directory.glob("*.json")):
        req = json.loads(f.read_text())["request"]
        if req["method"] == method and req["path_with_query"] == path:
            found.append(f)
    assert len(found) == 1, f"recordings of {method} {path}: {found} in {sorted(directory.iterdir())}"
    return found[0]


async def test_record_on_host_and_replay_offline(env: LatticeEnv, tmp_path: Path) -> None:
    hello = devbuild.build(EXAMPLES / "hello")
    notes = devbuild.build(EXAMPLES / "notes")
    # A changed copy of the notes source: notes are stored under another key prefix.
    changed_src = tmp_path / "notes"
    shutil.copytree(EXAMPLES / "notes", changed_src)
    app = changed_src / "app.py"
    text = app.read_text()
    assert 'PREFIX = "note."' in text
    app.write_text(text.replace('PREFIX = "note."', 'PREFIX = "memo."'))
    changed = devbuild.build(changed_src, tmp_path / "build")

    records = tmp_path / "records"
    await forget_notes(env.nc)
    env.start_host("--record-dir", str(records), "--record-all")
    await env.host_ids(1)
    deploy = load_deploy()
    hello_addr, notes_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    await deploy.deploy(hello, notes, env.nats_url, env.lattice, hello_addr, notes_addr)
    await deploy.wait_until_served(f"http://{notes_addr}/notes")
    async with aiohttp.ClientSession() as s:
        async with s.put(f"http://{notes_addr}/notes/todo", data=b"buy milk") as r:
            assert r.status == 201
            assert await r.text() == "stored todo (8 bytes)\n"
        async with s.get(f"http://{notes_addr}/notes/todo") as r:
            assert (r.status, await r.text()) == (200, "buy milk")
    # Offline from here: the host (and with it every provider) is gone.
    for proc in env.procs:
        proc.terminate()
        proc.wait(20)

    rec_path = recording_of(records, "GET", "/notes/todo")
    doc = json.loads(rec_path.read_text())
    assert doc["format"] == "wasmlattice-recording" and doc["version"] == 1
    assert doc["component"]["path"] == str(notes)
    calls = [c["call"].partition("@")[0] + "#" + c["call"].partition("#")[2] for c in doc["calls"]]
    assert "wasi:random/random#get-random-bytes" in calls
    get = next(c for c in doc["calls"] if c["call"].endswith("#[method]bucket.get"))
    assert get["args"] == [{"resource": "bucket", "id": 1}, "note.todo"]
    assert get["result"] == {"ok": {"some": {"text": "buy milk"}}}
    assert doc["outcome"]["status"] == 200 and doc["outcome"]["body"] == {"text": "buy milk"}
    # The PUT's recording holds the counter increment and the published change event too.
    put = json.loads(recording_of(records, "PUT", "/notes/todo").read_text())
    put_calls = [c["call"].split("#")[1] for c in put["calls"]]
    assert "[method]bucket.set" in put_calls and "increment" in put_calls and "publish" in put_calls

    same = cli("replay", str(rec_path), timeout=120)
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.startswith("identical:"), same.stdout
    put_replay = cli("replay", str(recording_of(records, "PUT", "/notes/todo")), timeout=120)
    assert put_replay.returncode == 0, put_replay.stdout + put_replay.stderr

    diverged = cli("replay", str(rec_path), "--wasm", str(changed), "-o", "json", timeout=120)
    assert diverged.returncode == 1, diverged.stdout + diverged.stderr
    report = json.loads(diverged.stdout)
    assert report["identical"] is False
    d = report["divergence"]
    assert d["where"].startswith("call ")
    assert "[method]bucket.get" in d["expected"] and '"note.todo"' in d["expected"]
    assert "[method]bucket.get" in d["got"] and '"memo.todo"' in d["got"]


def test_corrupt_recording_names_the_field(tmp_path: Path) -> None:
    good = {
        "format": "wasmlattice-recording",
        "version": 1,
        "component": {"id": "x", "path": str(tmp_path / "missing.wasm"), "sha256": None},
        "request": {
            "method": "GET",
            "path_with_query": "/",
            "scheme": "http",
            "authority": "a",
            "headers": [],
            "body": {"text": ""},
        },
        "calls": [{"call": "wasi:random/random@0.2.0#get-random-u64", "args": [], "result": 4}],
        "outcome": {"status": 200, "headers": [], "body": {"text": ""}, "trap": None},
    }
    cases = [
        ({"version": 7}, "version"),
        ({"calls": [{"call": "x#y", "args": {}, "result": 1}]}, "calls[0].args"),
        ({"outcome": {**good["outcome"], "status": "ok"}}, "outcome.status"),  # type: ignore[dict-item]
        ({"request": {**good["request"], "body": {"base64": "!!"}}}, "request.body"),  # type: ignore[dict-item]
    ]
    for change, field in cases:
        f = tmp_path / "bad.json"
        f.write_text(json.dumps({**good, **change}))
        r = cli("replay", str(f))
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"{field}:" in r.stderr, r.stderr
    (tmp_path / "nojson.json").write_text("{")
    r = cli("replay", str(tmp_path / "nojson.json"))
    assert r.returncode == 2 and "not a JSON recording" in r.stderr
