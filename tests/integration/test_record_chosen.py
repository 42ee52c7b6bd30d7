"""Recording on a lattice host is chosen per component (docs/record-replay.md): a host started
with `--record-dir` records the HTTP requests of components annotated `wasmlattice.dev/record:
"true"` and of no other; a bad value is refused before the scale is acknowledged; a component that
asks to be recorded on a host without `--record-dir` is served and not recorded, and the log says so.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.cli import cli
from tests.support.http import get, upstream_server, wait_status
from tests.support.lattice import LatticeEnv, eventually, serve_http
from tests.support.processes import free_port
from wasmlattice.client.ctl import CtlError
from wasmlattice.protocol.models import Link

pytestmark = pytest.mark.slow

RECORD = {"wasmlattice.dev/record": "true"}


async def test_only_annotated_components_are_recorded(env: LatticeEnv, echo_ref: str, tmp_path: Path) -> None:
    records = tmp_path / "records"
    env.start_host("--record-dir", str(records))
    (host,) = await env.host_ids(1)
    chosen = await serve_http(
        env, host, "chosen", echo_ref, port=free_port(), ready_path="/echo", annotations=RECORD
    )
    other = await serve_http(env, host, "other", echo_ref, port=free_port(), ready_path="/echo")
    for url in (other, chosen):  # the unchosen first: its recording, if any, would be older
        status, _ = await get(f"{url}/echo?recorded=1")
        assert status == 200

    async def chosen_recorded() -> None:
        names = sorted(p.name for p in records.glob("*.json"))
        assert any(n.startswith("chosen-") for n in names), names
        assert not any(n.startswith("other-") for n in names), names

    await eventually(chosen_recorded, what="the annotated component's recordings")
    await asyncio.sleep(1.0)  # a recording of the other one would have been written by now
    await chosen_recorded()
    paths = [json.loads(p.read_text())["request"]["path_with_query"] for p in records.glob("chosen-*.json")]
    assert "/echo?recorded=1" in paths, paths
    await env.wait_log("recording the HTTP requests of components annotated wasmlattice.dev/record=true")

    # A value that is not true or false: refused before the ack, naming the key.
    with pytest.raises(
        CtlError, match=re.escape("annotation wasmlattice.dev/record: expected true or false")
    ):
        await env.ctl.scale_component(host, echo_ref, "bad", 1, annotations={"wasmlattice.dev/record": "yes"})


async def test_asking_to_be_recorded_without_a_record_dir(env: LatticeEnv, echo_ref: str) -> None:
    env.start_host()
    (host,) = await env.host_ids(1)
    url = await serve_http(
        env, host, "wants", echo_ref, port=free_port(), ready_path="/echo", annotations=RECORD
    )
    status, _ = await get(f"{url}/echo")
    assert status == 200

    await env.wait_log("wants asks to be recorded (wasmlattice.dev/record) but this host has no --record-dir")


async def test_outgoing_http_on_a_host_is_recorded_and_replays_offline(
    env: LatticeEnv, echo_ref: str, tmp_path: Path
) -> None:
    """A recorded component on a lattice host calls out through the builtin http-client; the
    recording holds the exchange, and replay answers it with the upstream stopped."""
    records = tmp_path / "records"
    env.start_host("--record-dir", str(records))
    (host,) = await env.host_ids(1)
    base = await serve_http(
        env, host, "caller", echo_ref, port=free_port(), ready_path="/echo", annotations=RECORD
    )
    await env.ctl.start_provider(host, "wasmcloud+builtin://http-client", "egress")
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "egress")
    await env.ctl.put_link(
        Link(
            source_id="caller",
            target="egress",
            wit_namespace="wasi",
            wit_package="http",
            interfaces=["outgoing-handler"],
        )
    )
    with upstream_server() as upstream:
        hello = upstream.url("/hello")
        url = f"{base}/outgoing?url={quote(hello, safe='')}"
        assert await wait_status(url, 200) == "hello from upstream\n"

        def recorded() -> list[Path]:
            return [
                p
                for p in records.glob("caller-*.json")
                if json.loads(p.read_text())["outcome"]["status"] == 200
                and "/outgoing" in json.loads(p.read_text())["request"]["path_with_query"]
            ]

        async def written() -> None:
            assert recorded(), sorted(records.iterdir()) if records.exists() else "no directory"

        await eventually(written, what="the recording of the outgoing call")
    # The upstream is gone: replay can only answer from the file.
    path = recorded()[0]
    doc = json.loads(path.read_text())
    (exchange,) = [c for c in doc["calls"] if "outgoing-handler" in c["call"]]
    assert exchange["args"][0]["authority"] == upstream.authority, exchange
    assert exchange["response"]["status"] == 200, exchange
    out = cli("replay", str(path), timeout=120)
    assert out.returncode == 0 and "identical" in out.stdout, (out.stdout, out.stderr)
