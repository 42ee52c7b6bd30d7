"""The inbox multiplexer: one wildcard subscription per NATS connection routes every call's subjects.

A call's reply subjects (`R_c` on the client, `R_s` on the server, and the subjects below them)
are `<connection inbox>.<token>[.<rest>]`; the multiplexer hands each message to the call
registered for its token. Both the client (`client.py`) and the server (`server.py`) register here.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Protocol
from weakref import WeakKeyDictionary

from nats.aio.client import Client
from nats.aio.msg import Msg


class Endpoint(Protocol):
    """A call's side that takes the messages of its reply subjects."""

    def deliver(self, rest: str, msg: Msg) -> None:
        """Take `msg`, whose subject continues with `rest` after the call's token (`""` for none)."""


class Mux:
    """Routes `<prefix>.<token>[.<rest>]` messages to the endpoint registered for `<token>`.

    One subscription per connection instead of one per call keeps per-call cost at a dict insert: no
    SUB/UNSUB round trips, and all of a call's subjects arrive in publication order.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._cut = len(prefix) + 1
        self._routes: dict[str, Endpoint] = {}
        self._ids = itertools.count(1)
        self.sub: Any = None

    def register(self, endpoint: Endpoint) -> tuple[str, str]:
        """Route a fresh token to `endpoint`; return the token and the call's reply subject."""
        token = format(next(self._ids), "x")
        self._routes[token] = endpoint
        return token, f"{self.prefix}.{token}"

    def unregister(self, token: str) -> None:
        """Stop routing `token` (messages for it are dropped from now on)."""
        self._routes.pop(token, None)

    async def on_message(self, msg: Msg) -> None:
        """Hand one message of the wildcard subscription to its call, if it is still registered."""
        token, _, rest = msg.subject[self._cut :].partition(".")
        endpoint = self._routes.get(token)
        if endpoint is not None:
            endpoint.deliver(rest, msg)


_muxes: WeakKeyDictionary[Client, Mux] = WeakKeyDictionary()
_mux_locks: WeakKeyDictionary[Client, asyncio.Lock] = WeakKeyDictionary()


async def mux_for(nc: Client) -> Mux:
    """The multiplexer of `nc`, subscribed on first use."""
    mux = _muxes.get(nc)
    if mux is not None:
        return mux
    lock = _mux_locks.setdefault(nc, asyncio.Lock())
    async with lock:
        mux = _muxes.get(nc)
        if mux is None:
            mux = Mux(nc.new_inbox())
            # Byte limit off: a dropped chunk would corrupt an invocation silently, and the callback
            # only moves messages into per-call buffers, so the queue drains as fast as it fills.
            mux.sub = await nc.subscribe(f"{mux.prefix}.>", cb=mux.on_message, pending_bytes_limit=0)
            _muxes[nc] = mux
    return mux
