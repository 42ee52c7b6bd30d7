"""Deploy the examples into a running lattice and route HTTP to them (used by `make up`).

On the first host that answers: scales `hello` (examples/hello) and `notes` (examples/notes), starts
the built-in HTTP server, key-value (NATS) and messaging (NATS) providers, and links them: each
component gets its own listen address (named config on the HTTP links), `notes` stores in the NATS
bucket `notes` and publishes change events on `notes.changed`. Waits until both answer, then prints
their base URLs, one per line.

    python examples/deploy.py HELLO_WASM NOTES_WASM --nats-url nats://127.0.0.1:4222 \\
        --nats-creds .wasmlattice/nats-user.nk --address 127.0.0.1:8000 --notes-address 127.0.0.1:8001

`--nats-creds` is the credentials file `wasmlattice up` wrote to its data dir: its NATS refuses
clients without it (docs/security.md).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from wasmlattice.client.ctl import CtlClient
from wasmlattice.protocol.connection import NatsOptions, connect
from wasmlattice.protocol.models import Link


def http_link(component_id: str, config: str) -> Link:
    """The link from the HTTP server provider to a component, with its listen address config.

    Links from one source for one interface need distinct names (one per target).
    """
    return Link(
        source_id="http-server",
        target=component_id,
        name=component_id,
        wit_namespace="wasi",
        wit_package="http",
        interfaces=["incoming-handler"],
        source_config=[config],
    )


async def deploy(
    hello: Path,
    notes: Path,
    nats_url: str,
    lattice: str,
    address: str,
    notes_address: str,
    nats_creds: Path | None = None,
) -> None:
    """Scale the components, start the providers and put the links and configs."""
    nc = await connect(NatsOptions(url=nats_url, name="wasmlattice-example", creds_file=nats_creds))
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
        await ctl.put_config("hello-http", {"address": address})
        await ctl.put_config("notes-http", {"address": notes_address})
        await ctl.put_config("notes-kv", {"bucket": "notes"})
        await ctl.scale_component(host, hello.resolve().as_uri(), "hello", 10)
        await ctl.scale_component(host, notes.resolve().as_uri(), "notes", 10)
        await ctl.start_provider(host, "builtin://http-server", "http-server")
        await ctl.start_provider(host, "builtin://keyvalue-nats", "keyvalue")
        await ctl.start_provider(host, "builtin://messaging-nats", "messaging")
        await ctl.put_link(http_link("hello", "hello-http"))
        await ctl.put_link(http_link("notes", "notes-http"))
        await ctl.put_link(
            Link(
                source_id="notes",
                target="keyvalue",
                wit_namespace="wasi",
                wit_package="keyvalue",
                interfaces=["store", "atomics"],
                target_config=["notes-kv"],
            )
        )
        await ctl.put_link(
            Link(
                source_id="notes",
                target="messaging",
                wit_namespace="wasmcloud",
                wit_package="messaging",
                interfaces=["consumer"],
            )
        )
    finally:
        await nc.close()


async def wait_until_served(url: str, timeout: float = 90.0) -> None:
    """Poll `url` until it answers 200 (scaling compiles the component; cached after the first time)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                r.read()
                return
        except urllib.error.HTTPError as e:
            # It answered, but not with the component's page (yet): say what it did answer.
            seen = f"it answered {e.code} {e.reason}"
        except OSError as e:
            seen = f"no answer ({e})"
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not serve the example within {timeout:.0f} s: {seen}; see up.log")
        await asyncio.sleep(0.3)


def check_free(address: str, variable: str) -> None:
    """Exit with a clear message if another program already listens on `address` (HOST:PORT)."""
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.settimeout(1.0)
        if s.connect_ex((host.strip("[]"), int(port))) != 0:
            return
    raise SystemExit(
        f"{address} is already taken by another program; pick a free address, e.g. "
        f"`make up {variable}=127.0.0.1:{int(port) + 10}`"
    )


def main() -> None:
    """Parse arguments, deploy, wait, print the URLs."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hello", type=Path, nargs="?")
    ap.add_argument("notes", type=Path, nargs="?")
    ap.add_argument("--check-only", action="store_true", help="only check that the addresses are free")
    ap.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    ap.add_argument("--nats-creds", type=Path, help="NATS credentials (the file `wasmlattice up` wrote)")
    ap.add_argument("--lattice", default="default")
    ap.add_argument("--address", default="127.0.0.1:8000")
    ap.add_argument("--notes-address", default="127.0.0.1:8001")
    args = ap.parse_args()
    check_free(args.address, "LISTEN")
    check_free(args.notes_address, "NOTES_LISTEN")
    if args.check_only:
        return
    if args.hello is None or args.notes is None:
        ap.error("the hello and notes components are required")
    asyncio.run(
        deploy(
            args.hello,
            args.notes,
            args.nats_url,
            args.lattice,
            args.address,
            args.notes_address,
            args.nats_creds,
        )
    )
    urls = [f"http://{args.address}/hello", f"http://{args.notes_address}"]
    asyncio.run(wait_until_served(urls[0]))
    asyncio.run(wait_until_served(urls[1] + "/notes"))
    print("\n".join(urls))


if __name__ == "__main__":
    sys.exit(main())
