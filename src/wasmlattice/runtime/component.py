"""Loading components: format checks, the on-disk compile cache, and inspection of imports/exports."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime
import wasmtime.component as wc

from wasmlattice.runtime.engine import HostEngine, wasmtime_version

log = logging.getLogger("wasmlattice.runtime")

_WASM_MAGIC = b"\0asm"
_CACHE_MAGIC = b"WLCC1\n"


class ComponentError(Exception):
    """A component could not be loaded or does not fit what the host needs."""


def check_format(data: bytes, origin: str) -> None:
    """Refuse files that are not WebAssembly components, saying what they are instead."""
    if len(data) < 8 or data[:4] != _WASM_MAGIC:
        raise ComponentError(f"{origin} is not a WebAssembly file (it does not start with the \\0asm magic)")
    if data[4:8] == b"\x01\x00\x00\x00":
        raise ComponentError(
            f"{origin} is a core WebAssembly module, not a component; "
            "build it for WASI 0.2 (for example `wasm-tools component new`) and try again"
        )
    if data[6:8] != b"\x01\x00":
        raise ComponentError(
            f"{origin} is a WebAssembly binary of an unknown layer/version {data[4:8].hex()}"
        )


def default_cache_dir() -> Path:
    """Where compiled components are cached: `$WASMLATTICE_CACHE_DIR`, else the user's cache dir."""
    env = os.environ.get("WASMLATTICE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wasmlattice" / "compiled"


class CompileCache:
    """Compiled components on disk, keyed by content hash, wasmtime version, engine settings (the
    compiler among them) and the CPU's features.

    Only this host's own compiler writes entries: compiled code is native code, and is never
    accepted from elsewhere (docs/security.md#compiled-code).

    Entries carry a checksum of the artifact; a corrupt, truncated or incompatible entry is
    recompiled and replaced, never trusted. Writes are atomic (temp file + rename).
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def key(self, data: bytes, engine: HostEngine) -> str:
        """The cache key for component bytes under this engine."""
        h = hashlib.sha256()
        h.update(data)
        h.update(f"|wasmtime={wasmtime_version()}|{engine.settings.cache_tag()}".encode())
        return h.hexdigest()

    def path_for(self, key: str) -> Path | None:
        """The file an entry lives in (None when caching is off)."""
        return None if self.directory is None else self.directory / f"{key}.cwasm"

    def lookup(self, data: bytes, engine: HostEngine) -> wc.Component | None:
        """The cached compiled component for `data`, or None (nothing is compiled)."""
        path = self.path_for(self.key(data, engine))
        if path is None or not path.exists():
            return None
        return self._read(path, engine)

    def compile(self, data: bytes, engine: HostEngine, origin: str) -> wc.Component:
        """Compile `data` without caching the result (a first-tier build that is soon replaced)."""
        return self._compile(data, engine, origin)

    def load(self, data: bytes, engine: HostEngine, origin: str) -> wc.Component:
        """The compiled component for `data`, from the cache or freshly compiled (and then cached)."""
        key = self.key(data, engine)
        path = self.path_for(key)
        if path is None:
            return self._compile(data, engine, origin)
        if path.exists():
            comp = self._read(path, engine)
            if comp is not None:
                return comp
        # Several processes (hosts, workers) often load the same new component at once: one
        # compiles while the others wait for its entry instead of compiling it again.
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(path.with_suffix(".lock"), "w")  # noqa: SIM115 - held across the compile
        except OSError:
            return self._compile(data, engine, origin, path)
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if path.exists():
                comp = self._read(path, engine)
                if comp is not None:
                    return comp
            return self._compile(data, engine, origin, path)

    def _compile(
        self, data: bytes, engine: HostEngine, origin: str, path: Path | None = None
    ) -> wc.Component:
        try:
            comp = wc.Component(engine.engine, data)
        except wasmtime.WasmtimeError as e:
            raise ComponentError(f"{origin} failed to compile: {_first_line(str(e))}") from e
        if path is not None:
            self._write(path, bytes(comp.serialize()))
        return comp

    def _read(self, path: Path, engine: HostEngine) -> wc.Component | None:
        try:
            blob = path.read_bytes()
        except OSError as e:
            log.warning("compile cache entry %s unreadable (%s); recompiling", path, e)
            return None
        head = len(_CACHE_MAGIC)
        if blob[:head] != _CACHE_MAGIC or len(blob) < head + 32:
            log.warning("compile cache entry %s is not ours or truncated; recompiling", path)
            return None
        digest, artifact = blob[head : head + 32], blob[head + 32 :]
        if hashlib.sha256(artifact).digest() != digest:
            log.warning("compile cache entry %s is corrupt (checksum mismatch); recompiling", path)
            return None
        try:
            return wc.Component.deserialize(engine.engine, artifact)
        except wasmtime.WasmtimeError as e:
            log.warning("compile cache entry %s is stale (%s); recompiling", path, _first_line(str(e)))
            return None

    def _write(self, path: Path, artifact: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".cwasm")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(_CACHE_MAGIC)
                    f.write(hashlib.sha256(artifact).digest())
                    f.write(artifact)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as e:
            log.warning("cannot write compile cache entry %s: %s", path, e)


def _first_line(s: str) -> str:
    return s.strip().splitlines()[0] if s.strip() else s


_NAME_RE = re.compile(
    r"^(?P<ns>[a-z0-9-]+):(?P<pkg>[a-z0-9-]+(?::[a-z0-9-]+)*)/(?P<iface>[a-z0-9-]+)(?:@(?P<ver>.+))?$"
)


@dataclass(frozen=True)
class InterfaceName:
    """A parsed interface name such as `wasi:http/types@0.2.6`."""

    namespace: str
    package: str
    interface: str
    version: str | None

    @property
    def unversioned(self) -> str:
        """`ns:pkg/iface` without the version."""
        return f"{self.namespace}:{self.package}/{self.interface}"

    def __str__(self) -> str:
        return self.unversioned + (f"@{self.version}" if self.version else "")

    @classmethod
    def parse(cls, name: str) -> InterfaceName | None:
        """Parse `ns:pkg/iface[@version]`; None for plain (non-interface) names."""
        m = _NAME_RE.match(name)
        if not m:
            return None
        return cls(m["ns"], m["pkg"], m["iface"], m["ver"])


@dataclass
class ItemInfo:
    """One import or export of a component: an interface instance (with its functions) or a function."""

    name: str
    kind: str  # "instance" | "func" | "other"
    functions: list[str] = field(default_factory=list)

    @property
    def interface(self) -> InterfaceName | None:
        """The parsed interface name, if this item is an interface."""
        return InterfaceName.parse(self.name)


@dataclass
class ComponentInfo:
    """What a component imports and exports."""

    imports: list[ItemInfo]
    exports: list[ItemInfo]

    def export_named(self, unversioned: str) -> ItemInfo | None:
        """The exported interface `ns:pkg/iface` at any version."""
        for e in self.exports:
            i = e.interface
            if i is not None and i.unversioned == unversioned:
                return e
        return None


def inspect_component(comp: wc.Component, engine: HostEngine) -> ComponentInfo:
    """List a compiled component's imports and exports with their versions and functions."""
    ct = comp.type
    return ComponentInfo(
        imports=[_item(n, e, engine) for n, e in ct.imports(engine.engine).items()],
        exports=[_item(n, e, engine) for n, e in ct.exports(engine.engine).items()],
    )


def _item(name: str, ext: Any, engine: HostEngine) -> ItemInfo:
    ty = ext.ty
    if isinstance(ty, wc.ComponentInstanceType):
        funcs = [n for n, x in ty.exports(engine.engine).items() if isinstance(x.ty, wc.FuncType)]
        return ItemInfo(name, "instance", funcs)
    if isinstance(ty, wc.FuncType):
        return ItemInfo(name, "func")
    return ItemInfo(name, "other")


def read_component_file(path: str | os.PathLike[str]) -> bytes:
    """Read a component file, with a clear error when it is missing or unreadable."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ComponentError(f"component file {os.fspath(path)} does not exist") from None
    except OSError as e:
        raise ComponentError(f"cannot read component file {os.fspath(path)}: {e.strerror}") from None
    check_format(data, os.fspath(path))
    return data
