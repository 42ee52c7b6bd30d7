"""Warm instance pools: the annotations' checks and the `InstanceGroup` rules on a real (WAT) component."""

from __future__ import annotations

import time

import pytest

from tests.unit.test_runtime import registry
from wasmlattice.apps.manifest.load import parse_manifest_dict
from wasmlattice.apps.manifest.model import ManifestError
from wasmlattice.runtime.component import CompileCache
from wasmlattice.runtime.engine import HostEngine
from wasmlattice.runtime.fastcall import GuestTrap
from wasmlattice.runtime.linking import LinkedComponent, link
from wasmlattice.runtime.pool import Instance, InstanceGroup, InstancePool
from wasmlattice.runtime.reuse import (
    DEFAULT_IDLE_TIMEOUT_S,
    FRESH,
    ReuseError,
    ReuseSettings,
    parse_record,
    parse_reuse,
)

R, P, T = "wasmlattice.dev/max-reuse", "wasmlattice.dev/pool-size", "wasmlattice.dev/idle-timeout"


def test_parse_defaults_and_values() -> None:
    assert parse_reuse(None) is FRESH
    assert parse_reuse({"wasmcloud.dev/appspec": "app"}) is FRESH
    assert parse_reuse({R: "1"}) is FRESH
    assert parse_reuse({R: "10"}) == ReuseSettings(10, None, DEFAULT_IDLE_TIMEOUT_S)
    assert parse_reuse({R: " 10 ", P: "3", T: "2.5s"}) == ReuseSettings(10, 3, 2.5)
    # The inventory's own report, echoed back by a client, is not a setting and not refused.
    assert parse_reuse({R: "2", "wasmlattice.dev/instance-pool": "anything"}).max_reuse == 2


@pytest.mark.parametrize(
    ("given", "key", "text"),
    [
        ({R: "0"}, R, "must be from 1 to 1000000, found 0"),
        ({R: "1e3"}, R, "expected a whole number"),
        ({R: "2", P: "0"}, P, "must be from 1 to 1024"),
        ({R: "2", P: "2000"}, P, "must be from 1 to 1024"),
        ({R: "2", T: "0"}, T, "must be more than 0"),
        ({R: "2", T: "nan"}, T, "must be more than 0"),
        ({R: "2", T: "soon"}, T, "expected seconds"),
        ({R: "2", T: "90000"}, T, "at most 86400 seconds"),
        ({T: "5"}, T, "has no effect unless wasmlattice.dev/max-reuse is above 1"),
        (
            {"wasmlattice.dev/pool_size": "5"},
            "wasmlattice.dev/pool_size",
            "did you mean wasmlattice.dev/pool-size?",
        ),
    ],
)
def test_parse_errors_name_the_key(given: dict[str, str], key: str, text: str) -> None:
    with pytest.raises(ReuseError) as info:
        parse_reuse(given)
    assert info.value.key == key
    assert str(info.value).startswith(f"annotation {key}: ")
    assert text in str(info.value)


def test_unrelated_keys_under_our_prefix_are_not_refused() -> None:
    assert parse_reuse({"wasmlattice.dev/owner": "team-a"}) is FRESH


def test_the_record_annotation() -> None:
    key = "wasmlattice.dev/record"
    assert parse_record(None) is False and parse_record({}) is False
    assert parse_record({key: "true"}) is True and parse_record({key: " TRUE "}) is True
    assert parse_record({key: "false"}) is False
    assert parse_reuse({key: "true"}) is FRESH  # checked with the others, changes no pool
    for check in (parse_record, parse_reuse):
        with pytest.raises(
            ReuseError, match=r"annotation wasmlattice.dev/record: expected true or false, found 'yes'"
        ):
            check({key: "yes"})
    with pytest.raises(ReuseError, match=r"did you mean wasmlattice\.dev/record"):
        parse_reuse({"wasmlattice.dev/recrod": "true"})


@pytest.fixture(scope="module")
def linked(engine: HostEngine, hostcall_wasm: bytes) -> LinkedComponent:
    comp = CompileCache(None).load(hostcall_wasm, engine, "hostcall.wasm")
    return link(engine, comp, registry(lambda x: x + 1))


def pool(
    engine: HostEngine, linked: LinkedComponent, group: InstanceGroup, func: str = "run"
) -> InstancePool:
    return InstancePool(engine, linked, "test:micro/bench", func, group=group)


def test_pool_size_caps_idle_instances(engine: HostEngine, linked: LinkedComponent) -> None:
    group = InstanceGroup(ReuseSettings(max_reuse=100, pool_size=1), bound=4)
    run = pool(engine, linked, group)
    # Two instances in use at once: only one is kept when both return.
    a, b = group.take(run), group.take(run)
    assert a is None and b is None
    assert run.run(None, 5.0, 2) == 2
    assert group.idle_count == 1
    first = group.take(run)
    assert first is not None
    group.reserve()
    second = Instance(run, None)
    group.give_back(run, first, None)
    group.give_back(run, second, None)
    assert group.idle_count == 1 and group.live == 1
    assert group.stats.snapshot()[2] == {"pool_full": 1}


def test_failed_calls_never_return_to_the_pool(engine: HostEngine, linked: LinkedComponent) -> None:
    group = InstanceGroup(ReuseSettings(max_reuse=100), bound=4)
    ok, boom = pool(engine, linked, group), pool(engine, linked, group, "boom")
    assert ok.run(None, 5.0, 2) == 2
    with pytest.raises(GuestTrap):
        boom.run(None, 5.0)
    assert group.idle_count == 1  # only the one that returned normally
    assert ok.run(None, 5.0, 2) == 2
    created, reused, discarded = group.stats.snapshot()
    assert (created, reused, discarded) == (2, 1, {"trapped": 1})


def test_idle_timeout_and_reclaim(engine: HostEngine, linked: LinkedComponent) -> None:
    group = InstanceGroup(ReuseSettings(max_reuse=100, idle_timeout=30.0), bound=4)
    run = pool(engine, linked, group)
    run.run(None, 5.0, 2)
    assert group.reclaim() == 0  # not yet idle long enough
    assert group.reclaim(now=time.monotonic() + 31.0) == 1
    assert group.idle_count == 0 and group.live == 0
    run.run(None, 5.0, 2)
    assert group.stats.snapshot()[:2] == (2, 0)  # the second call needed a fresh instance


def test_bound_evicts_the_oldest_idle_instance_of_another_export(
    engine: HostEngine, linked: LinkedComponent
) -> None:
    group = InstanceGroup(ReuseSettings(max_reuse=100), bound=1)
    run, other = pool(engine, linked, group), pool(engine, linked, group)
    run.run(None, 5.0, 2)
    assert group.idle_count == 1
    other.run(None, 5.0, 2)  # another pool: it needs its own instance, and the bound is 1
    assert group.live == 1 and group.idle_count == 1
    assert group.stats.snapshot()[2] == {"evicted": 1}


def test_close_drops_idle_and_returning_instances(engine: HostEngine, linked: LinkedComponent) -> None:
    group = InstanceGroup(ReuseSettings(max_reuse=100), bound=4)
    run = pool(engine, linked, group)
    run.run(None, 5.0, 2)
    group.close()
    assert group.idle_count == 0 and group.live == 0
    run.run(None, 5.0, 2)  # a call already accepted still runs, on an instance closed after it
    assert group.idle_count == 0 and group.live == 0
    assert group.stats.snapshot()[2] == {"stopped": 2}


def app(annotations: object) -> dict[str, object]:
    echo = {
        "name": "echo",
        "type": "component",
        "properties": {"image": "file:///x.wasm"},
        "traits": [{"type": "spreadscaler", "properties": {"instances": 1}}],
        "annotations": annotations,
    }
    return {
        "apiVersion": "core.oam.dev/v1beta1",
        "kind": "Application",
        "metadata": {"name": "a", "annotations": {"version": "v1"}},
        "spec": {"components": [echo]},
    }


def test_manifest_component_annotations() -> None:
    manifest, _ = parse_manifest_dict(app({R: "4", P: "2"}))
    assert manifest.components[0].annotations == {R: "4", P: "2"}
    with pytest.raises(ManifestError) as info:
        parse_manifest_dict(app({R: "2", T: "never"}))
    (error,) = info.value.errors
    assert error.startswith('spec.components[0].annotations["wasmlattice.dev/idle-timeout"]: '), error
    assert "expected seconds" in error
    with pytest.raises(ManifestError) as info:
        parse_manifest_dict(app({"wasmlattice.dev/record": "sometimes"}))
    assert info.value.errors[0].startswith('spec.components[0].annotations["wasmlattice.dev/record"]: ')
    with pytest.raises(ManifestError) as info:
        parse_manifest_dict(app(["not", "a", "map"]))
    assert info.value.errors[0].startswith("spec.components[0].annotations"), info.value.errors
