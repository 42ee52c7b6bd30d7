"""Custom interfaces between components on one host, routed by links.

The "anything else" row of docs/protocol.md#interfaces.

`greeter_caller` serves HTTP and imports `test:greeter/greet`; `greeter_callee` exports it. The
link from caller to callee decides where calls go; without it the call fails with a logged message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.http import get, wait_body
from tests.support.lattice import LatticeEnv, serve_http
from tests.support.processes import free_port
from wasmlattice.protocol.models import Link

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def greet_link(source: str, target: str) -> Link:
    return Link(
        source_id=source, target=target, wit_namespace="test", wit_package="greeter", interfaces=["greet"]
    )


async def test_calls_follow_the_link(env: LatticeEnv, build_component: Callable[[str], Path]) -> None:
    caller = "file://" + str(build_component("greeter_caller"))
    callee = "file://" + str(build_component("greeter_callee"))
    env.start_host()
    (host,) = await env.host_ids(1)
    url = await serve_http(env, host, "caller", caller, port=free_port(), ready_path="/ready")
    await env.ctl.scale_component(host, callee, "callee", 2)
    await env.wait_event("component_scaled", lambda e: e["data"]["component_id"] == "callee")

    # No link yet: the call fails (500, the guest trapped) with a logged message naming the link.
    status, _ = await get(f"{url}/hello?name=ann&age=7")
    assert status == 500
    assert "no link named `default` for `test:greeter/greet`" in env.log_text()

    await env.ctl.put_link(greet_link("caller", "callee"))
    # Records go in, strings come out; each call gets a fresh callee instance.
    assert await wait_body(f"{url}/hello?name=ann&age=7", 200, "hello ann (7)") == "hello ann (7), call 1\n"
    assert (await get(f"{url}/hello?name=bob&age=8"))[1] == "hello bob (8), call 1\n"
    # A result's error case crosses as the interface's own error.
    assert await get(f"{url}/divide?a=-9&b=2") == (200, "-5\n")
    assert await get(f"{url}/divide?a=1&b=0") == (400, "error: division by zero\n")
    # A trapping callee fails only that request; both components keep serving.
    assert (await get(f"{url}/crash"))[0] == 500
    assert "`callee` trapped in test:greeter/greet#crash" in env.log_text()
    assert (await get(f"{url}/hello?name=cy&age=9"))[0] == 200

    # Deleting the link breaks the next call with the clear error; putting it back heals.
    await env.ctl.delete_link("caller", "test", "greeter")
    await wait_body(f"{url}/hello?name=ann&age=7", 500, "")
    await env.ctl.put_link(greet_link("caller", "callee"))
    await wait_body(f"{url}/hello?name=ann&age=7", 200, "hello ann")

    # A target that runs nowhere (not here, and no host answers over wRPC): the error names it.
    await env.ctl.scale_component(host, callee, "callee", 0)
    await env.wait_event(
        "component_scaled",
        lambda e: e["data"]["component_id"] == "callee" and e["data"]["max_instances"] == 0,
    )
    assert (await get(f"{url}/hello?name=ann&age=7"))[0] == 500
    assert "calling test:greeter/greet@0.1.0#hello on `callee` failed: no responders for" in env.log_text()
