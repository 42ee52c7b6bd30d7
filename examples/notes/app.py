"""A small notes API: an HTTP component backed by key-value storage and messaging.

    GET    /notes          the note names, as JSON
    PUT    /notes/NAME     store the request body as note NAME (publishes `notes.changed`)
    GET    /notes/NAME     the note (404 if there is none)
    DELETE /notes/NAME     delete the note (publishes `notes.changed`)
    GET    /stats          how many writes the lattice has seen (an atomic counter)

Storage is whatever the `wasi:keyvalue` link selects (a NATS bucket in `make up`); change events go
to whatever the `wasmcloud:messaging` link selects (NATS subjects).
"""

import json
from urllib.parse import unquote, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import atomics, consumer
from wit_world.imports import store as kv
from wit_world.imports.wasi_http_types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method_Delete,
    Method_Get,
    Method_Put,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)
from wit_world.imports.wasmcloud_messaging_types import BrokerMessage

PREFIX = "note."
MAX_NOTE = 64 * 1024


def respond(response_out: ResponseOutparam, status: int, body: bytes, ctype: bytes = b"text/plain") -> None:
    resp = OutgoingResponse(Fields.from_list([("content-type", ctype)]))
    resp.set_status_code(status)
    out = resp.body()
    ResponseOutparam.set(response_out, Ok(resp))
    with out.write() as stream:
        for i in range(0, len(body), 4096):
            stream.blocking_write_and_flush(body[i : i + 4096])
    OutgoingBody.finish(out, None)


def read_body(request: IncomingRequest, limit: int) -> bytes | None:
    body = request.consume()
    data = b""
    with body.stream() as stream:
        while True:
            try:
                data += stream.blocking_read(65536)
            except Err:
                break
            if len(data) > limit:
                return None
    IncomingBody.finish(body)
    return data


def kv_error(e: Err) -> str:
    value = e.value
    return getattr(value, "value", None) or type(value).__name__


def publish(op: str, name: str) -> None:
    event = json.dumps({"op": op, "name": name}).encode()
    try:
        consumer.publish(BrokerMessage("notes.changed", event, None))
    except Err as e:  # storage worked; a lost event is logged by the host, not fatal here
        print(f"publishing notes.changed failed: {e.value}")


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = urlsplit(request.path_with_query() or "/").path
        method = request.method()
        try:
            bucket = kv.open("notes")
            if path == "/notes" and isinstance(method, Method_Get):
                names, cursor = [], None
                while True:
                    page = bucket.list_keys(cursor)
                    names += [k[len(PREFIX) :] for k in page.keys if k.startswith(PREFIX)]
                    cursor = page.cursor
                    if cursor is None:
                        break
                respond(response_out, 200, json.dumps(sorted(names)).encode() + b"\n", b"application/json")
            elif path.startswith("/notes/") and len(path) > len("/notes/"):
                name = unquote(path[len("/notes/") :])
                key = PREFIX + name
                if isinstance(method, Method_Get):
                    value = bucket.get(key)
                    if value is None:
                        respond(response_out, 404, f"no note named {name}\n".encode())
                    else:
                        respond(response_out, 200, value)
                elif isinstance(method, Method_Put):
                    data = read_body(request, MAX_NOTE)
                    if data is None:
                        respond(response_out, 413, f"a note holds at most {MAX_NOTE} bytes\n".encode())
                        return
                    bucket.set(key, data)
                    atomics.increment(bucket, "stats.writes", 1)
                    publish("put", name)
                    respond(response_out, 201, f"stored {name} ({len(data)} bytes)\n".encode())
                elif isinstance(method, Method_Delete):
                    bucket.delete(key)
                    atomics.increment(bucket, "stats.writes", 1)
                    publish("delete", name)
                    respond(response_out, 200, f"deleted {name}\n".encode())
                else:
                    respond(response_out, 405, b"use GET, PUT or DELETE\n")
            elif path == "/stats":
                writes = atomics.increment(bucket, "stats.writes", 0)  # adding 0 reads the counter
                respond(
                    response_out, 200, json.dumps({"writes": writes}).encode() + b"\n", b"application/json"
                )
            else:
                respond(response_out, 404, b"try GET /notes, PUT /notes/NAME, GET /stats\n")
        except Err as e:
            respond(response_out, 502, f"storage error: {kv_error(e)}\n".encode())
