"""Components from a real OCI registry (Debian's docker-registry) on real hosts over a real NATS.

Pushed with our CLI (a subprocess), scaled by reference on two hosts, served over HTTP, updated to
a new tag, pinned by digest; `latest` refused up front, a tampered layer and a wrong password
refused with the registry's own answer; a cached digest-pinned reference loads with the registry
stopped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.lattice import LatticeEnv as Env
from tests.support.lattice import serve_http
from tests.support.processes import free_port, wasmlattice_cmd
from tests.support.registry import PASSWORD, USER, registry_server
from wasmlattice.client.ctl import CtlError

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def with_custom_section(data: bytes, payload: bytes) -> bytes:
    """The same component with one more custom section: another digest, the same behaviour."""
    name = b"wasmlattice-test"
    body = bytes([len(name)]) + name + payload
    assert len(body) < 128
    return data + b"\x00" + bytes([len(body)]) + body


def push(ref: str, file: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    """`wasmlattice push --insecure REF FILE` as a user runs it."""
    cmd = wasmlattice_cmd("push", "--insecure", ref, str(file), *extra)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)


def host_args(registry: str) -> list[str]:
    return ["--allowed-insecure", registry]


async def test_components_from_an_oci_registry(
    env: Env, http_echo_wasm: Path, tmp_path: Path, start_wasmlattice: Callable[..., Any]
) -> None:
    data = http_echo_wasm.read_bytes()
    v2 = tmp_path / "echo-v2.wasm"
    v2.write_bytes(with_custom_section(data, b"v2"))
    tampered = tmp_path / "echo-v3.wasm"
    tampered.write_bytes(with_custom_section(data, b"v3"))
    cli_env = {**env.env, "DOCKER_CONFIG": str(tmp_path / "no-docker")}
    host_env = {
        "WASMLATTICE_ARTIFACT_CACHE_DIR": str(tmp_path / "artifacts"),
        "DOCKER_CONFIG": cli_env["DOCKER_CONFIG"],
    }
    with registry_server(tmp_path / "registry") as reg:
        r1 = push(
            f"{reg.host}/test/echo:0.1.0",
            http_echo_wasm,
            cli_env,
            "--annotation",
            "org.opencontainers.image.title=echo",
        )
        assert r1.returncode == 0, r1.stderr
        pinned = r1.stdout.strip()
        assert pinned.startswith(f"{reg.host}/test/echo@sha256:")
        r2 = push(f"oci://{reg.host}/test/echo:0.2.0", v2, cli_env)
        assert r2.returncode == 0, r2.stderr
        r3 = push(f"{reg.host}/test/echo:0.3.0", tampered, cli_env)
        assert r3.returncode == 0, r3.stderr

        env.start_host(*host_args(reg.host), env=host_env)
        env.start_host(*host_args(reg.host), env=host_env)
        h1, h2 = await env.host_ids(2)
        ctl = env.ctl

        # Two hosts run the component from the registry; HTTP is served from the pulled bytes.
        port = free_port()
        url = await serve_http(env, h1, "echo", f"{reg.host}/test/echo:0.1.0", port=port, ready_path="/echo")
        assert (await ctl.scale_component(h2, f"{reg.host}/test/echo:0.1.0", "echo2", 1)) == ""
        await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "echo2")
        from tests.support.http import get

        status, _ = await get(url + "/echo")
        assert status == 200

        # `latest` (and no tag at all) is refused in the reply, before anything is fetched.
        for ref in (f"{reg.host}/test/echo:latest", f"{reg.host}/test/echo"):
            with pytest.raises(CtlError, match="latest"):
                await ctl.scale_component(h1, ref, "floating", 1)

        # Update to a new tag: the inventory shows the new reference, HTTP keeps answering.
        await ctl.update_component(h1, "echo", f"{reg.host}/test/echo:0.2.0")
        await env.wait_event(
            "component_scaled", lambda e: e["data"]["image_ref"] == f"{reg.host}/test/echo:0.2.0"
        )
        inv = await env.inventory(h1)
        assert [c.image_ref for c in inv.components] == [f"{reg.host}/test/echo:0.2.0"]
        assert (await get(url + "/echo"))[0] == 200

        # `wasmlattice run` serves straight from the registry too.
        served = start_wasmlattice(Path(f"{reg.host}/test/echo:0.2.0"), "--insecure")
        try:
            assert (await get(f"http://127.0.0.1:{served.port}/echo"))[0] == 200
        finally:
            served.stop()

        # Pinned by digest.
        assert (await ctl.scale_component(h2, pinned, "pinned", 1)) == ""
        await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "pinned")

        # A tampered layer: the registry's bytes no longer match the manifest's digest.
        layer = reg.blob_path("sha256:" + __import__("hashlib").sha256(tampered.read_bytes()).hexdigest())
        assert layer.is_file()
        layer.write_bytes(layer.read_bytes()[:-2] + b"XX")
        await ctl.scale_component(h2, f"{reg.host}/test/echo:0.3.0", "tampered", 1)
        failed = await env.wait_event(
            "component_scale_failed", lambda e: e["data"]["component_id"] == "tampered"
        )
        assert "digest mismatch" in failed["data"]["error"], failed
        assert "tampered" not in {c.id for c in (await env.inventory(h2)).components}

        # A repository that does not exist: the registry's 404 names it.
        await ctl.scale_component(h2, f"{reg.host}/test/nothing:1.0", "nothing", 1)
        failed = await env.wait_event(
            "component_scale_failed", lambda e: e["data"]["component_id"] == "nothing"
        )
        assert "test/nothing" in failed["data"]["error"], failed

    # The registry is gone: a digest-pinned reference still loads from the cache.
    assert (await ctl.scale_component(h1, pinned, "offline", 1)) == ""
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "offline")
    # A tag must ask the registry, which is gone: the error names it.
    await ctl.scale_component(h1, f"{reg.host}/test/echo:0.1.0", "offline-tag", 1)
    failed = await env.wait_event(
        "component_scale_failed", lambda e: e["data"]["component_id"] == "offline-tag"
    )
    assert f"registry {reg.host}" in failed["data"]["error"], failed


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
async def test_registry_auth(env: Env, http_echo_wasm: Path, tmp_path: Path, auth: str) -> None:
    cli_env = {**env.env, "DOCKER_CONFIG": str(tmp_path / "docker")}
    (tmp_path / "docker").mkdir()
    with registry_server(tmp_path / "registry", auth=auth) as reg:
        ref = f"{reg.host}/test/echo:1.0.0"
        # Anonymous push is refused with the registry's 401.
        denied = push(ref, http_echo_wasm, cli_env)
        assert denied.returncode != 0
        assert "401" in denied.stderr, denied.stderr
        ok = push(
            ref,
            http_echo_wasm,
            {**cli_env, "WASMLATTICE_REGISTRY_USER": USER, "WASMLATTICE_REGISTRY_PASSWORD": PASSWORD},
        )
        assert ok.returncode == 0, ok.stderr

        host_env = {
            "WASMLATTICE_ARTIFACT_CACHE_DIR": str(tmp_path / "artifacts"),
            "DOCKER_CONFIG": str(tmp_path / "docker"),
        }
        # A host with a wrong password: the failure names the registry's refusal.
        env.start_host(
            *host_args(reg.host),
            "--oci-registry",
            reg.host,
            "--oci-user",
            USER,
            "--oci-password",
            "wrong",
            env=host_env,
        )
        (h1,) = await env.host_ids(1)
        await env.ctl.scale_component(h1, ref, "denied", 1)
        failed = await env.wait_event(
            "component_scale_failed", lambda e: e["data"]["component_id"] == "denied"
        )
        assert "401" in failed["data"]["error"] and USER in failed["data"]["error"], failed

        # registry.put gives the right credentials; they win over the flags.
        from wasmlattice.protocol.models import RegistryCredential

        await env.ctl.put_registries({reg.host: RegistryCredential(username=USER, password=PASSWORD)})
        await env.wait_log("registry credentials updated")
        await env.ctl.scale_component(h1, ref, "allowed", 1)
        await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "allowed")

        # Docker config.json credentials serve the CLI's pull.
        import base64
        import json

        auth_b64 = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        (tmp_path / "docker" / "config.json").write_text(
            json.dumps({"auths": {reg.host: {"auth": auth_b64}}})
        )
        out = tmp_path / "pulled.wasm"
        pulled = subprocess.run(
            wasmlattice_cmd("pull", "--insecure", ref, "-o", str(out)),
            capture_output=True,
            text=True,
            env={**cli_env, "WASMLATTICE_ARTIFACT_CACHE_DIR": str(tmp_path / "cli-cache")},
            timeout=120,
        )
        assert pulled.returncode == 0, pulled.stderr
        assert out.read_bytes() == http_echo_wasm.read_bytes()
    assert os.path.exists(out)
