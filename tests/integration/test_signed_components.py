"""Signed components on real hosts: claims verified before start, shown to the lattice, and used for
secrets (docs/claims.md).

A real nats-server, host processes and real components signed by `artifacts.claims`: valid claims
reach the inventory, `component_scaled` and `claims.get`; expired, not-yet-valid, wrongly signed
and tampered components are refused with their reason; `--allowed-issuer` admits only its issuers;
a secret granted to a component key reaches the signed component and not an unsigned image run
under the same ID.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets as pyrandom
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import cli_ok
from tests.support.http import get_json
from tests.support.lattice import LatticeEnv, serve_http
from tests.support.processes import free_port
from wasmlattice.artifacts import claims as cl
from wasmlattice.artifacts import nkey
from wasmlattice.artifacts import wasm_sections as ws
from wasmlattice.capabilities import secrets as sec
from wasmlattice.protocol import subjects as sj

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def write(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return "file://" + str(path.resolve())


def signed(
    wasm: bytes,
    account: nkey.SigningKey,
    module: nkey.SigningKey,
    *,
    name: str = "adder",
    revision: int | None = 5,
    **kw: Any,
) -> bytes:
    claims = cl.new_claims(
        issuer=account.public_key,
        subject=module.public_key,
        name=name,
        module_hash="",
        version="1.2.3",
        revision=revision,
        tags=["test", "signed"],
        **kw,
    )
    return cl.sign_component(wasm, claims, account)


async def scale_outcome(env: LatticeEnv, host: str, ref: str, component_id: str) -> dict[str, Any]:
    """Scale and return the `component_scaled` or `component_scale_failed` event that follows."""
    assert await env.ctl.scale_component(host, ref, component_id, 1) == ""

    def mine(e: dict[str, Any]) -> bool:
        return e["data"].get("component_id") == component_id and e["type"].rsplit(".", 1)[-1] in (
            "component_scaled",
            "component_scale_failed",
        )

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [e for e in env.events if mine(e)]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no scale outcome for {component_id}; events: {env.types()}")


def kind(event: dict[str, Any]) -> str:
    return str(event["type"]).rsplit(".", 1)[-1]


async def test_signed_component_is_verified_and_shown_to_the_lattice(
    env: LatticeEnv, build_component: Callable[[str], Path], tmp_path: Path
) -> None:
    wasm = build_component("wat/no_export").read_bytes()
    account, module = nkey.generate(nkey.KeyKind.ACCOUNT), nkey.generate(nkey.KeyKind.MODULE)
    env.start_host()
    (host,) = await env.host_ids(1)

    good = write(tmp_path, "good.wasm", signed(wasm, account, module))
    event = await scale_outcome(env, host, good, "adder")
    assert kind(event) == "component_scaled", event
    data = event["data"]
    assert data["public_key"] == module.public_key
    assert data["claims"] == {
        "issuer": account.public_key,
        "call_alias": None,
        "tags": ["test", "signed"],
        "name": "adder",
        "version": "1.2.3",
        "revision": 5,
        "not_before_human": "never",
        "expires_human": "never",
    }

    inventory = await env.inventory(host)
    (entry,) = [c for c in inventory.components if c.id == "adder"]
    assert (entry.name, entry.revision) == ("adder", 5)
    assert entry.to_json_obj()["name"] == "adder"

    expected = {
        "call_alias": "",
        "iss": account.public_key,
        "issuer": account.public_key,
        "name": "adder",
        "rev": "5",
        "revision": "5",
        "sub": module.public_key,
        "subject": module.public_key,
        "tags": "test,signed",
        "version": "1.2.3",
    }
    assert await env.ctl.get_claims() == [expected]
    kv = await env.nc.jetstream().key_value(sj.lattice_data_bucket(env.lattice))
    stored = json.loads((await kv.get(sj.claims_key(module.public_key))).value)
    assert stored == {
        "call_alias": "",
        "issuer": account.public_key,
        "name": "adder",
        "revision": "5",
        "subject": module.public_key,
        "tags": ["test", "signed"],
        "version": "1.2.3",
    }

    # An unsigned component still runs, with no claims in its event or inventory entry.
    plain = write(tmp_path, "plain.wasm", wasm)
    event = await scale_outcome(env, host, plain, "plain")
    assert kind(event) == "component_scaled" and "claims" not in event["data"]
    assert "public_key" not in event["data"]
    inventory = await env.inventory(host)
    (entry,) = [c for c in inventory.components if c.id == "plain"]
    assert entry.name is None and entry.revision == 0 and "name" not in entry.to_json_obj()

    # Stopping a signed component is announced with its claims.
    assert await env.ctl.scale_component(host, good, "adder", 0) == ""
    stopped = await env.wait_event(
        "component_scaled", lambda e: e["data"]["component_id"] == "adder" and e["data"]["max_instances"] == 0
    )
    assert stopped["data"]["public_key"] == module.public_key

    # Refusals, each with its reason; none of them runs.
    now = int(time.time())
    jwt = cl.embedded_jwt(signed(wasm, account, module))
    assert jwt is not None
    head, body, sig = jwt[1].split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[0] ^= 0xFF
    bad_sig = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    tampered = bytearray(signed(wasm, account, module))
    tampered[wasm.index(b"\x6a")] = 0x6B  # i32.add -> i32.sub in the nested core module
    cases = {
        "expired": (signed(wasm, account, module, expires=now - 60), "expired at"),
        "early": (signed(wasm, account, module, not_before=now + 3600), "not valid before"),
        "forged": (
            wasm + ws.custom_section(cl.JWT_SECTION, f"{head}.{body}.{bad_sig}".encode()),
            "signature is not valid",
        ),
        "tampered": (bytes(tampered), "module hash mismatch"),
    }
    for component_id, (data_bytes, reason) in cases.items():
        event = await scale_outcome(
            env, host, write(tmp_path, f"{component_id}.wasm", data_bytes), component_id
        )
        assert kind(event) == "component_scale_failed", event
        assert reason in event["data"]["error"], event["data"]["error"]
    inventory = await env.inventory(host)
    assert {c.id for c in inventory.components} == {"plain"}
    assert env.host_tracebacks() == []


async def test_allowed_issuer_admits_only_its_issuers(
    env: LatticeEnv, build_component: Callable[[str], Path], tmp_path: Path
) -> None:
    wasm = build_component("wat/no_export").read_bytes()
    ours, theirs = nkey.generate(nkey.KeyKind.ACCOUNT), nkey.generate(nkey.KeyKind.ACCOUNT)
    module = nkey.generate(nkey.KeyKind.MODULE)
    other = nkey.generate(nkey.KeyKind.ACCOUNT).public_key
    # One issuer by flag, another by the variable (a comma list): both count.
    env.start_host("--allowed-issuer", ours.public_key, env={cl.ClaimsPolicy.ENV: f"{other},{other}"})
    (host,) = await env.host_ids(1)

    event = await scale_outcome(env, host, write(tmp_path, "ours.wasm", signed(wasm, ours, module)), "ours")
    assert kind(event) == "component_scaled", event
    event = await scale_outcome(
        env, host, write(tmp_path, "theirs.wasm", signed(wasm, theirs, module)), "theirs"
    )
    assert kind(event) == "component_scale_failed"
    assert f"issuer {theirs.public_key} is not allowed" in event["data"]["error"]
    event = await scale_outcome(env, host, write(tmp_path, "plain.wasm", wasm), "plain")
    assert kind(event) == "component_scale_failed"
    assert "not signed" in event["data"]["error"] and ours.public_key in event["data"]["error"]
    assert {c.id for c in (await env.inventory(host)).components} == {"ours"}


async def test_secret_granted_to_a_signing_key(
    env: LatticeEnv, build_component: Callable[[str], Path], tmp_path: Path
) -> None:
    host_key = tmp_path / "host.key"
    sec.generate_key_file(host_key)
    env.env = {**env.env, sec.KEY_FILE_ENV: str(host_key)}
    env.start_host()
    (host,) = await env.host_ids(1)
    guest = build_component("config_guest").read_bytes()
    account, module = nkey.generate(nkey.KeyKind.ACCOUNT), nkey.generate(nkey.KeyKind.MODULE)
    signed_ref = write(tmp_path, "guest_s.wasm", signed(guest, account, module, name="guest"))
    unsigned_ref = write(tmp_path, "guest.wasm", guest)
    nats = ("--nats-url", env.nats_url, "--lattice", env.lattice, "--key-file", str(host_key))
    value = "by-key-" + pyrandom.token_hex(16)
    put = await asyncio.to_thread(cli_ok, "secret", "put", "tok", value, "--allow", module.public_key, *nats)
    assert module.public_key in put.stdout

    # Granted by key: the signed component gets it, whatever its ID.
    url = await serve_http(
        env, host, "anyname", signed_ref, port=free_port(), config=["SECRET_tok"], ready_path="/ready"
    )
    status, data = await get_json(url + "/secret?key=tok")
    assert (status, data["value"]) == (200, value)

    # The same ID running an unsigned image (an update keeps ID, config and link): not granted.
    await env.ctl.update_component(host, "anyname", unsigned_ref)
    await env.wait_event(
        "component_scaled",
        lambda e: e["data"]["component_id"] == "anyname" and e["data"]["image_ref"] == unsigned_ref,
    )

    async def denied() -> dict[str, Any]:
        status, data = await get_json(url + "/secret?key=tok")
        assert status == 500, data
        return data

    deadline = time.monotonic() + 30
    while True:
        try:
            data = await denied()
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    assert "not granted to component 'anyname' (unsigned)" in data["error"], data
    assert value not in json.dumps(data)
