"""What a host lets its guests use: memory per instance, a memory budget for all, output to the log.

The host's defaults (`GuestLimits`, from `--max-instance-memory`, `--guest-memory-budget` and the
`--guest-output-*` flags) and a component's own `component_limits` (`max_memory_limit`) meet here.
See docs/limits.md for every default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wasmlattice.runtime.budget import (
    DEFAULT_INSTANCE_MEMORY,
    MemoryBudget,
    default_budget,
    format_size,
)
from wasmlattice.wasi.output_limit import OutputLimits


@dataclass(frozen=True)
class GuestLimits:
    """A host's limits on its guests.

    - `instance_memory`: linear memory one instance may use, unless its component's
      `max_memory_limit` says otherwise (256 MiB).
    - `memory_budget`: bytes all guests of the host may reserve (None: half the machine's memory,
      at least 1 GiB).
    - `output`: the output allowance of each component (`OutputLimits`' defaults).
    """

    instance_memory: int = DEFAULT_INSTANCE_MEMORY
    memory_budget: int | None = None
    output: OutputLimits = field(default_factory=OutputLimits)

    def check(self) -> None:
        """`ValueError` naming the flag of a value out of range."""
        if self.instance_memory <= 0:
            raise ValueError(f"--max-instance-memory must be positive, got {self.instance_memory}")
        if self.memory_budget is not None and self.memory_budget <= 0:
            raise ValueError(f"--guest-memory-budget must be positive, got {self.memory_budget}")
        out = self.output
        if out.lines_per_s <= 0 or out.bytes_per_s <= 0 or out.max_line < 64 or out.report_interval <= 0:
            raise ValueError(
                "guest output limits must be positive (and --guest-output-max-line at least 64), "
                f"got {out.describe()}, reported every {out.report_interval:g} s"
            )

    def budget(self) -> MemoryBudget:
        """The host's budget for all its guests."""
        return MemoryBudget(self.memory_budget if self.memory_budget is not None else default_budget())

    def describe(self) -> str:
        """One line for the host's start-up log."""
        return f"guest memory: {format_size(self.instance_memory)} per instance"
