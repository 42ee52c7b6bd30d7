"""The parts of guest limits on their own: sizes, the memory budget, the output limiter and line sink."""

from __future__ import annotations

import logging

import pytest

from wasmlattice.host.components import DEFAULT_EXECUTION_TIME_S, instance_bound, parse_limits
from wasmlattice.host.guest_limits import GuestLimits
from wasmlattice.runtime.budget import BudgetExceeded, GiB, MemoryBudget, MiB, format_size, parse_size
from wasmlattice.wasi.output_limit import LineSink, OutputLimiter, OutputLimits


def test_sizes_parse_and_print() -> None:
    assert parse_size("268435456") == 256 * MiB
    assert parse_size("256MiB") == parse_size("256M") == parse_size("256mb") == 256 * MiB
    assert parse_size("1.5GiB") == 3 * GiB // 2
    with pytest.raises(ValueError, match="'lots'"):
        parse_size("lots")
    assert format_size(256 * MiB) == "256 MiB"
    assert format_size(3 * GiB // 2) == "1.5 GiB"
    assert format_size(100) == "100 B"


def test_component_limits_parse_bytes_and_ignore_bad_values() -> None:
    assert parse_limits({"max_memory_limit": "1048576"}) == (DEFAULT_EXECUTION_TIME_S, MiB)
    assert parse_limits({"max_memory_limit": "1048576"}, 7.0) == (7.0, MiB)
    assert parse_limits({"max_memory_limit": "64MiB"})[1] == 64 * MiB
    assert parse_limits({"max_memory_limit": "-5"})[1] is None
    assert parse_limits({"max_memory_limit": "lots"})[1] is None
    assert instance_bound(4) == 4 and instance_bound(1000) == 33 and instance_bound(0) == 0


def test_budget_reserves_replaces_and_releases() -> None:
    budget = MemoryBudget(GiB)
    budget.reserve("a", 768 * MiB, "3 x 256 MiB")
    with pytest.raises(BudgetExceeded) as e:
        budget.reserve("b", 512 * MiB, "2 concurrent instances x 256 MiB")
    assert str(e.value) == (
        "component b needs 512 MiB of guest memory (2 concurrent instances x 256 MiB); "
        "the host's budget has 256 MiB left of 1 GiB (--guest-memory-budget)"
    )
    assert budget.held("b") == 0
    budget.reserve("a", GiB, "4 x 256 MiB")  # a rescale replaces its own reservation
    budget.release("a")
    budget.reserve("b", 512 * MiB, "2 x 256 MiB")
    assert budget.reserved() == 512 * MiB
    with pytest.raises(ValueError):
        MemoryBudget(0)


def test_guest_limits_refuse_nonsense() -> None:
    GuestLimits().check()
    with pytest.raises(ValueError, match="--max-instance-memory"):
        GuestLimits(instance_memory=0).check()
    with pytest.raises(ValueError, match="--guest-memory-budget"):
        GuestLimits(memory_budget=-1).check()
    assert GuestLimits(memory_budget=GiB).budget().total == GiB
    assert GuestLimits().budget().total >= GiB


def test_limiter_drops_past_the_burst_and_reports_once(caplog: pytest.LogCaptureFixture) -> None:
    limits = OutputLimits(lines_per_s=10, bytes_per_s=1e9, burst_s=1.0, report_interval=3600)
    limiter = OutputLimiter("c1", limits)
    admitted = sum(limiter.admit("stdout", 10) for _ in range(1000))
    assert 10 <= admitted <= 12  # the burst, and what refilled meanwhile
    assert limiter.dropped["stdout"][0] == 1000 - admitted
    with caplog.at_level(logging.WARNING, logger="wasmlattice.guest"):
        limiter.close()
        limiter.report()  # nothing new: no second line
    reports = [r.getMessage() for r in caplog.records]
    assert len(reports) == 1
    assert reports[0].startswith(f"component c1: dropped {1000 - admitted:,} lines (")
    assert "of stdout in the last 1 s" in reports[0]


def test_line_sink_cuts_long_lines_and_spots_allocation_failures() -> None:
    lines: list[str] = []
    ooms: list[bool] = []
    limiter = OutputLimiter("c", OutputLimits(max_line=64))
    sink = LineSink(limiter, "stderr", lines.append, lambda: ooms.append(True))
    sink.write(b"short\npart")
    sink.write(b"ial\r\n" + b"x" * 200)
    sink.write(b"y" * 100 + b"\nMemoryError\nlast")
    sink.flush()
    assert lines[:2] == ["short", "partial"]
    assert lines[2] == "x" * 64 + " [... 236 more bytes of this line cut]"
    assert lines[3:] == ["MemoryError", "last"]
    assert ooms == [True]
