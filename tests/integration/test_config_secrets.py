"""`wasi:config` and `wasmcloud:secrets` with real host processes, a real nats-server and real guests.

Config: named configs merged in order, followed live (put, delete) while the component runs, both
`0.2.0-draft` interfaces (`store`, `runtime`) and `0.2.0-draft-2024-09-27`, and an empty config
outside a lattice. Secrets: stored encrypted by the CLI, resolved at scale time from `SECRET_*`
references, revealed to the guest and to nobody else (logs, events, inventory), and scale failures
that name the missing or undecryptable secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets as pyrandom
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import cli, cli_ok
from tests.support.http import get_json
from tests.support.lattice import LatticeEnv, serve_http
from tests.support.processes import free_port
from wasmlattice.capabilities import secrets as sec

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

DENIED = "not granted to component"


def ref(build_component: Callable[[str], Path], name: str) -> str:
    return "file://" + str(build_component(name).resolve())


async def wait_json(url: str, want: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    """Poll `url` until its JSON body satisfies `want` (config changes arrive through a KV watch)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        status, data = await get_json(url)
        last = (status, data)
        if status == 200 and want(data):
            return data
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never satisfied the condition; last answer {last}")


# -- config ------------------------------------------------------------------------------------


async def test_config_merged_in_order_and_followed_live(
    env: LatticeEnv, build_component: Callable[[str], Path]
) -> None:
    env.start_host()
    (host,) = await env.host_ids(1)
    ctl = env.ctl
    await ctl.put_config("cfg-a", {"greeting": "hello", "shared": "from-a", "only_a": "1"})
    await ctl.put_config("cfg-b", {"shared": "from-b", "only_b": "2"})
    # Another component's config: its changes must not disturb this one.
    await ctl.put_config("cfg-other", {"shared": "other"})
    url = await serve_http(
        env,
        host,
        "cfg-comp",
        ref(build_component, "config_guest"),
        port=free_port(),
        config=["cfg-a", "cfg-b"],
        ready_path="/ready",
    )

    assert await get_json(url + "/config/get?key=shared") == (200, {"value": "from-b"})
    assert await get_json(url + "/config/get?key=greeting") == (200, {"value": "hello"})
    assert await get_json(url + "/config/get?key=missing") == (200, {"value": None})
    assert await get_json(url + "/config/get?key=") == (200, {"value": None})
    status, data = await get_json(url + "/config/all")
    assert status == 200
    assert data["all"] == {"greeting": "hello", "shared": "from-b", "only_a": "1", "only_b": "2"}

    # A put replaces the whole map of cfg-b: `only_b` goes, `shared` changes; the next call sees it.
    await ctl.put_config("cfg-b", {"shared": "updated", "new_key": "3"})
    data = await wait_json(url + "/config/all", lambda d: d["all"].get("shared") == "updated")
    assert data["all"] == {"greeting": "hello", "shared": "updated", "only_a": "1", "new_key": "3"}
    assert await get_json(url + "/config/get?key=only_b") == (200, {"value": None})

    await ctl.put_config("cfg-other", {"shared": "other-2"})
    # Deleting cfg-b makes it an empty map: cfg-a's value shows again.
    await ctl.delete_config("cfg-b")
    data = await wait_json(url + "/config/all", lambda d: "new_key" not in d["all"])
    assert data["all"] == {"greeting": "hello", "shared": "from-a", "only_a": "1"}
    # A deleted config that comes back is followed again.
    await ctl.put_config("cfg-b", {"shared": "back"})
    await wait_json(url + "/config/get?key=shared", lambda d: d["value"] == "back")
    await ctl.delete_config("cfg-a")
    await ctl.delete_config("cfg-b")
    data = await wait_json(url + "/config/all", lambda d: d["all"] == {})
    assert data["order"] == []
    assert "Traceback" not in env.log_text()


async def test_config_draft_store_and_runtime_interfaces(
    env: LatticeEnv, build_component: Callable[[str], Path]
) -> None:
    env.start_host()
    (host,) = await env.host_ids(1)
    await env.ctl.put_config("draft-cfg", {"db_url": "postgres://db", "mode": "fast"})
    url = await serve_http(
        env,
        host,
        "draft-comp",
        ref(build_component, "config_draft_guest"),
        port=free_port(),
        config=["draft-cfg"],
        ready_path="/ready",
    )
    for iface in ("store", "runtime"):
        assert await get_json(f"{url}/{iface}/get?key=db_url") == (200, {"value": "postgres://db"})
        assert await get_json(f"{url}/{iface}/get?key=nope") == (200, {"value": None})
        assert await get_json(f"{url}/{iface}/all") == (
            200,
            {"all": {"db_url": "postgres://db", "mode": "fast"}},
        )
    await env.ctl.put_config("draft-cfg", {"mode": "slow"})
    await wait_json(url + "/runtime/all", lambda d: d["all"] == {"mode": "slow"})
    assert await get_json(url + "/store/all") == (200, {"all": {"mode": "slow"}})


async def test_config_outside_a_lattice_is_empty(
    build_component: Callable[[str], Path], start_wasmlattice: Callable[..., Any]
) -> None:
    draft = start_wasmlattice(build_component("config_draft_guest"), ready_path="/ready")
    assert await get_json(draft.base_url + "/store/all") == (200, {"all": {}})
    assert await get_json(draft.base_url + "/runtime/get?key=x") == (200, {"value": None})
    guest = start_wasmlattice(build_component("config_guest"), ready_path="/ready")
    assert await get_json(guest.base_url + "/config/all") == (200, {"all": {}, "order": []})
    status, data = await get_json(guest.base_url + "/secret?key=x")
    assert status == 500
    assert data["error"].startswith("upstream: ") and "lattice host" in data["error"]


# -- secrets -----------------------------------------------------------------------------------


async def test_secrets_put_by_cli_revealed_only_to_the_guest(
    env: LatticeEnv,
    build_component: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The CLI and the host both read the key from the default file under $XDG_DATA_HOME.
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(xdg))
    await asyncio.to_thread(cli_ok, "secret", "keygen")
    key_path = xdg / "wasmlattice" / "secrets.key"
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    again = await asyncio.to_thread(cli, "secret", "keygen")
    assert again.returncode != 0 and "already exists" in again.stderr

    env.env = {**env.env, "XDG_DATA_HOME": str(xdg)}
    env.start_host("--log-level", "DEBUG")
    (host,) = await env.host_ids(1)
    nats = ("--nats-url", env.nats_url, "--lattice", env.lattice)

    value = "tok-" + pyrandom.token_hex(16)
    blob = b"\x00\xffbinary-" + pyrandom.token_bytes(8)
    blob_file = tmp_path / "blob.bin"
    blob_file.write_bytes(blob)
    put = await asyncio.to_thread(cli_ok, "secret", "put", "api_token", value, "--allow", "sec-comp", *nats)
    assert value not in put.stdout + put.stderr
    assert "SECRET_api_token" in put.stdout and "sec-comp" in put.stdout
    await asyncio.to_thread(
        cli_ok, "secret", "put", "blob", "--file", str(blob_file), "-a", "sec-comp", *nats
    )
    await env.ctl.put_config("plain", {"k": "v"})

    # At rest: ciphertext in SECRETS_<lattice>, only a reference in CONFIGDATA.
    js = env.nc.jetstream()
    stored = (await (await js.key_value(f"SECRETS_{env.lattice}")).get("api_token")).value
    assert value.encode() not in stored
    key = base64.b64decode(key_path.read_text())
    assert sec.decrypt(key, env.lattice, "api_token", stored).reveal() == value
    reference = await env.ctl.get_config("SECRET_api_token")
    assert reference is not None
    assert reference["backend"] == "nats-kv" and reference["name"] == "api_token"
    assert value not in json.dumps(reference)

    url = await serve_http(
        env,
        host,
        "sec-comp",
        ref(build_component, "config_guest"),
        port=free_port(),
        config=["plain", "SECRET_api_token", "SECRET_blob"],
        ready_path="/ready",
    )
    status, data = await get_json(url + "/secret?key=api_token")
    assert (status, data["kind"], data["value"]) == (200, "string", value)
    status, data = await get_json(url + "/secret?key=blob")
    assert (status, data["kind"], bytes.fromhex(data["hex"])) == (200, "bytes", blob)
    status, data = await get_json(url + "/secret/twice?key=api_token")
    assert status == 200 and data["first"]["value"] == data["second"]["value"] == value
    for key_name in ("nope", "SECRET_api_token", "plain", ""):
        assert await get_json(url + f"/secret?key={key_name}") == (500, {"error": "not-found"})
    # Secret references are not config.
    assert await get_json(url + "/config/all") == (200, {"all": {"k": "v"}, "order": ["k"]})

    # Nowhere else: not in inventory, events, or the host's debug log.
    inventory = await env.inventory(host)
    assert value not in inventory.to_wire().decode()
    assert value not in json.dumps(env.events)
    assert value not in env.log_text()
    assert blob.hex() not in env.log_text()

    # Resolved at scale time: deleting the secret leaves the running component's copy.
    await asyncio.to_thread(cli_ok, "secret", "del", "api_token", *nats)
    assert await env.ctl.get_config("SECRET_api_token") is None
    assert await (await js.key_value(f"SECRETS_{env.lattice}")).keys() == ["blob"]
    status, data = await get_json(url + "/secret?key=api_token")
    assert (status, data["value"]) == (200, value)
    assert (await asyncio.to_thread(cli, "secret", "del", "api_token", *nats)).returncode == 0


async def test_secret_scale_failures_name_the_secret(
    env: LatticeEnv, build_component: Callable[[str], Path], tmp_path: Path
) -> None:
    host_key = tmp_path / "host.key"
    sec.generate_key_file(host_key)
    env.env = {**env.env, sec.KEY_FILE_ENV: str(host_key)}
    env.start_host()
    (host,) = await env.host_ids(1)
    comp = ref(build_component, "config_guest")
    nats = ("--nats-url", env.nats_url, "--lattice", env.lattice)

    async def scale_fails(component_id: str, config: list[str]) -> str:
        assert await env.ctl.scale_component(host, comp, component_id, 1, config=config) == ""
        failed = await env.wait_event(
            "component_scale_failed", lambda e: e["data"]["component_id"] == component_id
        )
        error: str = failed["data"]["error"]
        return error

    # No reference at all.
    error = await scale_fails("no-ref", ["SECRET_absent"])
    assert "SECRET_absent" in error
    # A reference whose value was never stored.
    await env.ctl.put_config("SECRET_ghost", sec.reference("ghost"))
    error = await scale_fails("no-value", ["SECRET_ghost"])
    assert "'ghost'" in error and "not found" in error
    # A value stored with another key: undecryptable.
    other_key = tmp_path / "other.key"
    await asyncio.to_thread(cli_ok, "secret", "keygen", "--key-file", str(other_key))
    value = "other-" + pyrandom.token_hex(12)
    await asyncio.to_thread(cli_ok, "secret", "put", "wrongkey", value, "--key-file", str(other_key), *nats)
    error = await scale_fails("bad-key", ["SECRET_wrongkey"])
    assert "cannot decrypt secret 'wrongkey'" in error and value not in error
    # The bucket exists now, but holds no value for this reference.
    await env.ctl.put_config("SECRET_ghost2", sec.reference("ghost2"))
    error = await scale_fails("no-value-2", ["SECRET_ghost2"])
    assert "'ghost2'" in error and "no key 'ghost2'" in error
    # A value altered in KV.
    await asyncio.to_thread(cli_ok, "secret", "put", "tampered", value, "--key-file", str(host_key), *nats)
    kv = await env.nc.jetstream().key_value(sec.bucket_name(env.lattice))
    stored = bytearray((await kv.get("tampered")).value)
    stored[-1] ^= 1
    await kv.put("tampered", bytes(stored))
    error = await scale_fails("altered", ["SECRET_tampered"])
    assert "cannot decrypt secret 'tampered'" in error and value not in error
    # Another backend.
    await env.ctl.put_config("SECRET_vault", {**sec.reference("vault"), "backend": "vault"})
    error = await scale_fails("vault", ["SECRET_vault"])
    assert "'vault'" in error and "backend" in error

    # None of them runs, the value leaked nowhere, and the host still scales a good one.
    assert [c.id for c in (await env.inventory(host)).components] == []
    assert value not in json.dumps(env.events) and value not in env.log_text()
    await asyncio.to_thread(
        cli_ok, "secret", "put", "good", value, "--key-file", str(host_key), "--allow", "good-comp", *nats
    )
    url = await serve_http(
        env, host, "good-comp", comp, port=free_port(), config=["SECRET_good"], ready_path="/ready"
    )
    status, data = await get_json(url + "/secret?key=good")
    assert (status, data["value"]) == (200, value)


async def test_secret_reaches_only_the_components_it_is_granted_to(
    env: LatticeEnv, build_component: Callable[[str], Path], tmp_path: Path
) -> None:
    # Attack (issue 12): any NATS client could scale its component with `--config SECRET_x` and
    # read secret x. Now the grant sealed with the secret decides; naming the reference, or a
    # policy written into the CONFIGDATA reference with `config.put`, grants nothing.
    host_key = tmp_path / "host.key"
    sec.generate_key_file(host_key)
    env.env = {**env.env, sec.KEY_FILE_ENV: str(host_key)}
    env.start_host()
    (host,) = await env.host_ids(1)
    comp = ref(build_component, "config_guest")
    nats = ("--nats-url", env.nats_url, "--lattice", env.lattice, "--key-file", str(host_key))
    value = "only-a-" + pyrandom.token_hex(16)
    await asyncio.to_thread(cli_ok, "secret", "put", "shared", value, "--allow", "a", *nats)

    url_a = await serve_http(
        env, host, "a", comp, port=free_port(), config=["SECRET_shared"], ready_path="/ready"
    )
    status, data = await get_json(url_a + "/secret?key=shared")
    assert (status, data["value"]) == (200, value)

    # b names the same reference in its scale command: it runs, but store.get is refused, naming
    # the secret and the component, never the value.
    url_b = await serve_http(
        env, host, "b", comp, port=free_port(), config=["SECRET_shared"], ready_path="/ready"
    )
    status, data = await get_json(url_b + "/secret?key=shared")
    assert status == 500 and data["error"].startswith("upstream: "), data
    assert "'shared'" in data["error"] and f"{DENIED} 'b'" in data["error"], data
    assert value not in json.dumps(data)

    # A forged reference: any NATS client can rewrite CONFIGDATA with config.put, here with a
    # policy naming c, and add a second reference of its own to the same stored secret.
    forged_policy = json.dumps(
        {"type": sec.POLICY_TYPE, "properties": {"allow": "c", "components": "c", "c": "allow"}}
    )
    await env.ctl.put_config("SECRET_shared", {**sec.reference("shared"), "policy": forged_policy})
    await env.ctl.put_config(
        "SECRET_stolen", {**sec.reference("shared"), "name": "stolen", "policy": forged_policy}
    )
    url_c = await serve_http(
        env, host, "c", comp, port=free_port(), config=["SECRET_shared", "SECRET_stolen"], ready_path="/ready"
    )
    for name in ("shared", "stolen"):
        status, data = await get_json(url_c + f"/secret?key={name}")
        assert status == 500 and f"'{name}'" in data["error"] and f"{DENIED} 'c'" in data["error"], data
        assert value not in json.dumps(data)

    # A forged grant in the secrets bucket itself (also writable by any NATS client): the grants
    # are sealed with the value, so a rewritten entry no longer decrypts and the scale fails.
    kv = await env.nc.jetstream().key_value(sec.bucket_name(env.lattice))
    stored = (await kv.get("shared")).value
    assert stored[:1] == b"\x02", "the stored entry carries sealed grants"
    (size,) = struct.unpack(">H", stored[1:3])
    header = b'{"components":["a","d"]}'
    await kv.put("shared", b"\x02" + struct.pack(">H", len(header)) + header + stored[3 + size :])
    assert await env.ctl.scale_component(host, comp, "d", 1, config=["SECRET_shared"]) == ""
    failed = await env.wait_event("component_scale_failed", lambda e: e["data"]["component_id"] == "d")
    assert "cannot decrypt secret 'shared'" in failed["data"]["error"]

    # Only a holder of the key changes grants: put again, then `secret allow` / `deny` / `list`.
    await asyncio.to_thread(cli_ok, "secret", "put", "shared", value, "-a", "a", *nats)
    # Put again without --allow (a new value, say): the grants stay.
    again = await asyncio.to_thread(cli_ok, "secret", "put", "shared", value, *nats)
    assert "stored for a;" in again.stdout
    allowed = await asyncio.to_thread(cli_ok, "secret", "allow", "shared", "e", *nats)
    assert "a, e" in allowed.stdout
    listed = await asyncio.to_thread(cli_ok, "secret", "list", "--output", "json", *nats)
    (entry,) = json.loads(listed.stdout)["secrets"]
    assert (entry["name"], entry["allowed"], entry["problem"]) == ("shared", ["a", "e"], None)
    assert value not in listed.stdout
    url_e = await serve_http(
        env, host, "e", comp, port=free_port(), config=["SECRET_shared"], ready_path="/ready"
    )
    status, data = await get_json(url_e + "/secret?key=shared")
    assert (status, data["value"]) == (200, value)
    denied = await asyncio.to_thread(cli_ok, "secret", "deny", "shared", "e", "a", *nats)
    assert "no component" in denied.stdout
    # Without the key nobody changes grants.
    other_key = tmp_path / "other.key"
    sec.generate_key_file(other_key)
    nats_other = (*nats[:-1], str(other_key))
    refused = await asyncio.to_thread(cli, "secret", "allow", "shared", "b", *nats_other)
    assert refused.returncode != 0 and "cannot change the grants of secret 'shared'" in refused.stderr

    # The value went nowhere else; each refusal was logged once, by the host that refused it.
    assert value not in json.dumps(env.events) and value not in env.log_text()
    log = env.log_text()
    assert log.count(f"{DENIED} 'b'") == 1, log
    assert log.count(f"{DENIED} 'c'") == 2, log  # two references, one line each
    assert sorted(c.id for c in (await env.inventory(host)).components) == ["a", "b", "c", "e"]
