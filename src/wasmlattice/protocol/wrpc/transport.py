"""wRPC 0.0.1 over NATS: the wire, and what the client and server sides share.

The transport moves raw bytes; encoding values is the codec's job (`wrpc/codec.py`). This module
holds what both sides of a call need: subjects, header names, message size budgets, the error
types and the error payload. The client side is `wrpc/client.py` (`invoke`, `Invocation`), the
server side `wrpc/server.py` (`serve`, `current_invocation`); both send and receive a call's byte
streams with `wrpc/streams.py`, routed by the per-connection inbox of `wrpc/inbox.py`.

The wire, as this package implements it (wRPC `SPEC.md`, NATS section, and the behaviour of the
reference `wrpc-transport-nats` crate, which wasmCloud v1 hosts and provider SDKs use):

* An invocation is addressed to `[<prefix>.]wrpc.0.0.1.[<instance>.]<function>`, where the instance
  is the versioned WIT interface (`wasi:keyvalue/store@0.2.0-draft`) and is left out for root-level
  functions. wasmCloud puts `<lattice>.<entity id>` in front; a server of a component or provider
  listens with the queue group `<lattice>.<entity id>` so that replicas share the load.
* The client picks a fresh reply inbox `R_c` (here `_INBOX.<connection nuid>.<counter>`, one
  wildcard subscription `_INBOX.<connection nuid>.>` per NATS connection serving every call, as the
  reference crate does) and publishes the encoded parameters to the invocation subject with reply
  `R_c` and its headers. Parameters that do not fit one NATS message are cut: the first message
  carries what fits in `max_payload` less the reply subject and the header block.
* The server answers on `R_c` with an **empty** message whose reply subject is its own fresh inbox
  `R_s` (the handshake). A NATS status message on `R_c` instead means no handshake: 503 (no
  responders) fails the call at once, 408 is a timeout and 409 a terminated request.
* After the handshake the client sends the rest of the parameter bytes on `R_s.params`, each message
  at most `max_payload`, and then closes that stream with an empty message (the reference client
  always closes it, even when everything fitted the first message). Asynchronous parameter values
  (pending `stream`/`future` values) travel on `R_s.params.<i>.<j>…`, the index path of the value.
* The server gets complete parameters either from the value decoder (it knows when the bytes hold
  every parameter; pass `params_complete`) or from that closing empty message.
* The server sends the encoded results on `R_c.results` in chunks of at most `max_payload` and closes
  the stream with an empty message; asynchronous results go to `R_c.results.<i>…`, each stream closed
  the same way. A function without results thus produces just the closing message.
* An empty message closes a stream. When the handler fails, the server closes every stream it opened
  with an empty message. The current spec carries no error text; this transport additionally publishes
  the error text (encoded as a component-model `string`: LEB128 length, UTF-8) on `R_c.error` before
  closing, as wRPC's earlier NATS transport did. The reference client drops messages on subjects it
  does not know, so this stays compatible; our client turns it into `RemoteError`.
* Invocations from a host carry W3C trace context headers (`traceparent`, maybe `tracestate`) and
  wasmCloud's `source-id` and `link-name`; `invoke` adds a fresh `traceparent` when none is given.
  The default timeout for an invocation is 10 s.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

PROTOCOL = "wrpc.0.0.1"
DEFAULT_TIMEOUT = 10.0

# Header names used by wasmCloud hosts on invocations.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
SOURCE_ID = "source-id"
LINK_NAME = "link-name"
TARGET_ID = "target-id"

# A NATS status message (no responders, timeout) carries these instead of a wRPC handshake.
STATUS_HEADER = "Status"
DESCRIPTION_HEADER = "Description"
# The NATS header block is `NATS/1.0\r\n`, one `key: value\r\n` line per header and a final `\r\n`.
_HEADER_OVERHEAD = len(b"NATS/1.0\r\n") + len(b"\r\n")

IndexPath = tuple[int, ...]


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class WrpcError(Exception):
    """A wRPC invocation failed."""


class NoResponders(WrpcError):
    """Nothing subscribes to the invocation subject (NATS status 503)."""


class InvocationTimeout(WrpcError):
    """The invocation did not complete before its deadline."""


class UnexpectedEof(WrpcError):
    """The peer ended the invocation before the protocol was complete."""


class RemoteError(WrpcError):
    """The server reported that handling the invocation failed."""


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def invocation_subject(prefix: str | None, instance: str, func: str) -> str:
    """The subject wRPC invocations of `instance`.`func` are published to, below an optional prefix."""
    parts = [prefix] if prefix else []
    parts.append(PROTOCOL)
    if instance:
        parts.append(instance)
    parts.append(func)
    return ".".join(parts)


def span_fields(subject: str, headers: Mapping[str, str] | None) -> tuple[str, dict[str, str]]:
    """The name and attributes of the span of an invocation on `subject` (either side).

    `<prefix>.wrpc.0.0.1.<instance>.<func>`: named `<instance>#<func>` as `wasmlattice call`
    writes it; the prefix's last part is the target (wasmCloud's `<lattice>.<entity>`).
    """
    prefix, sep, rest = subject.partition(f"{PROTOCOL}.")
    if not sep:
        prefix, rest = "", subject
    instance, _, func = rest.rpartition(".")
    target = prefix.rstrip(".").rpartition(".")[2]
    attrs = {
        "rpc.system": "wrpc",
        "rpc.service": instance,
        "rpc.method": func,
        "messaging.destination.name": subject,
    }
    if target:
        attrs["wasmlattice.wrpc.target"] = target
    for header, key in ((SOURCE_ID, "wasmlattice.wrpc.source"), (LINK_NAME, "wasmcloud.link.name")):
        value = headers.get(header) if headers else None
        if value:
            attrs[key] = value
    return f"wrpc {instance}#{func}" if instance else f"wrpc {func}", attrs


def index_subject(base: str, path: Iterable[int]) -> str:
    """`base` followed by the index path, e.g. `R.results` and (0, 1) give `R.results.0.1`."""
    suffix = ".".join(str(i) for i in path)
    return f"{base}.{suffix}" if suffix else base


def parse_index(text: str) -> IndexPath:
    """The index path spelled by dotted decimal `text` (`""` is the root path)."""
    return tuple(int(p) for p in text.split(".")) if text else ()


def split_payload(data: bytes, limit: int) -> list[bytes]:
    """`data` cut into consecutive chunks of at most `limit` bytes (none for empty data)."""
    if limit <= 0:
        raise ValueError(f"cannot split a payload into chunks of at most {limit} bytes")
    if len(data) <= limit:
        return [data] if data else []
    return [data[i : i + limit] for i in range(0, len(data), limit)]


def header_block_size(headers: Mapping[str, str] | None) -> int:
    """How many bytes `headers` add to a NATS message (0 without headers)."""
    if not headers:
        return 0
    size = _HEADER_OVERHEAD
    for k, v in headers.items():
        size += len(k.encode()) + 2 + len(v.encode()) + 2
    return size


def first_chunk_budget(max_payload: int, reply: str, headers: Mapping[str, str] | None) -> int:
    """How many parameter bytes go into the invocation message itself.

    Like the reference client, leave room for the reply subject and the header block, which the NATS
    server counts against `max_payload` together with the payload.
    """
    return max(0, max_payload - len(reply) - header_block_size(headers))


def new_traceparent() -> str:
    """A fresh W3C `traceparent` (version 00, random trace and parent ids, not sampled)."""
    # The W3C spec forbids all-zero ids; `or 1` keeps the (astronomically unlikely) zero out.
    trace_id = random.getrandbits(128) or 1
    span_id = random.getrandbits(64) or 1
    return f"00-{trace_id:032x}-{span_id:016x}-00"


def encode_error(message: str) -> bytes:
    """`message` as a component-model `string` (LEB128 byte length, then UTF-8), for `R_c.error`."""
    raw = message.encode()
    n = len(raw)
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            break
    return bytes(out) + raw


def decode_error(payload: bytes) -> str:
    """The error text in an `R_c.error` payload; payloads that are not an encoded string read as UTF-8."""
    n = shift = 0
    for i, byte in enumerate(payload[:5]):
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if i + 1 + n == len(payload):
                return payload[i + 1 :].decode(errors="replace")
            break
    return payload.decode(errors="replace")


def status_error(subject: str, status: str, description: str | None) -> WrpcError:
    """The error for a NATS status message received instead of the handshake."""
    detail = f" ({description})" if description else ""
    if status == "503":
        return NoResponders(
            f"no responders for {subject}: nothing serves this function on the lattice "
            "(check that the target is running and the link points at it)"
        )
    if status == "408":
        return InvocationTimeout(f"{subject}: NATS reported a request timeout{detail}")
    if status == "409":
        return UnexpectedEof(f"{subject}: NATS terminated the request{detail} before the handshake")
    return WrpcError(f"{subject}: NATS answered with status {status}{detail} instead of a wRPC handshake")
