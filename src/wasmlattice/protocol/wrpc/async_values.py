"""wRPC's async values on the wire: the inline parts and chunks of `stream<T>` and `future<T>`.

wRPC's additions to the value encoding (SPEC.md "Component model value definition encoding
extensions", `value.rs` of `wrpc-transport`): `future<T>` is `variant { pending, ready(T) }`; when
pending, the value later arrives on the future's own index path as a bare `T`. `stream<T>` inline
is `list<T>`; an empty inline list means pending, and the elements then arrive on the stream's
path as `list<T>` chunks ended by an empty list (a single `00` byte). `witypes` has no stream or
future types (WASI 0.2 components cannot use them), so these are helpers for the transport, built
on the element's encoder or decoder (`codec.encoder(T)`, `codec.decoder(T)`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wasmlattice.protocol.wrpc.primitives import (
    U32_MAX,
    CodecError,
    Decoder,
    Encoder,
    dec_bytes,
    dec_u8,
    enc_bytes,
    enc_u8,
    get_uleb,
    put_uleb,
    truncated,
)

STREAM_END = b"\x00"
"""The chunk that ends a pending stream: an empty `list<T>`."""

FUTURE_PENDING = b"\x00"
"""An inline `future<T>` whose value will follow on its own path."""


def encode_stream_chunk(elem_encoder: Encoder, items: Iterable[Any]) -> bytes:
    """One non-empty chunk of a pending `stream<T>` (a `list<T>`); bytes-like items for `stream<u8>`."""
    out = bytearray()
    if elem_encoder is enc_u8 and isinstance(items, (bytes, bytearray, memoryview)):
        if not len(items):
            raise CodecError("an empty chunk would end the stream; send STREAM_END to end it")
        enc_bytes(items, out)
        return bytes(out)
    seq = items if isinstance(items, (list, tuple)) else list(items)
    if not seq:
        raise CodecError("an empty chunk would end the stream; send STREAM_END to end it")
    if len(seq) > U32_MAX:
        raise CodecError("stream chunk longer than 2^32-1 elements")
    put_uleb(len(seq), out)
    for i, x in enumerate(seq):
        try:
            elem_encoder(x, out)
        except CodecError as e:
            raise e.within(f"chunk[{i}]") from None
    return bytes(out)


def decode_stream_chunk(
    elem_decoder: Decoder, data: bytes | bytearray | memoryview, offset: int = 0
) -> tuple[list[Any] | bytes, int]:
    """One chunk of a pending stream and the offset after it; an empty chunk is the end of the stream.

    Elements decoded with the `u8` decoder come back as `bytes`.
    """
    with memoryview(data) as mv:
        if elem_decoder is dec_u8:
            return dec_bytes(mv, offset)
        n, o = get_uleb(mv, offset, 32, "stream chunk length")
        items: list[Any] = []
        for i in range(n):
            try:
                x, o = elem_decoder(mv, o)
            except CodecError as e:
                raise e.within(f"chunk[{i}]") from None
            items.append(x)
        return items, o


def encode_future_pending() -> bytes:
    """An inline `future<T>` that is still pending: its value follows later on the future's path."""
    return FUTURE_PENDING


def encode_future_ready(elem_encoder: Encoder, value: Any) -> bytes:
    """An inline `future<T>` that is already resolved to `value`."""
    out = bytearray(b"\x01")
    try:
        elem_encoder(value, out)
    except CodecError as e:
        raise e.within(".ready") from None
    return bytes(out)


def decode_future(
    elem_decoder: Decoder, data: bytes | bytearray | memoryview, offset: int = 0
) -> tuple[bool, Any, int]:
    """An inline `future<T>`: `(ready, value, new_offset)`; when not ready, value is `None`.

    A pending future's value arrives later on its own path as a bare `T`: decode it with `decoder(T)`.
    """
    with memoryview(data) as mv:
        try:
            b = mv[offset]
        except IndexError:
            raise truncated("future") from None
        if b == 0:
            return False, None, offset + 1
        if b != 1:
            raise CodecError(f"invalid future discriminant {b}")
        try:
            x, o = elem_decoder(mv, offset + 1)
        except CodecError as e:
            raise e.within(".ready") from None
        return True, x, o
