"""`wasi:http` 0.2: the `types` and `outgoing-handler` interface tables.

The implementations live beside this module: `http_types` (fields, methods, error codes),
`http_body` (bodies and trailers), `http_incoming` (the request a guest serves),
`http_outgoing` (the requests a guest sends) and `http_client` (sending them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wasmlattice.runtime.linking import HostInterface
from wasmlattice.wasi.http_body import FutureTrailers, IncomingBody, OutgoingBody
from wasmlattice.wasi.http_incoming import IncomingRequest, OutgoingResponse, ResponseOutparam
from wasmlattice.wasi.http_outgoing import (
    FutureIncomingResponse,
    IncomingResponse,
    OutgoingRequest,
    RequestOptions,
    outgoing_handle,
)
from wasmlattice.wasi.http_types import Fields, http_error_code


def _opt(attr: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    return (lambda o: getattr(o, attr), lambda o, v: o._set(attr, v))


def interfaces() -> list[HostInterface]:
    """The `wasi:http` interfaces (`types` and `outgoing-handler`)."""
    get_c, set_c = _opt("connect")
    get_f, set_f = _opt("first_byte")
    get_b, set_b = _opt("between_bytes")
    types: dict[str, Callable[..., Any]] = {
        "http-error-code": http_error_code,
        "[constructor]fields": lambda: Fields(),
        "[static]fields.from-list": Fields.from_list,
        "[method]fields.get": Fields.get,
        "[method]fields.has": Fields.has,
        "[method]fields.set": Fields.set,
        "[method]fields.delete": Fields.delete,
        "[method]fields.append": Fields.append,
        "[method]fields.entries": Fields.list_entries,
        "[method]fields.clone": Fields.clone,
        "[method]incoming-request.method": IncomingRequest.method,
        "[method]incoming-request.path-with-query": IncomingRequest.path_with_query,
        "[method]incoming-request.scheme": IncomingRequest.scheme,
        "[method]incoming-request.authority": IncomingRequest.authority,
        "[method]incoming-request.headers": IncomingRequest.headers,
        "[method]incoming-request.consume": IncomingRequest.consume,
        "[constructor]outgoing-request": OutgoingRequest,
        "[method]outgoing-request.body": OutgoingRequest.body,
        "[method]outgoing-request.method": OutgoingRequest.method,
        "[method]outgoing-request.set-method": OutgoingRequest.set_method,
        "[method]outgoing-request.path-with-query": OutgoingRequest.path_with_query,
        "[method]outgoing-request.set-path-with-query": OutgoingRequest.set_path_with_query,
        "[method]outgoing-request.scheme": OutgoingRequest.scheme,
        "[method]outgoing-request.set-scheme": OutgoingRequest.set_scheme,
        "[method]outgoing-request.authority": OutgoingRequest.authority,
        "[method]outgoing-request.set-authority": OutgoingRequest.set_authority,
        "[method]outgoing-request.headers": OutgoingRequest.headers,
        "[constructor]request-options": RequestOptions,
        "[method]request-options.connect-timeout": get_c,
        "[method]request-options.set-connect-timeout": set_c,
        "[method]request-options.first-byte-timeout": get_f,
        "[method]request-options.set-first-byte-timeout": set_f,
        "[method]request-options.between-bytes-timeout": get_b,
        "[method]request-options.set-between-bytes-timeout": set_b,
        "[method]response-outparam.send-informational": ResponseOutparam.send_informational,
        "[static]response-outparam.set": ResponseOutparam.set,
        "[method]incoming-response.status": IncomingResponse.status,
        "[method]incoming-response.headers": IncomingResponse.headers,
        "[method]incoming-response.consume": IncomingResponse.consume,
        "[method]incoming-body.stream": IncomingBody.stream,
        "[static]incoming-body.finish": IncomingBody.finish,
        "[method]future-trailers.subscribe": FutureTrailers.subscribe,
        "[method]future-trailers.get": FutureTrailers.get,
        "[constructor]outgoing-response": OutgoingResponse,
        "[method]outgoing-response.status-code": OutgoingResponse.status_code,
        "[method]outgoing-response.set-status-code": OutgoingResponse.set_status_code,
        "[method]outgoing-response.headers": OutgoingResponse.headers,
        "[method]outgoing-response.body": OutgoingResponse.body,
        "[method]outgoing-body.write": OutgoingBody.write,
        "[static]outgoing-body.finish": OutgoingBody.finish,
        "[method]future-incoming-response.subscribe": FutureIncomingResponse.subscribe,
        "[method]future-incoming-response.get": FutureIncomingResponse.get,
    }
    return [
        HostInterface("wasi:http/types", types),
        HostInterface("wasi:http/outgoing-handler", {"handle": outgoing_handle}),
    ]
