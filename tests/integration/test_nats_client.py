"""Our NATS client against a real nats-server: a flush cut short must not stop the connection reading."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client

from wasmlattice.protocol.connection import LatticeClient, NatsOptions, connect


async def cut_a_flush_short(nc: Client) -> None:
    """Start `flush()` and cancel it before the server's PONG comes back."""
    flush = asyncio.create_task(nc.flush(timeout=5))
    await asyncio.sleep(0)  # the PING is on its way; its PONG is not read yet
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush


async def test_a_cancelled_flush_leaves_the_connection_reading(nats_url: str) -> None:
    # nats-py sets the result of every flush's future when its PONG arrives; on a cancelled one
    # that raised InvalidStateError and ended its read loop for good. A stopping app manager cut
    # its reconcile round's flush short this way, and every later request of its timed out.
    nc = await connect(NatsOptions(url=nats_url))
    assert isinstance(nc, LatticeClient)
    try:
        sub = await nc.subscribe("test.after-cancelled-flush")
        for _ in range(3):
            await cut_a_flush_short(nc)
        await asyncio.sleep(0.2)  # the PONGs of the cancelled flushes arrive
        await nc.publish("test.after-cancelled-flush", b"still reading")
        msg = await sub.next_msg(timeout=3)
        assert msg.data == b"still reading"
        await nc.flush(timeout=3)  # and a flush that is not cut short completes
        assert nc.is_connected
    finally:
        await nc.close()


async def test_a_messaging_link_connection_survives_a_subject_the_server_would_drop_it_over(
    nats_url: str,
) -> None:
    # A messaging link with its own `cluster_uris` connects with our client: a guest's subject
    # longer than nats-server's control line is refused before it is sent, instead of the server
    # dropping the connection and nats-py closing it for good.
    from wasmlattice.capabilities.base import CapabilityError
    from wasmlattice.capabilities.messaging import NatsBackend, connect_for_link

    nc = await connect_for_link({"cluster_uris": nats_url}, "messaging link test")
    backend = NatsBackend(nc, owned=True)
    try:
        assert isinstance(nc, LatticeClient)
        sub = await nc.subscribe("test.after-long-subject")
        with pytest.raises(
            CapabilityError, match=r"is 6001 bytes long, over the .* bytes a NATS protocol line has room for"
        ):
            await backend.publish("a." * 3000 + "b", b"x", None)
        await backend.publish("test.after-long-subject", b"still connected", None)
        assert (await sub.next_msg(timeout=3)).data == b"still connected"
        await cut_a_flush_short(nc)
        await asyncio.sleep(0.2)
        await backend.publish("test.after-long-subject", b"still reading", None)
        assert (await sub.next_msg(timeout=3)).data == b"still reading"
    finally:
        await backend.close()
