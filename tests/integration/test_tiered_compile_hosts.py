"""Tiered compilation end to end: Winch's build answers like Cranelift's (and like `wasmtime serve`),
and a lattice host serves a new component from Winch's build first, then from Cranelift's.

The conformance comparison (tests/integration/test_conformance.py) is re-run on a part of its
cases with our server running the Winch build (`wasmlattice run --compiler winch`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.test_conformance import Hosts, assert_same, both, echo_doc, payload
from tests.support.http import HttpClient, get, pattern_bytes
from tests.support.lattice import LatticeEnv, serve_http
from tests.support.processes import ServerProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

FIRST_TIER = "serving its first-tier (Winch) build"
SWAPPED = "component echo now serves its optimised (cranelift) build"


@pytest.fixture(scope="module")
def winch_hosts(
    http_echo_wasm: Path,
    start_wasmlattice: Callable[..., ServerProcess],
    start_wasmtime_serve: Callable[..., ServerProcess],
) -> Iterator[Hosts]:
    """Our server on the Winch build and `wasmtime serve` (Cranelift) on the same component."""
    with ThreadPoolExecutor(2) as pool:
        ours_f = pool.submit(
            start_wasmlattice, http_echo_wasm, "--compiler", "winch", "--allow-outgoing", "127.0.0.1"
        )
        ref_f = pool.submit(start_wasmtime_serve, http_echo_wasm)
        ours, ref = ours_f.result(), ref_f.result()
    yield Hosts(ours, ref)
    ours.stop()
    ref.stop()


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "DELETE"])
async def test_winch_build_methods(http_client: HttpClient, winch_hosts: Hosts, method: str) -> None:
    data = b"method body" if method == "POST" else None
    ours, ref = await both(http_client, winch_hosts, method, "/echo?m=1", data=data)
    assert ours.status == ref.status == 200
    assert_same(ours, ref, winch_hosts, echo=True)


@pytest.mark.parametrize("size", [0, 4097, 1 << 20])
async def test_winch_build_upload_and_download(
    http_client: HttpClient, winch_hosts: Hosts, size: int
) -> None:
    data = payload(size)
    ours, ref = await both(http_client, winch_hosts, "PUT", "/echo", data=data)
    assert ours.status == ref.status == 200
    assert_same(ours, ref, winch_hosts, echo=True)
    assert echo_doc(ours, winch_hosts.ours)["body_sha256"] == hashlib.sha256(data).hexdigest()
    ours, ref = await both(http_client, winch_hosts, "GET", f"/bytes?n={size}")
    assert_same(ours, ref, winch_hosts)
    assert ours.body == pattern_bytes(size)


@pytest.mark.parametrize("status", [201, 204, 418, 503])
async def test_winch_build_status_codes(http_client: HttpClient, winch_hosts: Hosts, status: int) -> None:
    ours, ref = await both(http_client, winch_hosts, "GET", f"/echo?status={status}")
    assert ours.status == ref.status == status
    assert_same(ours, ref, winch_hosts, echo=True)


async def test_winch_build_trap_is_a_500(http_client: HttpClient, winch_hosts: Hosts) -> None:
    ours, ref = await both(http_client, winch_hosts, "GET", "/trap")
    assert ours.status == ref.status == 500
    ours, ref = await both(http_client, winch_hosts, "GET", "/echo")
    assert ours.status == ref.status == 200


async def test_host_serves_winch_build_first_then_cranelift(
    env: LatticeEnv, echo_ref: str, tmp_path: Path
) -> None:
    # An empty compile cache: this host has never seen the component.
    env.start_host("--tiered-compile", env={"WASMLATTICE_CACHE_DIR": str(tmp_path / "cache")})
    (host,) = await env.host_ids(1)
    url = await serve_http(env, host, "echo", echo_ref, port=free_port(), ready_path="/echo")
    await env.wait_log(FIRST_TIER)
    status, first = await get(f"{url}/echo?x=1", timeout=60)
    assert status == 200
    # The background compile finishes and new instances use its build; answers do not change.
    await env.wait_log(SWAPPED, timeout=300)
    status, after = await get(f"{url}/echo?x=1", timeout=60)
    assert status == 200
    assert json.loads(after) == json.loads(first)
    status, body = await get(f"{url}/bytes?n=70000", timeout=60)
    assert status == 200 and len(body) == 70000
    # The optimised build went into the cache; the first-tier one did not.
    assert len(list((tmp_path / "cache").glob("*.cwasm"))) == 1
    assert env.host_tracebacks() == []


async def test_no_tiered_compile_serves_only_cranelift(
    env: LatticeEnv, echo_ref: str, tmp_path: Path
) -> None:
    env.start_host("--no-tiered-compile", env={"WASMLATTICE_CACHE_DIR": str(tmp_path / "cache")})
    (host,) = await env.host_ids(1)
    url = await serve_http(env, host, "echo", echo_ref, port=free_port(), ready_path="/echo")
    status, _ = await get(f"{url}/echo", timeout=60)
    assert status == 200
    log = env.log_text()
    assert FIRST_TIER not in log and "optimised" not in log
