"""A function's parameters and results on the wRPC wire: a fixed sequence of values, back to back.

wRPC encodes the parameters as the tuple of parameters and the results as the tuple of results
(a 1-tuple for one result, empty for none), with nothing around or between the values; each value
is encoded as `codec.py` describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wasmlattice.protocol.wrpc.codec import decoder, encoder
from wasmlattice.protocol.wrpc.primitives import CodecError, type_name
from wasmlattice.runtime.witypes import FuncSig, WitType


class TupleCodec:
    """Encodes and decodes a sequence of values of fixed types back to back: params or results."""

    def __init__(self, types: Sequence[WitType], label: str = "values") -> None:
        self.types = tuple(types)
        self.label = label
        self._encoders = [(f"{label}[{i}]", encoder(t)) for i, t in enumerate(self.types)]
        self._decoders = [(f"{label}[{i}]", decoder(t)) for i, t in enumerate(self.types)]

    def encode(self, values: Sequence[Any]) -> bytes:
        """The concatenated encodings of `values` (one per type)."""
        if not isinstance(values, (tuple, list)) or len(values) != len(self._encoders):
            got = f"{len(values)}" if isinstance(values, (tuple, list)) else type_name(values)
            raise CodecError(f"expected {len(self._encoders)} {self.label}, got {got}")
        out = bytearray()
        for v, (segment, f) in zip(values, self._encoders, strict=True):
            try:
                f(v, out)
            except CodecError as e:
                raise e.within(segment) from None
        return bytes(out)

    def decode_prefix(self, data: bytes | bytearray | memoryview) -> tuple[list[Any], int]:
        """The values at the start of `data` and how many bytes they used.

        Raises `TruncatedError` when `data` ends first (more may still arrive), `CodecError` when
        the bytes cannot be a valid encoding.
        """
        with memoryview(data) as mv:
            if mv.format != "B" or mv.ndim != 1:
                raise TypeError("expected a flat byte buffer")
            vals: list[Any] = []
            o = 0
            for segment, f in self._decoders:
                try:
                    x, o = f(mv, o)
                except CodecError as e:
                    raise e.within(segment) from None
                vals.append(x)
            return vals, o

    def decode(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """The values encoded in exactly `data`; trailing bytes are an error."""
        vals, used = self.decode_prefix(data)
        if used != len(data):
            raise CodecError(f"{len(data) - used} trailing bytes after {self.label}")
        return vals


def params_codec(sig: FuncSig) -> TupleCodec:
    """The codec for a function's parameters (encoded as the tuple of parameters)."""
    return TupleCodec([t for _, t in sig.params], "params")


def results_codec(sig: FuncSig) -> TupleCodec:
    """The codec for a function's results: a 1-tuple for one result, empty for none."""
    return TupleCodec([] if sig.result is None else [sig.result], "results")
