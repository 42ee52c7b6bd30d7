"""The wasmtime engine as configured for hosting, and its epoch ticker."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import platform
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import wasmtime
from wasmtime import _ffi

# The compilers wasmtime can use. Winch is a baseline compiler: one pass per function, no
# optimisation, several times faster to compile than Cranelift, slower code. Tiered compilation
# (docs/architecture.md#tiered-compilation) serves from Winch's build first and Cranelift's after.
CRANELIFT = "cranelift"
WINCH = "winch"
# wasmtime's C API `wasmtime_strategy_t` (crates/c-api/include/wasmtime/config.h): wasmtime-py 49's
# `Config.strategy` setter accepts only "auto" and "cranelift", so Winch is set through the C call.
_STRATEGY_IDS = {CRANELIFT: 1, WINCH: 2}

# Deadlines are counted in epoch ticks; one tick every 10 ms bounds how late a runaway guest is
# interrupted while costing next to nothing.
EPOCH_TICK_SECONDS = 0.01


@dataclass(frozen=True)
class EngineSettings:
    """Engine options that change compiled code (and so are part of the compile-cache key)."""

    epoch_interruption: bool = True
    opt_level: str = "speed"
    strategy: str = CRANELIFT

    def cache_tag(self) -> str:
        """A string naming these settings and this CPU for the compile cache key."""
        return (
            f"epoch={int(self.epoch_interruption)};opt={self.opt_level};strategy={self.strategy};"
            f"cpu={cpu_tag()}"
        )


class HostEngine:
    """A wasmtime `Engine` with epoch interruption driven by a background ticker thread."""

    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings = settings or EngineSettings()
        cfg = wasmtime.Config()
        cfg.epoch_interruption = self.settings.epoch_interruption
        cfg.cranelift_opt_level = self.settings.opt_level
        cfg.wasm_component_model = True
        strategy = _STRATEGY_IDS.get(self.settings.strategy)
        if strategy is None:
            known = ", ".join(sorted(_STRATEGY_IDS))
            raise ValueError(f"unknown compiler {self.settings.strategy!r}: expected one of {known}")
        _set_strategy(ctypes.cast(cfg.ptr(), ctypes.c_void_p), strategy)
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


_set_strategy = _ffi.dll.wasmtime_config_strategy_set
_set_strategy.argtypes = [ctypes.c_void_p, ctypes.c_uint8]
_set_strategy.restype = None


@functools.cache
def cpu_tag() -> str:
    """The architecture and CPU feature flags wasmtime compiles for (part of the compile-cache key).

    wasmtime compiles for the features of the CPU it runs on (AVX2, BMI2, ...); a cache directory
    shared with (or copied to) another machine must not hand it code for features it lacks.
    wasmtime refuses such an artifact when deserialising it too, but the key makes each CPU's
    entries separate instead of overwriting each other. Linux lists the flags in /proc/cpuinfo;
    elsewhere the processor's name stands in for them.
    """
    flags = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
                break
    except OSError:
        pass
    return f"{platform.machine()}:{hashlib.sha256(flags.encode()).hexdigest()[:16]}"
