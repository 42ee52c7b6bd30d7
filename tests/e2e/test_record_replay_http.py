"""Record and replay of outgoing HTTP (docs/record-replay.md): `wasmlattice run --record` serves the
http_fetch guest, which calls a real aiohttp upstream on loopback; the upstream is stopped, and
`wasmlattice replay` answers the guest's requests from the recordings alone.

Also: a recorded response edited in the file, or an incoming request edited so that the guest
sends a different request, is reported as a divergence naming the field; a refused connection and
a destination the host denies replay as the same errors; a response body over the cap makes the
recording unreplayable, with the reason.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.cli import cli
from tests.support.processes import ServerProcess, free_port
from wasmlattice.replay.outgoing import MAX_EXCHANGE_BODY

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

BODY = "hello upstream " * 300  # 4500 bytes: the guest writes it in five pieces
BIG = bytes(i % 251 for i in range(MAX_EXCHANGE_BODY + 1))


def recording_of(directory: Path, path: str) -> Path:
    """The one recording of a request to `path` in `directory`."""
    found = [
        f
        for f in sorted(directory.glob("*.json"))
        if json.loads(f.read_text())["request"]["path_with_query"] == path
    ]
    assert len(found) == 1, f"recordings of {path}: {found} in {sorted(directory.iterdir())}"
    return found[0]


def handle_entry(doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The index and entry of the one `outgoing-handler.handle` call of a recording."""
    found = [(i, c) for i, c in enumerate(doc["calls"]) if "wasi:http/outgoing-handler" in c["call"]]
    assert len(found) == 1, [c["call"] for c in doc["calls"]]
    return found[0]


def replay(path: Path, *args: str) -> tuple[int, Any, str]:
    """`wasmlattice replay PATH -o json`: exit code, the JSON report (None if none) and stderr."""
    r = cli("replay", str(path), "-o", "json", *args, timeout=180)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else None, r.stderr


def edited(path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the recording at `path` with `change` applied."""
    doc = json.loads(path.read_text())
    change(doc)
    out = path.with_name("edited-" + path.name)
    out.write_text(json.dumps(doc))
    return out


async def test_outgoing_http_recorded_and_replayed_offline(
    build_component: Callable[[str], Path],
    start_wasmlattice: Callable[..., ServerProcess],
    tmp_path: Path,
) -> None:
    wasm = build_component("http_fetch")
    records = tmp_path / "records"
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def data(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(
            (request.method, request.path_qs, {k.lower(): v for k, v in request.headers.items()}, body)
        )
        text = f"{request.method} {request.path_qs} got {len(body)} bytes: {body.decode()[:40]}"
        return web.Response(status=201, text=text, headers={"x-from": "upstream"})

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=BIG, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_route("*", "/data", data)
    app.router.add_get("/big", big)
    runner = web.AppRunner(app)
    await runner.setup()
    up = free_port()
    closed = free_port()  # nothing listens there
    await web.TCPSite(runner, "127.0.0.1", up).start()
    try:
        server = await asyncio.to_thread(
            start_wasmlattice,
            wasm,
            "--record",
            str(records),
            "--allow-outgoing",
            "127.0.0.1",
            ready_path="/ready",
        )
        base = server.base_url
        async with aiohttp.ClientSession() as s:
            headers = {
                "x-upstream": f"http://127.0.0.1:{up}/data?q=1",
                "authorization": "Bearer s3cret",
                "content-type": "text/plain",
                "x-note": "hi",
            }
            async with s.post(f"{base}/post", data=BODY.encode(), headers=headers) as r:
                text = await r.text()
                assert r.status == 201, text
                assert (
                    text == f"upstream text/plain; charset=utf-8: POST /data?q=1 got 4500 bytes: {BODY[:40]}"
                )
            async with s.get(f"{base}/refused", headers={"x-upstream": f"http://127.0.0.1:{closed}/x"}) as r:
                text = await r.text()
                assert r.status == 502 and text.startswith("failed: ") and "ConnectionRefused" in text, text
            async with s.get(f"{base}/denied", headers={"x-upstream": f"http://localhost:{up}/data"}) as r:
                text = await r.text()
                assert r.status == 502 and text.startswith("handle refused: ") and "Denied" in text, text
            big_headers = {"x-upstream": f"http://127.0.0.1:{up}/big", "x-digest": "1"}
            async with s.get(f"{base}/big", headers=big_headers) as r:
                text = await r.text()
                assert r.status == 200 and text.startswith(
                    f"upstream application/octet-stream: {len(BIG)} bytes"
                ), text
        # The upstream really got the request, credentials and all.
        assert [(m, p) for m, p, _, _ in seen] == [("POST", "/data?q=1")]
        assert seen[0][2]["authorization"] == "Bearer s3cret" and seen[0][2]["x-note"] == "hi"
        assert seen[0][3] == BODY.encode()
        server.stop()
    finally:
        await runner.cleanup()
    # Offline from here: the upstream is gone (a replay that sent anything would be refused).

    post = recording_of(records, "/post")
    assert "s3cret" not in post.read_text()
    doc = json.loads(post.read_text())
    assert doc["version"] == 1
    i, entry = handle_entry(doc)
    assert entry["args"] == [
        {
            "method": "POST",
            "scheme": "http",
            "authority": f"127.0.0.1:{up}",
            "path_with_query": "/data?q=1",
            "headers": [["authorization", "<redacted>"], ["content-type", "text/plain"], ["x-note", "hi"]],
            "body": {"text": BODY},
        },
        None,
    ]
    assert entry["result"]["ok"]["resource"] == "future-incoming-response"
    resp = entry["response"]
    assert resp["status"] == 201 and ["x-from", "upstream"] in resp["headers"]
    assert (
        resp["body"] == {"text": f"POST /data?q=1 got 4500 bytes: {BODY[:40]}"} and resp["body_error"] is None
    )
    # In call order: the wall clock is read on both sides of the exchange.
    names = [c["call"].split("#")[1] for c in doc["calls"]]
    assert "now" in names[:i] and "now" in names[i + 1 :], names

    code, report, err = replay(post)
    assert code == 0 and report["identical"], (report, err)

    # The upstream's recorded answer edited: the guest passes on what it got, so its response differs.
    def edit_response(d: dict[str, Any]) -> None:
        d["calls"][i]["response"]["body"] = {"text": "edited upstream body"}

    code, report, err = replay(edited(post, edit_response))
    assert code == 1, (report, err)
    assert report["divergence"]["where"].startswith("outcome.body"), report
    assert "edited upstream body" in report["divergence"]["got"]

    # The incoming body edited: the guest sends a different body upstream.
    def edit_body(d: dict[str, Any]) -> None:
        d["request"]["body"] = {"text": "HELLO" + BODY[5:]}

    code, report, err = replay(edited(post, edit_body))
    assert code == 1, (report, err)
    div = report["divergence"]
    assert div["where"] == f"call {i} ({entry['call']}) request.body (byte 0)", div
    assert "hello upstream" in div["expected"] and "HELLO upstream" in div["got"]

    # An incoming header the guest forwards edited: the request's headers differ.
    def edit_header(d: dict[str, Any]) -> None:
        d["request"]["headers"] = [[k, "changed" if k == "x-note" else v] for k, v in d["request"]["headers"]]

    code, report, err = replay(edited(post, edit_header))
    assert code == 1, (report, err)
    div = report["divergence"]
    assert div["where"] == f"call {i} ({entry['call']}) request.headers[2]", div
    assert (div["expected"], div["got"]) == ("x-note: hi", "x-note: changed")

    # A refused connection: the future resolved to the error code, and replays as it.
    refused = recording_of(records, "/refused")
    _, entry = handle_entry(json.loads(refused.read_text()))
    assert entry["response"] == {"error": {"case": "connection-refused"}}, entry
    code, report, err = replay(refused)
    assert code == 0 and report["identical"], (report, err)
    assert report["outcome"]["status"] == 502

    # A destination outside --allow-outgoing: `handle` itself answered the error.
    denied = recording_of(records, "/denied")
    _, entry = handle_entry(json.loads(denied.read_text()))
    assert entry["result"] == {"err": {"case": "HTTP-request-denied"}} and "response" not in entry, entry
    code, report, err = replay(denied)
    assert code == 0 and report["identical"], (report, err)

    # A body over the cap: the guest got all of it, the recording none of it, and says so.
    big_rec = recording_of(records, "/big")
    assert big_rec.stat().st_size < 1024 * 1024
    _, entry = handle_entry(json.loads(big_rec.read_text()))
    assert "over 8388608 bytes" in entry["unreplayable"] and "body" not in entry["response"], entry
    assert entry["response"]["status"] == 200
    code, report, err = replay(big_rec)
    assert code == 2 and "cannot be replayed" in err and "response body is over" in err, err
