"""A response body written before `response-outparam.set` is buffered (up to a bound), not deadlocked.

`tests/components/early_body` writes its whole body (respecting check-write and waiting on the
stream's pollable) and only then sets the response. `wasmtime serve` answers such a guest with 200
and the whole body; so must `wasmlattice run` and a lattice host's http-server. Past the buffer
(`UNSENT_BODY_LIMIT`) the guest traps with a message naming the cause and the client gets 500.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.support.http import pattern_bytes
from tests.support.lattice import LatticeEnv, serve_http
from tests.support.processes import ServerProcess, free_port
from wasmlattice.wasi.http_incoming import UNSENT_BODY_LIMIT

pytestmark = pytest.mark.slow

LARGE = 1_400_000  # more than the 1 MiB a streamed body buffers


@pytest.fixture(scope="module")
def early_body_wasm(build_component: Callable[[str], Path]) -> Path:
    """The guest that writes its body before setting its response."""
    return build_component("early_body")


async def _fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=90)) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


@pytest.mark.parametrize("query", ["", "&content-length"])
async def test_wasmtime_serve_buffers_the_body(
    early_body_wasm: Path, start_wasmtime_serve: Callable[..., ServerProcess], query: str
) -> None:
    """The reference: `wasmtime serve` answers 200 with the whole body."""
    server = start_wasmtime_serve(early_body_wasm, ready_path="/?n=0")
    status, _, body = await _fetch(f"{server.base_url}/?n={LARGE}{query}")
    assert status == 200
    assert body == pattern_bytes(LARGE)


@pytest.mark.parametrize("query", ["", "&content-length"])
async def test_run_buffers_the_body(
    early_body_wasm: Path, start_wasmlattice: Callable[..., ServerProcess], query: str
) -> None:
    """`wasmlattice run` answers like `wasmtime serve`: 200 and the exact body, well before the deadline."""
    server = start_wasmlattice(early_body_wasm, "--timeout", "60", ready_path="/?n=0")
    status, headers, body = await _fetch(f"{server.base_url}/?n={LARGE}{query}")
    assert status == 200, body[:300]
    assert body == pattern_bytes(LARGE)
    if query:
        assert headers["Content-Length"] == str(LARGE)


async def test_run_traps_past_the_buffer(
    early_body_wasm: Path, start_wasmlattice: Callable[..., ServerProcess]
) -> None:
    """More than the buffer before `set`: a 500 naming the cause (not a 504 after the deadline)."""
    server = start_wasmlattice(early_body_wasm, "--timeout", "60", ready_path="/?n=0")
    status, _, body = await _fetch(f"{server.base_url}/?n={UNSENT_BODY_LIMIT + 100_000}")
    assert status == 500
    assert b"written before response-outparam.set exceeds 4 MiB" in body
    # The instance that trapped is gone; the next request is served normally.
    status, _, body = await _fetch(f"{server.base_url}/?n={LARGE}")
    assert status == 200 and body == pattern_bytes(LARGE)


async def test_lattice_host_buffers_the_body(env: LatticeEnv, early_body_wasm: Path) -> None:
    """A lattice host's http-server provider answers the same guest with 200 and the exact body."""
    env.start_host()
    (host_id,) = await env.host_ids(1)
    ref = "file://" + str(early_body_wasm.resolve())
    url = await serve_http(env, host_id, "early", ref, port=free_port(), ready_path="/?n=0")
    status, _, body = await _fetch(f"{url}/?n={LARGE}")
    assert status == 200, body[:300]
    assert body == pattern_bytes(LARGE)
