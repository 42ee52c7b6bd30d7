"""Binding host implementations to whatever interface versions a component imports.

A `HostRegistry` maps unversioned interface names (`wasi:io/streams`) to Python functions keyed by
the component-model function name (`[method]output-stream.write`). `link` walks the component's
imports once, gives every imported resource type a host type id (aliases such as `headers` and
`fields`, or `io-error` and `error`, share one), converts every signature to `witypes`, and
defines each function on the fast call path. Nothing about versions is hard-coded: the registry
says which version prefixes it serves.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import wasmtime.component as wc
from wasmtime.component import _types as T

from wasmlattice.runtime import fastcall, fastcall_values
from wasmlattice.runtime.component import ComponentError, InterfaceName
from wasmlattice.runtime.engine import HostEngine
from wasmlattice.runtime.witypes import (
    EnumT,
    FlagsT,
    FuncSig,
    HandleT,
    ListT,
    OptionT,
    Prim,
    RecordT,
    ResultT,
    TupleT,
    VariantT,
    WitType,
    same_shape,
    shape_text,
)

log = logging.getLogger("wasmlattice.runtime")

HostFunc = Callable[..., Any]
# Given an import's full function name (`ns:pkg/iface@ver#func`), its signature and the host
# function bound to it, the function to bind instead (record/replay, docs/record-replay.md). Applied
# once at link time: a component linked without one pays nothing per call.
WrapFunc = Callable[[str, FuncSig, HostFunc], HostFunc]

_PRIM_CLASSES: dict[type, str] = {
    T.Bool: "bool",
    T.S8: "s8",
    T.U8: "u8",
    T.S16: "s16",
    T.U16: "u16",
    T.S32: "s32",
    T.U32: "u32",
    T.S64: "s64",
    T.U64: "u64",
    T.F32: "f32",
    T.F64: "f64",
    T.Char: "char",
    T.String: "string",
}

_type_ids = itertools.count(1)


@dataclass
class HostInterface:
    """Functions implementing one interface, for the versions whose string starts with a prefix."""

    name: str
    functions: dict[str, HostFunc]
    versions: tuple[str, ...] = ("0.2.",)
    # Expected signatures (see `witypes.func`): when given, an import binds to this
    # implementation only if every imported function it declares has the same shape.
    signatures: dict[str, FuncSig] = field(default_factory=dict)

    def mismatch(self, imported: dict[str, FuncSig]) -> str | None:
        """Why this implementation cannot serve functions of these types, or None if it can."""
        for fname, sig in imported.items():
            want = self.signatures.get(fname)
            if want is not None and not same_shape(want, sig):
                return (
                    f"`{fname}` is imported as {shape_text(sig)}, but this host implements {shape_text(want)}"
                )
        return None

    def serves(self, version: str | None) -> bool:
        """Whether this implementation serves `version` (an empty prefix also serves unversioned names)."""
        if version is None:
            return "" in self.versions
        return any(version.startswith(p) for p in self.versions)


@dataclass
class HostRegistry:
    """The host interfaces available for linking."""

    interfaces: dict[str, list[HostInterface]] = field(default_factory=dict)
    # Serves imports no registered implementation knows (custom interfaces routed by links);
    # None means such imports are refused.
    dynamic: Callable[[InterfaceName, dict[str, FuncSig]], HostInterface] | None = None

    def add(self, iface: HostInterface) -> None:
        """Register an implementation."""
        self.interfaces.setdefault(iface.name, []).append(iface)

    def extend(self, ifaces: Iterable[HostInterface]) -> HostRegistry:
        """Register several implementations; returns self."""
        for iface in ifaces:
            self.add(iface)
        return self

    def find(self, name: InterfaceName, imported: dict[str, FuncSig] | None = None) -> HostInterface | None:
        """The implementation serving `name` at its version (and these function types), if any."""
        for impl in self.interfaces.get(name.unversioned, []):
            if impl.serves(name.version) and (imported is None or impl.mismatch(imported) is None):
                return impl
        return None

    def resolve(self, name: InterfaceName, imported: dict[str, FuncSig]) -> HostInterface:
        """The implementation for an import; `SignatureMismatch` or `MissingImport` if there is none."""
        impl = self.find(name, imported)
        if impl is not None:
            return impl
        candidates = [i for i in self.interfaces.get(name.unversioned, []) if i.serves(name.version)]
        if candidates:
            why = candidates[0].mismatch(imported)
            raise SignatureMismatch(f"cannot bind {name}: {why}")
        if self.dynamic is not None:
            return self.dynamic(name, imported)
        raise MissingImport(str(name))


class _ResourceTypes:
    """Imported resource types grouped by identity, each group with one host type id."""

    def __init__(self) -> None:
        self.known: list[tuple[wc.ResourceType, int, str]] = []

    def id_for(self, rt: wc.ResourceType, name: str) -> int:
        for other, tid, _ in self.known:
            if other == rt:
                return tid
        tid = next(_type_ids)
        self.known.append((rt, tid, name))
        return tid

    def resolve(self, rt: wc.ResourceType) -> tuple[str, int]:
        for other, tid, name in self.known:
            if other == rt:
                return name, tid
        raise ComponentError("a function uses a resource type that is not imported from the host")


def convert_type(vt: Any, res: _ResourceTypes) -> WitType:
    """A `witypes` description of a wasmtime-py value type."""
    prim = _PRIM_CLASSES.get(type(vt))
    if prim is not None:
        return Prim(prim)
    if isinstance(vt, T.ListType):
        return ListT(convert_type(vt.element, res))
    if isinstance(vt, T.RecordType):
        return RecordT(tuple((n, convert_type(t, res)) for n, t in vt.fields))
    if isinstance(vt, T.TupleType):
        return TupleT(tuple(convert_type(t, res) for t in vt.elements))
    if isinstance(vt, T.VariantType):
        return VariantT(tuple((n, None if t is None else convert_type(t, res)) for n, t in vt.cases))
    if isinstance(vt, T.EnumType):
        return EnumT(tuple(vt.names))
    if isinstance(vt, T.OptionType):
        return OptionT(convert_type(vt.payload, res))
    if isinstance(vt, T.ResultType):
        ok, err = vt.ok, vt.err
        return ResultT(
            None if ok is None else convert_type(ok, res), None if err is None else convert_type(err, res)
        )
    if isinstance(vt, T.FlagsType):
        return FlagsT(tuple(vt.names))
    if isinstance(vt, (T.OwnType, T.BorrowType)):
        name, tid = res.resolve(vt.ty)
        return HandleT(name, tid, isinstance(vt, T.OwnType))
    raise ComponentError(f"unsupported value type {type(vt).__name__} in a host interface")


def convert_func(ft: wc.FuncType, res: _ResourceTypes) -> FuncSig:
    """A `witypes` signature of a wasmtime-py function type."""
    params = tuple((n, convert_type(t, res)) for n, t in ft.params)
    r = ft.result
    return FuncSig(params, None if r is None else convert_type(r, res))


@dataclass
class LinkedComponent:
    """A component with its linker ready to instantiate, and its exports' signatures.

    The component, its linker and every store instantiating it belong to `engine`; `tier` names
    the compiler that built it (`winch` first, `cranelift` once optimised; runtime/engine.py).
    """

    component: wc.Component
    linker: wc.Linker
    codec: fastcall_values.Codec
    exports: dict[str, dict[str, FuncSig]]
    imported: list[str]
    resources: _ResourceTypes
    engine: HostEngine
    tier: str

    def export_func(self, interface: str, func: str) -> tuple[str, fastcall.ExportFunc]:
        """The full export name and a prepared caller for `interface#func` (interface unversioned)."""
        for name, funcs in self.exports.items():
            parsed = InterfaceName.parse(name)
            if parsed is not None and parsed.unversioned == interface and func in funcs:
                return name, fastcall.ExportFunc(f"{name}#{func}", funcs[func], self.codec)
        raise ComponentError(f"the component does not export {interface} (function {func})")


class MissingImport(Exception):
    """A component imports something this host does not provide."""


class SignatureMismatch(ComponentError):
    """A component imports an interface version whose function types differ from what the host implements."""


def _missing(name: str, fname: str) -> HostFunc:
    def missing(*_args: Any) -> Any:
        raise fastcall.Trap(f"{name}#{fname} is not implemented by this host")

    return missing


def link(
    engine: HostEngine,
    component: wc.Component,
    registry: HostRegistry,
    origin: str = "component",
    wrap: WrapFunc | None = None,
) -> LinkedComponent:
    """Define every import of `component` from `registry`; refuse imports no implementation serves.

    `wrap`, when given, replaces each bound function by what it returns for it (see `WrapFunc`).
    """
    ct = component.type
    imports = ct.imports(engine.engine)
    res = _ResourceTypes()
    plan: list[tuple[str, list[tuple[str, Any]]]] = []
    unknown: list[str] = []
    for name, ext in imports.items():
        ty = ext.ty
        if not isinstance(ty, wc.ComponentInstanceType):
            unknown.append(name)
            continue
        items = list(ty.exports(engine.engine).items())
        for iname, iext in items:
            ity = iext.ty
            if isinstance(ity, wc.ResourceType):
                res.id_for(ity, iname)
        plan.append((name, [(n, x.ty) for n, x in items]))

    impls: list[tuple[str, HostInterface, list[tuple[str, Any]], dict[str, FuncSig]]] = []
    for name, members in plan:
        parsed = InterfaceName.parse(name)
        if parsed is None:
            unknown.append(name)
            continue
        sigs = {n: convert_func(t, res) for n, t in members if isinstance(t, wc.FuncType)}
        try:
            impls.append((name, registry.resolve(parsed, sigs), members, sigs))
        except MissingImport:
            unknown.append(name)
        except SignatureMismatch as e:
            raise SignatureMismatch(
                f"{origin}: {e}; use a version of the interface this host serves"
            ) from None
    if unknown:
        raise MissingImport(
            f"{origin} imports {', '.join(unknown)}, which this host does not provide; "
            "remove the import or run it where a capability provides it"
        )

    codec = fastcall_values.Codec()
    linker = wc.Linker(engine.engine)
    with linker.root() as root:
        for name, impl, members, sigs in impls:
            with root.add_instance(name) as li:
                for iname, ity in members:
                    if isinstance(ity, wc.ResourceType):
                        fastcall.add_resource(li, iname, res.id_for(ity, iname))
                for iname, sig in sigs.items():
                    fn = impl.functions.get(iname)
                    if fn is None:
                        log.warning(
                            "%s#%s is imported by %s but not implemented; it traps if called",
                            name,
                            iname,
                            origin,
                        )
                        fn = _missing(name, iname)
                    if wrap is not None:
                        fn = wrap(f"{name}#{iname}", sig, fn)
                    fastcall.add_func(li, iname, fastcall.BoundFunc(f"{name}#{iname}", sig, fn, codec))

    exports: dict[str, dict[str, FuncSig]] = {}
    for name, ext in ct.exports(engine.engine).items():
        ty = ext.ty
        if isinstance(ty, wc.ComponentInstanceType):
            funcs: dict[str, FuncSig] = {}
            for fname, fext in ty.exports(engine.engine).items():
                fty = fext.ty
                if isinstance(fty, wc.FuncType):
                    try:
                        funcs[fname] = convert_func(fty, res)
                    except ComponentError:
                        continue  # guest-defined resources: not callable from the host yet
            exports[name] = funcs
    return LinkedComponent(
        component, linker, codec, exports, [n for n, _ in plan], res, engine, engine.settings.strategy
    )
