"""The dashboard's server over real HTTP and a real nats-server: its guard, its stream and its checks.

No host runs here (the browser tests in tests/e2e/test_dashboard_browser.py drive a whole lattice):
what is checked is what another site could do through a user's browser, what the page is told, and
that a failure of the lattice is reported rather than passed off as done.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from wasmlattice.protocol.connection import NatsOptions
from wasmlattice.ui.run import Dashboard, start_dashboard
from wasmlattice.ui.server import TOKEN_HEADER, ListenError, page_token, parse_listen
from wasmlattice.ui.view import log_subject, parse_log_record

BROKEN_MANIFEST = """\
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: broken
spec:
  components:
    - name: echo
      type: component
      properties: {}
      traits:
        - type: spreadscaler
          properties: {instances: lots}
"""


@pytest.fixture
async def dash(nats_url: str, lattice_name: str) -> AsyncIterator[Dashboard]:
    d = await start_dashboard(NatsOptions(url=nats_url), lattice_name, "127.0.0.1", 0, timeout=1.0)
    try:
        yield d
    finally:
        await d.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def token_of(http: aiohttp.ClientSession, dash: Dashboard) -> str:
    async with http.get(dash.url) as r:
        assert r.status == 200
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Frame-Options"] == "DENY"
        token = page_token(await r.text())
    assert token == dash.server.token
    return token


async def test_page_static_files_and_token(dash: Dashboard, http: aiohttp.ClientSession) -> None:
    token = await token_of(http, dash)
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        async with http.get(dash.url + "static/" + name) as r:
            assert (r.status, r.content_type) == (200, kind)
    async with http.get(dash.url + "static/..%2Fview.py") as r:
        assert r.status == 404
    async with http.get(dash.url + "api/state") as r:
        assert r.status == 403
    async with http.get(dash.url + "api/state", headers={TOKEN_HEADER: "x" + token}) as r:
        assert r.status == 403
    async with http.get(dash.url + "api/state", headers={TOKEN_HEADER: token}) as r:
        assert r.status == 200
        state = await r.json()
    assert state["lattice"] == dash.view.lattice
    assert state["hosts"] == [] and state["apps"] == []
    # No app manager runs: the page is told so, instead of showing an empty list as the truth.
    assert "no app manager" in state["problems"]["apps"]


async def test_cross_site_requests_are_refused(dash: Dashboard, http: aiohttp.ClientSession) -> None:
    token = await token_of(http, dash)
    body = {"manifest": BROKEN_MANIFEST}
    url = dash.url + "api/validate"
    # A form or fetch from another site cannot carry the token header...
    async with http.post(url, json=body) as r:
        assert r.status == 403
    # ...and even with it, another origin, an opaque origin or a non-JSON body is refused.
    for headers, status in (
        ({TOKEN_HEADER: token, "Origin": "http://evil.example"}, 403),
        ({TOKEN_HEADER: token, "Origin": "null"}, 403),
        ({TOKEN_HEADER: token, "Origin": dash.url.rstrip("/").replace("127.0.0.1", "localhost")}, 403),
    ):
        async with http.post(url, json=body, headers=headers) as r:
            assert r.status == status, await r.text()
    async with http.post(url, data="manifest=x", headers={TOKEN_HEADER: token}) as r:
        assert r.status == 415
    # DNS rebinding: a page served under another name that resolves here gets nothing, not even the page.
    async with http.get(dash.url, headers={"Host": f"evil.example:{dash.server.port}"}) as r:
        assert r.status == 421
        assert "token" not in await r.text()
    # The page's own origin works.
    origin = dash.url.rstrip("/")
    async with http.post(url, json=body, headers={TOKEN_HEADER: token, "Origin": origin}) as r:
        assert r.status == 400
        result = await r.json()
    assert result["error"] == "the manifest is not valid"
    joined = "\n".join(result["errors"])
    assert "spec.components[0].properties" in joined and "image" in joined, joined
    assert "instances" in joined, joined


async def test_valid_manifest_and_hostile_bodies(dash: Dashboard, http: aiohttp.ClientSession) -> None:
    token = await token_of(http, dash)
    headers = {TOKEN_HEADER: token}
    good = BROKEN_MANIFEST.replace("properties: {}", "properties: {image: 'file:///tmp/x.wasm'}").replace(
        "lots", "2"
    )
    async with http.post(dash.url + "api/validate", json={"manifest": good}, headers=headers) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["name"] == "broken"
    for path, body, needle in (
        ("validate", {"manifest": ""}, "field 'manifest' is required"),
        ("validate", {"manifest": "x" * ((1 << 20) + 1)}, "larger than"),
        ("components/scale", {"host_id": "H", "component_id": "c", "count": -1}, "field 'count'"),
        ("components/scale", {"host_id": "H", "component_id": "c", "count": True}, "field 'count'"),
        ("links/put", {"source_id": "a", "target": "b", "wit_namespace": "wasi"}, "'interfaces'"),
        ("configs/put", {"name": "c", "values": "novalue"}, "KEY=VALUE"),
        ("configs/put", {"name": "c", "values": {"k": 1}}, "field 'values'"),
        ("nosuch", {}, "no action"),
    ):
        async with http.post(dash.url + "api/" + path, json=body, headers=headers) as r:
            assert r.status in (400, 404), (path, r.status)
            assert needle in (await r.json())["error"], (path, await r.text())
    async with http.post(
        dash.url + "api/validate", data=b"[1]", headers={**headers, "Content-Type": "application/json"}
    ) as r:
        assert r.status == 400
    # With no host on the lattice, an action fails with the client API's reason, not "ok".
    body = {"name": "cfg", "values": "a=1"}
    async with http.post(dash.url + "api/configs/put", json=body, headers=headers) as r:
        assert r.status == 502
        assert "no host answered" in (await r.json())["error"]


async def read_sse(response: aiohttp.ClientResponse, kind: str, timeout: float = 20.0) -> Any:
    """The data of the next Server-Sent Event of type `kind`."""
    event = None
    async with asyncio.timeout(timeout):
        while True:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == kind:
                return json.loads(line[6:])


async def test_stream_sends_snapshot_then_logs_and_events(
    dash: Dashboard, http: aiohttp.ClientSession, nats_url: str
) -> None:
    import nats

    token = await token_of(http, dash)
    async with http.get(dash.url + "api/stream") as r:
        assert r.status == 403
    nc = await nats.connect(nats_url)
    try:
        async with http.get(dash.url + "api/stream", params={"token": token}) as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            snapshot = await read_sse(r, "snapshot")
            assert snapshot["lattice"] == dash.view.lattice
            record = {
                "time": "2026-01-02T03:04:05.000Z",
                "level": "info",
                "host_id": "NHOST",
                "component_id": "comp-1",
                "stream": "stdout",
                "trace_id": None,
                "span_id": None,
                "message": "hello from the guest <b>not markup</b>",
            }
            await nc.publish(log_subject(dash.view.lattice, "NHOST", "comp-1"), json.dumps(record).encode())
            # Garbage on the subject is ignored, and the stream goes on.
            await nc.publish(log_subject(dash.view.lattice, "NHOST", "comp-1"), b"not json")
            assert await read_sse(r, "log") == record
            event = {
                "specversion": "1.0",
                "type": "com.wasmcloud.lattice.config_set",
                "source": "NHOST",
                "time": "2026-01-02T03:04:06Z",
                "data": {"config_name": "some-config"},
            }
            await nc.publish(f"wasmbus.evt.{dash.view.lattice}.config_set", json.dumps(event).encode())
            got = await read_sse(r, "event")
            assert (got["type"], got["source"], got["data"]) == (
                "config_set",
                "NHOST",
                {"config_name": "some-config"},
            )
    finally:
        await nc.close()
    assert dash.view.snapshot()["logs"]["comp-1"][-1]["message"] == record["message"]


def test_log_records_and_listen_addresses() -> None:
    subject = "wasmlattice.logs.lat.NHOST.comp"
    rec = parse_log_record(json.dumps({"message": "m" * 10_000}).encode(), subject)
    assert rec is not None
    assert (rec["host_id"], rec["component_id"], len(rec["message"])) == ("NHOST", "comp", 4096)
    assert parse_log_record(b'{"no": "message"}', subject) is None
    assert parse_log_record(b"[]", subject) is None
    assert parse_listen("127.0.0.1:3030", False) == ("127.0.0.1", 3030)
    assert parse_listen("[::1]:0", False) == ("::1", 0)
    assert parse_listen("localhost:80", False) == ("localhost", 80)
    for bad in ("0.0.0.0:3030", "192.168.1.5:80", "example.com:80", "[::]:3030"):
        with pytest.raises(ListenError, match="--allow-remote"):
            parse_listen(bad, False)
    assert parse_listen("0.0.0.0:3030", True) == ("0.0.0.0", 3030)
    for bad in ("3030", "127.0.0.1:", "127.0.0.1:99999", ":80"):
        with pytest.raises(ListenError, match="HOST:PORT"):
            parse_listen(bad, True)
