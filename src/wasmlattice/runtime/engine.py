"""The wasmtime engine as configured for hosting, and its epoch ticker."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import wasmtime

# Deadlines are counted in epoch ticks; one tick every 10 ms bounds how late a runaway guest is
# interrupted while costing next to nothing.
EPOCH_TICK_SECONDS = 0.01


@dataclass(frozen=True)
class EngineSettings:
    """Engine options that change compiled code (and so are part of the compile-cache key)."""

    epoch_interruption: bool = True
    opt_level: str = "speed"

    def cache_tag(self) -> str:
        """A string naming these settings for the compile cache key."""
        return f"epoch={int(self.epoch_interruption)};opt={self.opt_level}"


class HostEngine:
    """A wasmtime `Engine` with epoch interruption driven by a background ticker thread."""

    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings = settings or EngineSettings()
        cfg = wasmtime.Config()
        cfg.epoch_interruption = self.settings.epoch_interruption
        cfg.cranelift_opt_level = self.settings.opt_level
        cfg.wasm_component_model = True
        self.engine = wasmtime.Engine(cfg)
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if self.settings.epoch_interruption:
            self._start_ticker()

    def _start_ticker(self) -> None:
        engine_ref = weakref.ref(self.engine)
        stop = self._stop

        def tick() -> None:
            while not stop.wait(EPOCH_TICK_SECONDS):
                engine = engine_ref()
                if engine is None:
                    return
                engine.increment_epoch()
                del engine

        self._ticker = threading.Thread(target=tick, name="wasmlattice-epoch", daemon=True)
        self._ticker.start()

    @staticmethod
    def ticks_for(seconds: float) -> int:
        """Epoch ticks for a deadline `seconds` from now (at least one)."""
        return max(1, int(seconds / EPOCH_TICK_SECONDS + 0.5))

    def close(self) -> None:
        """Stop the epoch ticker."""
        self._stop.set()


def wasmtime_version() -> str:
    """The version of the wasmtime package (part of the compile-cache key)."""
    from importlib.metadata import version

    return version("wasmtime")
