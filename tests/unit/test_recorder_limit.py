"""A recorder writes at most its limit of recordings, then records nothing more (and says so once)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from wasmlattice.replay.recording import Outcome, Recorder, RecordingQuota, Request, load


def test_recordings_stop_at_the_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(tmp_path, "comp", "/x.wasm", b"\0asm", limit=2)
    written = []
    with caplog.at_level(logging.WARNING, logger="wasmlattice.replay.recording"):
        for i in range(4):
            session = rec.begin(Request("GET", f"/{i}", "http", "h", [], b""))
            written.append(session.finish(Outcome(200, [], b"ok")))
    assert [p is not None for p in written] == [True, True, False, False]
    assert sorted(tmp_path.glob("*.json")) == sorted(p for p in written if p is not None)
    assert [load(p).request.path_with_query for p in written if p is not None] == ["/0", "/1"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["comp: recording 2 of at most 2; later invocations are not recorded"]


def test_recorders_of_one_host_share_one_quota(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """However many components the lattice asks a host to record, their recordings together stay
    within the host's quota of files and of bytes."""
    quota = RecordingQuota(files=3)
    recorders = [Recorder(tmp_path, f"comp{i}", "/x.wasm", quota=quota) for i in range(3)]
    written = [
        rec.begin(Request("GET", f"/{i}", "http", "h", [], b"")).finish(Outcome(200, [], b"ok"))
        for i in range(2)
        for rec in recorders
    ]
    assert [p is not None for p in written] == [True, True, True, False, False, False]
    assert len(list(tmp_path.glob("*.json"))) == 3

    small = tmp_path / "small"
    quota = RecordingQuota(size=3000)
    rec = Recorder(small, "big", "/x.wasm", quota=quota)
    with caplog.at_level(logging.WARNING, logger="wasmlattice.replay.recording"):
        first = rec.begin(Request("GET", "/", "http", "h", [], b"")).finish(Outcome(200, [], b"ok"))
        second = rec.begin(Request("PUT", "/", "http", "h", [], b"x" * 4000)).finish(Outcome(200, [], b"ok"))
    assert first is not None and second is None
    assert [p.name for p in small.glob("*.json")] == [first.name]
    assert "big: not recorded: the recordings would pass 3000 bytes" in caplog.text
