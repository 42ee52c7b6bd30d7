"""The runtime on a real (WAT) component: host calls, faults, deadlines, memory limits, compile cache."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.components import WAT_DIR, parse_wat
from wasmlattice.runtime.component import (
    CompileCache,
    ComponentError,
    check_format,
    inspect_component,
)
from wasmlattice.runtime.engine import HostEngine
from wasmlattice.runtime.fastcall import GuestTrap, Trap
from wasmlattice.runtime.linking import HostInterface, HostRegistry, MissingImport, link
from wasmlattice.runtime.pool import InstancePool


def registry(ping: Any) -> HostRegistry:
    reg = HostRegistry()
    reg.add(HostInterface("test:micro/host", {"ping": ping}, versions=("",)))
    return reg


def make_pool(engine: HostEngine, wasm: bytes, ping: Any, func: str, **kw: Any) -> InstancePool:
    comp = CompileCache(None).load(wasm, engine, "hostcall.wasm")
    return InstancePool(engine, link(engine, comp, registry(ping)), "test:micro/bench", func, **kw)


def test_guest_calls_python_and_gets_results(engine: HostEngine, hostcall_wasm: bytes) -> None:
    seen: list[int] = []

    def ping(x: int) -> int:
        seen.append(x)
        return x + 2

    pool = make_pool(engine, hostcall_wasm, ping, "run")
    assert pool.run(None, 5.0, 10) == 20
    assert seen == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]


def test_host_exception_traps_the_guest_with_its_cause(engine: HostEngine, hostcall_wasm: bytes) -> None:
    def ping(x: int) -> int:
        raise Trap("ping refused")

    pool = make_pool(engine, hostcall_wasm, ping, "run")
    with pytest.raises(GuestTrap) as info:
        pool.run(None, 5.0, 3)
    assert "ping refused" in info.value.reason


def test_bad_host_result_traps_instead_of_corrupting(engine: HostEngine, hostcall_wasm: bytes) -> None:
    pool = make_pool(engine, hostcall_wasm, lambda x: -5, "run")
    with pytest.raises(GuestTrap) as info:
        pool.run(None, 5.0, 1)
    assert "out of range for u32" in info.value.reason


def test_trapped_instance_is_discarded_and_next_call_works(engine: HostEngine, hostcall_wasm: bytes) -> None:
    comp = CompileCache(None).load(hostcall_wasm, engine, "hostcall.wasm")
    linked = link(engine, comp, registry(lambda x: x + 1))
    boom = InstancePool(engine, linked, "test:micro/bench", "boom", reuse=10)
    with pytest.raises(GuestTrap) as info:
        boom.run(None, 5.0)
    assert "unreachable" in info.value.message
    assert boom.group.idle_count == 0 and boom.group.live == 0
    assert boom.group.stats.snapshot()[2] == {"trapped": 1}


def test_reuse_is_bounded_by_request_count(engine: HostEngine, hostcall_wasm: bytes) -> None:
    pool = make_pool(engine, hostcall_wasm, lambda x: x + 1, "run", reuse=3)
    for _ in range(7):
        assert pool.run(None, 5.0, 2) == 2
    assert pool.created == 3  # 3 + 3 + 1 calls


def test_fresh_instance_per_call_by_default(engine: HostEngine, hostcall_wasm: bytes) -> None:
    pool = make_pool(engine, hostcall_wasm, lambda x: x + 1, "run")
    for _ in range(4):
        pool.run(None, 5.0, 1)
    assert pool.created == 4


def test_runaway_guest_is_interrupted_at_its_deadline(engine: HostEngine, hostcall_wasm: bytes) -> None:
    pool = make_pool(engine, hostcall_wasm, lambda x: x, "spin")
    t0 = time.monotonic()
    with pytest.raises(GuestTrap) as info:
        pool.run(None, 0.3)
    elapsed = time.monotonic() - t0
    assert "interrupt" in info.value.message
    assert 0.25 <= elapsed < 3.0


def test_memory_limit_refuses_growth(engine: HostEngine, hostcall_wasm: bytes) -> None:
    pool = make_pool(engine, hostcall_wasm, lambda x: x, "grow", max_memory=4 * 65536)
    assert pool.run(None, 5.0, 2) == 1  # 1 -> 3 pages: within 4
    limited = make_pool(engine, hostcall_wasm, lambda x: x, "grow", max_memory=4 * 65536)
    assert limited.run(None, 5.0, 100) == -1  # memory.grow fails rather than exceeding the limit


def test_unprovided_import_is_refused_at_link_time(engine: HostEngine, hostcall_wasm: bytes) -> None:
    comp = CompileCache(None).load(hostcall_wasm, engine, "hostcall.wasm")
    with pytest.raises(MissingImport, match=r"imports test:micro/host, which this host does not provide"):
        link(engine, comp, HostRegistry(), origin="hostcall.wasm")


def test_inspection_lists_imports_and_exports(engine: HostEngine, hostcall_wasm: bytes) -> None:
    comp = CompileCache(None).load(hostcall_wasm, engine, "hostcall.wasm")
    info = inspect_component(comp, engine)
    assert [(i.name, i.functions) for i in info.imports] == [("test:micro/host", ["ping"])]
    exp = info.export_named("test:micro/bench")
    assert exp is not None and exp.functions == ["run", "spin", "grow", "boom"]


def test_compile_cache_reuses_and_recompiles_corrupt_entries(
    engine: HostEngine, hostcall_wasm: bytes, tmp_path: Path
) -> None:
    cache = CompileCache(tmp_path)
    cache.load(hostcall_wasm, engine, "x")
    entries = list(tmp_path.glob("*.cwasm"))
    assert len(entries) == 1
    first = entries[0].read_bytes()
    cache.load(hostcall_wasm, engine, "x")  # a hit: the entry is unchanged
    assert entries[0].read_bytes() == first

    blob = bytearray(first)
    blob[len(blob) // 2] ^= 0xFF
    entries[0].write_bytes(bytes(blob))
    comp = cache.load(hostcall_wasm, engine, "x")  # corrupt: recompiled, not trusted, replaced
    assert entries[0].read_bytes() != bytes(blob)
    assert cache._read(entries[0], engine) is not None
    pool = InstancePool(engine, link(engine, comp, registry(lambda x: x + 1)), "test:micro/bench", "run")
    assert pool.run(None, 5.0, 2) == 2

    entries[0].write_bytes(b"garbage")
    assert cache._read(entries[0], engine) is None
    cache.load(hostcall_wasm, engine, "x")
    assert cache._read(entries[0], engine) is not None


def test_cache_key_depends_on_engine_settings(hostcall_wasm: bytes) -> None:
    from wasmlattice.runtime.engine import EngineSettings

    a, b = HostEngine(EngineSettings(epoch_interruption=True)), HostEngine(EngineSettings(opt_level="none"))
    try:
        cache = CompileCache(None)
        assert cache.key(hostcall_wasm, a) != cache.key(hostcall_wasm, b)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello world", "is not a WebAssembly file"),
        (b"\0asm\x01\0\0\0", "is a core WebAssembly module, not a component"),
        (b"", "is not a WebAssembly file"),
    ],
)
def test_non_components_are_refused_with_what_they_are(data: bytes, message: str) -> None:
    with pytest.raises(ComponentError, match=message):
        check_format(data, "x.wasm")


TWO_BORROWS = WAT_DIR / "two_borrows.wat"


def test_host_functions_take_two_borrows(engine: HostEngine, tmp_path: Path) -> None:
    # output-stream.splice, descriptor.rename-at and is-same-object pass two borrows; wasmtime
    # 50.0.1's C API could not lift them (51.0.0 can), so this guards any upgrade of the pin.
    out = parse_wat(TWO_BORROWS, tmp_path / "two.wasm")

    class R:
        pass

    def two_err(a: R, b: R) -> int:
        from wasmlattice.runtime.witypes import Err

        raise Err(7)

    reg = HostRegistry()
    reg.add(
        HostInterface(
            "test:r/host",
            {"[constructor]r": R, "[method]r.two": lambda a, b: int(a is b), "[method]r.two-err": two_err},
        )
    )
    comp = CompileCache(None).load(out.read_bytes(), engine, "two.wasm")
    pool = InstancePool(engine, link(engine, comp, reg), "test:r/exp", "run")
    assert pool.run(None, 5.0, True, False) == 1  # the same resource borrowed twice
    assert pool.run(None, 5.0, False, False) == 0  # two different resources
    assert pool.run(None, 5.0, False, True) == 7  # the error case of a result


def test_host_function_slots_live_as_long_as_their_instances(
    engine: HostEngine, hostcall_wasm: bytes
) -> None:
    import gc

    from wasmlattice.runtime.fastcall import bound_slots_in_use

    gc.collect()
    before = bound_slots_in_use()
    pool = make_pool(engine, hostcall_wasm, lambda x: x + 1, "run", reuse=100)
    assert bound_slots_in_use() == before + 1  # the one import, `ping`
    assert pool.run(None, 5.0, 3) == 3
    # Dropping the linker alone must not free the slot: the live instance still calls `ping`.
    pool.linked.linker = None  # type: ignore[assignment]
    gc.collect()
    assert pool.run(None, 5.0, 4) == 4
    # With the instance gone too, the slot is free for the next component.
    del pool
    gc.collect()
    assert bound_slots_in_use() == before
