"""Winch builds next to Cranelift's: same results, deadlines and memory limits hold, and a pool
switches its new instances to the optimised build (tiered compilation)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wasmlattice.runtime.component import CompileCache
from wasmlattice.runtime.engine import CRANELIFT, WINCH, EngineSettings, HostEngine
from wasmlattice.runtime.fastcall import GuestTrap
from wasmlattice.runtime.linking import HostInterface, HostRegistry, LinkedComponent, link
from wasmlattice.runtime.pool import InstancePool


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[str, HostEngine]]:
    """One engine per compiler."""
    es = {name: HostEngine(EngineSettings(strategy=name)) for name in (CRANELIFT, WINCH)}
    yield es
    for e in es.values():
        e.close()


def linked_with(engine: HostEngine, wasm: bytes) -> LinkedComponent:
    reg = HostRegistry()
    reg.add(HostInterface("test:micro/host", {"ping": lambda x: x + 2}, versions=("",)))
    return link(engine, CompileCache(None).compile(wasm, engine, "hostcall.wasm"), reg)


@pytest.mark.parametrize("compiler", [CRANELIFT, WINCH])
def test_each_compiler_runs_the_guest_and_its_limits(
    engines: dict[str, HostEngine], hostcall_wasm: bytes, compiler: str
) -> None:
    linked = linked_with(engines[compiler], hostcall_wasm)
    assert linked.tier == compiler
    assert InstancePool(linked.engine, linked, "test:micro/bench", "run").run(None, 5.0, 10) == 20
    # The epoch deadline interrupts a loop in Winch's code as in Cranelift's.
    with pytest.raises(GuestTrap) as info:
        InstancePool(linked.engine, linked, "test:micro/bench", "spin").run(None, 0.3)
    assert "interrupt" in info.value.message
    grow = InstancePool(linked.engine, linked, "test:micro/bench", "grow", max_memory=4 * 65536)
    assert grow.run(None, 5.0, 2) == 1
    assert grow.run(None, 5.0, 100) == -1  # the store's memory limit, whatever compiled the code
    with pytest.raises(GuestTrap, match="unreachable"):
        InstancePool(linked.engine, linked, "test:micro/bench", "boom").run(None, 5.0)


def test_pool_promotes_new_instances_to_the_optimised_build(
    engines: dict[str, HostEngine], hostcall_wasm: bytes
) -> None:
    first = linked_with(engines[WINCH], hostcall_wasm)
    optimised = linked_with(engines[CRANELIFT], hostcall_wasm)
    pool = InstancePool(first.engine, first, "test:micro/bench", "run", reuse=5)
    assert pool.run(None, 5.0, 3) == 6
    assert pool.tier == WINCH and _idle(pool) == [WINCH]
    pool.promote(optimised)
    assert pool.tier == CRANELIFT and pool.linked is optimised
    assert _idle(pool) == []  # the Winch instance is not reused after the switch
    assert pool.group.stats.snapshot()[2] == {"stopped": 1}
    assert pool.run(None, 5.0, 3) == 6
    assert _idle(pool) == [CRANELIFT]


def _idle(pool: InstancePool) -> list[str]:
    """The tiers of the builds of `pool`'s idle instances."""
    return [i.build.linked.tier for i in pool.group._idle.get(id(pool), [])]


def test_cache_key_names_the_compiler_and_cpu(engines: dict[str, HostEngine], hostcall_wasm: bytes) -> None:
    cache = CompileCache(None)
    assert cache.key(hostcall_wasm, engines[WINCH]) != cache.key(hostcall_wasm, engines[CRANELIFT])
    tag = engines[CRANELIFT].settings.cache_tag()
    assert "strategy=cranelift" in tag and "cpu=" in tag


def test_lookup_finds_only_what_load_cached(
    engines: dict[str, HostEngine], hostcall_wasm: bytes, tmp_path: Path
) -> None:
    cache = CompileCache(tmp_path)
    engine = engines[CRANELIFT]
    assert cache.lookup(hostcall_wasm, engine) is None
    cache.compile(hostcall_wasm, engines[WINCH], "x")  # a first-tier build is never cached
    assert list(tmp_path.glob("*.cwasm")) == []
    cache.load(hostcall_wasm, engine, "x")
    assert cache.lookup(hostcall_wasm, engine) is not None
    assert cache.lookup(hostcall_wasm, engines[WINCH]) is None


def test_unknown_compiler_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown compiler 'lightbeam'"):
        HostEngine(EngineSettings(strategy="lightbeam"))
