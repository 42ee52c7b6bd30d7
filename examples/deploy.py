"""Deploy the hello component into a running lattice and route HTTP to it (used by `make up`).

Scales the component on the first host, starts the built-in HTTP server provider there, and links
the two with the listen address in named config, then waits until the address answers.

    python examples/deploy_hello.py WASM --nats-url nats://127.0.0.1:4222 --address 127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import urllib.request
from pathlib import Path

from wasmlattice.client.ctl import CtlClient
from wasmlattice.lattice.connection import NatsOptions, connect
from wasmlattice.lattice.models import Link


async def deploy(wasm: Path, nats_url: str, lattice: str, address: str) -> str:
    """Deploy and return the URL to try."""
    nc = await connect(NatsOptions(url=nats_url, name="wasmlattice-example"))
    try:
        ctl = CtlClient(nc, lattice)
        hosts = []
        for _ in range(50):  # the host may still be starting
            hosts = await ctl.ping_hosts(wait=0.5)
            if hosts:
                break
        if not hosts:
            raise SystemExit(f"no host answered on lattice {lattice!r} at {nats_url}")
        host = hosts[0].id
        await ctl.scale_component(host, wasm.resolve().as_uri(), "hello", 10)
        await ctl.put_config("hello-http", {"address": address})
        await ctl.start_provider(host, "builtin://http-server", "http-server")
        await ctl.put_link(
            Link(
                source_id="http-server",
                target="hello",
                wit_namespace="wasi",
                wit_package="http",
                interfaces=["incoming-handler"],
                source_config=["hello-http"],
            )
        )
    finally:
        await nc.close()
    url = f"http://{address}/hello"
    deadline = time.monotonic() + 60
    while True:  # scaling compiles the component (cached after the first time)
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                r.read()
                return url
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer within 60 s; see the host log") from None
            await asyncio.sleep(0.3)


def main() -> None:
    """Parse arguments and deploy."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wasm", type=Path)
    ap.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    ap.add_argument("--lattice", default="default")
    ap.add_argument("--address", default="127.0.0.1:8000")
    args = ap.parse_args()
    url = asyncio.run(deploy(args.wasm, args.nats_url, args.lattice, args.address))
    print(url)


if __name__ == "__main__":
    sys.exit(main())
