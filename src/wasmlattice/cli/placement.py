"""Where the workload commands place components and providers when no `--host` is given.

`scale component` first looks for hosts already running the component ID (from every host's
inventory) whose labels match every `--constraint`; if there are any, the scale goes to each of them
(a new count, or 0 to stop it, applies on every host running it). Only when none runs it is a
component auction held with the constraints. Hosts already running an ID never bid for it (as in
wasmCloud v1), so bidders are new placements; the least loaded one wins (fewest components, or
fewest providers for a provider), ties going to the host that answered first. `start provider`
always auctions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any


async def inventories(ctl: Any, wait: float) -> list[Any]:
    """The inventory of every host answering a ping within `wait` seconds."""
    hosts = await ctl.ping_hosts(wait)
    return list(await asyncio.gather(*(ctl.get_host_inventory(h.id) for h in hosts)))


def _no_match(what: str, lattice: str, constraints: Mapping[str, str], extra: str = "") -> str:
    from wasmlattice.client.ctl import UP_HINT

    if not constraints:
        return f"no host on lattice '{lattice}' bid for {what}{extra}: {UP_HINT}"
    return (
        f"no host on lattice '{lattice}' matches constraints {dict(constraints)}{extra}; "
        "check labels with `wasmlattice get hosts`"
    )


def labels_match(labels: Mapping[str, str], constraints: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy every constraint exactly (the rule hosts apply in auctions)."""
    return all(labels.get(k) == v for k, v in constraints.items())


def _items(inv: Any, what: str) -> Any:
    """The components or the providers of a host inventory."""
    return inv.components if what == "component" else inv.providers


async def _least_loaded_bidder(
    ctl: Any, what: str, item_id: str, acks: list[Any], constraints: dict[str, str]
) -> str:
    """The bidder running the fewest components/providers (hosts running `item_id` do not bid)."""
    from wasmlattice.client.ctl import CtlError

    bidders = list(dict.fromkeys(a.host_id for a in acks))
    if not bidders:
        extra = f" (hosts already running {what} {item_id} do not bid)"
        raise CtlError(_no_match(f"{what} {item_id}", ctl.lattice, constraints, extra))
    if len(bidders) == 1:
        return str(bidders[0])
    invs = await asyncio.gather(*(ctl.get_host_inventory(h) for h in bidders))
    return str(min(zip(bidders, invs, strict=True), key=lambda hi: len(_items(hi[1], what)))[0])


async def pick_component_host(
    ctl: Any, ref: str, component_id: str, constraints: dict[str, str], auction_wait: float
) -> str:
    """Auction the component; the least loaded bidder."""
    acks = await ctl.auction_component(ref, component_id, constraints, wait=auction_wait)
    return await _least_loaded_bidder(ctl, "component", component_id, acks, constraints)


async def component_scale_targets(
    ctl: Any, ref: str, component_id: str, count: int, constraints: dict[str, str], wait: float
) -> list[str]:
    """Where a scale without --host goes: every matching host running the ID, else an auction winner.

    A count of 0 never starts anything, so it fails (with what to check) when no matching host runs it.
    """
    from wasmlattice.client.ctl import CtlError

    if count == 0:
        running = await running_matching(ctl, component_id, constraints, wait)
        if not running:
            where = f" matching constraints {constraints}" if constraints else ""
            raise CtlError(
                f"component {component_id} is not running on any host{where} of lattice "
                f"'{ctl.lattice}'; nothing to stop: see `wasmlattice get inventory`"
            )
        return running
    # The auction collects bids while the inventories are read, so a new placement costs one
    # collection window, not two; its result is dropped when hosts already run the ID.
    auction = asyncio.ensure_future(pick_component_host(ctl, ref, component_id, constraints, wait))
    try:
        running = await running_matching(ctl, component_id, constraints, wait)
    except BaseException:
        await _drop(auction)
        raise
    if running:
        await _drop(auction)
        return running
    return [await auction]


async def running_matching(
    ctl: Any, component_id: str, constraints: Mapping[str, str], wait: float
) -> list[str]:
    """IDs of the hosts running `component_id` whose labels satisfy every constraint."""
    return [str(inv.host_id) for inv in await _running_on(ctl, "component", component_id, wait, constraints)]


async def _running_on(
    ctl: Any, what: str, item_id: str, wait: float, constraints: Mapping[str, str] | None = None
) -> list[Any]:
    """Inventories of the hosts running component/provider `item_id` (and matching `constraints`)."""
    return [
        inv
        for inv in await inventories(ctl, wait)
        if any(i.id == item_id for i in _items(inv, what)) and labels_match(inv.labels, constraints or {})
    ]


async def _drop(task: asyncio.Future[Any]) -> None:
    """Cancel a task whose result is no longer wanted, and consume its outcome (no stray warnings)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def pick_provider_host(
    ctl: Any, ref: str, provider_id: str, constraints: dict[str, str], auction_wait: float
) -> str:
    """Auction the provider; the least loaded bidder."""
    acks = await ctl.auction_provider(ref, provider_id, constraints, wait=auction_wait)
    return await _least_loaded_bidder(ctl, "provider", provider_id, acks, constraints)


async def hosts_running(ctl: Any, what: str, item_id: str, wait: float) -> list[Any]:
    """Inventories of the hosts running component/provider `item_id`; CtlError if there are none."""
    from wasmlattice.client.ctl import CtlError

    found = await _running_on(ctl, what, item_id, wait)
    if not found:
        raise CtlError(
            f"{what} {item_id} is not running on any host of lattice '{ctl.lattice}': "
            "see `wasmlattice get inventory`"
        )
    return found
