"""Pulling the componentize-py `examples/hello` (~18 MB) from a local docker-registry.

Beside it, in the same run, `curl` of the same blob URL from the same registry: the cold pull
(manifest + streamed, hashed layer + cache write) is compared with curl's raw transfer; the
cached pull is a tag resolution (one manifest request) plus a cache read checked against the
digest. Targets: cold within 1.5x of curl, cached under 50 ms. Run: `python benchmarks/artifacts.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, machine
from tests.support.registry import registry_server
from wasmlattice.artifacts.cache import ArtifactCache
from wasmlattice.artifacts.fetch import ArtifactFetcher, FetchPolicy
from wasmlattice.artifacts.oci import OciClient
from wasmlattice.artifacts.push import push_component, wasm_config
from wasmlattice.artifacts.reference import parse_oci_ref

ROUNDS = 5


def hello_component() -> bytes:
    """The componentize-py build of examples/hello (built once, cached by devbuild)."""
    out = subprocess.run(
        [sys.executable, "-m", "wasmlattice.devbuild", str(ROOT / "examples" / "hello")],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip().splitlines()[-1]).read_bytes()


async def pull(ref: str, registry: str, cache_dir: Path) -> float:
    fetcher = ArtifactFetcher(FetchPolicy.of(False, [registry]), cache=ArtifactCache(cache_dir))
    try:
        start = time.perf_counter()
        await fetcher.fetch(ref)
        return time.perf_counter() - start
    finally:
        await fetcher.close()


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
        colds, curls, cached = [], [], []
        for i in range(ROUNDS):
            cache_dir = Path(tmp) / f"cache{i}"
            curls.append(curl(blob_url))
            colds.append(await pull(ref, reg.host, cache_dir))
            cached.append(await pull(ref, reg.host, cache_dir))
        shutil.rmtree(Path(tmp) / "cache0", ignore_errors=True)
    c, k, w = statistics.median(colds), statistics.median(curls), statistics.median(cached)
    print(f"artifacts: {len(data) / 1e6:.1f} MB component, {ROUNDS} rounds, {machine()}")
    print(f"  curl of the blob          {k * 1000:8.1f} ms")
    print(f"  cold pull (tag)           {c * 1000:8.1f} ms   {c / k:.2f}x curl (target <= 1.5x)")
    print(f"  cached pull (tag)         {w * 1000:8.1f} ms   (target < 50 ms)")


if __name__ == "__main__":
    asyncio.run(main())
