"""Pulling the componentize-py `examples/hello` (~18 MB) from a local docker-registry.

Beside it, in the same run, `curl` of the same blob URL from the same registry: the cold pull
(manifest + streamed, hashed layer + cache write) is compared with curl's raw transfer; the
cached pull is a tag resolution (one manifest request) plus a cache read checked against the
digest. Targets: cold within 1.5x of curl, cached under 50 ms. Run: `python benchmarks/artifacts.py
[ROUNDS]`.

The cold pull is timed until the checked bytes are the caller's (what a host compiles from); the
fetcher writes the cache file after that, and a second line times the pull until that write has
ended too. Each round runs curl, the cold pull and the cached pull back to back; the ratio reported is the
median of the rounds' own cold/curl ratios, so a machine whose load drifts during the run (others
share it) compares like with like. The breakdown times the parts of a cold pull on their own: the
manifest request, aiohttp reading the blob and dropping it (no hash, no cache), and sha256 of the
layer.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, machine
from tests.support.registry import registry_server
from wasmlattice import aio
from wasmlattice.artifacts.cache import ArtifactCache
from wasmlattice.artifacts.fetch import ArtifactFetcher, FetchPolicy
from wasmlattice.artifacts.oci import OciClient
from wasmlattice.artifacts.push import push_component, wasm_config
from wasmlattice.artifacts.reference import parse_oci_ref

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 11


def hello_component() -> bytes:
    """The componentize-py build of examples/hello (built once, cached by devbuild)."""
    out = subprocess.run(
        [sys.executable, "-m", "wasmlattice.devbuild", str(ROOT / "examples" / "hello")],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip().splitlines()[-1]).read_bytes()


async def pull(ref: str, registry: str, cache_dir: Path) -> tuple[float, float]:
    """Seconds until the checked bytes are the caller's, and until the cache file is written too
    (the fetcher writes it after handing the bytes over; `close` waits for that write)."""
    fetcher = ArtifactFetcher(FetchPolicy.of(False, [registry]), cache=ArtifactCache(cache_dir))
    start = time.perf_counter()
    try:
        await fetcher.fetch(ref)
        usable = time.perf_counter() - start
    finally:
        await fetcher.close()
    return usable, time.perf_counter() - start


async def raw_read(url: str) -> float:
    """aiohttp alone: a fresh session GETs `url` and drops the chunks (the floor of our HTTP client)."""
    import aiohttp

    start = time.perf_counter()
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        r.content.set_read_chunk_size(1 << 20)
        async for _chunk, _ in r.content.iter_chunks():
            pass
    return time.perf_counter() - start


async def manifest_request(ref: str, registry: str) -> float:
    """One manifest request by tag on a fresh client (new connection)."""
    async with OciClient(insecure=[registry]) as client:
        start = time.perf_counter()
        await client.get_manifest(parse_oci_ref(ref))
        return time.perf_counter() - start


def curl(url: str) -> float:
    start = time.perf_counter()
    subprocess.run(["curl", "-sf", "-o", "/dev/null", url], check=True)
    return time.perf_counter() - start


async def main() -> None:
    data = hello_component()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory() as tmp, registry_server(Path(tmp) / "registry") as reg:
        ref = f"{reg.host}/bench/hello:0.1.0"
        async with OciClient(insecure=[reg.host]) as client:
            await push_component(client, parse_oci_ref(ref), data, wasm_config(data))
        blob_url = f"http://{reg.host}/v2/bench/hello/blobs/{digest}"
        curl(blob_url)  # warm the registry's own caches for both
        colds, curls, cached, ratios, written = [], [], [], [], []
        raws, manifests = [], []
        for i in range(ROUNDS):
            cache_dir = Path(tmp) / f"cache{i}"
            curls.append(curl(blob_url))
            usable, on_disk = await pull(ref, reg.host, cache_dir)
            colds.append(usable)
            written.append(on_disk)
            cached.append((await pull(ref, reg.host, cache_dir))[0])
            ratios.append(colds[-1] / curls[-1])
            raws.append(await raw_read(blob_url))
            manifests.append(await manifest_request(ref, reg.host))
        hashing = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            hashlib.sha256(data).digest()
            hashing.append(time.perf_counter() - start)
    c, k, w = statistics.median(colds), statistics.median(curls), statistics.median(cached)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"artifacts: {len(data) / 1e6:.1f} MB component, {ROUNDS} rounds, {machine()}, load {load}")
    print(f"  curl of the blob          {k * 1000:8.1f} ms")
    print(
        f"  cold pull (tag)           {c * 1000:8.1f} ms   {statistics.median(ratios):.2f}x curl "
        f"(median of per-round ratios; best round {min(ratios):.2f}x; target <= 1.5x)"
    )
    print(
        f"  cold pull, cache written  {statistics.median(written) * 1000:8.1f} ms   "
        f"{statistics.median(d / k for d, k in zip(written, curls, strict=True)):.2f}x curl "
        "(until the cache file is on disk too)"
    )
    print(f"  cached pull (tag)         {w * 1000:8.1f} ms   (target < 50 ms)")
    print("  breakdown of a cold pull, each part alone:")
    print(f"    manifest request (new connection)     {statistics.median(manifests) * 1000:8.1f} ms")
    print(f"    aiohttp reads the blob, drops it      {statistics.median(raws) * 1000:8.1f} ms")
    print(f"    sha256 of the layer (one thread)      {statistics.median(hashing) * 1000:8.1f} ms")


if __name__ == "__main__":
    aio.run(main())
