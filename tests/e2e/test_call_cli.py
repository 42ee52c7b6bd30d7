"""`wasmlattice call`: typed JSON in, a wRPC invocation of a running component, typed JSON out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import cli, cli_ok
from tests.support.lattice import LatticeEnv
from wasmlattice.protocol.models import Link

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


async def test_call_exported_functions(env: LatticeEnv, build_component: Callable[[str], Path]) -> None:
    env.start_host()
    (host,) = await env.host_ids(1)
    for name in ("back", "middle"):
        ref = "file://" + str(build_component(f"chain_{name}"))
        await env.ctl.scale_component(host, ref, name, 2)
        await env.wait_event("component_scaled", lambda e, n=name: e["data"]["component_id"] == n)
    await env.ctl.put_link(
        Link(
            source_id="middle", target="back", wit_namespace="test", wit_package="chain", interfaces=["judge"]
        )
    )
    lattice = ["--nats-url", env.nats_url, "--lattice", env.lattice]

    async def call(*args: str) -> str:
        r = await asyncio.to_thread(cli_ok, "call", *args, *lattice, timeout=120)
        return r.stdout.strip()

    item = json.dumps({"name": "a", "tags": ["x"], "weight": 3})
    assert json.loads(await call("back", "test:chain/judge.judge", item)) == {"accept": "a:3"}
    bad = json.dumps({"name": "b", "tags": ["bad"], "weight": 300})
    assert json.loads(await call("back", "test:chain/judge@0.1.0.judge", bad)) == {"reject": 255}
    assert json.loads(await call("back", "test:chain/judge.sign", '["x", "y"]')) == ["x", "y", "back"]
    assert json.loads(await call("back", "test:chain/judge.slow", "5")) == 5
    # Results and options, through the middle (which calls back in-process).
    ok = json.loads(await call("middle", "test:chain/stage.process", f"[{item}]", "null"))
    assert ok == {"ok": [["front", "middle@?", "back"], [{"accept": "a:3"}]]}
    err = json.loads(await call("middle", "test:chain/stage.process", "[]", '"refuse"'))
    assert err == {"err": "the middle refuses this batch"}
    out = json.loads(await call("back", "test:chain/judge.sign", "[]", "-o", "json"))
    assert out == {"success": True, "result": ["back"]}

    async def fails(*args: str) -> str:
        r = await asyncio.to_thread(cli, "call", *args, *lattice, timeout=120)
        assert r.returncode == 1, (r.stdout, r.stderr)
        return r.stderr

    # Arguments are checked against the signature before anything is sent.
    wrong = await fails("back", "test:chain/judge.judge", '{"name": "a", "tags": [], "weight": -1}')
    assert "argument 1 (it).weight: expected u32, got -1 (out of range 0..4294967295)" in wrong
    missing = await fails("back", "test:chain/judge.judge", '{"name": "a"}')
    assert "expected record { name: string, tags: list<string>, weight: u32 }" in missing
    assert "missing tags, weight" in missing
    assert "takes 1 argument(s) (it: record" in await fails("back", "test:chain/judge.judge")
    assert "is not JSON" in await fails("back", "test:chain/judge.slow", "five")
    assert "has no function 'nope'" in await fails("back", "test:chain/judge.nope")
    assert "does not export test:chain/nope" in await fails("back", "test:chain/nope.judge", "1")
    assert "no host of the lattice runs component 'ghost'" in await fails(
        "ghost", "test:chain/judge.slow", "1"
    )
    assert "is not ns:pkg/interface.function" in await fails("back", "judge")
    # A trap in the callee is reported; the component keeps serving.
    assert "back trapped in test:chain/judge@0.1.0#crash" in await fails("back", "test:chain/judge.crash")
    assert json.loads(await call("back", "test:chain/judge.slow", "1")) == 1
