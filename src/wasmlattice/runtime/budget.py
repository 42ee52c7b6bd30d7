"""Guest memory: the per-instance limit, and the host-wide budget every component reserves from.

Each instance runs in its own wasmtime Store whose linear memories may grow to the instance limit
(`Store.set_limits(memory_size=...)`; past it `memory.grow` fails and the guest traps). A
component on a lattice host runs at most `instance_bound(max_instances)` instances at once, so it
reserves that many times its instance limit from the host's budget when it is scaled; a scale
that does not fit is refused with the reason, and scaling down or stopping gives the reservation
back. See docs/limits.md.
"""

from __future__ import annotations

import os
import re
import threading

MiB = 1 << 20
GiB = 1 << 30

# Linear memory one instance may use unless the host or the component says otherwise: the
# wasmCloud host's default too (docs/protocol.md#limits).
DEFAULT_INSTANCE_MEMORY = 256 * MiB
# The budget of all guests of one host when none is given: this share of the machine's memory.
DEFAULT_BUDGET_SHARE = 0.5
# ... and never less than this (a small VM still runs a few components).
MIN_DEFAULT_BUDGET = 1 * GiB

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(k|ki|m|mi|g|gi|t|ti)?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": MiB, "g": GiB, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from `67108864`, `64MiB`, `1.5GiB`, `512M` (binary units); `ValueError` naming the text."""
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"expected a size such as 268435456, 256MiB or 1.5GiB, got {text!r}")
    unit = (m.group(2) or "").lower().rstrip("i")
    return int(float(m.group(1)) * _UNITS[unit])


def format_size(n: int) -> str:
    """`n` bytes as a short binary size: `256 MiB`, `1.5 GiB`, `512 B`."""
    for unit, size in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} B"


def machine_memory() -> int | None:
    """Physical memory of the machine in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def default_budget() -> int:
    """The default host budget: half the machine's memory, at least 1 GiB."""
    total = machine_memory()
    if total is None:
        return 4 * GiB
    return max(MIN_DEFAULT_BUDGET, int(total * DEFAULT_BUDGET_SHARE))


class BudgetExceeded(Exception):
    """A reservation does not fit in what is left of the host's guest-memory budget."""


class MemoryBudget:
    """Reservations of guest memory by key (a component ID) against one host-wide total.

    Thread-safe; `reserve` for a key that already holds a reservation replaces it (a rescale),
    so only the difference has to fit.
    """

    def __init__(self, total: int, flag: str = "--guest-memory-budget") -> None:
        if total <= 0:
            raise ValueError(f"the guest memory budget must be positive, got {total}")
        self.total = total
        self.flag = flag
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def reserved(self) -> int:
        """Bytes reserved now, by every key."""
        with self._lock:
            return sum(self._held.values())

    def held(self, key: str) -> int:
        """Bytes `key` holds (0 if none)."""
        with self._lock:
            return self._held.get(key, 0)

    def check(self, key: str, amount: int, what: str) -> None:
        """`BudgetExceeded` (with the reason) unless `key` could hold `amount`; reserves nothing.

        `what` says how the amount is made up, e.g. "8 instances x 512 MiB".
        """
        with self._lock:
            self._check(key, amount, what)

    def reserve(self, key: str, amount: int, what: str) -> None:
        """Make `key` hold `amount` bytes (replacing what it held), or raise `BudgetExceeded`."""
        with self._lock:
            self._check(key, amount, what)
            self._held[key] = amount

    def release(self, key: str) -> None:
        """Give back what `key` holds (nothing if none)."""
        with self._lock:
            self._held.pop(key, None)

    def _check(self, key: str, amount: int, what: str) -> None:
        left = self.total - sum(v for k, v in self._held.items() if k != key)
        if amount > left:
            raise BudgetExceeded(
                f"component {key} needs {format_size(amount)} of guest memory ({what}); "
                f"the host's budget has {format_size(max(0, left))} left of {format_size(self.total)} "
                f"({self.flag})"
            )
