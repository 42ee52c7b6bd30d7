"""The pure parts of `wasi:keyvalue`: key encoding for JetStream, paging, counters, bucket names,
the memory backend, which implementation each interface version binds to, and `set-link-name`."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nats.js.kv import _is_key_valid

from tests.support.components import parse_wat
from wasmlattice.capabilities import bus, keyvalue
from wasmlattice.capabilities.base import CapabilityError, current_link_name
from wasmlattice.capabilities.kv_backend import KvError, check_bucket_name, page, parse_counter
from wasmlattice.capabilities.kv_memory import MemoryBucket
from wasmlattice.capabilities.kv_nats import ENCODED_PREFIX, key_from_nats, nats_key
from wasmlattice.runtime.component import CompileCache, InterfaceName
from wasmlattice.runtime.engine import HostEngine
from wasmlattice.runtime.fastcall import set_current_state
from wasmlattice.runtime.linking import HostRegistry, SignatureMismatch, link
from wasmlattice.runtime.witypes import (
    BYTES,
    STRING,
    U64,
    borrow,
    func,
    lst,
    option,
    record,
    result,
    variant,
)
from wasmlattice.wasi.ctx import WasiConfig, WasiCtx

ODD_KEYS = [
    "with space",
    "a*b",
    "a>b",
    ".leading",
    "trailing.",
    "dou..ble",
    "ünïcödé",
    "emoji 🎉",
    "tab\there",
    "=b64.looks-encoded",
    ENCODED_PREFIX,
    "ü" * 512,  # the longest key allowed (1024 bytes)
]


@pytest.mark.parametrize("key", ["plain", "a/b/c", "a.b.c", "A-Z_0=9", "1"])
def test_keys_jetstream_accepts_are_stored_as_they_are(key: str) -> None:
    assert nats_key(key) == key
    assert key_from_nats(key) == key


@pytest.mark.parametrize("key", ODD_KEYS)
def test_other_keys_are_encoded_reversibly_into_valid_jetstream_keys(key: str) -> None:
    stored = nats_key(key)
    assert stored.startswith(ENCODED_PREFIX)
    assert _is_key_valid(stored) and ".." not in stored
    assert key_from_nats(stored) == key


def test_encoding_is_injective_and_foreign_keys_come_back_unchanged() -> None:
    stored = [nats_key(k) for k in [*ODD_KEYS, "plain", "a.b"]]
    assert len(set(stored)) == len(stored)
    # A key written by another client that merely starts with the prefix is not mangled.
    assert key_from_nats(ENCODED_PREFIX + "!!not base64") == ENCODED_PREFIX + "!!not base64"
    assert key_from_nats(ENCODED_PREFIX + "_w") == ENCODED_PREFIX + "_w"  # decodes to invalid UTF-8


def test_paging_by_offset() -> None:
    keys = [f"k{i}" for i in range(25)]
    assert page(keys, None, 10) == (keys[:10], 10)
    assert page(keys, 10, 10) == (keys[10:20], 20)
    assert page(keys, 20, 10) == (keys[20:], None)
    assert page([], None, 10) == ([], None)
    assert page(keys, 99, 10) == ([], None)


def test_counters_and_bucket_names() -> None:
    assert parse_counter("k", None) == 0
    assert parse_counter("k", b"-12") == -12
    with pytest.raises(KvError, match="value is not a decimal integer"):
        parse_counter("k", b"twelve")
    assert check_bucket_name("my_bucket-1", "test") == "my_bucket-1"
    for bad in ("", "a.b", "a:b", "a b", "x" * 201):
        with pytest.raises(CapabilityError, match="bucket names are 1 to 200 letters"):
            check_bucket_name(bad, "test")


async def test_memory_bucket_increment_and_cas() -> None:
    b = MemoryBucket("b", {})
    assert await b.increment("n", 5, 0, 2**64 - 1) == 5
    with pytest.raises(KvError, match=r"the result -1 is outside \[0, "):
        await b.increment("n", -6, 0, 2**64 - 1)
    assert await b.get("n") == b"5"  # a refused increment writes nothing
    value, version = await b.cas_read("c")
    assert value is None
    await b.set("c", b"other")
    assert not await b.cas_write("c", b"mine", version)
    value, version = await b.cas_read("c")
    assert value == b"other" and await b.cas_write("c", b"mine", version)
    assert await b.get("c") == b"mine"
    await b.set_many([("x", b"1"), ("y", b"2")])
    assert await b.get_many(["x", "z", "y"]) == [b"1", None, b"2"]
    assert await b.list_keys(None, 2) == (["c", "n"], 2)


# -- binding by shape --------------------------------------------------------------------------------

ERROR = variant("no-such-store", "access-denied", ("other", STRING))


def _registry() -> HostRegistry:
    return HostRegistry().extend(keyvalue.interfaces())


def _list_keys(cursor: Any) -> dict[str, Any]:
    sig = func(
        borrow("bucket"),
        option(cursor),
        returns=result(record(keys=lst(STRING), cursor=option(cursor)), ERROR),
    )
    return {"[method]bucket.list-keys": sig}


def test_each_version_binds_to_the_implementation_of_its_types() -> None:
    reg = _registry()
    draft = reg.find(InterfaceName.parse("wasi:keyvalue/store@0.2.0-draft"), _list_keys(U64))  # type: ignore[arg-type]
    draft2 = reg.find(InterfaceName.parse("wasi:keyvalue/store@0.2.0-draft2"), _list_keys(STRING))  # type: ignore[arg-type]
    assert draft is not None and draft.versions == ("0.2.0-draft",)
    assert draft2 is not None and draft2.versions == ("0.2.0-draft2",)
    get_many_draft2 = func(borrow("bucket"), lst(STRING), returns=result(lst(option(BYTES)), ERROR))
    with pytest.raises(SignatureMismatch, match="`get-many` is imported as"):
        reg.resolve(InterfaceName.parse("wasi:keyvalue/batch@0.2.0-draft2"), {"get-many": get_many_draft2})  # type: ignore[arg-type]


# A component importing store@0.2.0-draft whose `get` returns a u32: not the published shape.
BAD_STORE_WAT = """
(component
  (import "wasi:keyvalue/store@0.2.0-draft" (instance
    (export "bucket" (type $b (sub resource)))
    (export "[method]bucket.get" (func (param "self" (borrow $b)) (param "key" string) (result u32)))
  ))
)
"""


def test_a_component_importing_other_types_is_refused_naming_the_function(tmp_path: Path) -> None:
    wat, wasm = tmp_path / "bad.wat", tmp_path / "bad.wasm"
    wat.write_text(BAD_STORE_WAT)
    parse_wat(wat, wasm)
    engine = HostEngine()
    try:
        comp = CompileCache(None).load(wasm.read_bytes(), engine, "bad.wasm")
        with pytest.raises(SignatureMismatch) as info:
            link(engine, comp, _registry(), origin="bad.wasm")
    finally:
        engine.close()
    msg = str(info.value)
    assert "bad.wasm: cannot bind wasi:keyvalue/store@0.2.0-draft" in msg
    assert "`[method]bucket.get` is imported as func(borrow<bucket>, string) -> u32" in msg
    assert "result<option<list<u8>>, variant { no-such-store, access-denied, other(string) }>" in msg


def test_set_link_name_is_per_instance_and_default_resets() -> None:
    wasi = WasiCtx(WasiConfig())
    prev = set_current_state(SimpleNamespace(wasi=wasi))  # type: ignore[arg-type]
    try:
        targets = [bus.CallTargetInterface("wasi", "keyvalue", i) for i in ("store", "atomics")]
        bus.set_link_name("cache", targets)
        assert current_link_name("wasi:keyvalue/store") == "cache"
        assert current_link_name("wasi:keyvalue/atomics") == "cache"
        assert current_link_name("wasi:blobstore/blobstore") == "default"
        bus.set_link_name("default", targets[:1])
        assert wasi.link_names == {"wasi:keyvalue/atomics": "cache"}
    finally:
        set_current_state(prev)
