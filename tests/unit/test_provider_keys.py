"""The config keys builtin providers declare, and the typo rule (capabilities/config_keys.py)."""

from __future__ import annotations

from wasmlattice.capabilities import manager
from wasmlattice.capabilities.config_keys import KeySet, ProviderKeys, first_typo, key_problems


def test_every_builtin_provider_declares_its_keys() -> None:
    assert sorted(manager.CONFIG_KEYS) == sorted(manager.BUILTINS)
    for alias in manager.ALIASES:
        assert manager.provider_keys(alias) is not None, alias
    assert manager.provider_keys("ghcr.io/wasmcloud/http-server:0.23.0") is None


def test_a_typo_gets_the_suggestion_and_a_key_close_to_nothing_is_not_a_typo() -> None:
    keys = ProviderKeys("p", source=KeySet(("address", "host"), ("cors_max_age_secs",)))
    problems = key_problems(
        {"team": "x", "ADRESS": "y", "Host": "z", "cors_max_age_sec": "1"}, keys, "source"
    )
    assert [(p.key, p.suggestion) for p in problems] == [
        ("ADRESS", "address"),
        ("cors_max_age_sec", "cors_max_age_secs"),
        ("team", None),
    ]
    assert problems[0].message() == "unknown key 'ADRESS' for p (link source config): did you mean 'address'?"
    assert problems[2].message() == (
        "unknown key 'team' for p (link source config): not read by this provider, ignored "
        "(keys it reads: address, host)"
    )
    # `hosts` next to `host` is not taken for its typo: the key it would mean is already there.
    typo = first_typo({"host": "a", "hosts": "b"}, keys, "source")
    assert typo is None
    assert first_typo({"hosts": "b"}, keys, "source") is not None


def test_wasmcloud_keys_are_accepted() -> None:
    server = manager.CONFIG_KEYS["builtin://http-server"]
    config = {"address": "0.0.0.0:80", "cors_allowed_origins": "*", "timeout_ms": "100"}
    assert key_problems(config, server, "source") == []
    nats_kv = manager.CONFIG_KEYS["builtin://keyvalue-nats"]
    assert (
        key_problems(
            {"bucket": "b", "js_domain": "hub", "enable_bucket_auto_create": "true"}, nats_kv, "target"
        )
        == []
    )
