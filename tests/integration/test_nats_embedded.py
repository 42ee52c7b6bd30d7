"""The embedded nats-server (`EmbeddedNats`) and NATS connection errors, against the real binary."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from tests.support.processes import free_port
from wasmlattice.nats_server import (
    EmbeddedNats,
    EmbeddedNatsError,
    PortInUseError,
    default_data_dir,
    ensure_user_seed,
    find_nats_server,
    port_in_use,
    user_public_key,
)
from wasmlattice.protocol.connection import (
    NOT_AUTHORIZED,
    NatsConnectionError,
    NatsNotAuthorizedError,
    NatsOptions,
    NatsUnreachableError,
    SubjectTooLongError,
    connect,
)

pytestmark = pytest.mark.timeout(60)


async def jetstream_ok(url: str) -> None:
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        info = await nc.jetstream().account_info()
        assert info is not None
    finally:
        await nc.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    srv = EmbeddedNats(port=0, data_dir=tmp_path / "nats")
    try:
        await srv.start()
        yield srv
    finally:
        await srv.stop()


async def test_start_and_stop(tmp_path: Path) -> None:
    srv = EmbeddedNats(port=0, data_dir=tmp_path / "nats")
    async with srv:
        assert srv.url == f"nats://127.0.0.1:{srv.port}"
        assert srv.port != 0 and srv.pid is not None and srv.running
        await jetstream_ok(srv.url)
        conf = srv.config_path.read_text()
        assert "port: -1" in conf  # 0 asks the server for a random port
        assert str(srv.data_dir) in conf and "jetstream {" in conf
        assert srv.store_dir.is_dir()
        assert "Server is ready" in srv.log_path.read_text()
        pid = srv.pid
    assert srv.pid is None and not srv.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not port_in_use("127.0.0.1", srv.port)


async def test_start_again_on_same_port_and_store(server: EmbeddedNats) -> None:
    port = server.port
    nc = await nats.connect(server.url)
    kv = await nc.jetstream().create_key_value(bucket="persist")
    await kv.put("k", b"v")
    await nc.close()
    await server.stop()
    await server.start()
    assert server.port == port
    nc = await nats.connect(server.url)
    try:
        entry = await (await nc.jetstream().key_value("persist")).get("k")
        assert entry.value == b"v"
    finally:
        await nc.close()


async def test_with_a_user_seed_only_that_user_gets_in(tmp_path: Path) -> None:
    creds = tmp_path / "nats-user.nk"
    seed = ensure_user_seed(creds)
    async with EmbeddedNats(port=0, data_dir=tmp_path / "nats", user_seed=seed) as srv:
        assert srv.authenticated
        conf = srv.config_path.read_text()
        assert user_public_key(seed) in conf and seed not in conf  # the server never holds the seed
        # No credentials, or another user's: refused at once, with the reason and what to do.
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(NatsNotAuthorizedError) as e:
            await connect(NatsOptions(url=srv.url))
        assert str(e.value).startswith(NOT_AUTHORIZED) and srv.url in str(e.value)
        assert loop.time() - started < 3.0
        other = tmp_path / "other.nk"
        ensure_user_seed(other)
        with pytest.raises(NatsNotAuthorizedError, match=f"refused the credentials in {other}"):
            await connect(NatsOptions(url=srv.url, creds_file=other))
        # The key's holder gets in, JetStream included (the hosts' KV buckets live there).
        nc = await connect(NatsOptions(url=srv.url, creds_file=creds))
        try:
            kv = await nc.jetstream().create_key_value(bucket="authed")
            await kv.put("k", b"v")
            assert (await kv.get("k")).value == b"v"
        finally:
            await nc.close()


async def test_port_in_use_is_refused_clearly(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        srv = EmbeddedNats(port=port, data_dir=tmp_path / "nats")
        with pytest.raises(PortInUseError) as e:
            await srv.start()
    assert str(e.value) == (
        f"port {port} on 127.0.0.1 is in use: another nats-server? use --nats-port or --nats-url"
    )
    assert srv.pid is None


async def test_port_in_use_by_another_nats_server(server: EmbeddedNats, tmp_path: Path) -> None:
    other = EmbeddedNats(port=server.port, data_dir=tmp_path / "other")
    with pytest.raises(PortInUseError, match="another nats-server"):
        await other.start()


async def test_restarts_after_kill_9(server: EmbeddedNats, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wasmlattice.nats_server")
    old_pid = server.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    deadline = asyncio.get_running_loop().time() + 15
    while server.pid in (None, old_pid) or not server.running:
        assert asyncio.get_running_loop().time() < deadline, "nats-server was not restarted"
        await asyncio.sleep(0.05)
    assert server.restarts == 1
    await jetstream_ok(server.url)
    died = [r.getMessage() for r in caplog.records if "died unexpectedly" in r.getMessage()]
    assert died and "exit code -9" in died[0] and "Server is ready" in died[0]  # includes the log tail


async def test_stop_does_not_restart(server: EmbeddedNats) -> None:
    await server.stop()
    await asyncio.sleep(0.3)
    assert server.pid is None and server.restarts == 0


async def test_missing_binary_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASMLATTICE_NATS_SERVER", str(tmp_path / "nope"))
    with pytest.raises(EmbeddedNatsError, match="does not name a file"):
        find_nats_server()


def test_binary_and_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WASMLATTICE_NATS_SERVER", raising=False)
    assert find_nats_server().name == "nats-server"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "wasmlattice" / "nats"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_data_dir() == Path.home() / ".local" / "share" / "wasmlattice" / "nats"


async def test_connect_error_when_nothing_listens() -> None:
    port = free_port()
    with pytest.raises(NatsUnreachableError) as e:
        await connect(NatsOptions(url=f"nats://127.0.0.1:{port}"))
    assert str(e.value) == (
        f"cannot reach NATS at nats://127.0.0.1:{port}: connection refused; "
        "start one with `wasmlattice up` or pass --nats-url"
    )


async def test_connect_validates_options(tmp_path: Path) -> None:
    with pytest.raises(NatsConnectionError, match="--nats-jwt needs --nats-seed"):
        await connect(NatsOptions(jwt="eyJ..."))
    with pytest.raises(NatsConnectionError, match="conflicts"):
        await connect(NatsOptions(creds_file=tmp_path / "x.creds", seed="SUAAA"))
    with pytest.raises(NatsConnectionError, match="does not exist"):
        await connect(NatsOptions(creds_file=tmp_path / "x.creds"))


async def test_connect_names_the_connection(nats_url: str) -> None:
    nc = await connect(NatsOptions(url=nats_url))
    try:
        assert nc.is_connected
        assert nc.options["name"] == "wasmbus"
    finally:
        await nc.close()


async def test_a_connection_the_server_drops_over_one_bad_line_reconnects(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """nats-server answers a subject over its `max_control_line` (4096 by default) with `-ERR` and
    closes the connection; nats-py alone would stay closed for good. Ours refuses to send such a
    subject, and if one reaches the server anyway it reconnects, keeps its subscriptions, and logs
    the server's error."""
    closed: list[bool] = []

    async def on_closed() -> None:
        closed.append(True)

    caplog.set_level(logging.WARNING, logger="wasmlattice.protocol.connection")
    nc = await connect(NatsOptions(url=nats_url, reconnect_wait=0.1), on_closed=on_closed)
    try:
        sub = await nc.subscribe("zombie.test.inbox")
        await nc.flush()
        # Our client refuses such a line itself, before it reaches the server, naming the limit.
        with pytest.raises(SubjectTooLongError, match="max_control_line"):
            await nc.publish("zombie.test." + "a" * 5000, b"refused")
        with pytest.raises(SubjectTooLongError, match="max_control_line"):
            await nc.subscribe("zombie.test." + "a" * 5000)
        assert nc.is_connected and nc.stats["reconnects"] == 0
        # nats-py's own publish sends it anyway: the server drops the connection.
        await Client.publish(nc, "zombie.test." + "a" * 5000, b"refused")
        async with asyncio.timeout(10):
            while nc.stats["reconnects"] < 1 or not nc.is_connected:
                assert not nc.is_closed, f"closed for good: {nc.last_error!r}"
                await asyncio.sleep(0.05)
        assert "maximum control line exceeded" in caplog.text.lower()
        # The subscription made before the drop was replayed on the new connection.
        other = await nats.connect(nats_url)
        try:
            await other.publish("zombie.test.inbox", b"after")
            await other.flush()
        finally:
            await other.close()
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"after"
        assert closed == []
    finally:
        await nc.close()
    assert closed == []  # our own close is not reported as a loss
