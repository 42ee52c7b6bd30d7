"""Components pushed into the lattice's own artifact store run on hosts that share no directory.

A third process (our CLI) pushes `lattice://echo:1.0`; two host processes, each with its own
HOME, artifact cache and compile cache, and with file loading disabled, pull it from JetStream and
serve it. Pinned digests, `latest` and unknown tags behave as with an OCI registry.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.http import get
from tests.support.lattice import LatticeEnv as Env
from tests.support.lattice import own_dirs, serve_http
from tests.support.processes import free_port, wasmlattice_cmd
from wasmlattice.client.ctl import CtlError

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def cli(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    """`wasmlattice ARGS --nats-url ... --lattice ...` as a user on a third machine runs it."""
    cmd = wasmlattice_cmd(*args, "--nats-url", env.nats_url, "--lattice", env.lattice)
    return subprocess.run(cmd, capture_output=True, text=True, env=env.env, timeout=240)


async def test_a_component_pushed_into_the_lattice_runs_on_hosts_sharing_no_directory(
    env: Env, http_echo_wasm: Path, tmp_path: Path
) -> None:
    pushed = cli(env, "push", "lattice://echo:1.0", str(http_echo_wasm), "-a", "team=web")
    assert pushed.returncode == 0, pushed.stderr
    pinned = pushed.stdout.strip()
    assert pinned.startswith("lattice://echo@sha256:"), pinned
    digest = pinned.split("@", 1)[1]

    # Hosts that could not load a file if they wanted to: the store is the only way in.
    env.start_host(files=False, env=own_dirs(tmp_path / "one"))
    env.start_host(files=False, env=own_dirs(tmp_path / "two"))
    h1, h2 = await env.host_ids(2)
    ctl = env.ctl

    url1 = await serve_http(env, h1, "echo-a", "lattice://echo:1.0", port=free_port(), ready_path="/echo")
    url2 = await serve_http(env, h2, "echo-b", pinned, port=free_port(), ready_path="/echo")
    for url in (url1, url2):
        status, body = await get(url + "/echo?from=store")
        assert status == 200 and "/echo?from=store" in body, body
    # Each host pulled into its own cache: nothing was shared on disk.
    for name in ("one", "two"):
        blobs = list((tmp_path / name / "artifacts").rglob(digest.split(":")[1]))
        assert blobs, f"host {name} has no cached copy of {digest}"

    # `latest` (implied by no tag) is refused in the reply; an unknown tag fails naming the tags.
    with pytest.raises(CtlError, match="latest"):
        await ctl.scale_component(h1, "lattice://echo", "floating", 1)
    assert await ctl.scale_component(h1, "lattice://echo:9.9", "missing", 1) == ""
    failed = await env.wait_event("component_scale_failed", lambda e: e["data"]["component_id"] == "missing")
    assert "9.9" in failed["data"]["error"] and "1.0" in failed["data"]["error"], failed

    # The CLI pulls what the hosts run, checked against the same digest.
    out = tmp_path / "pulled.wasm"
    pulled = cli(env, "pull", "lattice://echo:1.0", "-o", str(out))
    assert pulled.returncode == 0, pulled.stderr
    assert out.read_bytes() == http_echo_wasm.read_bytes()
    assert digest in pulled.stdout
    refused = cli(env, "pull", "lattice://echo", "-o", str(out))
    assert refused.returncode != 0 and "latest" in refused.stderr, refused.stderr
