"""Two hosts in network namespaces of their own run a component pushed into the lattice's store.

Issue 13's setting as close as one machine gets to several: the nats-server runs in the root
namespace, listening only on the address of a bridge made for this test; each host runs in its own
network namespace (`ip netns exec`), reaches NATS over a veth pair into that bridge, and has its own
HOME, artifact cache and compile cache, with file loading off. The CLI in the root namespace pushes
`lattice://echo:1.0`; each host pulls it from JetStream and serves it on its namespace's address,
which the test reaches from the root namespace. The namespaces have no default route and the bridge
no physical port, so nothing leaves the machine. Names are unique per run; the namespaces, veths and
the bridge are removed in the fixture's teardown, whatever happened.
"""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.http import get
from tests.support.lattice import LatticeEnv, own_dirs, serve_http
from tests.support.processes import BackgroundNats, wasmlattice_cmd

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

# A port the hosts serve on: each namespace has its own port space, so both use the same one.
HTTP_PORT = 8080


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS`; with `check`, fail naming the command and its error."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def free_subnet() -> ipaddress.IPv4Network:
    """A private /24 that no route of this machine touches (so the test's traffic stays on its bridge)."""
    routes = json.loads(ip("-j", "-4", "route", "show", "table", "all").stdout or "[]")
    taken = [
        ipaddress.ip_network(r["dst"], strict=False)
        for r in routes
        if r.get("dst") and r["dst"] != "default" and r["dst"][0].isdigit()
    ]
    rng = random.SystemRandom()
    for _ in range(100):
        net = ipaddress.ip_network(f"10.{rng.randint(100, 250)}.{rng.randint(0, 255)}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise AssertionError("no free 10.x.y.0/24 for the test's bridge")


@dataclass(frozen=True)
class Namespaces:
    """The test's network: the bridge's address in the root namespace, and each namespace's address."""

    gateway: str
    hosts: dict[str, str]  # namespace name -> its address


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    """Two network namespaces joined to a fresh bridge in the root namespace; always removed."""
    tag = uuid.uuid4().hex[:8]
    bridge = f"wlb{tag}"  # interface names: at most 15 characters
    made_ns: list[str] = []
    made_links: list[str] = []
    try:
        net = free_subnet()
        addrs = list(net.hosts())
        gateway = str(addrs[0])
        ip("link", "add", bridge, "type", "bridge")
        made_links.append(bridge)
        ip("addr", "add", f"{gateway}/{net.prefixlen}", "dev", bridge)
        ip("link", "set", bridge, "up")
        hosts: dict[str, str] = {}
        for i, side in enumerate("ab", start=1):
            ns, veth, peer = f"wlart-{tag}-{side}", f"wlv{tag}{side}", f"wlp{tag}{side}"
            ip("netns", "add", ns)
            made_ns.append(ns)
            ip("link", "add", veth, "type", "veth", "peer", "name", peer)
            made_links.append(veth)
            ip("link", "set", peer, "netns", ns)
            ip("link", "set", veth, "master", bridge)
            ip("link", "set", veth, "up")
            address = str(addrs[i])
            ip("-n", ns, "addr", "add", f"{address}/{net.prefixlen}", "dev", peer)
            ip("-n", ns, "link", "set", peer, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            hosts[ns] = address
        yield Namespaces(gateway, hosts)
    finally:
        errors = []
        for ns in made_ns:
            r = ip("netns", "del", ns, check=False)
            if r.returncode != 0:
                errors.append(f"netns {ns}: {r.stderr.strip()}")
        for link in reversed(made_links):  # a veth whose peer left with its namespace is gone already
            if ip("link", "show", link, check=False).returncode == 0:
                r = ip("link", "del", link, check=False)
                if r.returncode != 0:
                    errors.append(f"link {link}: {r.stderr.strip()}")
        left = [ns for ns in made_ns if ns in ip("netns", "list", check=False).stdout]
        assert not errors and not left, f"could not clean up: {errors} {left}"


@pytest.fixture
def bridge_nats(namespaces: Namespaces, tmp_path: Path) -> Iterator[str]:
    """A nats-server with JetStream listening only on the bridge's address; its URL."""
    bg = BackgroundNats(tmp_path / "nats", host=namespaces.gateway)
    try:
        bg.call(bg.server.start())
        yield bg.server.url
    finally:
        bg.close()


@pytest.fixture
async def ns_env(
    bridge_nats: str, lattice_name: str, tmp_path: Path, wasmlattice_env: dict[str, str]
) -> AsyncIterator[LatticeEnv]:
    """A `LatticeEnv` on the bridge's nats-server (its hosts are started by the test)."""
    (tmp_path / "logs").mkdir()
    e = LatticeEnv(bridge_nats, lattice_name, tmp_path / "logs", wasmlattice_env)
    await e.connect()
    try:
        yield e
    finally:
        e.close()
        await e.nc.close()


async def test_hosts_in_their_own_network_namespaces_run_a_component_from_the_lattice_store(
    namespaces: Namespaces, ns_env: LatticeEnv, http_echo_wasm: Path, tmp_path: Path
) -> None:
    env = ns_env
    push = wasmlattice_cmd(
        "push",
        "lattice://echo:1.0",
        str(http_echo_wasm),
        "--nats-url",
        env.nats_url,
        "--lattice",
        env.lattice,
    )
    pushed = subprocess.run(push, capture_output=True, text=True, env=env.env, timeout=240)
    assert pushed.returncode == 0, pushed.stderr
    digest = pushed.stdout.strip().split("@", 1)[1]

    names = list(namespaces.hosts)
    for ns in names:
        env.start_host(files=False, env=own_dirs(tmp_path / ns), prefix=("ip", "netns", "exec", ns))
    host_ids = await env.host_ids(2)

    for n, host_id in enumerate(host_ids):
        pid = env.process_of(host_id).pid
        # The host process really lives in its namespace (the one it was started in).
        ns = ip("netns", "identify", str(pid)).stdout.strip()
        assert ns in namespaces.hosts, f"host {host_id} (pid {pid}) runs in namespace {ns!r}"
        address = namespaces.hosts[ns]
        url = await serve_http(
            env,
            host_id,
            f"echo-{n}",
            "lattice://echo:1.0",
            port=HTTP_PORT,
            address=address,
            ready_path="/echo",
        )
        assert url == f"http://{address}:{HTTP_PORT}"
        status, body = await get(url + f"/echo?from={ns}")
        assert status == 200 and f"/echo?from={ns}" in body, body
        # Pulled into the host's own cache, through the lattice's NATS.
        assert list((tmp_path / ns / "artifacts").rglob(digest.split(":")[1])), f"{ns} cached nothing"
    assert sorted(ip("netns", "identify", str(p.pid)).stdout.strip() for p in env.procs) == sorted(names)
