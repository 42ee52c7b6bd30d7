"""Messaging and guest logging parts that need no NATS: config parsing, subject checks, log levels."""

from __future__ import annotations

import logging

import pytest

from wasmlattice.capabilities import guest_logging
from wasmlattice.capabilities.catalog import host_registry
from wasmlattice.capabilities.manager import canonical_ref
from wasmlattice.capabilities.messaging import is_handler_link, parse_subscriptions, subject_problem
from wasmlattice.protocol.models import Link
from wasmlattice.runtime.component import InterfaceName
from wasmlattice.runtime.witypes import STRING, enum, func


def test_subscriptions_parse_subjects_and_queue_groups() -> None:
    assert parse_subscriptions(" a.b , c.*|workers,,d.>| q ") == [
        ("a.b", ""),
        ("c.*", "workers"),
        ("d.>", "q"),
    ]
    assert parse_subscriptions("") == []


@pytest.mark.parametrize("bad", ["a..b", "a b", ".a", "a.|", "x|two words"])
def test_bad_subscriptions_are_refused_with_the_entry(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid subscription"):
        parse_subscriptions(f"ok.one,{bad}")


def test_subject_problems() -> None:
    assert subject_problem("a.b.c", publishing=True) is None
    assert subject_problem("a.*", publishing=False) is None
    assert subject_problem("", publishing=True) == "the subject is empty"
    assert "wildcard" in str(subject_problem("a.>", publishing=True))
    assert "whitespace" in str(subject_problem("a\tb", publishing=True))
    assert "empty token" in str(subject_problem("a.b.", publishing=True))


def test_handler_links_are_recognised() -> None:
    link = Link(
        source_id="p", target="c", wit_namespace="wasmcloud", wit_package="messaging", interfaces=["handler"]
    )
    assert is_handler_link(link, "p")
    assert not is_handler_link(link, "other")
    assert not is_handler_link(link.model_copy(update={"interfaces": ["consumer"]}), "p")


def test_provider_reference_and_alias() -> None:
    assert canonical_ref("builtin://messaging-nats") == "builtin://messaging-nats"
    assert canonical_ref("wasmcloud+builtin://messaging-nats") == "builtin://messaging-nats"


def test_logging_binds_draft_and_unversioned_but_not_other_shapes() -> None:
    reg = host_registry()
    sig = {"log": guest_logging.SIGNATURES["log"]}
    for version in ("0.1.0-draft", None):
        found = reg.find(InterfaceName("wasi", "logging", "logging", version), sig)
        assert found is not None and found.functions["log"] is guest_logging.guest_log
    other = {"log": func(enum("trace", "debug", "info", "warn", "error"), STRING, STRING)}
    assert reg.find(InterfaceName("wasi", "logging", "logging", "0.1.0-draft"), other) is None


def test_guest_levels_map_to_host_levels(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(guest_logging.TRACE, logger="wasmlattice.guest")
    for level in guest_logging.LEVELS:
        guest_logging.guest_log(level, "ctx", f"m-{level}")
    got = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert got == [
        (guest_logging.TRACE, "component ? [trace] ctx: m-trace"),
        (logging.DEBUG, "component ? [debug] ctx: m-debug"),
        (logging.INFO, "component ? [info] ctx: m-info"),
        (logging.WARNING, "component ? [warn] ctx: m-warn"),
        (logging.ERROR, "component ? [error] ctx: m-error"),
        (logging.CRITICAL, "component ? [critical] ctx: m-critical"),
    ]
    assert caplog.records[0].component_id == "?"
