"""Placement: which hosts a scaler's instances go to, from host labels, spreads and weights.

A spreadscaler splits its instances over its spreads by weight and puts each spread's share on one
eligible host (a host whose labels include every requirement of the spread); a daemonscaler runs its
instances on every eligible host. Everything here is a pure function of what the reconciler last saw.
"""

from __future__ import annotations

from dataclasses import dataclass

from wasmlattice.apps.manifest.model import Spread
from wasmlattice.protocol.models import HostInventory

DEFAULT_SPREAD_WEIGHT = 100


@dataclass
class HostView:
    """One live host as the last round saw it."""

    host_id: str
    labels: dict[str, str]
    last_seen: float
    inventory: HostInventory | None = None


@dataclass
class Placement:
    """Instances wanted per host, the spread each host's instances are placed for, and what did not fit."""

    wanted: dict[str, int]
    spread_of: dict[str, str]
    unplaced: list[Spread]  # spreads with instances to place and no eligible host, in placing order


@dataclass
class ProviderPlacement:
    """Where a provider should run: one copy on each of `target` hosts among the `eligible` ones."""

    eligible: list[HostView]
    target: int
    running: list[HostView]  # eligible hosts that already run it
    start: list[HostView]  # eligible hosts to start it on, as many as are missing


def eligible(labels: dict[str, str], requirements: dict[str, str]) -> bool:
    """Whether a host with `labels` meets every requirement."""
    return all(labels.get(k) == v for k, v in requirements.items())


def fits_any(labels: dict[str, str], spreads: list[Spread]) -> bool:
    """Whether a host with `labels` is eligible for at least one spread (any host when there are none)."""
    return not spreads or any(eligible(labels, s.requirements) for s in spreads)


def distribute(instances: int, spreads: list[Spread]) -> list[tuple[Spread, int]]:
    """Split `instances` over `spreads` by weight (default 100): floor shares, remainder to the heaviest."""
    if not spreads:
        return [(Spread(name="default", requirements={}, weight=None), instances)]
    weights = [DEFAULT_SPREAD_WEIGHT if s.weight is None else s.weight for s in spreads]
    total = sum(weights)
    if total == 0:
        return [(s, 0) for s in spreads]
    counts = [instances * w // total for w in weights]
    left = instances - sum(counts)
    # Python's sort is stable, so equal weights receive the remainder in manifest order.
    for index in sorted(range(len(spreads)), key=lambda i: -weights[i]):
        if left <= 0:
            break
        counts[index] += 1
        left -= 1
    return list(zip(spreads, counts, strict=True))


def place_daemon(instances: int, spreads: list[Spread], hosts: list[HostView]) -> Placement:
    """A daemonscaler: `instances` on every host that fits one of its spreads."""
    wanted = {v.host_id: instances for v in hosts if fits_any(v.labels, spreads)}
    spread_of = {h: (spreads[0].name if spreads else "default") for h in wanted}
    return Placement(wanted, spread_of, unplaced=[])


def place_spreads(
    instances: int, spreads: list[Spread], hosts: list[HostView], spread_now: dict[str, str]
) -> Placement:
    """A spreadscaler: each spread's share of `instances` on one eligible host.

    `spread_now` maps each host already running this scaler's instances to the spread they were
    placed for.
    """
    wanted: dict[str, int] = {}
    spread_of: dict[str, str] = {}
    unplaced: list[Spread] = []
    shares = distribute(instances, spreads)
    # Spreads that already run on a fitting host stay there; then the others are placed,
    # so that losing one host moves only its spread (no reshuffle of the rest).
    placed_here = {
        spread.name: v.host_id
        for spread, _ in shares
        for v in hosts
        if spread_now.get(v.host_id) == spread.name and eligible(v.labels, spread.requirements)
    }
    for spread, count in sorted(shares, key=lambda sc: sc[0].name not in placed_here):
        if count == 0:
            continue
        fitting = [v for v in hosts if eligible(v.labels, spread.requirements)]
        if not fitting:
            unplaced.append(spread)
            continue
        # Else the least loaded host no other spread took; else share a host with another
        # spread (one entry per host holds their sum).
        home = placed_here.get(spread.name)
        free = [v for v in fitting if v.host_id not in wanted]
        if home is not None and home not in wanted:
            pick = next(v for v in fitting if v.host_id == home)
        elif free:
            pick = min(free, key=lambda v: len(v.inventory.components if v.inventory else []))
        else:
            pick = min(fitting, key=lambda v: wanted[v.host_id])
        wanted[pick.host_id] = wanted.get(pick.host_id, 0) + count
        spread_of.setdefault(pick.host_id, spread.name)
    return Placement(wanted, spread_of, unplaced)


def place_provider(
    instances: int, daemon: bool, spreads: list[Spread], hosts: list[HostView], runs_it: set[str]
) -> ProviderPlacement:
    """A provider: one copy per eligible host, on `instances` hosts (on all of them for a daemon).

    `runs_it` holds the hosts that already run a copy, whoever started it (so apps share providers).
    """
    candidates = [v for v in hosts if fits_any(v.labels, spreads)]
    target = len(candidates) if daemon else instances
    running = [v for v in candidates if v.host_id in runs_it]
    missing = max(0, target - len(running))
    free = [v for v in candidates if v.host_id not in runs_it]
    return ProviderPlacement(eligible=candidates, target=target, running=running, start=free[:missing])
