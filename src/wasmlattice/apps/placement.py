"""Placement: which hosts a scaler's instances go to, from host labels, spreads and weights.

A spreadscaler splits its instances over its spreads by weight (`distribute`).
"""

from __future__ import annotations

from wasmlattice.apps.manifest.model import Spread

DEFAULT_SPREAD_WEIGHT = 100


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
