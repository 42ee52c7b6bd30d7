"""Config keys of builtin providers are checked at `provider.start` and `link.put` (docs/config-keys.md).

A misspelt key is refused with the suggestion; a key close to nothing is accepted with a warning.
Real host process, real nats-server.
"""

from __future__ import annotations

import pytest

from tests.support.lattice import HTTP_SERVER, http_link, kv_link
from tests.support.lattice import LatticeEnv as Env
from tests.support.processes import free_port
from wasmlattice.client.ctl import CtlError

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

KV = "builtin://keyvalue-memory"


async def test_misspelt_keys_are_refused_at_provider_start_and_link_put(env: Env, echo_ref: str) -> None:
    env.start_host()
    (host,) = await env.host_ids(1)
    ctl = env.ctl

    # provider.start is acknowledged at once; the typo fails the start, with the suggestion.
    await ctl.put_config("kv-typo", {"max_value_byte": "10"})
    assert await ctl.start_provider(host, KV, "kv-bad", config=["kv-typo"]) == "successfully started provider"
    failed = await env.wait_event("provider_start_failed", lambda e: e["data"]["provider_id"] == "kv-bad")
    assert (
        "unknown key 'max_value_byte' for keyvalue-memory (provider config): did you mean 'max_value_bytes'?"
        in failed["data"]["error"]
    ), failed
    assert all(p.id != "kv-bad" for p in (await env.inventory(host)).providers)

    # A key close to nothing is a warning only: wasmCloud's providers ignore keys they do not read.
    await ctl.put_config("kv-team", {"team": "storage"})
    await ctl.start_provider(host, KV, "kv", config=["kv-team"])
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "kv")
    await env.wait_log("provider kv: unknown key 'team' for keyvalue-memory (provider config): not read")

    # link.put: a typo in the target config of a link to the provider is refused (no event says
    # it was set), and the reply names the key and its likely meaning.
    assert await ctl.scale_component(host, echo_ref, "echo", 1) == ""
    await ctl.put_config("bucket-typo", {"buket": "orders"})
    with pytest.raises(CtlError, match=r"unknown key 'buket' for keyvalue-memory .*did you mean 'bucket'"):
        await ctl.put_link(kv_link("echo", "kv", config=["bucket-typo"]))
    await env.wait_event("linkdef_set_failed", lambda e: e["data"]["target"] == "kv")
    assert all(lk.target != "kv" for lk in await ctl.get_links())

    # The right key is accepted.
    await ctl.put_config("bucket", {"bucket": "orders"})
    await ctl.put_link(kv_link("echo", "kv", config=["bucket"]))
    assert any(lk.target == "kv" for lk in await ctl.get_links())

    # A listener whose address nobody named says, at info, which one it chose and why.
    port = free_port()
    await ctl.start_provider(host, HTTP_SERVER, "web")
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "web")
    await ctl.put_config("web-port", {"port": str(port)})
    await ctl.put_link(http_link("web", "echo", ["web-port"]))
    await env.wait_log(
        f"INFO wasmlattice.capabilities.http_server: http-server web: a link's source config has no "
        f"`address`, so it listens on 0.0.0.0:{port} (from the default address 0.0.0.0:8000)"
    )
