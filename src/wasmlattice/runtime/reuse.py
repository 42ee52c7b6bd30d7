"""Warm instance pools: the settings a component's annotations give them, checked (docs/instance-pools.md);
and the recording annotation (docs/record-replay.md), checked alongside since they share a prefix.

A component runs on a fresh instance per call unless its scale request (or its manifest entry)
carries `wasmlattice.dev/max-reuse` above 1. Then an instance that returned normally is kept for
up to that many calls, at most `wasmlattice.dev/pool-size` of them idle at once, each dropped
after `wasmlattice.dev/idle-timeout` seconds unused. Nothing here imports wasmtime: the app
manager's manifest checks use it too.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "wasmlattice.dev/"
MAX_REUSE = PREFIX + "max-reuse"
POOL_SIZE = PREFIX + "pool-size"
IDLE_TIMEOUT = PREFIX + "idle-timeout"
# "true": a host started with `--record-dir` records this component's HTTP invocations.
RECORD = PREFIX + "record"
# What the host reports in a component's inventory annotations when reuse is on (never read).
REPORT = PREFIX + "instance-pool"
KEYS = (MAX_REUSE, POOL_SIZE, IDLE_TIMEOUT, RECORD)

# Bounds of the values: beyond them a value is a mistake, not a setting.
MAX_REUSE_LIMIT = 1_000_000
POOL_SIZE_LIMIT = 1024
IDLE_TIMEOUT_LIMIT_S = 86_400.0
# How long an idle instance is kept when reuse is on and no idle-timeout is given.
DEFAULT_IDLE_TIMEOUT_S = 60.0
# How alike an unknown `wasmlattice.dev/` key must be to one of ours to be taken for its typo.
TYPO_CUTOFF = 0.75


class ReuseError(ValueError):
    """One of our component annotations with a value we refuse; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"annotation {key}: {message}")
        self.key = key


@dataclass(frozen=True)
class ReuseSettings:
    """How one component's instances are reused.

    `max_reuse`: calls one instance may serve (1: a fresh instance per call, the default);
    `pool_size`: idle instances kept at most (None: as many as run at once);
    `idle_timeout`: seconds an idle instance is kept before it is dropped (None: no limit).
    """

    max_reuse: int = 1
    pool_size: int | None = None
    idle_timeout: float | None = None

    @property
    def enabled(self) -> bool:
        """Whether an instance can serve more than one call."""
        return self.max_reuse > 1

    def report(self, pool_size: int) -> str:
        """The inventory's text for these settings with the pool size in effect."""
        idle = "none" if self.idle_timeout is None else f"{self.idle_timeout:g}s"
        return f"max-reuse={self.max_reuse} pool-size={pool_size} idle-timeout={idle}"


FRESH = ReuseSettings()


def _integer(key: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise ReuseError(key, f"expected a whole number from {low} to {high}, found {text!r}") from None
    if not low <= value <= high:
        raise ReuseError(key, f"must be from {low} to {high}, found {value}")
    return value


def _seconds(key: str, text: str) -> float:
    body = text.strip()
    body = body[:-1] if body.endswith("s") else body
    try:
        value = float(body)
    except ValueError:
        raise ReuseError(
            key, f"expected seconds (a number, optionally with an 's': 30, 2.5s), found {text!r}"
        ) from None
    if not math.isfinite(value) or not 0 < value <= IDLE_TIMEOUT_LIMIT_S:
        limit = f"{IDLE_TIMEOUT_LIMIT_S:g}"
        raise ReuseError(key, f"must be more than 0 and at most {limit} seconds, found {text!r}")
    return value


def parse_reuse(annotations: Mapping[str, str] | None) -> ReuseSettings:
    """The reuse settings of a component's annotations; `ReuseError` naming the key if one is wrong.

    A `wasmlattice.dev/` key close to one of ours (`wasmlattice.dev/max-reuses`) is a typo and is
    refused, as the setting it meant would otherwise be ignored; other annotations are not ours.
    """
    given = dict(annotations or {})
    for key in given:
        if key.startswith(PREFIX) and key not in KEYS and key != REPORT:
            # Compared without the prefix, which every key shares and would make them all alike.
            names = [k.removeprefix(PREFIX) for k in KEYS]
            close = difflib.get_close_matches(key.removeprefix(PREFIX), names, n=1, cutoff=TYPO_CUTOFF)
            if close and PREFIX + close[0] not in given:
                raise ReuseError(key, f"unknown key: did you mean {PREFIX + close[0]}?")
    parse_record(given)
    max_reuse = 1
    if MAX_REUSE in given:
        max_reuse = _integer(MAX_REUSE, given[MAX_REUSE], 1, MAX_REUSE_LIMIT)
    pool_size = _integer(POOL_SIZE, given[POOL_SIZE], 1, POOL_SIZE_LIMIT) if POOL_SIZE in given else None
    idle = _seconds(IDLE_TIMEOUT, given[IDLE_TIMEOUT]) if IDLE_TIMEOUT in given else None
    if max_reuse == 1:
        for key in (POOL_SIZE, IDLE_TIMEOUT):
            if key in given:
                raise ReuseError(
                    key, f"has no effect unless {MAX_REUSE} is above 1 (instances are fresh per call)"
                )
        return FRESH
    return ReuseSettings(
        max_reuse=max_reuse,
        pool_size=pool_size,
        idle_timeout=DEFAULT_IDLE_TIMEOUT_S if idle is None else idle,
    )


def parse_record(annotations: Mapping[str, str] | None) -> bool:
    """Whether the annotations ask for the component to be recorded (`wasmlattice.dev/record`)."""
    text = (annotations or {}).get(RECORD)
    if text is None:
        return False
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ReuseError(RECORD, f"expected true or false, found {text!r}")
    return value == "true"
