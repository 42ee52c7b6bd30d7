"""`wasi:config/store` (and the older `wasi:config/runtime`): a component's runtime config.

A component's config is the merge of the named configs listed in its scale command, later names
overriding earlier keys (docs/protocol.md#named-config). It is held in memory per running component
(`ComponentContext.config`), so `get` and `get-all` never leave the host: they cannot fail, and
the interface's error variant is never returned. When one of those named configs changes in
`CONFIGDATA` the host recomputes the merge (`ComponentRegistry.refresh_config`), and the next call
sees it; a deleted config counts as an empty map.

Versions: `0.2.0-draft` (what wasmCloud v1 links, with `runtime`), `0.2.0-draft-2024-09-27`
(what spin-sdk and wit-bindgen users get) and later `0.2.0-*` releases of the same shape: every
one of them has `get(key) -> result<option<string>, error>` and `get-all() -> result<list<tuple<
string, string>>, error>`, so one implementation, checked against those signatures, serves all.

Secret references (`SECRET_*` names) in the config list are not config: they are resolved into
`ComponentContext.secrets` at scale time (see `capabilities.secrets`) and never appear here.

Outside a lattice host (`wasmlattice run`) a component has no named config: it sees an empty map.
"""

from __future__ import annotations

from collections.abc import Mapping

from wasmlattice.capabilities.base import CapabilityError, component, traced
from wasmlattice.runtime.linking import HostFunc, HostInterface
from wasmlattice.runtime.witypes import STRING, FuncSig, func, lst, option, result, tup, variant

# The span attribute naming the key a `get` asked for.
CONFIG_KEY = "wasmlattice.config.key"

CONFIG_ERROR = variant(("upstream", STRING), ("io", STRING))

SIGNATURES: dict[str, FuncSig] = {
    "get": func(STRING, returns=result(option(STRING), CONFIG_ERROR)),
    "get-all": func(returns=result(lst(tup(STRING, STRING)), CONFIG_ERROR)),
}


def _config() -> Mapping[str, str]:
    try:
        comp = component()
    except CapabilityError:
        return {}  # not run by a lattice host: no named config exists
    # The registry swaps in a new dict on change (never mutates it), so this read is consistent.
    return comp.config


def get(key: str) -> str | None:
    """`get`: the value of `key` in the calling component's merged config, or None."""
    return _config().get(key)


def get_all() -> list[tuple[str, str]]:
    """`get-all`: every key and value of the calling component's merged config, in merge order."""
    return list(_config().items())


def interfaces() -> list[HostInterface]:
    """`wasi:config/store` for every `0.2.0` draft and release, and `wasi:config/runtime@0.2.0-draft`."""
    functions: dict[str, HostFunc] = {"get": get, "get-all": get_all}
    # Traced with the key asked for; config values never go on a span (they may be sensitive).
    describe = {"get": lambda key: {CONFIG_KEY: key}}
    return [
        traced(
            HostInterface("wasi:config/store", dict(functions), versions=("0.2.0",), signatures=SIGNATURES),
            backend="config",
            describe=describe,
        ),
        traced(
            HostInterface(
                "wasi:config/runtime", dict(functions), versions=("0.2.0-draft",), signatures=SIGNATURES
            ),
            backend="config",
            describe=describe,
        ),
    ]
