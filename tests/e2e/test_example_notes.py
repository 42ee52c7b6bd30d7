"""The examples `make up` deploys: `examples/deploy.py` against a real host, then the notes API.

Checks what the README promises a new user: hello answers, notes are stored in the NATS bucket
`notes`, listed, counted, deleted, and every change is published on `notes.changed`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.support.components import EXAMPLES, forget_notes, load_deploy
from tests.support.lattice import LatticeEnv
from tests.support.processes import free_port
from wasmlattice import devbuild

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


async def test_notes_example(env: LatticeEnv) -> None:
    hello = devbuild.build(EXAMPLES / "hello")
    notes = devbuild.build(EXAMPLES / "notes")
    await forget_notes(env.nc)
    env.start_host()
    await env.host_ids(1)
    events: list[dict[str, Any]] = []

    async def on_change(msg: Any) -> None:
        events.append(json.loads(msg.data))

    await env.nc.subscribe("notes.changed", cb=on_change)
    deploy = load_deploy()
    hello_addr, notes_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    await deploy.deploy(hello, notes, env.nats_url, env.lattice, hello_addr, notes_addr)
    await deploy.wait_until_served(f"http://{hello_addr}/hello")
    await deploy.wait_until_served(f"http://{notes_addr}/notes")
    base = f"http://{notes_addr}"

    async with aiohttp.ClientSession() as s:

        async def call(method: str, path: str, data: bytes | None = None) -> tuple[int, str]:
            async with s.request(method, base + path, data=data) as r:
                return r.status, await r.text()

        assert await call("GET", "/notes") == (200, "[]\n")
        assert await call("PUT", "/notes/todo", b"buy milk") == (201, "stored todo (8 bytes)\n")
        assert await call("PUT", "/notes/two words", b"x") == (201, "stored two words (1 bytes)\n")
        assert await call("GET", "/notes/todo") == (200, "buy milk")
        # The data is in the JetStream bucket the link config names.
        kv = await env.nc.jetstream().key_value("notes")
        assert (await kv.get("note.todo")).value == b"buy milk"
        assert await call("GET", "/notes") == (200, '["todo", "two words"]\n')
        assert await call("DELETE", "/notes/todo") == (200, "deleted todo\n")
        assert (await call("GET", "/notes/todo"))[0] == 404
        assert json.loads((await call("GET", "/stats"))[1]) == {"writes": 3}
        assert (await call("PUT", "/notes/big", b"x" * (64 * 1024 + 1)))[0] == 413
        assert (await call("POST", "/notes/todo", b"x"))[0] == 405

    for _ in range(100):
        if len(events) >= 3:
            break
        await asyncio.sleep(0.05)
    assert events == [
        {"op": "put", "name": "todo"},
        {"op": "put", "name": "two words"},
        {"op": "delete", "name": "todo"},
    ]
