"""`capabilities.plugins.discover`: what a plugin's entry point may give, and what makes it broken."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from importlib.metadata import EntryPoint

import pytest

from wasmlattice.capabilities.plugins import PluginSpec, discover
from wasmlattice.runtime.linking import HostInterface

MOD = "wasmlattice_test_plugin_loader_mod"


def _provider(spec: object) -> object:
    raise AssertionError("not started in these tests")


def _spec(name: str, iface: str) -> PluginSpec:
    return PluginSpec(name, _provider, [HostInterface(iface, {"f": lambda: None}, versions=("0.1.",))])  # type: ignore[arg-type]


@pytest.fixture
def module() -> Iterator[types.ModuleType]:
    mod = types.ModuleType(MOD)
    sys.modules[MOD] = mod
    yield mod
    del sys.modules[MOD]


def ep(name: str, attr: str) -> EntryPoint:
    return EntryPoint(name, f"{MOD}:{attr}", "wasmlattice.capabilities")


def test_specs_callables_and_broken_ones(module: types.ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    module.direct = _spec("one", "example:one/api")
    module.factory = lambda: _spec("two", "example:two/api")
    module.exits = lambda: sys.exit(3)
    module.bad_name = _spec("Bad Name", "example:bad/api")
    module.no_ifaces = PluginSpec("empty", _provider, [])  # type: ignore[arg-type]
    module.same_iface = _spec("three", "example:one/api")
    module.reserved = _spec("kv", "wasi:keyvalue/store")
    module.bad_iface = _spec("versioned", "example:x/api@0.1.0")
    found = discover(
        {"builtin://taken"},
        {"wasi:keyvalue/store"},
        [
            ep("a", "direct"),
            ep("b", "factory"),
            ep("c", "exits"),
            ep("d", "bad_name"),
            ep("e", "no_ifaces"),
            ep("f", "same_iface"),
            ep("g", "reserved"),
            ep("h", "absent"),
            ep("i", "bad_iface"),
        ],
    )
    status = {p.entry_point: p.status for p in found}
    assert status == {
        "a": "ok",
        "b": "ok",
        "c": "broken (SystemExit: 3)",
        "d": "broken (name 'Bad Name' is not a provider name (lower-case letters, digits, '-'))",
        "e": "broken (interfaces must be a non-empty list of HostInterface)",
        "f": "broken (example:one/api is already served by plugin a (?))",
        "g": "broken (wasi:keyvalue/store is already served by this host)",
        "h": f"broken (AttributeError: module '{MOD}' has no attribute 'absent')",
        "i": "broken (interface name 'example:x/api@0.1.0' is not `namespace:package/interface`)",
    }
    assert [p.ref for p in found if p.spec] == ["builtin://one", "builtin://two"]
    assert "capability plugin 'h' from package ? ? is skipped: AttributeError" in caplog.text
