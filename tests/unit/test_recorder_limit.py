"""A recorder writes at most its limit of recordings, then records nothing more (and says so once)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from wasmlattice.replay.recording import Outcome, Recorder, Request, load


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
