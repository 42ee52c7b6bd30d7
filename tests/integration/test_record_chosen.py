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

import pytest

from tests.support.http import get
from tests.support.lattice import LatticeEnv, eventually, serve_http
from tests.support.processes import free_port
from wasmlattice.client.ctl import CtlError

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
