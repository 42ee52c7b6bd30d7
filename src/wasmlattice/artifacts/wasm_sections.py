"""Top-level custom sections of a WebAssembly binary (core module or component): read, strip, append.

Signed components carry their claims (a JWT) in a custom section (docs/claims.md). This module
walks the binary format's section framing only: an 8-byte preamble, then sections of one id byte,
a LEB128 u32 size and the contents; a custom section (id 0) starts with a LEB128-prefixed UTF-8
name (https://webassembly.github.io/spec/core/binary/modules.html#sections and the component
model's Binary.md). Nothing inside other sections is decoded, except that a component's nested
core modules (section id 1) and components (id 4) are walked the same way.

Hand-written rather than taken from a library: no PyPI package reads component-model binaries'
section framing, and the module hash must reproduce wasmCloud's wascap byte for byte: it hashes a
*re-encoding* of the binary (every section size written as a minimal LEB128, nested modules and
components re-encoded recursively) with the JWT sections removed at every depth, so a binary whose
toolchain padded its LEB128 sizes (wasm-ld does) still gets wascap's hash.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

WASM_MAGIC = b"\0asm"
MODULE_HEADER = WASM_MAGIC + b"\x01\x00\x00\x00"
# Component-model preamble: version 0x0d, layer 1 (what wasm-encoder writes for components).
COMPONENT_HEADER = WASM_MAGIC + b"\x0d\x00\x01\x00"
CUSTOM_SECTION_ID = 0
# Component section ids whose contents are a whole nested binary.
COMPONENT_CORE_MODULE_ID = 1
COMPONENT_COMPONENT_ID = 4
# Explicit limits: a hostile binary cannot make the walker recurse without end or read names of
# unbounded size.
MAX_NESTING = 32
MAX_SECTION_NAME_BYTES = 1024
_MAX_LEB_U32_BYTES = 5

Kind = Literal["module", "component"]


class WasmFormatError(ValueError):
    """The bytes are not a well-framed WebAssembly binary; the message says where and why."""


@dataclass(frozen=True)
class Section:
    """One section: its id and where its contents lie in the binary (`start`..`end`)."""

    id: int
    header_start: int
    start: int
    end: int


def read_u32(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """Decode a LEB128 u32 at `pos` (at most 5 bytes, before `end`); the value and the next position."""
    value = shift = 0
    for i in range(_MAX_LEB_U32_BYTES):
        if pos + i >= end:
            raise WasmFormatError(f"{what} at offset {pos}: unexpected end of the binary")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value > 0xFFFF_FFFF:
                raise WasmFormatError(f"{what} at offset {pos}: LEB128 value does not fit in 32 bits")
            return value, pos + i + 1
        shift += 7
    raise WasmFormatError(f"{what} at offset {pos}: LEB128 u32 longer than {_MAX_LEB_U32_BYTES} bytes")


def encode_u32(value: int) -> bytes:
    """The minimal LEB128 encoding of a u32."""
    if not 0 <= value <= 0xFFFF_FFFF:
        raise ValueError(f"{value} does not fit in a u32")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def binary_kind(data: bytes, start: int = 0, end: int | None = None) -> Kind:
    """Whether the binary at `start` is a core module or a component, from its preamble."""
    end = len(data) if end is None else end
    if end - start < 8 or data[start : start + 4] != WASM_MAGIC:
        raise WasmFormatError(f"no WebAssembly preamble at offset {start} (the file is not a .wasm binary)")
    layer = data[start + 6 : start + 8]
    if layer == b"\x00\x00":
        return "module"
    if layer == b"\x01\x00":
        return "component"
    raise WasmFormatError(f"unknown WebAssembly layer {layer.hex()} at offset {start + 6}")


def sections(data: bytes, start: int = 0, end: int | None = None) -> list[Section]:
    """The sections of the binary in `data[start:end]`, in order; `WasmFormatError` if misframed."""
    end = len(data) if end is None else end
    binary_kind(data, start, end)
    out: list[Section] = []
    pos = start + 8
    while pos < end:
        header = pos
        section_id = data[pos]
        size, content = read_u32(data, pos + 1, end, f"size of section {section_id}")
        if content + size > end:
            raise WasmFormatError(
                f"section {section_id} at offset {header} claims {size} bytes, but only "
                f"{end - content} remain"
            )
        out.append(Section(section_id, header, content, content + size))
        pos = content + size
    return out


def custom_name(data: bytes, section: Section) -> tuple[str, int]:
    """The name of a custom section and where its payload starts."""
    size, pos = read_u32(data, section.start, section.end, "custom section name length")
    if size > MAX_SECTION_NAME_BYTES:
        raise WasmFormatError(
            f"custom section at offset {section.header_start} has a {size}-byte name "
            f"(at most {MAX_SECTION_NAME_BYTES})"
        )
    if pos + size > section.end:
        raise WasmFormatError(f"custom section at offset {section.header_start}: its name overruns it")
    try:
        name = data[pos : pos + size].decode()
    except UnicodeDecodeError:
        raise WasmFormatError(f"custom section at offset {section.header_start}: name is not UTF-8") from None
    return name, pos + size


def custom_sections(data: bytes, names: Collection[str]) -> list[tuple[str, bytes]]:
    """Top-level custom sections named one of `names`, as (name, payload), in binary order."""
    found: list[tuple[str, bytes]] = []
    for section in sections(data):
        if section.id == CUSTOM_SECTION_ID:
            name, payload = custom_name(data, section)
            if name in names:
                found.append((name, data[payload : section.end]))
    return found


def canonical_without(data: bytes, names: Collection[str]) -> bytes:
    """The binary re-encoded as wascap hashes it: custom sections named `names` dropped at every
    depth, section sizes as minimal LEB128, nested modules and components re-encoded the same way."""
    return _canonical(data, 0, len(data), frozenset(names), 0)


def _canonical(data: bytes, start: int, end: int, names: frozenset[str], depth: int) -> bytes:
    if depth > MAX_NESTING:
        raise WasmFormatError(f"components nested more than {MAX_NESTING} deep")
    kind = binary_kind(data, start, end)
    out = bytearray(COMPONENT_HEADER if kind == "component" else MODULE_HEADER)
    for section in sections(data, start, end):
        if section.id == CUSTOM_SECTION_ID and custom_name(data, section)[0] in names:
            continue
        if kind == "component" and section.id in (COMPONENT_CORE_MODULE_ID, COMPONENT_COMPONENT_ID):
            contents = _canonical(data, section.start, section.end, names, depth + 1)
        else:
            contents = data[section.start : section.end]
        out += bytes([section.id]) + encode_u32(len(contents)) + contents
    return bytes(out)


def custom_section(name: str, payload: bytes) -> bytes:
    """A custom section (id, size, name, payload) ready to append to a binary."""
    encoded = name.encode()
    contents = encode_u32(len(encoded)) + encoded + payload
    return bytes([CUSTOM_SECTION_ID]) + encode_u32(len(contents)) + contents
