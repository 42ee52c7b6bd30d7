"""Cost of one trivial host call (wasm -> Python `ping(u32) -> u32`): our fast path vs wasmtime-py's.

The guest (tests/components/wat/hostcall.wat) calls `ping` N times in a loop; the per-call cost is
the time for N calls less the time for none, divided by N. The peer is wasmtime-py's own generic
`LinkerInstance.add_func` path on the same engine and component. Target: <= 5 us per call.

    python benchmarks/hostcall.py [--calls 200000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import wasmtime
import wasmtime.component as wc

from wasmlattice.runtime.component import CompileCache
from wasmlattice.runtime.engine import HostEngine
from wasmlattice.runtime.linking import HostInterface, HostRegistry, link
from wasmlattice.runtime.pool import InstancePool

ROOT = Path(__file__).resolve().parent.parent
WAT = ROOT / "tests" / "components" / "wat" / "hostcall.wat"


def build() -> bytes:
    """Assemble the WAT guest."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "hostcall.wasm"
        subprocess.run(
            [str(Path(sys.executable).parent / "wasm-tools"), "parse", str(WAT), "-o", str(out)], check=True
        )
        return out.read_bytes()


def best_of(fn, repeats: int = 5) -> float:  # type: ignore[no-untyped-def]
    """The fastest of several timings of fn()."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def ours(wasm: bytes, engine: HostEngine, calls: int) -> float:
    """Microseconds per host call on the fast path."""
    reg = HostRegistry()
    reg.add(HostInterface("test:micro/host", {"ping": lambda x: x + 1}, versions=("",)))
    comp = CompileCache(None).load(wasm, engine, "hostcall.wasm")
    pool = InstancePool(engine, link(engine, comp, reg), "test:micro/bench", "run", reuse=10**9)
    pool.run(None, 60.0, 10)
    full = best_of(lambda: pool.run(None, 60.0, calls))
    empty = best_of(lambda: pool.run(None, 60.0, 0))
    return (full - empty) / calls * 1e6


def peer(wasm: bytes, engine: HostEngine, calls: int) -> float:
    """Microseconds per host call on wasmtime-py's generic add_func path."""
    comp = wc.Component(engine.engine, wasm)
    linker = wc.Linker(engine.engine)
    with linker.root() as root, root.add_instance("test:micro/host") as host:
        host.add_func("ping", lambda store, x: x + 1)
    store = wasmtime.Store(engine.engine)
    store.set_epoch_deadline(10**9)
    inst = linker.instantiate(store, comp)
    idx = comp.get_export_index("test:micro/bench")
    run = inst.get_func(store, comp.get_export_index("run", instance=idx))
    assert run is not None
    full = best_of(lambda: run(store, calls))
    empty = best_of(lambda: run(store, 0))
    return (full - empty) / calls * 1e6


def main() -> None:
    """Run both and print the costs and ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200_000)
    args = ap.parse_args()
    wasm = build()
    engine = HostEngine()
    a = ours(wasm, engine, args.calls)
    b = peer(wasm, engine, max(1000, args.calls // 10))
    print(f"trivial host call, wasmlattice fast path : {a:6.2f} us/call (target <= 5)")
    print(f"trivial host call, wasmtime-py add_func  : {b:6.2f} us/call")
    print(f"ratio (peer / ours)                      : {b / a:6.1f}x faster")
    engine.close()


if __name__ == "__main__":
    main()
