"""Per-store host state: the resource table and what the running guest's host calls need."""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime

_MAX_REP = 2**32 - 1


class StoreState:
    """Host-side state of one wasmtime Store: resource handles (rep -> object) and the WASI context."""

    __slots__ = ("_next_rep", "ctx", "store", "table", "trap_cause", "wasi")

    def __init__(self, store: wasmtime.Store, wasi: Any = None) -> None:
        self.store = store
        self.ctx: int = ctypes.cast(store._context(), ctypes.c_void_p).value or 0
        self.table: dict[int, Any] = {}
        self._next_rep = 1
        self.trap_cause: BaseException | None = None
        self.wasi = wasi

    def insert(self, obj: Any) -> int:
        """Store `obj` under a fresh rep (reps must stay below 2**32 and unique within the store)."""
        rep = self._next_rep
        while rep in self.table:
            rep = rep + 1 if rep < _MAX_REP else 1
        self._next_rep = rep + 1 if rep < _MAX_REP else 1
        self.table[rep] = obj
        return rep
